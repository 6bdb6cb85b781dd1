"""MLflow run logging for pipeline stages.

Every `ogsrl <stage>` run becomes one MLflow run (run name = stage) carrying:

* params: the whole params mapping, flattened to dotted keys (lists as JSON);
* tags: git commit and dirty flag, the stage name, the status, the hashes recorded in ``dvc.lock`` (when present)
  and, on failure, the error *class* only (error messages may quote offending rows, so they stay out);
* metrics: the numeric values the stage returned (booleans as 0/1, nested dicts flattened); non-numeric values
  become ``result.<key>`` tags.

Keys that name raw identifiers (``subject_id``, ``hadm_id``, ``stay_id``) are dropped before anything is sent.

Tracking defaults to a local sqlite database under the project (``sqlite:///<root>/mlflow.db``, artefacts in
``<root>/mlartifacts``), so no server is needed. MLflow is imported lazily: ``import mlflow`` costs about 2 s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ogsrl.config import ConfigError, build

log = logging.getLogger(__name__)

_ID_KEY = re.compile(r"(^|[^a-z0-9])(subject_id|hadm_id|stay_id)($|[^a-z0-9])", re.IGNORECASE)
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ :]")
_MAX_PARAM_LEN = 6000
_MAX_TAG_LEN = 5000
_BATCH = 100


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    """Where stage runs are logged (params section ``mlflow``)."""

    tracking_uri: str = ""
    """MLflow tracking URI; empty → env MLFLOW_TRACKING_URI, else ``sqlite:///<root>/mlflow.db``."""
    experiment: str = "ogsrl"
    """MLflow experiment name."""

    def __post_init__(self) -> None:
        if not self.experiment.strip():
            raise ValueError("experiment must be a non-empty string")


def tracking_config(params: Mapping[str, Any]) -> TrackingConfig:
    """Build :class:`TrackingConfig` from ``params["mlflow"]``.

    Only ``tracking_uri`` and ``experiment`` are read here: the ``mlflow`` section is shared with the model
    registry, whose own keys are validated by the registry code.
    """
    section = params.get("mlflow") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"params: mlflow must be a mapping, got {type(section).__name__}")
    picked = {k: section[k] for k in ("tracking_uri", "experiment") if k in section}
    return build(TrackingConfig, picked, "mlflow")


def resolve_tracking_uri(cfg: TrackingConfig, root: Path, env_uri: str | None = None) -> str:
    """params value if set, else the environment's MLFLOW_TRACKING_URI (passed in), else the project sqlite db."""
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if env_uri:
        return env_uri
    return f"sqlite:///{(Path(root).resolve() / 'mlflow.db').as_posix()}"


def is_identifier_key(key: str) -> bool:
    """True when a key names a raw MIMIC identifier column (these never leave the extraction)."""
    return bool(_ID_KEY.search(key))


def redact_secret(key: str, value: Any) -> Any:
    """Secrets (the pseudonymisation salt) are logged only as an HMAC fingerprint (:func:`ogsrl.privacy.fingerprint`;
    the secret salt of real data is not in params at all)."""
    from ogsrl import privacy

    if privacy.is_secret_key(key):
        return privacy.fingerprint(str(value))
    return value


def flatten(mapping: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mapping → {dotted key: leaf}. Lists stay leaves."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def _clean_key(key: str) -> str:
    return _BAD_KEY_CHARS.sub("_", key)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_MAX_PARAM_LEN]


def split_result(result: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Stage result → (numeric metrics, string tags); identifier keys dropped, booleans become 0/1."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for key, value in flatten(result, sep="/").items():
        if is_identifier_key(key):
            log.warning("not logging %r: raw identifiers are never tracked", key)
            continue
        name = _clean_key(key)
        if isinstance(value, bool):
            metrics[name] = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[name] = float(value)
        elif hasattr(value, "item") and callable(value.item):  # numpy scalar
            try:
                metrics[name] = float(value.item())
            except (TypeError, ValueError):
                tags[f"result.{name}"] = str(value)[:_MAX_TAG_LEN]
        elif value is None:
            continue
        else:
            tags[f"result.{name}"] = _param_value(value)[:_MAX_TAG_LEN]
    return metrics, tags


def git_info(root: Path) -> dict[str, str]:
    """Commit hash and dirty flag of the repository at ``root`` ('unknown' outside a git work tree)."""
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def dvc_lock_tags(root: Path) -> dict[str, str]:
    """Hashes recorded in ``<root>/dvc.lock``: one tag per stage dependency/output, plus the file's own SHA-256."""
    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return {}
    raw = lock.read_bytes()
    tags = {"dvc.lock.sha256": hashlib.sha256(raw).hexdigest()}
    try:
        doc = yaml.safe_load(raw) or {}
    except yaml.YAMLError:
        log.warning("dvc.lock is not valid YAML; logging its SHA-256 only")
        return tags
    for stage, entry in (doc.get("stages") or {}).items():
        for kind in ("deps", "outs"):
            for item in entry.get(kind) or []:
                digest = item.get("md5") or item.get("hash") or item.get("etag") or ""
                if isinstance(digest, str) and digest and digest not in ("md5",):
                    tags[_clean_key(f"dvc.{stage}.{kind}.{item.get('path', '?')}")] = digest
    return tags


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]


