"""Validation stages: `ogsrl validate-raw` (before extraction) and `ogsrl validate` (after it).

Both write their HTML/JSON report folder and their metrics JSON *before* deciding, then raise
:class:`ogsrl.validate.report.ValidationFailed` (a DataError) with a readable summary when a gating expectation failed.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ogsrl import privacy
from ogsrl.config import ConfigError, build, section
from ogsrl.io import write_json
from ogsrl.validate.config import ValidationConfig
from ogsrl.validate.gx import Outcome
from ogsrl.validate.report import ValidationFailed, failure_summary, write_reports

log = logging.getLogger(__name__)

RAW_METRICS = Path("data/reports/validation_raw.json")
TRAJ_METRICS = Path("data/reports/validation_trajectories.json")
RAW_REPORT = Path("data/reports/validation/raw")
TRAJ_REPORT = Path("data/reports/validation/trajectories")
TRAJ_DIR = Path("data/trajectories")
SOURCES = ("demo", "mimic-iv", "trajectories")


def _config(params: Mapping[str, Any]) -> ValidationConfig:
    return build(ValidationConfig, params.get("validation"), "validation")


def raw_source(params: Mapping[str, Any], root: Path) -> tuple[str, Path | None]:
    """(source, raw directory) from params ``data``; the directory is None for the trajectories source."""
    data = section(params, "data")
    source = data.get("source")
    if source not in SOURCES:
        raise ConfigError(f"params: data.source must be one of {list(SOURCES)}, got {source!r}")
    if source == "trajectories":
        return source, None
    key = "raw_dir" if source == "demo" else "mimic_path"
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"params: data.{key} must be a non-empty path for data.source {source!r}")
    path = Path(value)
    return source, path if path.is_absolute() else root / path


def _metrics(outcomes: Sequence[Outcome], elapsed: float) -> dict[str, Any]:
    gating = [o for o in outcomes if o.gating]
    per_table: dict[str, int] = defaultdict(int)
    for o in gating:
        per_table[o.table] += int(o.unexpected_count or 0) + (0 if o.success or o.unexpected_count else 1)
    m: dict[str, Any] = {
        "success": all(o.success for o in gating),
        "n_expectations": len(gating),
        "n_failed": sum(not o.success for o in gating),
        "n_informational": len(outcomes) - len(gating),
        "seconds": round(elapsed, 3),
    }
    m |= {f"violations.{t}": n for t, n in sorted(per_table.items())}
    return m


def _finish(gate: str, title: str, outcomes: list[Outcome], runs: list[tuple[str, Any]], metrics: dict[str, Any],
            root: Path, report: Path, metrics_path: Path) -> dict[str, Any]:
    write_reports(root / report, title, runs, outcomes, metrics)
    write_json(root / metrics_path, metrics)
    if not metrics["success"]:
        raise ValidationFailed(failure_summary(gate, outcomes, root / report), [o for o in outcomes
                               if o.gating and not o.success], root / report)
    log.info("%s validation passed: %d expectations", gate, metrics["n_expectations"])
    return metrics


def run_raw(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Validate the raw MIMIC-IV-layout tables of the configured source; returns the metrics written to
    ``data/reports/validation_raw.json``. The trajectories source has no raw tables: the skip is recorded."""
    from ogsrl.validate.raw import validate_raw

    cfg = _config(params)
    source, raw_dir = raw_source(params, root)
    t0 = time.perf_counter()
    if raw_dir is None:
        metrics = {"success": True, "skipped": True, "source": source, "n_expectations": 0, "n_failed": 0,
                   "rows_checked": 0, "reason": "data.source is 'trajectories': no raw tables to validate"}
        return _finish("raw-table", "raw tables (skipped)", [], [], metrics, root, RAW_REPORT, RAW_METRICS)
    salt = privacy.resolve_salt(params, root)  # ids in reports are salted hashes; real data: the secret salt
    privacy.check_fingerprint(params, root, salt)
    res = validate_raw(raw_dir, cfg, salt)
    metrics = _metrics(res.outcomes, time.perf_counter() - t0)
    metrics |= {"skipped": False, "source": source, "rows_checked": sum(res.rows.values()),
                "n_tables": len(res.rows)}
    return _finish("raw-table", f"raw tables ({source})", res.outcomes, res.runs, metrics, root, RAW_REPORT,
                   RAW_METRICS)


def _declared_schema(traj_dir: Path) -> Any:
    """The v2 schema in the train file's metadata (``ogsrl.schema``); None when absent or unreadable (the
    ``files`` suite then reports the file)."""
    import pyarrow.parquet as pq

    from ogsrl.data.schema import from_metadata

    path = traj_dir / "train.parquet"
    try:
        meta = pq.read_schema(path).metadata
    except Exception:  # noqa: BLE001 - a missing or broken file is reported by the files suite
        return None
    return from_metadata(meta, path.name)


def run_trajectories(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Validate ``data/trajectories/{train,val,test}.parquet`` against the trajectory contract; returns the metrics
    written to ``data/reports/validation_trajectories.json``."""
    from ogsrl.validate.trajectories import validate_trajectories

    cfg = _config(params)
    n_steps = section(params, "cohort").get("n_steps")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError(f"params: cohort.n_steps must be a positive integer, got {n_steps!r}")
    rules = section(params, "costs").get("rules") or []
    names = [r.get("name") for r in rules if isinstance(r, Mapping)]
    if len(names) != len(rules) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError("params: every costs.rules entry needs a non-empty name")
    t0 = time.perf_counter()
    cost_columns = [f"cost_{n}" for n in names]
    schema = _declared_schema(root / TRAJ_DIR)
    if schema is not None and not schema.is_canonical:  # a bring-your-own v2 table declares its own costs
        cost_columns = list(schema.costs)
    res = validate_trajectories(root / TRAJ_DIR, n_steps=n_steps, cost_columns=cost_columns, cfg=cfg,
                                schema=schema)
    metrics = _metrics(res.outcomes, time.perf_counter() - t0)
    metrics |= {"rows_checked": sum(res.rows.values()), "n_stays": res.n_stays}
    metrics |= {f"rows.{s}": n for s, n in sorted(res.rows.items())}
    return _finish("trajectory", "trajectories", res.outcomes, res.runs, metrics, root, TRAJ_REPORT, TRAJ_METRICS)
