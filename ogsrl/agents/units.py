"""The train_policies grid one unit at a time: train one (run, seed) from file paths, and gather every unit.

A *unit* is one run of ``policies.runs`` for one seed of ``policies.seeds``. The optional cost-limit axis
``sweep.cost_limit_fractions`` adds, for every run but the fallback run, one run per fraction named
``<run>_lim<percent>`` (e.g. ``gmb_cpo_lim60``: the default cost limits at 0.6 × the clinicians' mean cost return);
:func:`ogsrl.agents.stage.policies_config` applies it, so every stage that reads the runs sees the same grid.

:func:`train_unit` reads ``data/trajectories/{train,val}.parquet`` (and the world model, guardian and fallback
checkpoint when the run uses them) and writes, atomically, the served checkpoint ``data/models/policies/<run>/
seed<seed>/`` and then its record ``data/models/policies/<run>/seed<seed>.unit.json``: status, the unit *key*, the
checkpoint's content hash, final metrics and learning curve. The key is

    key = SHA-256(canonical JSON of {code hash, torch/numpy versions, the run's resolved config, input file hashes})

so a unit whose record is ``ok``, whose key equals the key of the current inputs and params and whose checkpoint
still hashes to the recorded value is skipped (resume after a crash, or a rerun after an unrelated change).
:func:`gather` reads every unit's record into ``data/reports/train.json`` (``<run>/seed<s>/<k>``, ``<run>/mean/<k>``,
``<run>/sd/<k>``, cost limits) and ``data/reports/train_curves.csv``, and removes what no unit of the grid owns (stale
runs and seeds, temporary directories a killed process left). The sequential stage and the Dask sweep
(``flows/sweep.py``) both run these functions, so their outputs are the same.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ogsrl import config, env as ogsrl_env
from ogsrl.agents import common
from ogsrl.agents.inputs import GUARDIAN_DIR, WORLD_DIR, BehaviourClones, EnvFactory, TrainInputs, grid
from ogsrl.agents.inputs import load_guard, resolve_cost_limits, state_columns
from ogsrl.io import atomic_path, file_sha256, remove_temporaries, write_json

log = logging.getLogger(__name__)

RECORD_FORMAT = 1
"""version of the unit record (part of the key: a new format retrains)"""
RECORD_SUFFIX = ".unit.json"
CODE_PATHS = ("agents", "world", "guardian", "cohort/extract.py", "data/schema.py", "features.py", "io.py", "config.py")
"""the ogsrl sources a unit's result depends on (train_policies' code deps in dvc.yaml): part of the key"""


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """params.yaml section ``sweep``: how the train_policies grid is executed, and its cost-limit axis."""

    enabled: bool = False
    """train_policies runs the grid through flows/sweep.py (Prefect tasks on a Dask cluster) instead of in-process"""
    address: str = ""
    """an existing Dask scheduler (``tcp://host:8786``); empty: env OGSRL_DASK_ADDRESS, else a local cluster"""
    workers: int = 0
    """local cluster: worker processes (0: one per core)"""
    threads_per_worker: int = 1
    """torch / OpenMP threads in each worker process (one unit runs per worker at a time)"""
    retries: int = 1
    """extra attempts of a failed unit (bad input, a ValueError, is never retried)"""
    retry_delay_s: float = 2.0
    """seconds between attempts"""
    cost_limit_fractions: tuple[float, ...] = ()
    """the cost-limit axis: one run per fraction for every run but the fallback run (empty: no axis)"""

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be ≥ 0, got {self.workers}")
        if self.threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be ≥ 1, got {self.threads_per_worker}")
        if self.retries < 0 or self.retry_delay_s < 0:
            raise ValueError(f"retries and retry_delay_s must be ≥ 0, got {self.retries}, {self.retry_delay_s}")
        for i, f in enumerate(self.cost_limit_fractions):
            if not (f > 0 and math.isclose(f * 100, round(f * 100), abs_tol=1e-9)):
                raise ValueError(f"cost_limit_fractions[{i}]: {f} must be > 0 and a whole percentage (0.01 steps)")
        pct = [limit_percent(f) for f in self.cost_limit_fractions]
        if len(set(pct)) != len(pct):
            raise ValueError(f"cost_limit_fractions must be distinct, got {list(self.cost_limit_fractions)}")


def sweep_config(params: Mapping[str, Any]) -> SweepConfig:
    """Build :class:`SweepConfig` from ``params["sweep"]`` (defaults when absent)."""
    return config.build(SweepConfig, params.get("sweep") or {}, "sweep")


def limit_percent(fraction: float) -> int:
    """0.6 → 60 (the suffix of a cost-limit run's name)."""
    return int(round(fraction * 100))


def with_cost_limit_axis(cfg: Any, fractions: tuple[float, ...]) -> Any:
    """``cfg`` (a PoliciesConfig) with every run but the fallback run replaced by one run per fraction,
    ``<run>_lim<percent>``, whose ``limit_fraction`` is that fraction; ``cfg`` itself when ``fractions`` is empty."""
    if not fractions:
        return cfg
    runs = {}
    for name, spec in cfg.runs.items():
        if name == cfg.fallback_run:
            runs[name] = spec
            continue
        for f in fractions:
            variant = f"{name}_lim{limit_percent(f)}"
            if variant in cfg.runs:
                raise config.ConfigError(f"params: sweep.cost_limit_fractions: run {variant!r} would be added but "
                                         "policies.runs already has it")
            runs[variant] = dataclasses.replace(spec, limit_fraction=float(f))
    try:
        return dataclasses.replace(cfg, runs=runs)
    except ValueError as exc:
        raise config.ConfigError(f"params: sweep.cost_limit_fractions: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Unit:
    """One cell of the grid."""

    run: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.run}/seed{self.seed}"


def plan(cfg: Any) -> list[Unit]:
    """Every unit, the fallback run's first (the others of the same seed read its checkpoint)."""
    return [Unit(run, seed) for run in cfg.order() for seed in cfg.seeds]


def depends_on(cfg: Any, unit: Unit) -> Unit | None:
    """The unit that must finish before ``unit``: the fallback run of the same seed (its checkpoint is the served
    fallback and the behaviour-clone warm start), or None."""
    if unit.run == cfg.fallback_run or cfg.fallback_run not in cfg.runs:
        return None
    return Unit(cfg.fallback_run, unit.seed)


def checkpoint_dir(root: Path, unit: Unit) -> Path:
    from ogsrl.agents.stage import policy_dir

    return Path(root) / policy_dir(unit.run, unit.seed)


def record_path(root: Path, unit: Unit) -> Path:
    """``data/models/policies/<run>/seed<seed>.unit.json``."""
    ckpt = checkpoint_dir(root, unit)
    return ckpt.with_name(ckpt.name + RECORD_SUFFIX)


def tree_sha256(path: Path) -> str:
    """SHA-256 over the relative names and bytes of every file under ``path`` ("missing" when absent)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(file_sha256(f).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_sha256() -> str:
    """Hash of the ogsrl sources in :data:`CODE_PATHS` (``*.py`` and ``*.sql``) this process runs."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in CODE_PATHS:
        base = pkg / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.suffix in (".py", ".sql"))
        for f in files:
            h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class _Context:
    """What every unit of one project reads: the splits, their metadata and the params sections."""

    cfg: Any
    env_cfg: Any
    train: pd.DataFrame
    val: pd.DataFrame
    meta: dict[str, Any]
    costs: tuple[str, ...]
    window: tuple[float, float, int]