def _plot_tables(paths: Sequence[Path]) -> list[Path]:
    """The CSV files among ``paths`` (a folder contributes its ``*.csv``, sorted); missing paths are skipped."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(p.glob("*.csv")))
        elif p.is_file() and p.suffix == ".csv":
            out.append(p)
    return out


FIGURE_SUFFIXES = (".svg", ".png", ".html")


def _figure_files(paths: Sequence[Path]) -> list[Path]:
    """The figure files among ``paths`` (a folder contributes its figures, sorted); missing paths are skipped."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix in FIGURE_SUFFIXES))
        elif p.is_file() and p.suffix in FIGURE_SUFFIXES:
            out.append(p)
    return out


def curve_metrics(table: Path) -> list[tuple[str, int, float]]:
    """(key, step, value) per row and numeric column of a plot table with an integer ``step`` column.

    Keys are ``curve/<file stem>[/<label>...]/<column>``, the labels being the row's text columns (e.g. the run of
    a training curve) and its ``seed`` (written ``seed<n>``); tables without ``step`` give nothing.
    """
    import pandas as pd

    frame = pd.read_csv(table)
    if "step" not in frame.columns or not pd.api.types.is_integer_dtype(frame["step"]):
        return []
    labels = [c for c in frame.columns
              if c != "step" and (c == "seed" or not pd.api.types.is_numeric_dtype(frame[c]))]
    values = [c for c in frame.columns if c != "step" and c not in labels]
    out = []
    for rec in frame.to_dict("records"):
        tags = (f"seed{rec[c]}" if c == "seed" else str(rec[c]) for c in labels)
        prefix = "/".join(["curve", table.stem, *tags])
        for c in values:
            v = float(rec[c])
            if math.isfinite(v):
                out.append((_clean_key(f"{prefix}/{c}"), int(rec["step"]), v))
    return out


def log_stage_run(
    stage: str,
    params: Mapping[str, Any],
    result: Mapping[str, Any] | None,
    root: Path,
    tracking_uri: str,
    experiment: str = "ogsrl",
    error: BaseException | None = None,
    plots: Sequence[Path] = (),
    figures: Sequence[Path] = (),
) -> str:
    """Log one stage run to MLflow and return its run id.

    Args:
        stage: pipeline stage name (the run name).
        params: the full params mapping the stage ran with.
        result: the dict the stage returned (None when it failed).
        root: project root (git, dvc.lock and the default artefact location live here).
        tracking_uri: where to log (see :func:`resolve_tracking_uri`).
        experiment: experiment name, created on first use.
        error: the exception that stopped the stage, if any (only its class name is logged).
        plots: the stage's plot tables (CSV files, or folders of them; missing ones are skipped), logged as
            artifacts under ``plots/``; a table with a ``step`` column also becomes metric histories (see
            :func:`curve_metrics`), so MLflow draws the same curves as ``dvc plots show``.
        figures: figure files (``.svg``/``.png``/``.html``, or folders of them; missing ones are skipped), logged
            as artifacts under ``figures/`` (the report's figures and page).

    Returns:
        The MLflow run id.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    root = Path(root).resolve()
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        artifact_location = (root / "mlartifacts").as_uri() if tracking_uri.startswith("sqlite:") else None
        exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
    else:
        exp_id = exp.experiment_id

    tags = {"ogsrl.stage": stage, "ogsrl.status": "failed" if error else "ok"}
    tags.update(git_info(root))
    tags.update(dvc_lock_tags(root))
    metrics, result_tags = split_result(result or {})
    tags.update(result_tags)
    if error is not None:
        tags["ogsrl.error"] = type(error).__name__

    flat_params = {
        _clean_key(k): _param_value(redact_secret(k, v)) for k, v in flatten(params).items()
        if not is_identifier_key(k)
    }
    run = client.create_run(exp_id, run_name=stage, tags={"mlflow.runName": stage})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        param_items = [Param(k, v) for k, v in sorted(flat_params.items())]
        tag_items = [RunTag(k, v[:_MAX_TAG_LEN]) for k, v in sorted(tags.items())]
        metric_items = [
            Metric(k, v, now, 0) for k, v in sorted(metrics.items()) if not math.isinf(v)
        ]
        for chunk in _chunks(param_items):
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tag_items):
            client.log_batch(run_id, tags=chunk)
        for table in _plot_tables(plots):
            client.log_artifact(run_id, str(table), artifact_path="plots")
            curve = [Metric(k, v, now, step) for k, step, v in curve_metrics(table)]
            metric_items.extend(curve)
        for fig in _figure_files(figures):
            client.log_artifact(run_id, str(fig), artifact_path="figures")
        for chunk in _chunks(metric_items):
            client.log_batch(run_id, metrics=chunk)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FAILED" if error else "FINISHED")
    log.info("logged stage %s to MLflow run %s (%s)", stage, run_id, tracking_uri)
    return run_id
