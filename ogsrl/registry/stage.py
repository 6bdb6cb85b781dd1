"""Registry commands: `ogsrl register`, `ogsrl promote [--dry-run]`, `ogsrl release`, `ogsrl lineage <uri>`, and
:func:`run` (= release, writing ``registry.report``).

``register`` bundles the trained policy (+ guardian when calibrated, + the world model's cost heads when fitted,
+ cost rules) as an MLflow pyfunc, logs it in
one MLflow run together with the gate evidence (``evidence.json``) and the lineage record (``lineage.json``),
registers it as a new version of ``registry.model_name`` and gives it the alias ``challenger``.
``promote`` judges the challenger with :func:`ogsrl.registry.gate.decide` against the current champion and, unless
``dry_run``, records the decision (tags; alias ``champion`` on success). The evidence about the bundle (validation,
certificate, the candidate's own support, its OPE costs) is frozen at registration; the return comparison with a
champion is recomputed at promotion, both policies on the current test split (:func:`current_returns`).
``release`` is what `make run` calls: when the registry has no champion it first registers the clinician-equivalent
baseline (``registry.baseline_run``, SOC) and gates it by non-inferiority to the clinicians' logged return, then
registers and gates the candidate (``registry.run``), and ends with one line saying what was decided, why, and how
to serve and audit each alias.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ogsrl import config
from ogsrl.io import dir_sha256, file_sha256, write_json
from ogsrl.ope.estimate import Estimate
from ogsrl.registry import gate as gate_mod
from ogsrl.registry import lineage as lineage_mod
from ogsrl.registry.bundle import (BUNDLE_FILE, DEFAULT_COST_MODEL_LOADER, DEFAULT_GUARDIAN_LOADER,
                                   DEFAULT_POLICY_LOADER, build_bundle)
from ogsrl.registry.loaders import resolve_loader
from ogsrl.registry.tracking import resolve_tracking_uri, tracking_config

log = logging.getLogger(__name__)

LOGGED = "behaviour/onpolicy"
"""metrics prefix of the clinicians' logged (on-policy) returns written by the evaluate stage"""
POLICY_HASH_TAG = "ogsrl.policy_sha256"
"""version tag: sha256 of the bundled policy directory (matches it with the policies the evaluate stage scored)"""


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """Model registry, bundle contents and the promotion gate (params section `registry`)."""

    model_name: str = "ogsrl-policy"
    """registered model name"""
    run: str = "soc"
    """which run of params policies.runs to register (data/models/policies/<run>/seed<seed>/, as served)"""
    baseline_run: str | None = "soc"
    """`release`: while the registry has no champion, this run (the clinicians' behaviour clone) is registered and
    gated first, so the first champion is the clinician-equivalent baseline (null: no baseline)"""
    support_seed: int = 42
    """seed of the candidate's action draws on the test states for the gate's support check"""
    seed: int = 42
    """which of its seeds (one of policies.seeds)"""
    policies_dir: str = "data/models/policies"
    """trained policy directories, relative to the project root"""
    guardian_dir: str = "data/models/guardian"
    """calibrated guardian directory; bundled when it holds certificate.json"""
    ope_metrics: str = "data/reports/evaluate/metrics.json"
    """OPE metrics written by the evaluate stage"""
    estimator: str = "wdr"
    """which OPE estimator's reward-return interval the gate reads (metrics key <run>/seed<seed>/<estimator>/<target>/…)
    and the champion comparison recomputes; WDR: 95–97.5 % coverage of the true return in the benchmark, and unlike
    the FQE/WDR hull it admits the clinicians' own clone as first champion (docs/policies-and-ope.md)"""
    cost_estimator: str = "hull_fqe_wdr"
    """which OPE estimator's cost-return intervals the gate reads (upper CI against ``gate.cost_limits``); the hull
    of the FQE and WDR intervals: its upper bound clears a limit only when both estimators' do, and it covered the
    true cost returns in ≥ 90 % of the benchmark's datasets on every cost, where WDR alone fell to 87.5 % on the SpO₂
    cost (docs/policies-and-ope.md)"""
    return_target: str = "return"
    """OPE target name of the reward return"""
    policy_loader: str = DEFAULT_POLICY_LOADER
    """module:function that loads a policy directory"""
    guardian_loader: str = DEFAULT_GUARDIAN_LOADER
    """module:function that loads a guardian directory"""
    cost_model_dir: str = "data/models/world"
    """cost model (the world model's cost heads) bundled for predicted costs when the directory exists"""
    cost_model_loader: str = DEFAULT_COST_MODEL_LOADER
    """module:function that loads the cost model directory"""
    report: str = "data/reports/registry.json"
    """where the register stage writes its result"""
    hash_raw_files: bool = True
    """lineage: sha256 every MIMIC-IV raw file (minutes on the full database)"""
    trajectories_dir: str = "data/trajectories"
    """trajectory splits the bundle is checked against: no bundled array may hold their rows"""
    row_match_limit: int = 1
    """registration fails when a bundled array has this many rows equal to trajectory rows"""
    gate: gate_mod.GateConfig = field(default_factory=gate_mod.GateConfig)
    """promotion gate thresholds"""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be ≥ 0, got {self.seed}")
        if self.row_match_limit < 1:
            raise ValueError(f"row_match_limit must be ≥ 1, got {self.row_match_limit}")
        if self.baseline_run is not None and not self.baseline_run.strip():
            raise ValueError("baseline_run must be a run name or null")
        for name in ("model_name", "run", "estimator", "cost_estimator", "return_target"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must be a non-empty string")
        for name in ("policy_loader", "guardian_loader", "cost_model_loader"):
            if ":" not in getattr(self, name):
                raise ValueError(f"{name} must look like 'package.module:function', got {getattr(self, name)!r}")


    @property
    def policy_path(self) -> str:
        """The registered policy's directory relative to the project root."""
        return f"{self.policies_dir}/{self.run}/seed{self.seed}"


def registry_config(params: Mapping[str, Any]) -> RegistryConfig:
    """Build :class:`RegistryConfig` from ``params["registry"]`` (all defaults when the section is absent)."""
    return config.build(RegistryConfig, params.get("registry") or {}, "registry")


URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
"""the environment variables ``mlflow.set_tracking_uri`` / ``set_registry_uri`` export besides their globals"""

_F = TypeVar("_F", bound=Callable[..., Any])


@contextmanager
def mlflow_uris_restored() -> Iterator[None]:
    """Leave MLflow's process-wide tracking and registry URIs — the module globals and the environment variables
    they export — as they were on entry, whatever the block pointed them at."""
    import mlflow

    saved = {name: os.environ.get(name) for name in URI_VARIABLES}
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def restores_mlflow_uris(fn: _F) -> _F:
    """Run ``fn`` inside :func:`mlflow_uris_restored`: a registry call points MLflow at its project only while it
    runs, so a caller holding two projects (a notebook, a test) never reads the wrong store afterwards."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with mlflow_uris_restored():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def mlflow_client(params: Mapping[str, Any], root: Path, tracking_uri: str | None) -> tuple[Any, str, str]:
    """(MlflowClient, tracking URI, experiment id); the experiment is created with artefacts under the project.

    Also points MLflow's fluent API (``mlflow.start_run``, ``models:/`` URIs) at the project's store, process-wide:
    call it inside :func:`mlflow_uris_restored` (the public functions here do, by :func:`restores_mlflow_uris`)."""
    import mlflow

    tcfg = tracking_config(params)
    uri = tracking_uri or resolve_tracking_uri(tcfg, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(tcfg.experiment)
    if exp is None:
        location = (Path(root).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
        exp_id = client.create_experiment(tcfg.experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    return client, uri, exp_id


# ---- evidence ---------------------------------------------------------------------------------------------------


def _interval(metrics: Mapping[str, Any], key: str) -> Estimate | None:
    try:
        return Estimate(float(metrics[f"{key}/value"]), float(metrics[f"{key}/ci_low"]),
                        float(metrics[f"{key}/ci_high"]), float(metrics.get(f"{key}/ess", float("nan"))))
    except (KeyError, TypeError, ValueError):
        return None


def gather_evidence(cfg: RegistryConfig, root: Path) -> gate_mod.Evidence:
    """Read validation reports, the guardian certificate and the OPE metrics of ``cfg.run``'s ``cfg.seed`` under
    ``root``."""
    root = Path(root)
    validation: dict[str, bool | None] = {}
    for rel in cfg.gate.validation_reports:
        p = root / rel
        validation[rel] = bool(json.loads(p.read_text(encoding="utf-8")).get("success")) if p.is_file() else None
    metrics_path = root / cfg.ope_metrics
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    prefix = f"{cfg.run}/seed{cfg.seed}/{cfg.estimator}/"
    cost_prefix = f"{cfg.run}/seed{cfg.seed}/{cfg.cost_estimator}/"
    targets = {k[len(cost_prefix):].rsplit("/", 1)[0] for k in metrics if k.startswith(cost_prefix)}
    costs = {t: iv for t in sorted(targets) if t != cfg.return_target
             and (iv := _interval(metrics, cost_prefix + t)) is not None}
    cert_path = root / cfg.guardian_dir / "certificate.json"
    alpha = coverage = unit = None
    if cert_path.is_file():
        cert = json.loads(cert_path.read_text(encoding="utf-8"))
        alpha = cert.get("alpha_c")
        unit = str(cert.get("unit", "row"))  # certificates without a unit were calibrated by rows
        coverage = cert.get("test_coverage_stay" if unit == "stay" else "test_coverage")
        alpha = float(alpha) if alpha is not None else float("nan")
        coverage = float(coverage) if coverage is not None else float("nan")
    return gate_mod.Evidence(validation=validation, ope_return=_interval(metrics, prefix + cfg.return_target),
                             ope_costs=costs, guardian_alpha=alpha, guardian_coverage=coverage,
                             guardian_unit=unit, logged_return=_interval(metrics, f"{LOGGED}/{cfg.return_target}"),
                             return_estimator=cfg.estimator, cost_estimator=cfg.cost_estimator)


def support_reject_share(policy: Any, guardian: Any, test_path: Path, seed: int) -> float | None:
    """Share of the policy's own (state, action) pairs on the test states that ``guardian`` rejects
    (:func:`ogsrl.guardian.support.reject_share`; None when the test split is missing)."""
    import pandas as pd

    from ogsrl.guardian.support import reject_share

    if not Path(test_path).is_file():
        return None
    return reject_share(policy, guardian, pd.read_parquet(test_path), seed, table=Path(test_path).name)


def _table_schema(traj_dir: Path) -> Any:
    """The trajectories' contract-v2 schema (train split's metadata); None when there is no train split."""
    from ogsrl.data.schema import load_table_schema

    path = Path(traj_dir) / "train.parquet"
    return load_table_schema(path) if path.is_file() else None


def _algorithm_of(policy_dir: Path) -> str:
    """The algorithm named in a checkpoint's config.json provenance ("unknown" for checkpoints without one)."""
    path = policy_dir / "config.json"
    doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    prov = doc.get("provenance") if isinstance(doc, dict) else None
    return str(prov.get("algorithm", "unknown")) if isinstance(prov, dict) else "unknown"


