"""Stage ``train_policies``: train every run of ``policies.runs`` once per seed of ``policies.seeds``.

A *run* names an algorithm of :data:`ogsrl.agents.algorithms.ALGORITHMS` plus options (state set, guarded
environment, per-run overrides of the algorithm's Config), so a guarded variant is configuration, not code.

Reads ``data/trajectories/{train,val}.parquet`` and, only for runs that train in the world model,
``data/models/world/`` and ``data/models/guardian/``. Writes, per run and seed, the *served* policy to
``data/models/policies/<run>/seed<seed>/`` (what registry, ``ogsrl truth`` and OPE load with
:func:`ogsrl.agents.load_policy`): the actor checkpoint itself, or — with ``policies.serve_guardian_fallback`` and
for every run but the fallback run — a guarded checkpoint (actor + fallback actor of the same seed + guardian copy).
Also writes ``data/reports/train.json`` (metrics ``<run>/seed<seed>/<metric>``, ``<run>/mean/<metric>``,
``<run>/sd/<metric>``, cost limits) and ``data/reports/train_curves.csv`` (columns run, seed, step, …).

Model-based runs (``needs_world_model``) start from the clinicians' behaviour clone of the same seed — the fallback
run's policy when it is a ``bc`` run on the same state columns, else a ``bc`` fit with ``policies.algorithms.bc`` —
and their metrics include ``model/return``, ``model/cost_return/<c>`` and ``model/episode_length``: the served
policy's mean returns over ``policies.model_eval_episodes`` world-model episodes (unguarded environment: the served
policy carries its own guardian fallback), to set beside OPE and the simulator's true values.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ogsrl import config, features
from ogsrl.agents import common
from ogsrl.agents.actor import ACT_MODES, GuardedPolicy, SavedPolicy, load_policy
from ogsrl.agents.binned import BinnedPolicy
from ogsrl.agents.algorithms import ALGORITHMS
from ogsrl.agents.inputs import GUARDIAN_DIR, STATE_SETS, BehaviourClones, EnvFactory, TrainInputs, grid
from ogsrl.agents.inputs import load_guard, resolve_cost_limits
from ogsrl.agents.inputs import state_columns
from ogsrl.io import atomic_path, write_json

log = logging.getLogger(__name__)

TRAJECTORY_DIR = Path("data/trajectories")
POLICY_DIR = Path("data/models/policies")
METRICS_FILE = Path("data/reports/train.json")
CURVES_FILE = Path("data/reports/train_curves.csv")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""a run name is a plain directory name: letters, digits, '_' and '-', starting with a letter or digit"""
RESERVED = frozenset({"mean", "sd"})


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One run: an algorithm and its options."""

    algorithm: str
    """a key of ALGORITHMS"""
    state: Literal["model", "all"] = "model"
    """model: cohort.state_features (the world model's and the guardian's); all: every canonical feature in the
    trajectory table"""
    guarded: bool = False
    """train in the world model with the guardian (a rejected (s, a) ends the episode with world.env.ood_penalty)"""
    overrides: dict[str, Any] = field(default_factory=dict)
    """per-run values of the algorithm's Config fields (over policies.algorithms.<algorithm>)"""


