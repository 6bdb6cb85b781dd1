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

Each (run, seed) is one *unit* (:mod:`ogsrl.agents.units`): trained from file paths, skipped when its checkpoint
and record are current for the same inputs, code and config, and gathered into the reports at the end. In-process
units run one after another; with params ``sweep.enabled`` they run as Prefect tasks on Dask (``flows/sweep.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ogsrl import config
from ogsrl.agents.actor import ACT_MODES
from ogsrl.agents.algorithms import ALGORITHMS
from ogsrl.agents.inputs import STATE_SETS

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
    limit_fraction: float | None = None
    """this run's default_limit_fraction (None: policies.default_limit_fraction); the cost-limit axis
    ``sweep.cost_limit_fractions`` sets it on the runs it adds"""


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
            if run.limit_fraction is not None and not run.limit_fraction > 0:
                raise ValueError(f"runs.{name}.limit_fraction must be > 0, got {run.limit_fraction}")
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

    def limit_fraction(self, run: str) -> float:
        """The share of the clinicians' mean cost return that is ``run``'s default cost limit."""
        own = self.runs[run].limit_fraction
        return self.default_limit_fraction if own is None else own


def policies_config(params: Mapping[str, Any]) -> PoliciesConfig:
    """Build :class:`PoliciesConfig` from ``params["policies"]``, with the cost-limit axis of params
    ``sweep.cost_limit_fractions`` applied (see :func:`ogsrl.agents.units.with_cost_limit_axis`)."""
    from ogsrl.agents import units

    cfg = config.build(PoliciesConfig, config.section(params, "policies"), "policies")
    return units.with_cost_limit_axis(cfg, units.sweep_config(params).cost_limit_fractions)


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
    """The short form of the stage's metrics the CLI prints: cost limits, the clinicians' logged cost returns, and
    per run the seed means of the model-estimated returns (the run's and its clinicians' clone's), the validation
    NLL and the training time (everything else: data/reports/train.json)."""
    keep = re.compile(r"[^/]+/mean/(model/.*|loss/val_nll|train/seconds|train/iterations_per_s)")
    out: dict[str, Any] = {k: v for k, v in metrics.items()
                           if k.startswith(("cost_limit/", "clinicians/cost_return/")) and "/from_params" not in k}
    out.update({k: v for k, v in metrics.items() if keep.fullmatch(k)})
    out["metrics_file"] = str(METRICS_FILE)
    return out


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Train every unit of the grid (run × seed) and write checkpoints, metrics and curves under ``root``.

    In-process, one unit after another (:func:`ogsrl.agents.units.train_unit`, skipping units whose outputs are
    current), then :func:`ogsrl.agents.units.gather`; with params ``sweep.enabled`` the grid runs through the
    Prefect/Dask sweep instead (``python -m flows.sweep``, a separate process: the library imports no Prefect).
    """
    from ogsrl.agents import units

    root = Path(root)
    if units.sweep_config(params).enabled:
        return units.launch_sweep(params, root)
    for unit in units.preflight(params, root):
        units.train_unit(params, root, unit.run, unit.seed)
    return units.gather(params, root)


__all__ = ["PoliciesConfig", "RunConfig", "model_estimate", "policies_config", "policy_dir", "run", "seed_summary",
           "summary"]
