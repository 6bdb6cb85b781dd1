"""Model-based OPE anchored on the attendings (``mb_anchored``): ``mb``'s cost readings corrected by a line
fitted across the attendings' own practices (issue 12; docs/policies-and-ope.md, sessions 32 – 33).

``mb`` reads the SpO₂ cost return as a line in the truth, right in rank but shrunk towards the clinicians' level. Each
attending k's stays are an on-policy sample of k's practice, so their mean logged cost return ȳ_k needs no model.
The evaluation models replay k's own logged doses on k's stays (every split) from their logged first states — the
dose k gave at step t while the stay was logged, k's behaviour clone after it ended — and give m̄_k over the same
steps. Across the K attendings the least-squares line

    ȳ_k = c + d · m̄_k

maps a model reading to a logged value, and a policy's anchored value is ``max(0, c + d · V_mb)`` with V_mb its
``mb`` reading averaged over the evaluation fits. Only the targets listed in :class:`Config` are read this way (the
SpO₂ cost by default: anchoring the urine cost and the return made them worse on every dataset measured).

Interval (percentile, ``n_boot`` draws for each of the F fits): each draw resamples every attending's stays with
replacement (m and y of a stay paired) and fits fit f's line on its own m; the policy's reading is fit f's mean over a
resample of the evaluation stays; to it is added a normal draw with the anchors' scatter around the line beyond
their sampling noise (τ², a method-of-moments random-effects meta-regression estimate: how far a practice's true
value may sit off the line).

Assumption: the attendings see comparable patients. :func:`balance` tests it on baseline features of the stays'
first rows (by default those static within a stay: demographics; Kruskal–Wallis per feature across attendings,
Bonferroni over features); where it fails, or too few attendings have enough stays, the estimate is not made
("insufficient evidence", flagged by the evaluate stage). Physiology at the first decision step is no test of case
mix: it already carries the attending's own treatment before it (in the demo, where attendings are drawn at random,
cumulative fluid, heart rate, bilirubin and P/F ratio differ between them at p < 0.01). In MIMIC-IV the admitting
provider (``admissions.admit_provider_id``) is not the ICU attending and is not assigned at random: expect the check
to refuse there unless a better assignment is supplied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.floating]
ActFn = Callable[[FloatArray, np.random.Generator], FloatArray]
"""(obs (B, S), rng) → actions (B, A)"""


@dataclass(frozen=True, slots=True)
class Config:
    """Attending-anchored model-based OPE (params ``ope.anchored``)."""

    enabled: bool = True
    """report ``mb_anchored`` when the split carries attendings (``providers.parquet``) and ``mb`` runs"""
    targets: tuple[str, ...] = ("cost_spo2_low",)
    """cost columns read through the anchor line (the others are left to ``mb``)"""
    min_providers: int = 5
    """fewest attendings with ``min_stays`` stays for a line (fewer: insufficient evidence)"""
    min_stays: int = 30
    """an attending's fewest stays (all splits) to serve as an anchor; attendings with fewer are left out"""
    balance_alpha: float = 0.01
    """the balance check's level (Bonferroni over its features)"""
    balance_features: tuple[str, ...] = ()
    """state features whose first values must not differ between attendings (empty: the ones the world model copies
    unchanged, the stay's baseline — demographics; later states already carry the attending's own early
    treatment)"""

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("targets must list at least one cost column (or set enabled: false)")
        if self.min_providers < 3:
            raise ValueError(f"min_providers must be >= 3 (a line and its scatter), got {self.min_providers}")
        if self.min_stays < 2:
            raise ValueError(f"min_stays must be >= 2, got {self.min_stays}")
        if not 0.0 < self.balance_alpha < 1.0:
            raise ValueError(f"balance_alpha must be in (0, 1), got {self.balance_alpha}")


