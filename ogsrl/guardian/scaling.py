"""Robust per-column scaling of guardian inputs to roughly [-1, 1].

Each column ``j`` is optionally compressed with the signed log ``t(x) = sign(x)·log1p(|x|)`` (opt-in, see
:data:`HEAVY_TAILED`), then mapped affinely so that the fit split's ``q`` and ``1 − q`` quantiles land on
−1 and +1: ``z = 2·(t(x) − lo) / (hi − lo) − 1``. With ``q = 0`` this is the OGSRL authors' min/max scaling.

Degenerate columns are handled explicitly, never silently:

* quantile range zero but min < max (e.g. a binary flag that is almost always 0): fall back to min/max;
* two-valued column (a binary flag): min/max, so its levels map to exactly −1 and +1;
* constant column (min == max on the fit split): centred on the constant with half-width 1 in (log-)raw units, and
  a warning is logged. Any other value then lies outside the support of the fit data, which the guardians treat as
  out of distribution (the Christoffel ridge keeps the moment matrix invertible).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ogsrl.errors import DataError

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.floating]

HEAVY_TAILED: tuple[str, ...] = ("urine_step", "urine_cum", "fluid_cum", "bilirubin")
"""Heavy-tailed state columns one *may* log-compress (``log1p_columns``). The default compresses nothing: on
demo-like data, log-compressed cumulative volumes let the guardian accept 44–87 % of states pushed 1.5–2.5× beyond
the data's maximum (a multiplicative shift is a small additive one after the log), against 0.1 % on the linear
scale; compressed actions hid 1.5–3× the 99.9th-percentile fluid volume the same way."""


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    """How guardian inputs are scaled."""

    quantile: float = 0.001
    """q: the fit split's q and 1−q quantiles map to −1 and +1 (0 = min/max, the authors' scaling)"""
    log1p_columns: tuple[str, ...] = ()
    """columns compressed with sign(x)·log1p(|x|) first, e.g. HEAVY_TAILED (names not among the inputs are
    ignored); default none, see HEAVY_TAILED"""

    def __post_init__(self) -> None:
        if not (0.0 <= self.quantile < 0.5):
            raise ValueError(f"quantile must lie in [0, 0.5), got {self.quantile}")


def check_matrix(x: Any, feature_names: tuple[str, ...], where: str) -> npt.NDArray[np.float64]:
    """Validate a guardian input batch ``(B, D)`` and return it as float64.

    Raises DataError naming the column and rows of any NaN/inf, or a shape mismatch with ``feature_names``.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1 and arr.size == len(feature_names):
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != len(feature_names):
        raise DataError(
            f"expected a (B, {len(feature_names)}) array with columns {list(feature_names)}, got shape {arr.shape}",
            table=where,
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        rows = np.flatnonzero(bad[:, col])
        raise DataError("NaN or infinite values", table=where, column=feature_names[col], rows=rows.tolist())
    return arr


@dataclass(frozen=True, slots=True)
class Scaler:
    """A fitted column scaling ``x (B, D) → z (B, D)``."""

    feature_names: tuple[str, ...]
    """input columns, in order"""
    log_mask: npt.NDArray[np.bool_]
    """(D,) columns compressed with the signed log"""
    lo: npt.NDArray[np.float64]
    """(D,) value (after the log) mapped to −1"""
    hi: npt.NDArray[np.float64]
    """(D,) value (after the log) mapped to +1"""
    constant: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """(D,) columns that were constant on the fit split (scaled value 0)"""
    two_valued: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """(D,) columns with exactly two distinct values on the fit split (binary flags; scaled to −1 / +1)"""

    @classmethod
    def fit(cls, x: FloatArray, feature_names: tuple[str, ...], cfg: ScalingConfig) -> Scaler:
        """Fit on the (validated) fit split ``x (N, D)``."""
        log_mask = np.array([n in cfg.log1p_columns for n in feature_names], dtype=bool)
        t = _signed_log(x, log_mask)
        lo = np.quantile(t, cfg.quantile, axis=0) if cfg.quantile > 0 else t.min(axis=0)
        hi = np.quantile(t, 1.0 - cfg.quantile, axis=0) if cfg.quantile > 0 else t.max(axis=0)
        tmin, tmax = t.min(axis=0), t.max(axis=0)
        narrow = hi - lo <= 1e-12 * np.maximum(1.0, np.abs(hi))
        lo = np.where(narrow, tmin, lo)
        hi = np.where(narrow, tmax, hi)
        constant = tmax - tmin <= 1e-12 * np.maximum(1.0, np.abs(tmax))
        if constant.any():
            cols = [feature_names[j] for j in np.flatnonzero(constant)]
            log.warning("guardian inputs: constant column(s) %s on the fit split; any other value is OOD", cols)
        centre = 0.5 * (tmin + tmax)
        lo = np.where(constant, centre - 1.0, lo)
        hi = np.where(constant, centre + 1.0, hi)
        two_valued = ~constant & ((t == tmin) | (t == tmax)).all(axis=0)
        # a two-valued column always maps to exactly −1 / +1 (min/max; quantiles either equal them or fell back)
        lo = np.where(two_valued, tmin, lo)
        hi = np.where(two_valued, tmax, hi)
        return cls(
            tuple(feature_names), log_mask, lo.astype(np.float64), hi.astype(np.float64), constant, two_valued
        )

    def transform(self, x: FloatArray) -> npt.NDArray[np.float64]:
        """``z = 2·(t(x) − lo)/(hi − lo) − 1`` for ``x (B, D)``."""
        t = _signed_log(np.asarray(x, dtype=np.float64), self.log_mask)
        return (t - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable torch version of :meth:`transform` (same dtype/device as ``x``)."""
        mask = torch.as_tensor(self.log_mask, device=x.device)
        # sign(x)·log1p(|x|) written branch-wise so the gradient at x = 0 is 1 (torch's d|x|/dx there is 0)
        signed_log = torch.where(x >= 0, torch.log1p(x.clamp(min=0)), -torch.log1p((-x).clamp(min=0)))
        t = torch.where(mask, signed_log, x)
        lo = torch.as_tensor(self.lo, dtype=x.dtype, device=x.device)
        scale = torch.as_tensor(2.0 / (self.hi - self.lo), dtype=x.dtype, device=x.device)
        return (t - lo) * scale - 1.0

    def inverse_transform(self, z: FloatArray) -> npt.NDArray[np.float64]:
        """Map scaled points ``z (B, D)`` back to input units."""
        t = (np.asarray(z, dtype=np.float64) + 1.0) * (0.5 * (self.hi - self.lo)) + self.lo
        return np.where(self.log_mask, np.sign(t) * np.expm1(np.abs(t)), t)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "feature_names": list(self.feature_names),
            "log_mask": self.log_mask.tolist(),
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
            "constant": self.constant.tolist(),
            "two_valued": self.two_valued.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(d["feature_names"]),
            np.asarray(d["log_mask"], dtype=bool),
            np.asarray(d["lo"], dtype=np.float64),
            np.asarray(d["hi"], dtype=np.float64),
            np.asarray(d["constant"], dtype=bool),
            np.asarray(d["two_valued"], dtype=bool),
        )

    def sample_box(self, rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
        """``n`` uniform draws ``(n, D)`` from the scaled box [−1, 1]^D, two-valued columns drawn from {−1, +1}
        and constant columns fixed at 0 (so binary flags do not make the volume proxy trivially zero)."""
        z = rng.uniform(-1.0, 1.0, size=(n, len(self.feature_names)))
        k = int(self.two_valued.sum())
        if k:
            z[:, self.two_valued] = rng.choice(np.array([-1.0, 1.0]), size=(n, k))
        z[:, self.constant] = 0.0
        return z


def _signed_log(x: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    if not mask.any():
        return x
    out = x.copy()
    out[:, mask] = np.sign(x[:, mask]) * np.log1p(np.abs(x[:, mask]))
    return out
