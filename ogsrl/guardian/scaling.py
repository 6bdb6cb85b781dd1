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

Declared bounds (``bounds: schema``). Instead of the data's quantiles, a column whose schema declares a finite
``[low, high]`` maps ``t(low) → −1`` and ``t(high) → +1``; a column whose declared bound is infinite or absent keeps
the data quantiles, and so do binary flags and constant columns (a flag's two levels must land on ±1). Which one
each column used is recorded in :attr:`Scaler.source` (``data`` | ``schema`` | ``one_hot``).

Discrete action ids (one-hot). A column holding a discrete action id ``a ∈ {0 … n−1}`` (schema ``action.type:
discrete``) is not ordinal: it is expanded to ``n`` indicators ``z_c = +1 if a = c else −1`` (the same ±1 levels as a
binary flag), so the scaled matrix is ``(B, D')`` with ``D' = D − 1 + n``. Callers keep passing the id column. An id
that is not an integer in ``0 … n−1`` encodes as all indicators −1 and :meth:`Scaler.valid` is False for its row;
the guardians score such rows +inf (rejected).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Literal

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
    bounds: Literal["data", "schema"] = "data"
    """data: every column from the fit split's quantiles; schema: from the table schema's declared [low, high]
    where both are finite (else the data's), see the module docstring"""

    def __post_init__(self) -> None:
        if not (0.0 <= self.quantile < 0.5):
            raise ValueError(f"quantile must lie in [0, 0.5), got {self.quantile}")
        if self.bounds not in ("data", "schema"):
            raise ValueError(f"bounds must be 'data' or 'schema', got {self.bounds!r}")


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
    """A fitted column scaling ``x (B, D) → z (B, D')`` (``D' = D`` without discrete columns)."""

    feature_names: tuple[str, ...]
    """input columns, in order"""
    log_mask: npt.NDArray[np.bool_]
    """(D,) columns compressed with the signed log"""
    lo: npt.NDArray[np.float64]
    """(D,) value (after the log) mapped to −1 (a discrete column: 0, unused)"""
    hi: npt.NDArray[np.float64]
    """(D,) value (after the log) mapped to +1 (a discrete column: n − 1, unused)"""
    constant: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """(D,) columns that were constant on the fit split (scaled value 0)"""
    two_valued: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """(D,) columns with exactly two distinct values on the fit split (binary flags; scaled to −1 / +1)"""
    levels: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """(D,) n for a discrete action-id column (one-hot, n indicators), 0 for a numeric column (empty: none;
    files older than the one-hot encoding)"""
    source: tuple[str, ...] = ()
    """(D,) where each column's [lo, hi] came from: data | schema | one_hot (empty: data; older files)"""

    @classmethod
    def fit(cls, x: FloatArray, feature_names: tuple[str, ...], cfg: ScalingConfig,
            discrete: Mapping[str, int] | None = None,
            declared: Mapping[str, tuple[float, float]] | None = None) -> Scaler:
        """Fit on the (validated) fit split ``x (N, D)``.

        ``discrete``: {column: n} of discrete action-id columns (one-hot encoded; their fit values must be ids
        0 … n−1). ``declared``: {column: (low, high)} of the schema, used where ``cfg.bounds == "schema"``.
        """
        discrete = dict(discrete or {})
        unknown = sorted(set(discrete) - set(feature_names))
        if unknown:
            raise ValueError(f"discrete column(s) {unknown} are not among the inputs {list(feature_names)}")
        if cfg.bounds == "schema" and declared is None:
            raise ValueError("scaling bounds 'schema' needs the declared bounds of the inputs (declared=)")
        levels = np.array([int(discrete.get(n, 0)) for n in feature_names], dtype=np.int64)
        for j in np.flatnonzero(levels):
            bad = ~_is_id(x[:, j], int(levels[j]))
            if bad.any():
                raise DataError(f"discrete action ids must be integers in 0..{levels[j] - 1}, got "
                                f"{sorted(set(x[bad, j].tolist()))[:5]}", table="guardian fit split",
                                column=feature_names[j], rows=np.flatnonzero(bad).tolist())
        log_mask = np.array([n in cfg.log1p_columns for n in feature_names], dtype=bool) & (levels == 0)
        t = _signed_log(x, log_mask)
        lo = np.quantile(t, cfg.quantile, axis=0) if cfg.quantile > 0 else t.min(axis=0)
        hi = np.quantile(t, 1.0 - cfg.quantile, axis=0) if cfg.quantile > 0 else t.max(axis=0)
        tmin, tmax = t.min(axis=0), t.max(axis=0)
        narrow = hi - lo <= 1e-12 * np.maximum(1.0, np.abs(hi))
        lo = np.where(narrow, tmin, lo)
        hi = np.where(narrow, tmax, hi)
        constant = (tmax - tmin <= 1e-12 * np.maximum(1.0, np.abs(tmax))) & (levels == 0)
        if constant.any():
            cols = [feature_names[j] for j in np.flatnonzero(constant)]
            log.warning("guardian inputs: constant column(s) %s on the fit split; any other value is OOD", cols)
        centre = 0.5 * (tmin + tmax)
        lo = np.where(constant, centre - 1.0, lo)
        hi = np.where(constant, centre + 1.0, hi)
        two_valued = ~constant & ((t == tmin) | (t == tmax)).all(axis=0) & (levels == 0)
        # a two-valued column always maps to exactly −1 / +1 (min/max; quantiles either equal them or fell back)
        lo = np.where(two_valued, tmin, lo)
        hi = np.where(two_valued, tmax, hi)
        source = ["one_hot" if levels[j] else "data" for j in range(len(feature_names))]
        if cfg.bounds == "schema":
            assert declared is not None
            for j, name in enumerate(feature_names):
                low, high = declared.get(name, (-math.inf, math.inf))
                if levels[j] or constant[j] or two_valued[j] or not (math.isfinite(low) and math.isfinite(high)):
                    continue
                if high <= low:
                    continue
                pair = _signed_log(np.array([[low], [high]], dtype=np.float64), log_mask[j : j + 1])
                lo[j], hi[j] = pair[0, 0], pair[1, 0]
                source[j] = "schema"
        lo = np.where(levels > 0, 0.0, lo)
        hi = np.where(levels > 0, np.maximum(levels - 1, 1).astype(np.float64), hi)
        return cls(tuple(feature_names), log_mask, lo.astype(np.float64), hi.astype(np.float64), constant,
                   two_valued, levels, tuple(source))

    # ---- layout -------------------------------------------------------------------------------------------
    @property
    def _levels(self) -> npt.NDArray[np.int64]:
        return self.levels if self.levels.size else np.zeros(len(self.feature_names), dtype=np.int64)

    @property
    def has_discrete(self) -> bool:
        """True when some input is a one-hot encoded discrete action id."""
        return bool(self._levels.any())

    @property
    def discrete(self) -> dict[str, int]:
        """{column: n} of the one-hot encoded discrete columns."""
        return {self.feature_names[j]: int(self._levels[j]) for j in np.flatnonzero(self._levels)}

    @property
    def out_dim(self) -> int:
        """D': scaled columns (a discrete column counts n)."""
        return int(np.where(self._levels > 0, self._levels, 1).sum())

    @property
    def out_names(self) -> tuple[str, ...]:
        """names of the D' scaled columns (a discrete column ``a`` with n ids: ``a=0`` … ``a=n−1``)."""
        out: list[str] = []
        for name, n in zip(self.feature_names, self._levels):
            out += [f"{name}={c}" for c in range(n)] if n else [name]
        return tuple(out)

    def valid(self, x: FloatArray) -> npt.NDArray[np.bool_]:
        """``(B,)`` False where a discrete column holds no id in 0 … n−1 (such rows are out of support)."""
        x = np.asarray(x, dtype=np.float64)
        ok = np.ones(x.shape[0], dtype=bool)
        for j in np.flatnonzero(self._levels):
            ok &= _is_id(x[:, j], int(self._levels[j]))
        return ok

    # ---- maps ---------------------------------------------------------------------------------------------
    def transform(self, x: FloatArray) -> npt.NDArray[np.float64]:
        """``z = 2·(t(x) − lo)/(hi − lo) − 1`` for ``x (B, D)``, discrete ids one-hot (±1): ``(B, D')``."""
        x = np.asarray(x, dtype=np.float64)
        z = (_signed_log(x, self.log_mask) - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0
        if not self.has_discrete:
            return z
        blocks = []
        for j, n in enumerate(self._levels):
            blocks.append(np.where(x[:, j : j + 1] == np.arange(n), 1.0, -1.0) if n else z[:, j : j + 1])
        return np.concatenate(blocks, axis=1)

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable torch version of :meth:`transform` (same dtype/device as ``x``; the one-hot blocks of
        discrete ids carry no gradient)."""
        mask = torch.as_tensor(self.log_mask, device=x.device)
        # sign(x)·log1p(|x|) written branch-wise so the gradient at x = 0 is 1 (torch's d|x|/dx there is 0)
        signed_log = torch.where(x >= 0, torch.log1p(x.clamp(min=0)), -torch.log1p((-x).clamp(min=0)))
        t = torch.where(mask, signed_log, x)
        lo = torch.as_tensor(self.lo, dtype=x.dtype, device=x.device)
        scale = torch.as_tensor(2.0 / (self.hi - self.lo), dtype=x.dtype, device=x.device)
        z = (t - lo) * scale - 1.0
        if not self.has_discrete:
            return z
        blocks = []
        for j, n in enumerate(self._levels.tolist()):
            if n:
                ids = torch.arange(n, dtype=x.dtype, device=x.device)
                blocks.append((x[:, j : j + 1].detach() == ids).to(x.dtype) * 2.0 - 1.0)
            else:
                blocks.append(z[:, j : j + 1])
        return torch.cat(blocks, dim=1)

    def valid_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Torch version of :meth:`valid`: ``(B,)`` bool."""
        ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for j in np.flatnonzero(self._levels):
            c = x[:, int(j)].detach()
            ok &= (c == torch.round(c)) & (c >= 0) & (c <= int(self._levels[j]) - 1)
        return ok

    def inverse_transform(self, z: FloatArray) -> npt.NDArray[np.float64]:
        """Map scaled points ``z (B, D')`` back to input units ``(B, D)`` (a one-hot block: the id of its largest
        indicator)."""
        z = np.asarray(z, dtype=np.float64)
        if self.has_discrete:
            cols, at = [], 0
            for n in self._levels:
                cols.append(np.argmax(z[:, at : at + n], axis=1).astype(np.float64) if n else z[:, at])
                at += max(int(n), 1)
            z = np.column_stack(cols)
        t = (z + 1.0) * (0.5 * (self.hi - self.lo)) + self.lo
        t = np.where(self._levels > 0, z, t)
        t[:, self.log_mask] = np.sign(t[:, self.log_mask]) * np.expm1(np.abs(t[:, self.log_mask]))
        return t

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "feature_names": list(self.feature_names),
            "log_mask": self.log_mask.tolist(),
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
            "constant": self.constant.tolist(),
            "two_valued": self.two_valued.tolist(),
            "levels": self._levels.tolist(),
            "source": list(self.source) or ["data"] * len(self.feature_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Inverse of :meth:`to_dict` (files without ``levels`` / ``source``: no discrete column, data bounds)."""
        d_ = len(d["feature_names"])
        return cls(
            tuple(d["feature_names"]),
            np.asarray(d["log_mask"], dtype=bool),
            np.asarray(d["lo"], dtype=np.float64),
            np.asarray(d["hi"], dtype=np.float64),
            np.asarray(d["constant"], dtype=bool),
            np.asarray(d["two_valued"], dtype=bool),
            np.asarray(d.get("levels", [0] * d_), dtype=np.int64),
            tuple(d.get("source", ["data"] * d_)),
        )

    def sample_box(self, rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
        """``n`` uniform draws ``(n, D')`` from the scaled box [−1, 1]^D, two-valued columns drawn from {−1, +1},
        constant columns fixed at 0 (so binary flags do not make the volume proxy trivially zero) and a discrete
        column's id drawn uniformly from 0 … n−1 (one-hot)."""
        z = rng.uniform(-1.0, 1.0, size=(n, len(self.feature_names)))
        k = int(self.two_valued.sum())
        if k:
            z[:, self.two_valued] = rng.choice(np.array([-1.0, 1.0]), size=(n, k))
        z[:, self.constant] = 0.0
        if not self.has_discrete:
            return z
        blocks = []
        for j, m in enumerate(self._levels):
            blocks.append(np.eye(m)[rng.integers(0, m, size=n)] * 2.0 - 1.0 if m else z[:, j : j + 1])
        return np.concatenate(blocks, axis=1)


def _is_id(col: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.bool_]:
    """(B,) True where ``col`` holds an integer in 0 … n−1."""
    return (col == np.round(col)) & (col >= 0) & (col <= n - 1)


def _signed_log(x: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    if not mask.any():
        return x
    out = x.copy()
    out[:, mask] = np.sign(x[:, mask]) * np.log1p(np.abs(x[:, mask]))
    return out