# ---- commands -----------------------------------------------------------------------------------------------------


@restores_mlflow_uris
def register(params: Mapping[str, Any], root: Path, *, run: str | None = None, role: str = "candidate",
             tracking_uri: str | None = None) -> dict[str, Any]:
    """Bundle, log and register the trained policy as a new `challenger` version (`ogsrl register`).

    Args:
        params: params mapping.
        root: project root.
        run: the run to register (default ``registry.run``).
        role: version tag ``ogsrl.role`` (candidate | baseline).
        tracking_uri: override of the tracking URI.

    Returns:
        ``{"model_name", "version", "run_id", "model_uri", "guardian_bundled", "cost_model_bundled",
        "tracking_uri"}``.
    """
    import mlflow

    from ogsrl.registry import pyfunc

    root = Path(root).resolve()
    cfg = registry_config(params)
    if run is not None:
        cfg = dataclasses.replace(cfg, run=run)
    policy_dir = root / cfg.policy_path
    if not policy_dir.is_dir():
        raise FileNotFoundError(f"no trained policy {cfg.run!r} seed {cfg.seed} at {policy_dir} "
                                "(registry.run / registry.seed must name a run and seed of params policies; "
                                "run the pipeline first)")
    algorithm = _algorithm_of(policy_dir)
    guardian_dir = root / cfg.guardian_dir
    has_guardian = (guardian_dir / "certificate.json").is_file()
    cost_dir = root / cfg.cost_model_dir
    has_costs = cost_dir.is_dir()
    evidence = gather_evidence(cfg, root)
    if has_guardian:
        policy = resolve_loader(cfg.policy_loader)(policy_dir)
        guardian = resolve_loader(cfg.guardian_loader)(guardian_dir)
        share = support_reject_share(policy, guardian, root / cfg.trajectories_dir / "test.parquet", cfg.support_seed)
        evidence = dataclasses.replace(evidence, support_reject_share=share)
    policy_sha = dir_sha256(policy_dir)
    cost_rules = list(dict(params.get("costs") or {}).get("rules") or [])
    inputs = [cfg.policy_path, cfg.ope_metrics, *cfg.gate.validation_reports]
    if has_guardian:
        inputs.append(cfg.guardian_dir)
    if has_costs:
        inputs.append(cfg.cost_model_dir)
    record = lineage_mod.collect(
        root, params, inputs=inputs, validation_reports=cfg.gate.validation_reports,
        certificate=f"{cfg.guardian_dir}/certificate.json" if has_guardian else None,
        ope_metrics=cfg.ope_metrics, hash_raw_files=cfg.hash_raw_files,
    )
    client, uri, exp_id = mlflow_client(params, root, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="ogsrl-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        build_bundle(
            bundle, policy_dir=policy_dir, guardian_dir=guardian_dir if has_guardian else None,
            cost_rules=cost_rules, policy_loader=cfg.policy_loader, guardian_loader=cfg.guardian_loader,
            cost_model_dir=cost_dir if has_costs else None, cost_model_loader=cfg.cost_model_loader,
            notes={"run": cfg.run, "seed": cfg.seed, "algorithm": algorithm, "evidence": evidence.to_dict()},
            schema=_table_schema(root / cfg.trajectories_dir),
        )
        row_check = _row_check(bundle, root / cfg.trajectories_dir, cfg.row_match_limit)
        git = record["git"]
        version_tags = {"ogsrl.run": cfg.run, "ogsrl.algorithm": algorithm, "ogsrl.seed": str(cfg.seed),
                        "ogsrl.role": role, POLICY_HASH_TAG: policy_sha}
        run_tags = {"ogsrl.stage": "register", **version_tags,
                    "git.commit": str(git.get("commit")), "git.dirty": str(git.get("dirty"))}
        with mlflow.start_run(experiment_id=exp_id, run_name=f"register-{cfg.run}-seed{cfg.seed}",
                              tags=run_tags) as run:
            mlflow.log_dict(evidence.to_dict(), "evidence.json")
            mlflow.log_dict(row_check, "privacy_row_check.json")
            mlflow.log_dict(record, "lineage.json")
            mlflow.log_params({"registry.run": cfg.run, "registry.seed": cfg.seed, "registry.algorithm": algorithm,
                               "registry.model_name": cfg.model_name,
                               "data.source": str(dict(params.get("data") or {}).get("source"))})
            info = pyfunc.log_bundle(bundle)
            run_id = run.info.run_id
    mv = mlflow.register_model(info.model_uri, cfg.model_name, tags={**version_tags, "ogsrl.run_id": run_id})
    if mv.run_id != run_id:  # MLflow 3 links the version to the logging run; make the link explicit otherwise
        client.set_model_version_tag(cfg.model_name, mv.version, "ogsrl.run_id", run_id)
    ret = evidence.ope_return
    if ret is not None:
        for k in ("value", "ci_low", "ci_high"):
            client.set_model_version_tag(cfg.model_name, mv.version, f"ope.return.{k}", repr(getattr(ret, k)))
    client.set_registered_model_alias(cfg.model_name, gate_mod.CHALLENGER, mv.version)
    log.info("registered %s v%s (run %s, guardian %s, cost model %s) as %s", cfg.model_name, mv.version, run_id,
             "bundled" if has_guardian else "absent", "bundled" if has_costs else "absent", gate_mod.CHALLENGER)
    return {"model_name": cfg.model_name, "version": str(mv.version), "run_id": run_id, "run": cfg.run,
            "role": role, "model_uri": f"models:/{cfg.model_name}/{mv.version}", "guardian_bundled": has_guardian,
            "cost_model_bundled": has_costs, "tracking_uri": uri,
            "row_check": {k: row_check[k] for k in ("arrays", "reference_rows", "passed")}}