def _world_env_config(params: Mapping[str, Any]) -> Any:
    from ogsrl.world.env import EnvConfig

    world = params.get("world") or {}
    return config.build(EnvConfig, dict(world).get("env") or {}, "world.env")


def _context(params: Mapping[str, Any], root: Path) -> _Context:
    from ogsrl.agents.stage import TRAJECTORY_DIR, policies_config

    cfg = policies_config(params)
    env_cfg = _world_env_config(params)
    train, meta = common.read_split(root / TRAJECTORY_DIR / "train.parquet")
    val, meta_val = common.read_split(root / TRAJECTORY_DIR / "val.parquet")
    if meta_val["state_features"] != meta["state_features"]:
        raise ValueError("train and val parquet metadata disagree on ogsrl.state_features")
    costs = tuple(c for c in meta["cost_columns"] if c != "cost_total")  # the total is their sum, not a rule
    unknown = sorted(set(cfg.cost_limits) - set(costs))
    if unknown:
        raise ValueError(f"policies.cost_limits: unknown cost column(s) {unknown}; known: {list(costs)}")
    window = grid(meta, dict(params.get("cohort") or {}))
    return _Context(cfg, env_cfg, train, val, meta, costs, window)


def preflight(params: Mapping[str, Any], root: Path) -> list[Unit]:
    """Check what every unit needs before any trains (params, splits, cost columns, the guardian of served
    fallbacks); return the units in :func:`plan` order."""
    ctx = _context(params, Path(root))
    cfg = ctx.cfg
    guardian_dir = Path(root) / GUARDIAN_DIR
    if any(cfg.wraps(r) for r in cfg.runs) and not (guardian_dir / "guardian.json").is_file():
        raise FileNotFoundError(f"policies.serve_guardian_fallback needs a calibrated guardian at {guardian_dir} "
                                "(run `ogsrl calibrate-guardian`)")
    return plan(cfg)