@dataclass(frozen=True, slots=True)
class PoliciesConfig:
    """params.yaml section ``policies``."""

    seeds: tuple[int, ...] = (42,)
    """every run is trained once per seed"""
    runs: dict[str, RunConfig] = field(default_factory=lambda: {"soc": RunConfig("bc")})
    """run name → algorithm + options; checkpoints go to data/models/policies/<run>/seed<seed>/"""
    algorithms: dict[str, dict[str, Any]] = field(default_factory=dict)
    """algorithm name → its Config fields (defaults for every run of that algorithm)"""
    cost_limits: dict[str, float] = field(default_factory=dict)
    """cost column → expected cost return per stay allowed; a missing column gets default_limit_fraction × the
    clinicians' mean cost return on the train split"""
    default_limit_fraction: float = 0.8
    """see cost_limits"""
    discount: float = 1.0
    """γ of the learners' reward and cost returns (1: the undiscounted returns OPE and `ogsrl truth` report)"""
    act_mode: Literal["sample", "mode"] = "sample"
    """what a served policy does: sample (draw from π, the density OPE scores) | mode (deterministic; no OPE)"""
    serve_guardian_fallback: bool = True
    """serve every run but fallback_run wrapped so that an (s, a) the guardian rejects gets the fallback's action"""
    fallback_run: str = "soc"
    """the run deferred to (behaviour cloning = the clinicians); trained for every seed before the others"""
    fallback_mc_samples: int = 256
    """draws per state of the Monte-Carlo estimate of P(guardian rejects π's action | s) in the served log_prob"""
    model_eval_episodes: int = 2000
    """world-model episodes of the served policy behind each model-based run's ``model/…`` metrics"""

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(self.seeds)}")
        if not self.runs:
            raise ValueError("runs must name at least one run")
        for name, run in self.runs.items():
            if not RUN_NAME.fullmatch(name) or name in RESERVED:
                raise ValueError(f"runs.{name}: a run name must match {RUN_NAME.pattern} and not be "
                                 f"{sorted(RESERVED)}")
            if run.algorithm not in ALGORITHMS:
                raise ValueError(f"runs.{name}.algorithm: unknown algorithm {run.algorithm!r}; known: "
                                 f"{sorted(ALGORITHMS)}")
            if run.state not in STATE_SETS:
                raise ValueError(f"runs.{name}.state: unknown state set {run.state!r}; known: {list(STATE_SETS)}")
        unknown = sorted(set(self.algorithms) - set(ALGORITHMS))
        if unknown:
            raise ValueError(f"algorithms.{unknown[0]}: unknown algorithm; known: {sorted(ALGORITHMS)}")
        for col, limit in self.cost_limits.items():
            if not limit >= 0:
                raise ValueError(f"cost_limits.{col}: must be ≥ 0, got {limit}")
        if not 0 < self.default_limit_fraction:
            raise ValueError(f"default_limit_fraction must be > 0, got {self.default_limit_fraction}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}")
        if self.act_mode not in ACT_MODES:
            raise ValueError(f"act_mode must be one of {list(ACT_MODES)}, got {self.act_mode!r}")
        if self.fallback_mc_samples < 1:
            raise ValueError(f"fallback_mc_samples must be ≥ 1, got {self.fallback_mc_samples}")
        if self.model_eval_episodes < 1:
            raise ValueError(f"model_eval_episodes must be ≥ 1, got {self.model_eval_episodes}")
        if self.serve_guardian_fallback and set(self.runs) - {self.fallback_run} and self.fallback_run not in self.runs:
            raise ValueError(f"fallback_run: {self.fallback_run!r} is not a run (needed by serve_guardian_fallback); "
                             f"known: {sorted(self.runs)}")
        for name in self.runs:
            self.algorithm_config(name)  # typos in the algorithm hyper-parameters fail here, naming the key

    def algorithm_config(self, run: str) -> Any:
        """The run's algorithm Config: policies.algorithms.<algorithm> with the run's overrides on top."""
        spec = self.runs[run]
        shared = self.algorithms.get(spec.algorithm, {})
        cfg = config.build(ALGORITHMS[spec.algorithm].config, shared, f"policies.algorithms.{spec.algorithm}")
        if not spec.overrides:
            return cfg
        return config.build(ALGORITHMS[spec.algorithm].config, {**shared, **spec.overrides},
                            f"policies.runs.{run}.overrides")

    def order(self) -> list[str]:
        """Runs in training order: the fallback run first (others are wrapped with its checkpoints)."""
        first = [self.fallback_run] if self.fallback_run in self.runs else []
        return first + [r for r in self.runs if r not in first]

    def wraps(self, run: str) -> bool:
        """Whether ``run`` is served with the guardian fallback."""
        return self.serve_guardian_fallback and run != self.fallback_run


def policies_config(params: Mapping[str, Any]) -> PoliciesConfig:
    """Build :class:`PoliciesConfig` from ``params["policies"]``."""
    return config.build(PoliciesConfig, config.section(params, "policies"), "policies")


def policy_dir(run: str, seed: int) -> Path:
    """Relative checkpoint directory of a run and seed."""
    return POLICY_DIR / run / f"seed{seed}"


def seed_summary(per_seed: Mapping[int, Mapping[str, float]], run: str) -> dict[str, Any]:
    """``<run>/seed<s>/<k>`` for each seed plus ``<run>/mean/<k>`` and ``<run>/sd/<k>`` (sample SD, 0 for one
    seed) over the seeds, for every numeric key present for all seeds."""
    out: dict[str, Any] = {}
    for seed, m in per_seed.items():
        out.update({f"{run}/seed{seed}/{k}": v for k, v in m.items()})
    keys = set.intersection(*(set(m) for m in per_seed.values())) if per_seed else set()
    for k in sorted(keys):
        vals = [m[k] for m in per_seed.values()]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            arr = np.asarray(vals, dtype=np.float64)
            out[f"{run}/mean/{k}"] = float(arr.mean())
            out[f"{run}/sd/{k}"] = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return out