def _row_check(bundle: Path, trajectories: Path, limit: int) -> dict[str, Any]:
    """Scan the bundle for patient rows (:mod:`ogsrl.registry.rowcheck`); raises before anything is logged."""
    from ogsrl.registry import rowcheck

    manifest = json.loads((bundle / BUNDLE_FILE).read_text(encoding="utf-8"))
    refs = rowcheck.reference_rows(trajectories, manifest, rowcheck.bundled_scalers(bundle))
    if not refs:
        log.warning("row check: no trajectory splits with the bundle's columns under %s; bundle not compared",
                    trajectories)
    result = rowcheck.scan(bundle, refs)
    rowcheck.check(result, limit)
    log.info("row check: %d bundled arrays, none with %d+ of %d trajectory rows", result["arrays"], limit,
             result["reference_rows"])
    return {**result, "limit": limit, "passed": True}


def _version_run_id(mv: Any) -> str:
    return str(mv.tags.get("ogsrl.run_id") or mv.run_id)


def _evidence_of(mv: Any) -> gate_mod.Evidence:
    import mlflow

    return gate_mod.Evidence.from_dict(mlflow.artifacts.load_dict(f"runs:/{_version_run_id(mv)}/evidence.json"))


def _alias_version(client: Any, name: str, alias: str) -> Any | None:
    import mlflow

    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