def _algorithm(cfg: Any, run: str) -> Any:
    from ogsrl.agents.algorithms import ALGORITHMS

    return ALGORITHMS[cfg.runs[run].algorithm]


def unit_key(params: Mapping[str, Any], root: Path, unit: Unit,
             hashes: dict[Path, str] | None = None) -> tuple[str, dict[str, Any]]:
    """(key, what it hashes) of ``unit`` for the project at ``root``; ``hashes`` caches file hashes across units."""
    import torch

    from ogsrl.agents.stage import TRAJECTORY_DIR, policies_config

    root = Path(root)
    cache = {} if hashes is None else hashes

    def digest(path: Path) -> str:
        if path not in cache:
            cache[path] = tree_sha256(path)
        return cache[path]

    cfg = policies_config(params)
    spec = cfg.runs[unit.run]
    algo = _algorithm(cfg, unit.run)
    uses_world = algo.needs_world_model
    uses_guardian = uses_world or spec.guarded or cfg.wraps(unit.run)
    dep = depends_on(cfg, unit)
    inputs = {name: digest(root / TRAJECTORY_DIR / f"{name}.parquet") for name in ("train", "val")}
    if uses_world:
        inputs["world"] = digest(root / WORLD_DIR)
    if uses_guardian:
        inputs["guardian"] = digest(root / GUARDIAN_DIR)
    if dep is not None:
        inputs["fallback"] = tree_sha256(checkpoint_dir(root, dep))  # not cached: written during the sweep
    run_cfg: dict[str, Any] = {
        "run": unit.run, "seed": unit.seed, "algorithm": spec.algorithm, "state": spec.state,
        "guarded": spec.guarded, "config": config.to_dict(cfg.algorithm_config(unit.run)),
        "cost_limits": dict(sorted(cfg.cost_limits.items())), "limit_fraction": cfg.limit_fraction(unit.run),
        "discount": cfg.discount, "act_mode": cfg.act_mode, "wraps": cfg.wraps(unit.run),
    }
    if cfg.wraps(unit.run):
        run_cfg.update(fallback_run=cfg.fallback_run, fallback_mc_samples=cfg.fallback_mc_samples)
    if unit.run != cfg.fallback_run:
        run_cfg["bc"] = cfg.algorithms.get("bc", {})  # a warm start may fit its own behaviour clone
    if uses_world:
        run_cfg["model_eval_episodes"] = cfg.model_eval_episodes
        run_cfg["world_env"] = config.to_dict(_world_env_config(params))
        run_cfg["cohort"] = {k: (params.get("cohort") or {}).get(k) for k in ("window_start_h", "step_h", "n_steps")}
    what = {"format": RECORD_FORMAT, "code": code_sha256(),
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
            "unit": run_cfg, "inputs": inputs}
    blob = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest(), what


def read_record(root: Path, unit: Unit) -> dict[str, Any] | None:
    """The unit's record, or None when there is none (or it is unreadable)."""
    path = record_path(root, unit)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def is_current(root: Path, unit: Unit, key: str) -> bool:
    """The unit's record is ok, has ``key`` and its checkpoint still hashes to the recorded value."""
    rec = read_record(root, unit)
    return (rec is not None and rec.get("status") == "ok" and rec.get("key") == key
            and rec.get("checkpoint_sha256") == tree_sha256(checkpoint_dir(root, unit)))


