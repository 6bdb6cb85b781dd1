"""Choosing a policy under cost limits, and scoring that choice against the truth.

The decision a team makes from OPE is constrained: among P candidate policies, deploy the one with the highest
estimated return whose estimated cost return is within every limit d_j,

    choice = argmax_i V̂_i   subject to   Ĉ_ij ≤ d_j  for every cost j,

where Ĉ is an estimator's point value or, for a choice that must hold with confidence, its interval's upper bound.
On the demo the truth (V_i, C_ij) scores the choice: its **regret** is (V_best − V_choice) / (max V − min V) with
V_best the best truly-within-limits policy, its **excess** max_j (C_choice,j − d_j) / d_j (> 0: it breaks a limit),
and per cost the estimator's **false within** (Ĉ_ij ≤ d_j < C_ij: an unsafe policy read as safe) and **missed**
(C_ij ≤ d_j < Ĉ_ij: a safe policy read as unsafe) counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ogsrl.ope.estimate import FloatArray

__all__ = ["Choice", "Feasibility", "constrained_choice", "feasibility", "score_choice", "within_limits"]


def _check(value: FloatArray, costs: FloatArray, limits: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    v, c, d = (np.asarray(x, dtype=np.float64) for x in (value, costs, limits))
    if v.ndim != 1 or c.ndim != 2 or c.shape[0] != v.shape[0] or d.shape != (c.shape[1],):
        raise ValueError(f"value (P,), costs (P, C) and limits (C,) expected, got {v.shape}, {c.shape}, {d.shape}")
    if not np.isfinite(d).all() or (d < 0).any():
        raise ValueError(f"cost limits must be finite and ≥ 0, got {d.tolist()}")
    return v, c, d


def within_limits(costs: FloatArray, limits: FloatArray) -> np.ndarray:
    """(P,) bool: the rows of ``costs`` (P, C) that are all ≤ ``limits`` (C,); a NaN cost is not within (no
    evidence)."""
    c, d = np.asarray(costs, dtype=np.float64), np.asarray(limits, dtype=np.float64)
    return np.isfinite(c).all(axis=1) & (c <= d).all(axis=1)


def constrained_choice(value: FloatArray, costs: FloatArray, limits: FloatArray) -> int | None:
    """Index of the highest ``value`` (P,) among rows whose ``costs`` (P, C) are all ≤ ``limits`` (C,); None when no
    row is within every limit. A row with a NaN value or cost is never chosen (no evidence); ties go to the first."""
    v, c, d = _check(value, costs, limits)
    eligible = np.isfinite(v) & within_limits(c, d)
    if not eligible.any():
        return None
    return int(np.argmax(np.where(eligible, v, -np.inf)))


@dataclass(frozen=True, slots=True)
class Choice:
    """A constrained choice scored against the truth."""

    chosen: int | None
    """the chosen row; None: the estimates put no policy within every limit"""
    best: int | None
    """the truly best row within every limit; None: no policy truly is"""
    regret: float
    """(V_best − V_chosen) / (max V − min V) over all P rows; NaN when either is None"""
    excess: float
    """max_j (C_chosen,j − d_j) / d_j, > 0 when the choice breaks a limit (d_j = 0: the absolute excess); NaN when
    nothing was chosen"""


def score_choice(chosen: int | None, true_value: FloatArray, true_costs: FloatArray, limits: FloatArray) -> Choice:
    """Score a choice (an index or None) by the true values (P,) and costs (P, C) under ``limits`` (C,)."""
    v, c, d = _check(true_value, true_costs, limits)
    if not (np.isfinite(v).all() and np.isfinite(c).all()):
        raise ValueError("true values and costs must be finite")
    best = constrained_choice(v, c, d)
    span = float(v.max() - v.min())
    regret = float("nan")
    if chosen is not None and best is not None:
        regret = float(v[best] - v[chosen]) / span if span > 0 else 0.0
    excess = float("nan")
    if chosen is not None:
        gap = c[chosen] - d
        excess = float(np.max(np.where(d > 0, gap / np.where(d > 0, d, 1.0), gap)))
    return Choice(chosen=chosen, best=best, regret=regret, excess=excess)


@dataclass(frozen=True, slots=True)
class Feasibility:
    """How an estimator's reading of one cost sorts the policies against its limit, against the truth's sorting."""

    read_within: int
    """policies whose estimate is ≤ the limit"""
    truly_within: int
    """policies whose true cost is ≤ the limit"""
    false_within: tuple[int, ...]
    """rows read within the limit that truly break it (the unsafe error)"""
    missed: tuple[int, ...]
    """rows truly within the limit read above it, or not read at all (the lost ones)"""


def feasibility(estimate: FloatArray, truth: FloatArray, limit: float) -> Feasibility:
    """Sort P policies by one cost's ``estimate`` (P,) and ``truth`` (P,) against ``limit``; a NaN estimate reads as
    not within (no evidence)."""
    e, t = np.asarray(estimate, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if e.shape != t.shape or e.ndim != 1:
        raise ValueError(f"estimate and truth must share one (P,) shape, got {e.shape}, {t.shape}")
    if not np.isfinite(t).all() or not np.isfinite(limit) or limit < 0:
        raise ValueError(f"truth must be finite and the limit finite and ≥ 0, got limit {limit}")
    read = np.isfinite(e) & (e <= limit)
    true = t <= limit
    return Feasibility(read_within=int(read.sum()), truly_within=int(true.sum()),
                       false_within=tuple(int(i) for i in np.flatnonzero(read & ~true)),
                       missed=tuple(int(i) for i in np.flatnonzero(~read & true)))
