"""Safety-cost rules: per-step indicator costs c(s') = 1[feature(s') op threshold] (OGSRL's CMDP constraints).

Rules come from ``params.yaml: costs.rules`` (defaults: SpO2 < 92 %, urine output < 0.5 mL/kg/h, as in
arXiv 2505.16242). A rule names a canonical feature of :mod:`ogsrl.features` or the derived ``urine_rate``
(= urine_step / weight / observed hours of the step, mL/kg/h; the observed hours are step_h except on a last step
cut short by ICU discharge or death) and states its unit, which must equal the feature's unit so a threshold
written for a fraction can never be applied to a percentage. Costs are evaluated on the *next* state of a step
(docs/data-contract.md §2). The same rules apply to logged trajectories (DataFrame) and to world-model
predictions (arrays).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ogsrl import features as F
from ogsrl.config import build

OPS: dict[str, Callable[[Any, Any], Any]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                              ">=": operator.ge}
DERIVED_UNITS: dict[str, str] = {"urine_rate": "mL/kg/h"}
"""Derived features a rule may name, with their unit."""
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def feature_unit(name: str) -> str:
    """Unit of a canonical or derived feature (ValueError for unknown names)."""
    if name in DERIVED_UNITS:
        return DERIVED_UNITS[name]
    if name in F.BY_NAME:
        return F.BY_NAME[name].unit
    raise ValueError(f"unknown cost feature {name!r}; known: {sorted([*F.ALL, *DERIVED_UNITS])}")


@dataclass(frozen=True, slots=True)
class CostRule:
    """One indicator cost: 1 when ``feature op threshold`` holds on the next state, else 0."""

    name: str = "spo2_low"
    """column suffix: the cost column is ``cost_<name>`` (lower-case identifier)"""
    feature: str = "spo2"
    """canonical feature (ogsrl.features.ALL) or derived ``urine_rate`` (urine_step / weight / step_h)"""
    op: str = "<"
    """comparison: one of <, <=, >, >="""
    threshold: float = 92.0
    """threshold in ``units``"""
    units: str = "%"
    """unit of the threshold; must equal the feature's unit in ogsrl.features (e.g. spo2 in %)"""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"cost rule name {self.name!r} must be a lower-case identifier")
        unit = feature_unit(self.feature)
        if self.op not in OPS:
            raise ValueError(f"cost rule {self.name!r}: op {self.op!r} not in {list(OPS)}")
        if not np.isfinite(self.threshold):
            raise ValueError(f"cost rule {self.name!r}: threshold must be finite, got {self.threshold}")
        if self.units != unit:
            raise ValueError(f"cost rule {self.name!r}: units {self.units!r} do not match feature "
                             f"{self.feature!r}, which is in {unit!r}")


@dataclass(frozen=True, slots=True)
class CostsConfig:
    """The ``costs:`` section of params.yaml."""

    rules: tuple[CostRule, ...] = (
        CostRule("spo2_low", "spo2", "<", 92.0, "%"),
        CostRule("urine_low", "urine_rate", "<", 0.5, "mL/kg/h"),
    )
    """cost rules; each adds a ``cost_<name>`` column, and ``cost_total`` is their sum"""

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        if not names:
            raise ValueError("at least one cost rule is required")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate cost rule name(s) {dup}")

    @property
    def columns(self) -> tuple[str, ...]:
        """Cost column names in rule order (without ``cost_total``)."""
        return tuple(f"cost_{r.name}" for r in self.rules)


def build_costs(params: Mapping[str, Any]) -> CostsConfig:
    """CostsConfig from the full params mapping (section ``costs``)."""
    return build(CostsConfig, params.get("costs"), "costs")


def _values(get: Callable[[str], np.ndarray], feature: str, step_h: float,
            hours: np.ndarray | None = None) -> np.ndarray:
    if feature == "urine_rate":
        if not step_h > 0:
            raise ValueError(f"step_h must be > 0, got {step_h}")
        weight = np.maximum(get("weight"), F.BY_NAME["weight"].low)  # floor at the plausible minimum (25 kg)
        if hours is None:
            return get("urine_step") / weight / step_h
        # urine over the observed part of the step; too short a part gives no rate (NaN: no rule holds)
        h = np.asarray(hours, dtype=np.float64)
        ok = h >= min(F.MIN_URINE_H, step_h)
        return np.where(ok, get("urine_step") / weight / np.where(ok, h, 1.0), np.nan)
    return get(feature)


def cost_matrix(x: np.ndarray, feature_names: Sequence[str], rules: Sequence[CostRule], step_h: float = 4.0
                ) -> np.ndarray:
    """Costs for arrays of (predicted) states.

    Args:
        x: states, (B, S) or (E, B, S); last axis ordered as ``feature_names``.
        feature_names: S names from ogsrl.features.ALL.
        rules: cost rules.
        step_h: step length in hours (for ``urine_rate``).

    Returns:
        costs (..., R) float32, one column per rule, each 0 or 1: c_r = 1[x_f op θ].
    """
    x = np.asarray(x, dtype=np.float64)
    index = {n: i for i, n in enumerate(feature_names)}
    if x.shape[-1] != len(index):
        raise ValueError(f"x has {x.shape[-1]} features on its last axis but {len(index)} names were given")

    def get(name: str) -> np.ndarray:
        if name not in index:
            raise ValueError(f"cost rules need feature {name!r}, absent from {list(feature_names)}")
        v = x[..., index[name]]
        if np.isnan(v).any():
            raise ValueError(f"feature {name!r} has NaN values; costs are undefined")
        return v

    out = np.zeros((*x.shape[:-1], len(rules)), dtype=np.float32)
    for j, r in enumerate(rules):
        out[..., j] = OPS[r.op](_values(get, r.feature, step_h), r.threshold)
    return out


def apply_cost_rules(states: pd.DataFrame, rules: Sequence[CostRule], step_h: float = 4.0,
                     prefix: str = "", hours: np.ndarray | None = None) -> pd.DataFrame:
    """One float32 column ``cost_<name>`` per rule plus ``cost_total`` (their sum), same index as ``states``.

    ``prefix`` selects the state columns, e.g. ``"next_"`` to evaluate on the next state of a trajectory row.
    ``hours``: observed hours of each row's step (default ``step_h`` for all): ``urine_rate`` divides the urine by
    them, and is undefined (no cost) below ``features.MIN_URINE_H``.
    """
    if hours is not None and np.shape(hours) != (len(states),):
        raise ValueError(f"hours must have one value per row ({len(states)}), got shape {np.shape(hours)}")
    def get(name: str) -> np.ndarray:
        col = prefix + name
        if col not in states.columns:
            raise ValueError(f"cost rules need column {col!r}, absent from the states table")
        v = states[col].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(v).any():
            rows = np.flatnonzero(np.isnan(v))[:5].tolist()
            raise ValueError(f"column {col!r} has NaN values (rows {rows}); costs are undefined")
        return v

    out = pd.DataFrame(index=states.index)
    total = np.zeros(len(states), dtype=np.float32)
    for r in rules:
        with np.errstate(invalid="ignore"):
            c = OPS[r.op](_values(get, r.feature, step_h, hours), r.threshold).astype(np.float32)
        out[f"cost_{r.name}"] = c
        total += c
    out["cost_total"] = total
    return out