def remove_stale(directory: Path, keep: set[str] | None = None, only: str = "") -> list[str]:
    """Delete what an interrupted writer left in ``directory`` (``atomic_path`` temporaries ``.<name>.*.tmp`` and
    ``.<name>.old.<pid>``, only those of ``<name>`` = ``only`` when given) and, when ``keep`` is given, every seed
    checkpoint or record not named in it. Returns the removed names."""
    removed = remove_temporaries(directory, only)
    if keep is None or not directory.is_dir():
        return removed
    for p in sorted(directory.iterdir()):
        owned = p.name.startswith("seed") and (p.is_dir() or p.name.endswith(RECORD_SUFFIX))
        if owned and p.name not in keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p.name)
    return sorted(removed)


def train_unit(params: Mapping[str, Any], root: Path, run: str, seed: int,
               threads: int | None = None) -> dict[str, Any]:
    """Train one unit (or skip it when its record is current) and write its checkpoint and record atomically.

    Args:
        params: the whole params mapping.
        root: project root (inputs and outputs are resolved under it).
        run, seed: the unit (a run of the grid, a seed of ``policies.seeds``).
        threads: torch intra-op threads for this process (None: leave as is).

    Returns:
        ``{"unit", "status": "trained" | "skipped", "key", "seconds"}``.
    """
    from ogsrl.agents.actor import GuardedPolicy, SavedPolicy, load_policy
    from ogsrl.agents.stage import model_estimate, policies_config

    started = time.perf_counter()
    root = Path(root)
    cfg = policies_config(params)
    if run not in cfg.runs:
        raise ValueError(f"policies.runs: no run {run!r} in the grid; known: {sorted(cfg.runs)}")
    if seed not in cfg.seeds:
        raise ValueError(f"policies.seeds: seed {seed} is not in {list(cfg.seeds)}")
    unit = Unit(run, int(seed))
    dep = depends_on(cfg, unit)
    if dep is not None and not is_current(root, dep, unit_key(params, root, dep)[0]):
        raise FileNotFoundError(f"unit {unit.name} needs a current checkpoint of {dep.name} (train it first)")
    key, _ = unit_key(params, root, unit)
    dest = checkpoint_dir(root, unit)
    if is_current(root, unit, key):
        log.info("train_policies: %s is up to date (key %s), skipped", unit.name, key[:12])
        return {"unit": unit.name, "status": "skipped", "key": key, "seconds": time.perf_counter() - started}
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    ogsrl_env.keep_freed_memory()
    remove_stale(dest.parent, only=dest.name)  # a killed earlier attempt's temporaries (other units' stay)
    ctx = _context(params, root)
    spec = cfg.runs[run]
    algo = _algorithm(cfg, run)
    schema = ctx.meta["schema"]
    state = state_columns(spec.state, ctx.meta["state_features"], ctx.train.columns, schema)
    if not schema.is_canonical and (spec.algorithm == "cql" or (spec.algorithm == "cql_discrete"
                                                                  and schema.action_type != "discrete")):
        raise ValueError(f"run {run!r}: algorithm {spec.algorithm} cannot take this table's "
                         f"{schema.action_type} action {list(schema.action_columns)} (cql: the canonical doses only; "
                         "cql_discrete: a discrete column or the canonical 5 x 5 action_bin)")
    space = common.action_space_of(schema, f"run {run!r} ({spec.algorithm})")
    limits, limit_metrics = resolve_cost_limits(ctx.train, ctx.costs, cfg.cost_limits, cfg.discount,
                                                cfg.limit_fraction(run))
    factory = EnvFactory(root, ctx.train, ctx.env_cfg, *ctx.window, action_names=space.columns)
    bc_config = config.build(_bc_config_type(), cfg.algorithms.get("bc", {}), "policies.algorithms.bc")
    clones = BehaviourClones(ctx.train, ctx.val, bc_config, space)
    fallback_spec = cfg.runs.get(cfg.fallback_run)
    if dep is not None and fallback_spec is not None and fallback_spec.algorithm == "bc":
        fb_state = state_columns(fallback_spec.state, ctx.meta["state_features"], ctx.train.columns, schema)
        if fb_state == state:  # the fallback run is the clinicians' clone on these columns: its warm start
            clones.put(state, seed, SavedPolicy.load(checkpoint_dir(root, dep)))
    inputs = TrainInputs(
        train=ctx.train, val=ctx.val, state_features=state, action_names=space.columns, cost_columns=ctx.costs,
        cost_limits=limits, step_h=ctx.window[1], discount=cfg.discount, guarded=spec.guarded,
        make_env=functools.partial(factory.make, state, fallback=functools.partial(clones.get, state)),
        behaviour_clone=functools.partial(clones.get, state), run=run,
        make_guard=functools.partial(load_guard, root, state, space.columns), serves_fallback=cfg.wraps(run),
        make_neighbour_reading=lambda stays, rollouts, seed: factory.neighbour_reading(state, stays, rollouts, seed,
                                                                                       cfg.discount),
        action_space=space,
    )
    alg_cfg = cfg.algorithm_config(run)
    result = algo.fit(alg_cfg, inputs, seed)
    provenance = {"run": run, "algorithm": spec.algorithm, "seed": seed, "state": spec.state,
                  "guarded": spec.guarded, "config": config.to_dict(alg_cfg), **common.training_units(schema, state)}
    pol = result.policy.with_serving(cfg.act_mode, provenance, seed)
    served: Any = pol
    if cfg.wraps(run):
        from ogsrl import guardian as guardian_mod

        guardian_dir = root / GUARDIAN_DIR
        fallback = SavedPolicy.load(checkpoint_dir(root, Unit(cfg.fallback_run, seed)))
        served = GuardedPolicy(pol, fallback, guardian_mod.load(guardian_dir), guardian_dir,
                               cfg.fallback_mc_samples, mc_seed=seed)
    served.save(dest)
    metrics = dict(result.metrics)
    if spec.limit_fraction is not None:
        metrics.update({k: v for k, v in limit_metrics.items() if k.count("/") == 1})  # cost_limit/<c>
    if algo.needs_world_model:
        env = inputs.make_env(cfg.model_eval_episodes, seed, False)
        metrics.update(model_estimate(load_policy(dest), env, seed, ctx.costs, cfg.discount))
        # the same model read on the clinicians' clone: against their logged cost return (gather's
        # clinicians/cost_return/<c>), how far the model's cost units are from the data's (no truth needed)
        env = inputs.make_env(cfg.model_eval_episodes, seed, False)
        clone = model_estimate(clones.get(state, seed), env, seed, ctx.costs, cfg.discount)
        metrics.update({k.replace("model/", "model/clinicians_clone/", 1): v for k, v in clone.items()})
    history = [{**h, "step": int(h["step"])} for h in result.history]
    seconds = time.perf_counter() - started
    write_json(record_path(root, unit), {
        "format": RECORD_FORMAT, "unit": unit.name, "status": "ok", "key": key,
        "checkpoint_sha256": tree_sha256(dest), "metrics": metrics, "history": history, "seconds": seconds,
    })
    log.info("train_policies: %s saved to %s (%.1f s)", unit.name, dest.relative_to(root), seconds)
    return {"unit": unit.name, "status": "trained", "key": key, "seconds": seconds}


