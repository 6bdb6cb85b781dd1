"""The one interval type and the episode padding shared by OPE, the simulator's truth and the promotion gate.

* :class:`Estimate` — a point estimate, its confidence interval and the effective sample size behind it (Kish ESS of
  the importance weights for OPE, the number of patients for a plain mean such as the truth).
* :class:`Episodes` / :func:`pad_by_stay` — a trajectory table (rows sorted by stay and step) as ``(N, T)`` arrays,
  padded as an absorbing state: every value 0 after a stay's last step, ``mask`` False there.
* :func:`hull` — the interval hull of several estimators' intervals (``hull_fqe_wdr`` in the OPE metrics).
* :func:`consensus` — the mean of several estimators' values inside the hull of their intervals (``consensus`` in the
  OPE metrics); :func:`cautious` — that mean of a return lowered by the estimators' disagreement, for choosing between
  policies (``cautious``).
* :func:`policy_seed` — a bootstrap seed derived from the base seed and a policy key, so adding or removing a policy
  never changes another policy's random draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its confidence interval and effective sample size."""

    value: float
    """the estimate on the full sample"""
    ci_low: float
    """lower confidence bound"""
    ci_high: float
    """upper confidence bound"""
    ess: float = math.nan
    """effective sample size: Kish (Σw)²/Σw² of the weights for OPE, the sample size for a plain mean (NaN: not
    known)"""

    def covers(self, x: float) -> bool:
        """Whether ``ci_low ≤ x ≤ ci_high``."""
        return bool(self.ci_low <= x <= self.ci_high)

    def to_dict(self) -> dict[str, float]:
        """JSON-ready ``{value, ci_low, ci_high, ess}``."""
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "ess": self.ess}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        """Inverse of :meth:`to_dict` (``ess`` optional)."""
        return cls(float(d["value"]), float(d["ci_low"]), float(d["ci_high"]), float(d.get("ess", math.nan)))


@dataclass(frozen=True, slots=True)
class Episodes:
    """Per-step logged quantities padded to a rectangle, one row per stay."""

    mask: npt.NDArray[np.bool_]
    """(N, T) True on real steps"""
    values: dict[str, FloatArray]
    """name → (N, T) per-step values (reward, costs, log-ratios), 0 on padding"""
    rows: npt.NDArray[np.int64] | None = None
    """(N, T) index of the source row of each real step, −1 on padding (None when not recorded)"""


def pad_by_stay(stay_keys: npt.ArrayLike, columns: dict[str, npt.ArrayLike]) -> Episodes:
    """Rows sorted by (stay, step) → padded ``(N, T)`` arrays; stays in order of first appearance.

    Raises ValueError when a stay's rows are not contiguous (the table must be sorted by stay).
    """
    keys = np.asarray(stay_keys)
    if keys.ndim != 1 or keys.size == 0:
        raise ValueError("pad_by_stay: stay_keys must be a non-empty 1-D array")
    starts = np.r_[True, keys[1:] != keys[:-1]]
    stay_idx = np.cumsum(starts) - 1  # (R,) running stay number
    n = int(stay_idx[-1]) + 1
    if len(np.unique(keys)) != n:
        raise ValueError("pad_by_stay: rows of a stay are not contiguous; sort by (stay_key, step) first")
    first = np.nonzero(starts)[0]
    pos = np.arange(keys.size) - first[stay_idx]  # (R,) position within the stay
    t = int(pos.max()) + 1
    mask = np.zeros((n, t), dtype=bool)
    mask[stay_idx, pos] = True
    rows = np.full((n, t), -1, dtype=np.int64)
    rows[stay_idx, pos] = np.arange(keys.size)
    out = {}
    for name, col in columns.items():
        arr = np.asarray(col, dtype=np.float64)
        if arr.shape != keys.shape:
            raise ValueError(f"pad_by_stay: column {name!r} has shape {arr.shape}, expected {keys.shape}")
        padded = np.zeros((n, t))
        padded[stay_idx, pos] = arr
        out[name] = padded
    return Episodes(mask=mask, values=out, rows=rows)


def policy_seed(base_seed: int, key: str) -> np.random.SeedSequence:
    """SeedSequence of ``(base_seed, sha256(key))``: independent streams per policy key (e.g. ``gmb_cpo/seed42``),
    stable across processes (no Python ``hash``) and unaffected by which other policies are evaluated."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return np.random.SeedSequence([int(base_seed), *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def hull(primary: Estimate, *others: Estimate) -> Estimate:
    """The interval hull of estimates of one quantity: ``[min of the ci_lows, max of the ci_highs]``.

    A bar on the hull (a lower bound above a threshold, an upper bound below one) is cleared only when every part's
    interval clears it, so the hull covers the truth whenever any part does: coverage(hull) ≥ max coverage(parts).
    Value: ``primary``'s (the part with the smallest error); ESS: the smallest finite part's (NaN if none).
    """
    parts = (primary, *others)
    ess = [p.ess for p in parts if math.isfinite(p.ess)]
    return Estimate(primary.value, min(p.ci_low for p in parts), max(p.ci_high for p in parts),
                    min(ess) if ess else math.nan)


def consensus(parts: Sequence[Estimate]) -> Estimate:
    """The consensus of ``m ≥ 2`` estimates of one quantity: their mean value inside the hull of their intervals.

    V̂ = (1/m) Σ_j V̂_j, interval [min_j ℓ_j, max_j u_j] (ℓ_j, u_j: part j's bounds).

    Equal weights, nothing fitted: parts of different classes (a nearest-neighbour simulator, fitted world models, a
    fitted critic) err differently policy by policy; on the demo's benchmark sets their mean ranked policies more
    steadily than any one of them (docs/policies-and-ope.md). The interval is the hull's (:func:`hull`), so it covers
    the truth whenever any part does, and it holds the mean. ESS: the smallest finite part's (NaN if none).

    Raises ValueError with fewer than two parts or a non-finite value.
    """
    if len(parts) < 2:
        raise ValueError(f"consensus needs at least two estimates, got {len(parts)}")
    values = [p.value for p in parts]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"consensus of non-finite values {values}")
    return dataclasses.replace(hull(*parts), value=math.fsum(values) / len(values))


def cautious(parts: Sequence[Estimate], k: float) -> Estimate:
    """The :func:`consensus` of a return lowered by ``k`` times its parts' disagreement: a score to choose a policy by.

    V̂_c = V̂ − k·s, with V̂ = (1/m) Σ_j V̂_j the parts' mean and s = √((1/m) Σ_j (V̂_j − V̂)²) their spread (population
    standard deviation); interval: the hull of the parts' intervals, as the consensus'.

    Estimators of different classes disagree where at least one of them extrapolates (a fitted critic at doses the
    data rarely shows, world models scoring a policy trained in a world model), and there they have read returns too
    high. Ranking by V̂_c prefers a policy the estimators agree on to one that only some read well: the pessimism
    offline RL applies to an ensemble's disagreement, here across estimator classes. Deliberately biased (by k·s):
    report the consensus as the value, choose by this. For the returns only: on the benchmark, choosing the lowest
    cost by the consensus plus its spread did worse than by the consensus (docs/policies-and-ope.md, issue 12).
    ESS: the consensus'. Raises ValueError for ``k < 0`` or where :func:`consensus` does.
    """
    if not (math.isfinite(k) and k >= 0):
        raise ValueError(f"cautious: k must be a finite number ≥ 0, got {k}")
    mean = consensus(parts)
    return dataclasses.replace(mean, value=mean.value - k * float(np.std([p.value for p in parts])))
