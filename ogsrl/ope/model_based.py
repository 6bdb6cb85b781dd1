"""Model-based OPE (Paduraru 2013; Fu et al. 2021): a policy's value in world models fitted on the evaluation split.

With M models fitted to the evaluation stays (the first on all of them, the rest on stay-bootstrap resamples), the
value of π_e for target k (the reward, each cost) is

    V_m(s_{i,0}) = (1/R) Σ_r Σ_{t < H_i} γ^t x_{k,t}^{(i,r,m)},   a_t ~ π_e(·|s_t),  s_{t+1} ~ model m(·|s_t, a_t)

averaged over the evaluation stays i and the models m (:func:`ogsrl.ope.bootstrap.bagged_interval`, which also gives
the interval: the stays' bootstrap SE plus the spread between models). Each of the R episodes from a stay's first
state runs for the H_i decision steps that stay had left in the window — as the truth and the logged returns stop
there — and ends early on a sampled death (which charges the death reward, as the data do) or discharge. Costs are
expected costs (probabilities), so a cost return is an expected count: by default (``cost_reader: model``) each
step's P(c = 1 | s_t, a_t) is the model's cost head; with ``boosted`` it comes from gradient-boosted trees fitted per
cost on the full-data fit's rows (early stopping on its held-out stays), the world models only stepping the states
(docs/policies-and-ope.md, "Model-based OPE's cost readings").

The models are the learners' ensemble (``world.model``) but fitted on the evaluation split alone: no learner was
trained against them, so a policy cannot have learned their errors. Each fit holds a share of the stays out for early
stopping and the choice of elites. What the interval does not see is the models' shared bias — above all their
extrapolation to doses the clinicians never gave; the benchmark's coverage check measures it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from ogsrl.ope.bootstrap import bagged_interval
from ogsrl.world.data import Layout, Transitions
from ogsrl.world.ensemble import Mode, StepSample, WorldModel
from ogsrl.world.env import EnvConfig, WorldModelEnv, rollout

FloatArray = npt.NDArray[np.floating]
ActFn = Callable[[FloatArray, np.random.Generator], FloatArray]
"""(obs (B, S) in the models' state columns, rng) → actions (B, A)"""


@dataclass(frozen=True, slots=True)
class Config:
    """Model-based OPE (params ``ope.model``)."""

    enabled: bool = True
    """report the ``mb`` estimator (False: skip the fits)"""
    refits: int = 3
    """models refitted on stay-bootstrap resamples of the evaluation stays, beside the full-data one (0: none;
    else ≥ 2): bagging and the between-model part of the interval"""
    rollouts: int = 8
    """model episodes per evaluation stay's first state, per model"""
    holdout: float = 0.2
    """share of the evaluation stays each fit holds out for early stopping and elite selection"""
    mode: Mode = "random_elite"
    """how a step uses the ensemble (:class:`ogsrl.world.env.EnvConfig`)"""
    cost_reader: Literal["model", "boosted"] = "model"
    """where a step's cost probability comes from: each world model's cost head, or gradient-boosted trees per cost
    on (s, a) fitted once beside the full-data model (:class:`BoostedCosts`: ranks the costs better, but reads the
    SpO₂ cost low near the clinicians' level — docs/policies-and-ope.md, session 27)"""

    def __post_init__(self) -> None:
        if self.refits == 1 or self.refits < 0:
            raise ValueError(f"refits must be 0 or >= 2 (one refit has no spread), got {self.refits}")
        if self.rollouts < 1:
            raise ValueError(f"rollouts must be >= 1, got {self.rollouts}")
        if not 0.0 < self.holdout < 0.5:
            raise ValueError(f"holdout must be in (0, 0.5), got {self.holdout}")
        if self.cost_reader not in ("boosted", "model"):
            raise ValueError(f"cost_reader must be 'boosted' or 'model', got {self.cost_reader!r}")


BOOST = {"max_iter": 300, "learning_rate": 0.05, "max_leaf_nodes": 31, "n_iter_no_change": 10}
"""the trees' settings (scikit-learn's defaults but a slower rate); early stopping on the fit's held-out stays"""


CostTrees = tuple[HistGradientBoostingClassifier | float, ...]
"""one fitted classifier per cost, or the constant rate of a cost never (or always) seen"""


def fit_cost_trees(fit: Transitions, stop: Transitions, seed: int) -> CostTrees:
    """Gradient-boosted trees for P(c = 1 | s, a) of each cost column of ``fit`` (early stopping on ``stop``)."""
    x, x_stop = np.column_stack([fit.obs, fit.act]), np.column_stack([stop.obs, stop.act])
    trees: list[HistGradientBoostingClassifier | float] = []
    for c in range(fit.cost.shape[1]):
        y, y_stop = fit.cost[:, c] > 0.5, stop.cost[:, c] > 0.5
        if y.all() or not y.any() or y_stop.all() or not y_stop.any():
            trees.append(float(y.mean()))
            continue
        clf = HistGradientBoostingClassifier(**BOOST, early_stopping=True, random_state=seed)
        trees.append(clf.fit(x, y, X_val=x_stop, y_val=y_stop))
    return tuple(trees)


class BoostedCosts:
    """A fitted world model whose steps read each cost's probability from gradient-boosted trees on (s, a).

    The model still steps the state, the reward, death and discharge (its draws unchanged, so the reward return
    is the model's own); only ``cost_prob`` is replaced. A cost never (or always) seen in the fit rows reads its
    constant rate.
    """

    def __init__(self, model: WorldModel, trees: CostTrees) -> None:
        if len(trees) != len(model.layout.cost_names):
            raise ValueError(f"one classifier per cost {list(model.layout.cost_names)}, got {len(trees)}")
        self.model, self.trees = model, trees

    @property
    def layout(self) -> Layout:
        return self.model.layout

    @property
    def elites(self) -> np.ndarray:
        return self.model.elites

    @property
    def death_charge(self) -> float:
        return self.model.death_charge

    def cost_prob(self, obs: np.ndarray, act: np.ndarray) -> npt.NDArray[np.float32]:
        """(B, C) P(c = 1 | s, a) of each cost."""
        x = np.column_stack([obs, act]).astype(np.float64)
        with threadpool_limits(1, user_api="openmp"):  # a few thousand rows a step: threads only contend
            cols = [np.full(len(x), t) if isinstance(t, float) else t.predict_proba(x)[:, 1] for t in self.trees]
        return np.column_stack(cols).astype(np.float32) if cols else np.zeros((len(x), 0), np.float32)

    def step(self, obs: np.ndarray, act: np.ndarray, mode: Mode, rng: np.random.Generator,
             member: np.ndarray | None = None) -> StepSample:
        s = self.model.step(obs, act, mode, rng, member)
        p = self.cost_prob(np.asarray(obs), np.asarray(act))
        return dataclasses.replace(s, cost_prob=p, cost_prob_max=p, cost_prob_sd=np.zeros_like(p))


def held_out(n_stays: int, cfg: Config) -> int:
    """Stays each fit holds out (at least one)."""
    return max(1, int(round(cfg.holdout * n_stays)))


def enough_stays(n_stays: int, cfg: Config) -> bool:
    """Whether ``n_stays`` evaluation stays leave >= 2 to fit on beside the held-out ones."""
    return n_stays - held_out(n_stays, cfg) >= 2


def stays_of(stay_labels: np.ndarray) -> list[npt.NDArray[np.int64]]:
    """Row positions of each stay, stays in sorted label order."""
    _, stay = np.unique(stay_labels, return_inverse=True)
    order = np.argsort(stay, kind="stable")
    return np.split(order.astype(np.int64), np.flatnonzero(np.diff(stay[order])) + 1)


def fit_models(data: Transitions, stay_labels: npt.ArrayLike, new_model: Callable[[int], WorldModel], cfg: Config,
               seed: np.random.SeedSequence) -> tuple[WorldModel | BoostedCosts, ...]:
    """The evaluation models: one fitted on every stay but a held-out share, then ``cfg.refits`` fitted on
    stay-bootstrap resamples of those stays (the held-out share and its role unchanged); with ``cfg.cost_reader``
    ``boosted`` every model reads its costs from the same trees (:class:`BoostedCosts`), fitted on the full-data
    fit's rows, so the refits' spread is the models' (trees refitted on the resamples, repeated stays and all, read
    the SpO₂ cost lower than the full-data trees on the same refit's states in 11 of 12 cases, by up to 11 %: four
    seed-58 learners × three refits).

    Args:
        data: the evaluation split's transitions.
        stay_labels: (R,) the stay each row belongs to (any labels: keys, numbers).
        new_model: seed → an unfitted ensemble (the learners' architecture).
        seed: every split, resample and initialisation derives from it.
    """
    labels = np.asarray(stay_labels)
    if labels.shape != (len(data),):
        raise ValueError(f"stay_labels must be ({len(data)},), one per row, got {labels.shape}")
    stays = stays_of(labels)
    n_hold = held_out(len(stays), cfg)
    if not enough_stays(len(stays), cfg):
        raise ValueError(f"model-based OPE needs >= {n_hold + 2} evaluation stays, got {len(stays)}")
    s_split, s_resample, s_init = seed.spawn(3)
    perm = np.random.default_rng(s_split).permutation(len(stays))
    held, kept = [stays[i] for i in perm[:n_hold]], [stays[i] for i in perm[n_hold:]]
    stop = data.take(np.concatenate(held))
    init_seeds = s_init.generate_state(1 + cfg.refits)
    rng = np.random.default_rng(s_resample)
    models = []
    for m in range(1 + cfg.refits):
        picks = np.arange(len(kept)) if m == 0 else rng.integers(0, len(kept), size=len(kept))
        model = new_model(int(init_seeds[m]))
        model.fit(data.take(np.concatenate([kept[i] for i in picks])), stop)
        models.append(model)
    if cfg.cost_reader == "model":
        return tuple(models)
    trees = fit_cost_trees(data.take(np.concatenate(kept)), stop, int(init_seeds[0]))
    return tuple(BoostedCosts(m, trees) for m in models)


def stay_values(model: WorldModel | BoostedCosts, starts: FloatArray, horizons: npt.NDArray[np.integer], act: ActFn,
                gamma: float, rollouts: int, mode: Mode, env_seed: int, act_rng: np.random.Generator
                ) -> npt.NDArray[np.float64]:
    """(N, 1 + C) mean discounted reward and cost returns of ``rollouts`` model episodes from each start state.

    ``env_seed`` seeds the model's draws (transitions, deaths, discharges): pass the same one for every policy (common
    random numbers); ``act_rng`` is the policy's own generator.
    """
    n = len(starts)
    horizons = np.asarray(horizons, dtype=np.int64)
    env = WorldModelEnv(model, starts, n * rollouts, EnvConfig(horizon=int(horizons.max()), mode=mode),
                        horizons=horizons)
    ro = rollout(env, act, env_seed, start_index=np.tile(np.arange(n), rollouts), act_rng=act_rng)
    disc = gamma ** np.arange(ro.rew.shape[0], dtype=np.float64)
    live = ro.active.astype(np.float64) * disc[:, None]  # (T, B)
    ret = (ro.rew * live).sum(0)
    cost = (ro.cost * live[..., None]).sum(0)
    return np.column_stack([ret, cost]).reshape(rollouts, n, -1).mean(0)


def estimate(models: tuple[WorldModel | BoostedCosts, ...], starts: FloatArray, horizons: npt.NDArray[np.integer],
             act: ActFn, gamma: float, cfg: Config, env_seed: int, act_rng: np.random.Generator, boot_rng: np.random.Generator,
             n_boot: int, level: float, combine: FloatArray | None = None
             ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(value, ci_low, ci_high), each (1 + C,): the reward return, then each cost return, of ``act``'s policy.

    ``combine`` ((1 + C, K), optional): report K linear combinations of those returns instead (e.g. a column of
    ones on the costs for the total cost return), their intervals from the same per-stay values.
    """
    return bagged(per_model_values(models, starts, horizons, act, gamma, cfg, env_seed, act_rng), boot_rng, n_boot,
                  level, combine)


def per_model_values(models: tuple[WorldModel | BoostedCosts, ...], starts: FloatArray,
                     horizons: npt.NDArray[np.integer], act: ActFn, gamma: float, cfg: Config, env_seed: int,
                     act_rng: np.random.Generator) -> list[FloatArray]:
    """Each model's (N, 1 + C) :func:`stay_values` of ``act``'s policy, the models in order (one ``act_rng``)."""
    return [stay_values(m, starts, horizons, act, gamma, cfg.rollouts, cfg.mode, env_seed, act_rng) for m in models]


def bagged(per_model: list[FloatArray], boot_rng: np.random.Generator, n_boot: int, level: float,
           combine: FloatArray | None = None, bag_value: bool = True) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(value, ci_low, ci_high) from each model's (N, 1 + C) per-stay values: the first model's, with the refits'
    spread (:func:`ogsrl.ope.bootstrap.bagged_interval`, ``bag_value`` as there); ``combine`` as in
    :func:`estimate`."""
    if combine is not None:
        per_model = [v @ np.asarray(combine, dtype=np.float64) for v in per_model]
    refits = np.stack(per_model[1:]) if len(per_model) > 2 else None
    return bagged_interval(per_model[0], refits, boot_rng, n_boot, level, bag_value)
