"""What a learner is given: :class:`TrainInputs` (logged splits, the run's columns, cost limits, and a lazy factory of
world-model environments) and how the train stage builds it.

Cost returns: a stay's cost return for cost column c is Σ_t γ^t c_t over its logged steps (γ = ``discount``); the
cost limits are expected cost returns per stay, the quantity the constrained learners bound and the OPE stage
estimates.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ogsrl import features
from ogsrl.errors import DataError

log = logging.getLogger(__name__)

WORLD_DIR = Path("data/models/world")
NEIGHBOUR_READING_STREAM = 0x4E52  # "NR": which stays a learner's nearest-neighbour reading starts from
GUARDIAN_DIR = Path("data/models/guardian/christoffel")
STATE_SETS: tuple[str, ...] = ("model", "all")
"""model: the parquet's ``ogsrl.state_features`` (params ``cohort.state_features``); all: every canonical feature
column of the trajectory table, in ``ogsrl.features.ALL`` order"""


@dataclass(frozen=True, slots=True)
class TrainInputs:
    """Everything a learner reads; built per run (the state columns depend on the run's ``state`` option)."""

    train: pd.DataFrame
    """train split, one row per (stay, step), sorted by (stay_key, step)"""
    val: pd.DataFrame
    """validation split (early stopping, model selection)"""
    state_features: tuple[str, ...]
    """the run's state columns, in order"""
    action_names: tuple[str, ...]
    """action columns (``ogsrl.features.ACTIONS``)"""
    cost_columns: tuple[str, ...]
    """per-rule cost columns (``cost_total`` excluded), the order of ``cost_limits`` and of the env's info["cost"]"""
    cost_limits: npt.NDArray[np.float64]
    """(C,) expected cost return per stay allowed for each cost column"""
    step_h: float
    """hours per decision step"""
    discount: float
    """γ of the reward and cost returns"""
    guarded: bool
    """the run trains in the guarded environment (a rejected (s, a) ends the episode with ood_penalty)"""
    make_env: Callable[[int, int, bool], Any]
    """``make_env(num_envs, seed, guarded) -> WorldModelEnv`` on the run's state columns; loads the world model and
    the guardian on first use and raises ValueError when the run's state set is not the world model's"""
    behaviour_clone: Callable[[int], Any]
    """``behaviour_clone(seed) -> SavedPolicy``: the clinicians' behaviour clone on the run's state columns for a
    seed, the model-based learners' warm start (see :class:`BehaviourClones`)"""
    run: str = ""
    """the run's name (log lines only)"""
    make_guard: Callable[[], Any] | None = None
    """``make_guard() -> guard(obs (B, S), act (B, A)) -> inside (B,)``: the calibrated guardian on the run's state
    columns (physical units), for model-free guarded runs; loaded on first use"""
    serves_fallback: bool = False
    """the run is served wrapped with the guardian fallback (``PoliciesConfig.wraps``): a rejected (s, a) gets
    ``behaviour_clone(seed)``'s action"""
    make_neighbour_reading: Callable[[int, int, int], Any] | None = None
    """``make_neighbour_reading(stays, rollouts, seed) -> ogsrl.ope.neighbour.AnchoredPool``: a simulator made of the
    train split's own transitions, anchored on the clinicians' logged returns (:meth:`EnvFactory.neighbour_reading`);
    loaded on first use"""
    action_space: Any = None
    """the hurdle density's :class:`ogsrl.agents.common.ActionSpace` (None: the canonical fluid_ml, nee_max)"""

    def __post_init__(self) -> None:
        if self.action_space is None:
            from ogsrl.agents.common import CANONICAL_SPACE

            object.__setattr__(self, "action_space", CANONICAL_SPACE)


def state_columns(state_set: str, model: tuple[str, ...], columns: pd.Index, schema: Any = None) -> tuple[str, ...]:
    """The state columns of a state set (see :data:`STATE_SETS`; a bring-your-own ``schema``: its features)."""
    if state_set == "model":
        return model
    if state_set == "all":
        if schema is not None and not schema.is_canonical:
            return tuple(schema.state_names)
        present = set(columns)
        return tuple(f for f in features.ALL if f in present)
    raise ValueError(f"unknown state set {state_set!r}; known: {list(STATE_SETS)}")


def cost_returns(frame: pd.DataFrame, cost_columns: tuple[str, ...], discount: float) -> npt.NDArray[np.float64]:
    """(N stays, C) discounted cost return of each logged stay (rows sorted by stay, then step)."""
    keys = frame["stay_key"].to_numpy()
    starts = np.r_[True, keys[1:] != keys[:-1]]
    stay = np.cumsum(starts) - 1  # (R,) running stay index
    pos = np.arange(len(keys)) - np.flatnonzero(starts)[stay]  # (R,) step within the stay
    disc = discount ** pos.astype(np.float64)
    out = np.zeros((int(stay[-1]) + 1 if len(keys) else 0, len(cost_columns)))
    for j, c in enumerate(cost_columns):
        np.add.at(out[:, j], stay, disc * frame[c].to_numpy(np.float64))
    return out


def resolve_cost_limits(train: pd.DataFrame, cost_columns: tuple[str, ...], limits: Mapping[str, float],
                        discount: float, default_fraction: float) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """Cost limits in ``cost_columns`` order: the configured value, else ``default_fraction`` × the clinicians'
    mean cost return on the train split. Returns (limits (C,), metrics naming each limit and its source)."""
    unknown = sorted(set(limits) - set(cost_columns))
    if unknown:
        raise ValueError(f"policies.cost_limits: unknown cost column(s) {unknown}; known: {list(cost_columns)}")
    clin = cost_returns(train, cost_columns, discount).mean(axis=0)
    out = np.array([limits.get(c, default_fraction * clin[j]) for j, c in enumerate(cost_columns)], dtype=np.float64)
    metrics: dict[str, Any] = {}
    for j, c in enumerate(cost_columns):
        metrics[f"cost_limit/{c}"] = float(out[j])
        metrics[f"cost_limit/{c}/from_params"] = c in limits
        metrics[f"clinicians/cost_return/{c}"] = float(clin[j])
    return out, metrics


class EnvFactory:
    """Builds :class:`ogsrl.world.env.WorldModelEnv` instances for the learners; the world model and the guardian
    are read from ``root`` once, on the first :meth:`make` call."""

    def __init__(self, root: Path, train: pd.DataFrame, env_cfg: Any, window_start_h: float, step_h: float,
                 n_steps: int, action_names: tuple[str, ...] = features.ACTIONS) -> None:
        self.root, self.train, self.env_cfg = Path(root), train, env_cfg
        self.action_names = tuple(action_names)
        self.window_start_h, self.step_h, self.n_steps = window_start_h, step_h, n_steps
        self._loaded: tuple[Any, Any, np.ndarray, np.ndarray] | None = None

    def _load(self) -> tuple[Any, Any, np.ndarray, np.ndarray]:
        if self._loaded is None:
            from ogsrl import guardian as guardian_mod
            from ogsrl.world.ensemble import WorldModel
            from ogsrl.world.env import start_states, steps_left

            world = WorldModel.load(self.root / WORLD_DIR, action_names=self.action_names)
            guardian = guardian_mod.load(self.root / GUARDIAN_DIR)
            starts = start_states(self.train, world.layout.state_features)
            horizons = np.minimum(steps_left(self.train, self.window_start_h, self.step_h, self.n_steps),
                                  self.env_cfg.horizon)
            self._loaded = (world, guardian, starts, horizons)
        return self._loaded

    def make(self, state_features: tuple[str, ...], num_envs: int, seed: int, guarded: bool,
             fallback: Callable[[int], Any] | None = None) -> Any:
        """A fresh environment with ``num_envs`` rows seeded by ``seed``; with ``guarded`` the guardian ends a
        model episode whose (s, a) leaves its set (reward ``world.env.ood_penalty``), or, with
        ``world.env.ood_mode: fallback``, hands that step to ``fallback(seed)``'s policy (the served fallback)."""
        from ogsrl.guardian import as_guard
        from ogsrl.world.env import WorldModelEnv

        world, guardian, starts, horizons = self._load()
        if tuple(state_features) != tuple(world.layout.state_features):
            raise ValueError(
                f"the run reads {len(state_features)} state features {list(state_features)}, but the world model in "
                f"{WORLD_DIR} was fitted on {list(world.layout.state_features)}; model-based runs need state: model")
        guard = as_guard(guardian, world.layout.state_features, world.layout.action_names) if guarded else None
        cfg = dataclasses.replace(self.env_cfg, seed=int(seed))
        act = None
        if guarded and cfg.ood_mode == "fallback":
            if fallback is None:
                raise ValueError("world.env.ood_mode 'fallback' needs the run's fallback policy (the clinicians' clone)")
            act = fallback(int(seed)).act
        return WorldModelEnv(world, starts, num_envs, cfg, guard=guard, horizons=horizons,
                             ood_cost_rates=self.clinician_cost_rates(world.layout.cost_names), fallback=act)

    def neighbour_reading(self, state_features: tuple[str, ...], stays: int, rollouts: int, seed: int,
                          gamma: float) -> Any:
        """:class:`ogsrl.ope.neighbour.AnchoredPool` over the train split's transitions (the world model's columns and
        death charge; k and the action weight as ``ope.neighbour``'s defaults), started from ``stays`` of its stays
        drawn with ``seed`` (all when fewer), ``rollouts`` episodes each, returns discounted by ``gamma``: a
        learner's reading of its own returns that rests on no fitted model."""
        from ogsrl.ope import neighbour
        from ogsrl.world.data import transitions_from_frame
        from ogsrl.world.env import logged_returns

        world, _, starts, horizons = self._load()
        if tuple(state_features) != tuple(world.layout.state_features):
            raise ValueError(f"the run reads {list(state_features)}, the world model's columns are "
                             f"{list(world.layout.state_features)}: a nearest-neighbour cost reading needs state: model")
        layout = world.layout
        final_hour = self.window_start_h + (self.n_steps - 1) * self.step_h
        data = transitions_from_frame(self.train, layout.state_features, layout.cost_names, "train", final_hour,
                                      self.action_names, world.death_charge, self.step_h)
        logged = logged_returns(self.train, ("reward", *layout.cost_names), horizons, gamma, "train")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), NEIGHBOUR_READING_STREAM]))
        pick = np.sort(rng.choice(len(starts), size=min(int(stays), len(starts)), replace=False))
        cfg = neighbour.Config(rollouts=int(rollouts), refits=0)
        return neighbour.anchored_pool(data, starts[pick], horizons[pick], logged[pick], layout, world.death_charge,
                                       gamma, cfg, int(rng.integers(2**31)))

    def clinician_cost_rates(self, cost_names: tuple[str, ...]) -> np.ndarray:
        """(C,) the clinicians' mean cost per logged step (train split), what an episode the guardian ends is charged
        per step left (× ``world.env.ood_cost``): the served policy then defers to the clinicians' clone."""
        missing = [c for c in cost_names if c not in self.train.columns]
        if missing:
            raise DataError(f"the world model predicts cost column(s) {missing} the train split lacks", table="train")
        return self.train[list(cost_names)].mean().to_numpy(np.float64)