@restores_mlflow_uris
def promote(
    params: Mapping[str, Any],
    root: Path,
    *,
    version: str | None = None,
    dry_run: bool = False,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Apply the promotion gate to a candidate (`ogsrl promote [--dry-run]`).

    Args:
        params: params mapping (sections `registry`, `mlflow`).
        root: project root.
        version: candidate version; default the version holding alias `challenger`.
        dry_run: decide and report, but change nothing in the registry.
        tracking_uri: override of the tracking URI.

    Returns:
        ``{"model_name", "version", "champion_before", "champion_return", "dry_run", **decision.to_dict()}``.
    """
    root = Path(root).resolve()
    cfg = registry_config(params)
    client, _, _ = mlflow_client(params, root, tracking_uri)
    if version is None:
        cand = _alias_version(client, cfg.model_name, gate_mod.CHALLENGER)
        if cand is None:
            raise ValueError(f"no version of {cfg.model_name} holds alias {gate_mod.CHALLENGER!r}; run register first")
    else:
        import mlflow

        try:
            cand = client.get_model_version(cfg.model_name, str(version))
        except mlflow.exceptions.MlflowException as exc:
            raise ValueError(f"{cfg.model_name} v{version}: {exc.message}") from exc
    champ = _alias_version(client, cfg.model_name, gate_mod.CHAMPION)
    if champ is not None and str(champ.version) == str(cand.version):
        raise ValueError(f"{cfg.model_name} v{cand.version} already is the {gate_mod.CHAMPION}")
    champion_return = candidate_return = None
    basis = None
    if champ is not None:
        candidate_return, champ_est, basis = current_returns(params, root, cfg, cand, champ)
        champion_return = champ_est.value
    evidence = _evidence_of(cand)
    if candidate_return is not None:  # recomputed with cfg.estimator, which the reason must name
        evidence = dataclasses.replace(evidence, return_estimator=cfg.estimator)
    decision = gate_mod.decide(evidence, cfg.gate, champion_return, candidate_return)
    if dry_run:  # apply_decision logs the checks otherwise
        for c in decision.checks:
            log.info("gate (dry run) %s v%s %s", cfg.model_name, cand.version, c.line())
    if not dry_run:
        gate_mod.apply_decision(client, cfg.model_name, str(cand.version), decision)
    return {"model_name": cfg.model_name, "version": str(cand.version), "run": cand.tags.get("ogsrl.run"),
            "champion_before": None if champ is None else str(champ.version),
            "champion_return": champion_return, "comparison_basis": basis, "dry_run": dry_run,
            "lines": [c.line() for c in decision.checks], **decision.to_dict()}


def _current_policy_keys(root: Path, cfg: RegistryConfig) -> dict[str, str]:
    """sha256 of every trained policy directory under ``registry.policies_dir`` → its OPE key ``<run>/seed<s>``."""
    base = root / cfg.policies_dir
    out: dict[str, str] = {}
    for d in sorted(base.glob("*/seed*")) if base.is_dir() else []:
        if d.is_dir() and d.name[4:].isdigit():
            out.setdefault(dir_sha256(d), f"{d.parent.name}/{d.name}")
    return out


def _reevaluate(params: Mapping[str, Any], root: Path, model_name: str, mv: Any) -> dict[tuple[str, str], Estimate]:
    """Every OPE estimate of a registered version's bundled policy on the current test split (the evaluate stage's
    estimators and seeds; minutes: it fits the FQE critic)."""
    import mlflow

    from ogsrl.ope import stage as ope_stage

    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{mv.version}")
    policy = model.unwrap_python_model().recommender.policy
    key = f"{mv.tags.get('ogsrl.run')}/seed{mv.tags.get('ogsrl.seed')}"  # the evaluate stage's seeds for this run
    return ope_stage.evaluate_current(params, root, policy, key)


def current_returns(params: Mapping[str, Any], root: Path, cfg: RegistryConfig, cand: Any, champ: Any
                    ) -> tuple[Estimate, Estimate, str]:
    """(candidate, champion) OPE estimates of the reward return, both on the current test split, and a line saying
    where they come from.

    A version whose bundled policy (tag ``ogsrl.policy_sha256``) is one the evaluate stage scored on the current
    split (``test/sha256`` in the metrics equals the split file's hash) takes that stage's estimate; any other is
    re-evaluated here (:func:`ogsrl.ope.stage.evaluate_current`). Nothing is taken from an older run's evidence.
    """
    test_path = root / cfg.trajectories_dir / "test.parquet"
    metrics_path = root / cfg.ope_metrics
    if not test_path.is_file():
        raise FileNotFoundError(f"champion comparison: no test split at {cfg.trajectories_dir}/test.parquet")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    current = metrics.get("test/sha256") == file_sha256(test_path)
    keys = _current_policy_keys(root, cfg) if current else {}
    out: list[Estimate] = []
    how: list[str] = []
    for who, mv in (("candidate", cand), ("champion", champ)):
        key = keys.get(str(mv.tags.get(POLICY_HASH_TAG)))
        est = _interval(metrics, f"{key}/{cfg.estimator}/{cfg.return_target}") if key else None
        if est is not None:
            how.append(f"{who} v{mv.version} = {key} in {cfg.ope_metrics}")
        else:
            res = _reevaluate(params, root, cfg.model_name, mv)
            est = res.get((cfg.estimator, cfg.return_target))
            if est is None:
                raise ValueError(f"champion comparison: re-evaluating {who} v{mv.version} gave no "
                                 f"{cfg.estimator}/{cfg.return_target} estimate")
            how.append(f"{who} v{mv.version} re-evaluated")
        out.append(est)
    return out[0], out[1], f"{cfg.estimator} on the current test split ({'; '.join(how)})"


def unresolvable(client: Any, uri: str, reason: str) -> str:
    """One line saying why ``models:/<name>@<alias>`` (or ``/<version>``) does not resolve and what does exist: the
    model's aliases with their versions, or that nothing is registered under that name."""
    import mlflow

    name = uri.removeprefix("models:/").split("@")[0].split("/")[0]
    try:
        aliases = dict(client.get_registered_model(name).aliases or {})
    except mlflow.exceptions.MlflowException:
        return f"cannot resolve {uri}: no registered model {name!r} here (run `ogsrl register`, or `make run`)"
    if not aliases:
        return f"cannot resolve {uri}: {reason}; model {name!r} has no aliases"
    have = ", ".join(f"@{a} (version {v})" for a, v in sorted(aliases.items()))
    return f"cannot resolve {uri}: {reason}; model {name!r} has {have}, e.g. models:/{name}@{sorted(aliases)[0]}"


@restores_mlflow_uris
def lineage(
    params: Mapping[str, Any],
    root: Path,
    uri: str,
    *,
    verify: bool = False,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Resolve the lineage of a registered model (`ogsrl lineage <uri> [--json] [--verify]`).

    Returns:
        ``{"uri", "links", "record", "text"}`` plus, with ``verify``, ``"verified"`` (bool) and ``"differences"``
        (list of ``{path, kind, detail}``).
    """
    import mlflow

    root = Path(root).resolve()
    client, _, _ = mlflow_client(params, root, tracking_uri)
    try:
        out = lineage_mod.resolve(client, uri)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(unresolvable(client, uri, exc.message)) from exc
    out["text"] = lineage_mod.render(out)
    if verify:
        diffs = lineage_mod.verify(out["record"], root)
        out["verified"] = not diffs
        out["differences"] = [{"path": d.path, "kind": d.kind, "detail": d.detail} for d in diffs]
        for d in diffs:
            log.warning("lineage verify: %s %s (%s)", d.kind, d.path, d.detail)
    return out


def _kind(check_name: str) -> str:
    return check_name.split(":")[0]


def _why(dec: Mapping[str, Any], gate_cfg: gate_mod.GateConfig) -> str:
    """Short reason of a decision: the tightest margin (in units of its tolerance band) when promoted, else the
    failed checks."""
    checks = dec["checks"]
    if dec["promote"]:
        banded = [(c["margin"] / gate_cfg.band(_kind(c["name"])), c) for c in checks
                  if c.get("margin") is not None and gate_cfg.band(_kind(c["name"])) > 0]
        if not banded:
            return "every check passed"
        ratio, c = min(banded, key=lambda t: t[0])
        return (f"every check passed, the tightest by {ratio:.1f}x its tolerance band: {c['name']} margin "
                f"{c['margin']:+.4g} (band {gate_cfg.band(_kind(c['name'])):g})")
    return "; ".join(f"{c['name']}: {c['reason']}" for c in checks if not c["passed"])


def conclusion(model_name: str, steps: list[Mapping[str, Any]], champion: str | None, challenger: str | None,
               gate_cfg: gate_mod.GateConfig | None = None) -> str:
    """One line: what the gate decided and why, and how to serve and audit the champion and the challenger."""
    gate_cfg = gate_cfg or gate_mod.GateConfig()
    label = {"promote": "PROMOTED to champion", "reject": "REJECTED",
             "insufficient_evidence": "INSUFFICIENT EVIDENCE (no decision)"}
    parts = [f"v{d['version']} ({d.get('run')}, {d.get('role', 'candidate')}): {label[d['outcome']]}, "
             f"{_why(d, gate_cfg)}" for d in steps]
    uri = f"models:/{model_name}"
    how = []
    if champion is not None:
        how.append(f"champion is v{champion}: serve `ogsrl serve` (= {uri}@champion), audit "
                   f"`ogsrl lineage {uri}@champion --verify`")
    else:
        how.append("there is NO champion (`ogsrl serve` without --model-uri has nothing to serve)")
    if challenger is not None:
        how.append(f"challenger is v{challenger}: serve `ogsrl serve --model-uri {uri}@challenger`, audit "
                   f"`ogsrl lineage {uri}@challenger --verify`")
    return "Gate: " + " | ".join(parts) + ". Now " + "; ".join(how) + "."


@restores_mlflow_uris
def release(params: Mapping[str, Any], root: Path, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """Register and gate the baseline while there is no champion, then the candidate (`ogsrl release`, `make run`).

    Returns:
        ``{"steps": [promote result + "role", ...], "champion", "challenger", "conclusion"}``; each step also holds
        its registration (``"registered"``).
    """
    root = Path(root).resolve()
    cfg = registry_config(params)
    client, _, _ = mlflow_client(params, root, tracking_uri)
    runs: list[tuple[str, str]] = []
    if (_alias_version(client, cfg.model_name, gate_mod.CHAMPION) is None and cfg.baseline_run is not None
            and cfg.baseline_run != cfg.run):
        if (root / cfg.policies_dir / cfg.baseline_run / f"seed{cfg.seed}").is_dir():
            runs.append((cfg.baseline_run, "baseline"))
        else:
            log.warning("release: no trained baseline %r seed %d under %s; the candidate alone is gated",
                        cfg.baseline_run, cfg.seed, cfg.policies_dir)
    runs.append((cfg.run, "candidate"))
    steps: list[dict[str, Any]] = []
    for run_name, role in runs:
        reg = register(params, root, run=run_name, role=role, tracking_uri=tracking_uri)
        dec = promote(params, root, version=reg["version"], tracking_uri=tracking_uri)
        steps.append({**dec, "run": run_name, "role": role, "registered": reg})
    champ = _alias_version(client, cfg.model_name, gate_mod.CHAMPION)
    chall = _alias_version(client, cfg.model_name, gate_mod.CHALLENGER)
    champion = None if champ is None else str(champ.version)
    challenger = None if chall is None else str(chall.version)
    return {"steps": steps, "champion": champion, "challenger": challenger,
            "conclusion": conclusion(cfg.model_name, steps, champion, challenger, cfg.gate)}


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """:func:`release`, then :func:`write_report`."""
    return write_report(params, root, release(params, root))


def write_report(params: Mapping[str, Any], root: Path, out: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``registry.report`` from a :func:`release` result: the candidate's registration and decision, the
    aliases, the conclusion line and the commands to look further."""
    root = Path(root).resolve()
    cfg = registry_config(params)
    dec = out["steps"][-1]
    reg = dec["registered"]
    metrics = {
        "registry/version": int(reg["version"]),
        "registry/run_id": reg["run_id"],
        "registry/guardian_bundled": reg["guardian_bundled"],
        "registry/cost_model_bundled": reg["cost_model_bundled"],
        "registry/promoted": dec["promote"],
        "registry/outcome": dec["outcome"],
        "registry/summary": dec["summary"],
        "registry/champion": out["champion"],
        "registry/challenger": out["challenger"],
        "registry/conclusion": out["conclusion"],
        **{f"gate/{c['name']}": c["passed"] for c in dec["checks"]},
        **{f"baseline/{k}": v for s in out["steps"][:-1] for k, v in
           (("version", int(s["version"])), ("outcome", s["outcome"]))},
        "next/lineage": f"ogsrl lineage models:/{cfg.model_name}@{gate_mod.CHAMPION} --verify",
        "next/mlflow_ui": f"mlflow ui --backend-store-uri {reg['tracking_uri']}"
        if reg["tracking_uri"].startswith("sqlite:") else f"open {reg['tracking_uri']}",
        "next/report": str(root / cfg.report),
    }
    write_json(root / cfg.report, metrics)
    return metrics