def _bc_config_type() -> type:
    from ogsrl.agents.algorithms import ALGORITHMS

    return ALGORITHMS["bc"].config


def record_failure(root: Path, run: str, seed: int, error: str) -> None:
    """Record a unit that failed after its retries (``error``: the exception's class name); its checkpoint, if an
    older one exists, is left alone but no longer counts as current."""
    unit = Unit(run, int(seed))
    write_json(record_path(root, unit), {"format": RECORD_FORMAT, "unit": unit.name, "status": "failed",
                                         "error": error})


def gather(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Write ``data/reports/train.json`` and ``train_curves.csv`` from every unit's record; remove stale entries.

    Raises:
        RuntimeError: naming the units without a current checkpoint (failed, never trained, or trained on other
            inputs or params), when there are any.
    """
    from ogsrl.agents.stage import CURVES_FILE, METRICS_FILE, POLICY_DIR, seed_summary

    root = Path(root)
    ctx = _context(params, root)
    cfg = ctx.cfg
    _, metrics = resolve_cost_limits(ctx.train, ctx.costs, cfg.cost_limits, cfg.discount, cfg.default_limit_fraction)
    hashes: dict[Path, str] = {}
    missing: list[str] = []
    curves: list[dict[str, Any]] = []
    for run in cfg.order():
        per_seed: dict[int, dict[str, float]] = {}
        for seed in cfg.seeds:
            unit = Unit(run, seed)
            rec = read_record(root, unit)
            if not is_current(root, unit, unit_key(params, root, unit, hashes)[0]):
                why = "no record" if rec is None else rec.get("error") or rec.get("status", "?")
                missing.append(f"{unit.name} ({'stale' if why == 'ok' else why})")
                continue
            per_seed[seed] = rec["metrics"]
            curves.extend({"run": run, "seed": seed, "step": h["step"], **h} for h in rec["history"])
        if per_seed:
            metrics.update(seed_summary(per_seed, run))
    if missing:
        raise RuntimeError(f"train_policies: {len(missing)} unit(s) without a current checkpoint: "
                           f"{', '.join(missing)}; rerun to train them (current units are skipped)")
    base = root / POLICY_DIR
    keep_runs = set(cfg.runs)
    run_dirs = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    for run_dir in run_dirs:
        seeds = {f"seed{s}" for s in cfg.seeds} | {f"seed{s}{RECORD_SUFFIX}" for s in cfg.seeds}
        removed = remove_stale(run_dir, seeds if run_dir.name in keep_runs else set())
        if removed:
            log.info("train_policies: removed %s from %s (not in the grid, or left by an interrupted write)",
                     removed, run_dir.relative_to(root))
        if run_dir.name not in keep_runs and not any(run_dir.iterdir()):
            run_dir.rmdir()
    write_json(root / METRICS_FILE, metrics)
    with atomic_path(root / CURVES_FILE) as tmp:
        pd.DataFrame(curves).to_csv(tmp, index=False)
    return metrics


def track_unit(params: Mapping[str, Any], root: Path, run: str, seed: int, tracking_uri: str,
               experiment: str = "ogsrl", error: str | None = None) -> str:
    """Log one unit as an MLflow run named ``train-policies/<run>/seed<seed>``: params, final metrics, its learning
    curve (metric histories and a CSV artefact) and its checkpoint path and key as tags; a failed unit as a FAILED
    run carrying its error class. Returns the run id."""
    import tempfile

    from ogsrl.registry import tracking

    root = Path(root)
    unit = Unit(run, int(seed))
    rec = read_record(root, unit) or {}
    unit_params = {"unit": {"run": run, "seed": seed}, **params}
    result: dict[str, Any] = {}
    if error is None and rec.get("status") == "ok":
        result = {**rec["metrics"], "checkpoint": str(checkpoint_dir(root, unit).relative_to(root)),
                  "key": rec["key"], "train/unit_seconds": rec["seconds"]}
    # log_stage_run records only the error's class name: an exception class of that name stands in for it
    exc = type(error, (Exception,), {})() if error is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        plots = []
        if rec.get("history"):
            table = Path(tmp) / "train_curves.csv"
            pd.DataFrame([{"run": run, "seed": seed, "step": h["step"], **h} for h in rec["history"]]).to_csv(table, index=False)
            plots.append(table)
        return tracking.log_stage_run(f"train-policies/{unit.name}", unit_params, result, root, tracking_uri,
                                      experiment, error=exc, plots=plots)


SWEEP_DIR = Path(".sweep")
"""under the project root: the params files handed to ``python -m flows.sweep`` (workers read them)"""


def launch_sweep(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Run the grid through the Prefect/Dask sweep, ``python -m flows.sweep``, as a child process of this checkout,
    and return the metrics it gathered (``data/reports/train.json``).

    The params are written to ``<root>/.sweep/params-<sha256>.yaml`` (workers read them from the shared project
    directory). The child inherits this process's environment (``OGSRL_DASK_ADDRESS``, ``PREFECT_API_URL``, …).
    """
    import os
    import subprocess
    import sys

    import yaml

    from ogsrl.agents.stage import METRICS_FILE

    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "flows" / "sweep.py").is_file():
        raise FileNotFoundError(f"sweep.enabled needs flows/sweep.py of an ogsrl checkout beside the package "
                                f"(looked in {checkout})")
    root = Path(root).resolve()
    text = yaml.safe_dump(dict(params), sort_keys=True)
    params_file = root / SWEEP_DIR / f"params-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    with atomic_path(params_file) as tmp:
        tmp.write_text(text, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-m", "flows.sweep", "--params", str(params_file), "--root", str(root)],
                          cwd=checkout, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the sweep (python -m flows.sweep) failed with exit {done.returncode}; rerun to resume "
                           "(units whose outputs are current are skipped)")
    return json.loads((root / METRICS_FILE).read_text(encoding="utf-8"))


__all__ = ["SweepConfig", "Unit", "depends_on", "gather", "is_current", "launch_sweep", "plan", "preflight", "read_record",
           "record_failure", "record_path", "remove_stale", "sweep_config", "track_unit", "train_unit", "unit_key",
           "with_cost_limit_axis"]