def logged_doses(stay: npt.ArrayLike, step: npt.ArrayLike, actions: FloatArray
                 ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """(doses (N, T, A), lengths (N,)): each stay's logged actions by position since its first step, stays in sorted
    label order; positions past a stay's end are 0.

    Args:
        stay: (R,) each row's stay label.
        step: (R,) each row's decision step; a stay's steps must be consecutive.
        actions: (R, A) the logged doses.
    """
    keys, idx = np.unique(np.asarray(stay), return_inverse=True)
    step = np.asarray(step, np.int64)
    first = np.full(len(keys), np.iinfo(np.int64).max)
    np.minimum.at(first, idx, step)
    pos = step - first[idx]
    lengths = np.bincount(idx, minlength=len(keys)).astype(np.int64)
    last = np.zeros(len(keys), np.int64)
    np.maximum.at(last, idx, pos)
    if len(np.unique(np.column_stack([idx, pos]), axis=0)) != len(idx) or (last + 1 != lengths).any():
        bad = keys[np.flatnonzero(last + 1 != lengths)[:3]] if (last + 1 != lengths).any() else keys[:0]
        raise ValueError(f"a stay's logged steps are not consecutive (repeated or missing steps; e.g. {list(bad)})")
    acts = np.asarray(actions, np.float64)
    doses = np.zeros((len(keys), int(lengths.max()), acts.shape[1]))
    doses[idx, pos] = acts
    return doses, lengths


def replayed(doses: FloatArray, lengths: npt.ArrayLike, rollouts: int, after: ActFn) -> ActFn:
    """An action function for ``rollouts`` episodes per stay (episode b starts from stay b mod N, as
    :func:`ogsrl.ope.model_based.stay_values` lays them out): the stay's logged dose at step t while the logged stay
    lasted, then ``after``'s. ``after`` is asked every step, so its draws do not depend on where stays end; each
    call is one step."""
    lengths = np.asarray(lengths)
    stay = np.tile(np.arange(len(lengths)), rollouts)
    t = 0

    def act(obs: FloatArray, rng: np.random.Generator) -> FloatArray:
        nonlocal t
        out = np.array(after(obs, rng), dtype=np.float32)
        live = t < lengths[stay]
        if live.any():
            out[live] = doses[stay[live], t]
        t += 1
        return out

    return act


@dataclass(frozen=True, slots=True)
class Balance:
    """Whether the attendings' stays start from comparable states."""

    p_min: float
    """the smallest Bonferroni-adjusted Kruskal–Wallis p-value over the state features"""
    feature: str
    """the feature it belongs to"""
    passed: bool
    """``p_min >= alpha``"""


def balance(first_states: FloatArray, provider: npt.ArrayLike, names: Sequence[str], alpha: float) -> Balance:
    """Kruskal–Wallis test per state feature of the first states across attendings, Bonferroni over the features.

    Args:
        first_states: (N, S) each stay's first state.
        provider: (N,) each stay's attending.
        names: the S feature names.
    """
    x = np.asarray(first_states, np.float64)
    who = np.asarray(provider)
    groups = [x[who == p] for p in np.unique(who)]
    p_min, worst = 1.0, names[0]
    for j, name in enumerate(names):
        cols = [g[:, j] for g in groups]
        if np.ptp(x[:, j]) == 0:  # a constant feature cannot differ
            continue
        p = min(1.0, float(stats.kruskal(*cols).pvalue) * len(names))
        if p < p_min:
            p_min, worst = p, name
    return Balance(p_min, worst, p_min >= alpha)


@dataclass(frozen=True, slots=True)
class Anchors:
    """The anchor lines of the anchored targets, with their bootstrap draws (built once per evaluation)."""

    columns: tuple[int, ...]
    """positions of the anchored targets in the models' ``[return, cost…]``"""
    m: FloatArray
    """(K, J) each attending's mean replayed model value (over fits and stays) per anchored target"""
    y: FloatArray
    """(K, J) the same stays' mean logged value"""
    stays: npt.NDArray[np.int64]
    """(K,) each attending's stays"""
    line: FloatArray
    """(J, 2) intercept c and slope d of ȳ = c + d·m̄"""
    tau: FloatArray
    """(J,) the anchors' scatter around the line beyond their sampling noise (standard deviation)"""
    boot_line: FloatArray
    """(J, F, B, 2) each fit's line on each resample of the attendings' stays"""


def _ols(m: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Intercept and slope of y on m along the last axis."""
    mc, yc = m - m.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    d = (mc * yc).sum(-1) / (mc * mc).sum(-1)
    return y.mean(-1) - d * m.mean(-1), d


def fit_anchors(m_stays: Sequence[FloatArray], y_stays: Sequence[FloatArray], columns: Sequence[int],
                rng: np.random.Generator, n_boot: int) -> Anchors:
    """The anchor lines from each attending's per-stay values.

    Args:
        m_stays: per attending, (F, N_k, 1 + C) each fit's model value of each of its stays (replayed doses).
        y_stays: per attending, (N_k, 1 + C) the same stays' logged values over the same steps.
        columns: positions of the anchored targets in ``1 + C``.
        rng: draws the stay resamples.
    """
    cols = list(columns)
    k = len(m_stays)
    if k < 3:
        raise ValueError(f"an anchor line needs >= 3 attendings, got {k}")
    ms = [np.asarray(mk, np.float64)[:, :, cols] for mk in m_stays]  # (F, N_k, J)
    ys = [np.asarray(yk, np.float64)[:, cols] for yk in y_stays]  # (N_k, J)
    m = np.stack([mk.mean((0, 1)) for mk in ms])  # (K, J)
    y = np.stack([yk.mean(0) for yk in ys])
    c, d = _ols(m.T, y.T)  # (J,)
    resid = y - (c + d * m)
    noise = np.stack([(yk - d * mk.mean(0)).var(0, ddof=1) / len(yk) for mk, yk in zip(ms, ys)])  # (K, J)
    tau = np.sqrt(np.maximum(0.0, (resid ** 2).sum(0) / (k - 2) - noise.mean(0)))
    mb, yb = [], []
    for mk, yk in zip(ms, ys):
        idx = rng.integers(0, len(yk), size=(n_boot, len(yk)))
        mb.append(mk[:, idx].mean(2))  # (F, B, J)
        yb.append(yk[idx].mean(1))  # (B, J)
    m_b = np.stack(mb, -1).transpose(2, 0, 1, 3)  # (J, F, B, K)
    y_b = np.stack(yb, -1).transpose(1, 0, 2)[:, None]  # (J, 1, B, K)
    bc, bd = _ols(m_b, np.broadcast_to(y_b, m_b.shape))
    return Anchors(tuple(cols), m, y, np.array([len(yk) for yk in ys], np.int64), np.stack([c, d], 1), tau,
                   np.stack([bc, bd], -1))


def read(anchors: Anchors, per_fit: FloatArray, rng: np.random.Generator, level: float
         ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(value, ci_low, ci_high), each (J,): a policy's anchored targets from its ``mb`` values.

    Args:
        per_fit: (F, N, 1 + C) each evaluation fit's value of each evaluation stay (the fits of the anchors).
        rng: draws the evaluation stays' resamples and the scatter.
    """
    v = np.asarray(per_fit, np.float64)[:, :, list(anchors.columns)]  # (F, N, J)
    f, n, _ = v.shape
    _, f_anchor, n_boot, _ = anchors.boot_line.shape
    if f != f_anchor:
        raise ValueError(f"the policy was read with {f} fits, the anchors with {f_anchor}")
    c, d = anchors.line[:, 0], anchors.line[:, 1]
    value = np.maximum(0.0, c + d * v.mean((0, 1)))
    idx = rng.integers(0, n, size=(n_boot, n))
    readings = v[:, idx].mean(2).transpose(2, 0, 1)  # (J, F, B)
    scatter = rng.standard_normal((len(c), 1, n_boot)) * anchors.tau[:, None, None]
    draws = anchors.boot_line[..., 0] + anchors.boot_line[..., 1] * readings + scatter
    low, high = np.quantile(np.maximum(0.0, draws).reshape(len(c), -1), [(1 - level) / 2, (1 + level) / 2], axis=1)
    return value, low, high


def usable(stays_per_provider: npt.ArrayLike, cfg: Config) -> tuple[npt.NDArray[np.bool_], str | None]:
    """(which attendings may anchor, None or why there is insufficient evidence)."""
    n = np.asarray(stays_per_provider)
    ok = n >= cfg.min_stays
    if int(ok.sum()) < cfg.min_providers:
        return ok, (f"{int(ok.sum())} attendings have >= {cfg.min_stays} stays; an anchor line needs "
                    f"{cfg.min_providers}")
    return ok, None


def describe(anchors: Anchors, names: Sequence[str]) -> dict[str, float]:
    """Flat diagnostics of the anchor lines (``anchored/<target>/…``)."""
    out: dict[str, float] = {"anchored/attendings": float(len(anchors.stays)),
                             "anchored/stays_min": float(anchors.stays.min())}
    for j, name in enumerate(names):
        out.update({f"anchored/{name}/intercept": float(anchors.line[j, 0]),
                    f"anchored/{name}/slope": float(anchors.line[j, 1]),
                    f"anchored/{name}/tau": float(anchors.tau[j]),
                    f"anchored/{name}/anchor_min": float(anchors.y[:, j].min()),
                    f"anchored/{name}/anchor_max": float(anchors.y[:, j].max())})
    return {k: v for k, v in out.items() if math.isfinite(v)}