def model_estimate(policy: Any, env: Any, seed: int, cost_columns: tuple[str, ...],
                   discount: float) -> dict[str, float]:
    """Mean discounted return, cost returns and episode length of ``policy`` (its ``act``, on its own feature
    columns) over one batch of episodes of a :class:`ogsrl.world.env.WorldModelEnv`: ``model/…`` metrics."""
    from ogsrl.world.env import rollout

    world = tuple(env.model.layout.state_features)
    missing = [n for n in policy.feature_names if n not in world]
    if missing:
        raise ValueError(f"the served policy reads {missing}, which the world model does not predict")
    cols = [world.index(n) for n in policy.feature_names]
    ro = rollout(env, lambda obs, rng: policy.act(obs[:, cols], rng), seed)
    disc = discount ** np.arange(ro.rew.shape[0], dtype=np.float64)[:, None]  # (T, 1)
    act = ro.active.astype(np.float64) * disc
    out = {"model/return": float((ro.rew * act).sum(0).mean()), "model/episode_length": float(ro.active.sum(0).mean())}
    names = tuple(env.model.layout.cost_names)
    for c in cost_columns:
        out[f"model/cost_return/{c}"] = float((ro.cost[..., names.index(c)] * act).sum(0).mean())
    return out


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The short form of the stage's metrics the CLI prints: cost limits, and per run the seed means of the
    model-estimated returns, the validation NLL and the training time (everything else: data/reports/train.json)."""
    keep = re.compile(r"[^/]+/mean/(model/.*|loss/val_nll|train/seconds|train/iterations_per_s)")
    out: dict[str, Any] = {k: v for k, v in metrics.items() if k.startswith("cost_limit/") and "/from_params" not in k}
    out.update({k: v for k, v in metrics.items() if keep.fullmatch(k)})
    out["metrics_file"] = str(METRICS_FILE)
    return out


def _world_env_config(params: Mapping[str, Any]) -> Any:
    from ogsrl.world.env import EnvConfig

    world = params.get("world") or {}
    return config.build(EnvConfig, dict(world).get("env") or {}, "world.env")


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Train every run × seed and write checkpoints, metrics and curves under ``root``."""
    cfg = policies_config(params)
    env_cfg = _world_env_config(params)
    root = Path(root)
    train, meta = common.read_split(root / TRAJECTORY_DIR / "train.parquet")
    val, meta_val = common.read_split(root / TRAJECTORY_DIR / "val.parquet")
    if meta_val["state_features"] != meta["state_features"]:
        raise ValueError("train and val parquet metadata disagree on ogsrl.state_features")
    costs = tuple(c for c in meta["cost_columns"] if c != "cost_total")  # the total is their sum, not a rule
    limits, metrics = resolve_cost_limits(train, costs, cfg.cost_limits, cfg.discount, cfg.default_limit_fraction)
    window_start_h, step_h, n_steps = grid(meta, dict(params.get("cohort") or {}))
    factory = EnvFactory(root, train, env_cfg, window_start_h, step_h, n_steps)
    bc_config = config.build(ALGORITHMS["bc"].config, cfg.algorithms.get("bc", {}), "policies.algorithms.bc")
    clones = BehaviourClones(train, val, bc_config)
    guardian_dir = root / GUARDIAN_DIR
    if any(cfg.wraps(r) for r in cfg.runs) and not (guardian_dir / "guardian.json").is_file():
        raise FileNotFoundError(f"policies.serve_guardian_fallback needs a calibrated guardian at {guardian_dir} "
                                "(run `ogsrl calibrate-guardian`)")
    curves: list[dict[str, Any]] = []
    for name in cfg.order():
        spec = cfg.runs[name]
        algo = ALGORITHMS[spec.algorithm]
        state = state_columns(spec.state, meta["state_features"], train.columns)
        inputs = TrainInputs(
            train=train, val=val, state_features=state, action_names=features.ACTIONS, cost_columns=costs,
            cost_limits=limits, step_h=step_h, discount=cfg.discount, guarded=spec.guarded,
            make_env=functools.partial(factory.make, state),
            behaviour_clone=functools.partial(clones.get, state), run=name,
            make_guard=functools.partial(load_guard, root, state),
        )
        alg_cfg = cfg.algorithm_config(name)
        per_seed: dict[int, dict[str, float]] = {}
        for seed in cfg.seeds:
            result = algo.fit(alg_cfg, inputs, seed)
            provenance = {"run": name, "algorithm": spec.algorithm, "seed": seed, "state": spec.state,
                          "guarded": spec.guarded, "config": config.to_dict(alg_cfg)}
            pol = result.policy.with_serving(cfg.act_mode, provenance, seed)
            if name == cfg.fallback_run and spec.algorithm == "bc":
                clones.put(state, seed, result.policy)
            dest = root / policy_dir(name, seed)
            served: SavedPolicy | BinnedPolicy | GuardedPolicy = pol
            if cfg.wraps(name):
                from ogsrl import guardian as guardian_mod

                fallback = SavedPolicy.load(root / policy_dir(cfg.fallback_run, seed))
                served = GuardedPolicy(pol, fallback, guardian_mod.load(guardian_dir), guardian_dir,
                                       cfg.fallback_mc_samples, mc_seed=seed)
            served.save(dest)
            per_seed[seed] = dict(result.metrics)
            if algo.needs_world_model:
                env = inputs.make_env(cfg.model_eval_episodes, seed, False)
                per_seed[seed].update(model_estimate(load_policy(dest), env, seed, costs, cfg.discount))
            curves.extend({"run": name, "seed": seed, **h, "step": int(h["step"])} for h in result.history)
            log.info("train_policies: %s seed %d saved to %s", name, seed, policy_dir(name, seed))
        metrics.update(seed_summary(per_seed, name))
    write_json(root / METRICS_FILE, metrics)
    with atomic_path(root / CURVES_FILE) as tmp:
        pd.DataFrame(curves).to_csv(tmp, index=False)
    return metrics


__all__ = ["PoliciesConfig", "RunConfig", "model_estimate", "policies_config", "policy_dir", "run", "seed_summary",
           "summary"]