def load_guard(root: Path, state_features: tuple[str, ...],
               action_names: tuple[str, ...] = features.ACTIONS) -> Callable[[Any, Any], Any]:
    """The guardian of ``root`` as a guard on the run's state columns and the actions (ValueError naming the
    missing columns when the run's state lacks a guardian input)."""
    from ogsrl import guardian as guardian_mod

    path = Path(root) / GUARDIAN_DIR
    if not (path / "guardian.json").is_file():
        raise FileNotFoundError(f"a guarded model-free run needs a calibrated guardian at {path} "
                                "(run `ogsrl calibrate-guardian`)")
    return guardian_mod.as_guard(guardian_mod.load(path), state_features, action_names)


class BehaviourClones:
    """The clinicians' behaviour clone per (state columns, seed): the fallback run's trained policy when the stage
    has registered it with :meth:`put`, else a ``bc`` fit with ``config`` (params ``policies.algorithms.bc``) on the
    train split, fitted on first use and kept."""

    def __init__(self, train: pd.DataFrame, val: pd.DataFrame, config: Any, space: Any = None) -> None:
        from ogsrl.agents.common import CANONICAL_SPACE

        self.train, self.val, self.config = train, val, config
        self.space = space if space is not None else CANONICAL_SPACE
        self._fitted: dict[tuple[tuple[str, ...], int], Any] = {}

    def put(self, state_features: tuple[str, ...], seed: int, policy: Any) -> None:
        """Register a trained behaviour clone (a :class:`ogsrl.agents.actor.SavedPolicy`)."""
        self._fitted[(tuple(state_features), int(seed))] = policy

    def get(self, state_features: tuple[str, ...], seed: int) -> Any:
        """The clone on ``state_features`` for ``seed``, fitting it on first use."""
        key = (tuple(state_features), int(seed))
        if key not in self._fitted:
            from ogsrl.agents import bc

            log.info("fitting the behaviour clone (seed %d) the model-based runs start from", seed)
            names = key[0]
            cols = self.space.columns
            self._fitted[key] = bc.fit_actor(self.config, names, bc.batch_of(self.train, names, cols),
                                             bc.batch_of(self.val, names, cols), seed, self.space)[0]
        return self._fitted[key]


def grid(meta: Mapping[str, Any], cohort: Mapping[str, Any]) -> tuple[float, float, int]:
    """(window_start_h, step_h, n_steps): the parquet metadata where present, else params ``cohort``."""
    try:
        start = float(cohort.get("window_start_h", -24.0))
        step_h = float(meta.get("step_h") or cohort.get("step_h", 4.0))
        n_steps = int(meta.get("n_steps") or cohort.get("n_steps", 20))
    except (TypeError, ValueError) as exc:
        raise DataError(f"decision grid (window_start_h, step_h, n_steps) is not numeric: {exc}",
                        table="train") from exc
    return start, step_h, n_steps


@dataclass(frozen=True, slots=True)
class FitResult:
    """What an algorithm's ``fit`` returns: the actor to serve, nothing of the learner's own state."""

    policy: Any
    """the trained :class:`ogsrl.agents.actor.SavedPolicy` (the stage sets its act_mode and provenance)"""
    metrics: dict[str, float]
    """final scalar metrics (``loss/…``, ``train/…``)"""
    history: list[dict[str, float]]
    """learning curve, one mapping per epoch/iteration with an integer-valued ``step`` key"""
