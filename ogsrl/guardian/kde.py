"""KDE baseline guardian, as in the OGSRL authors' code (Runz96/SafeRL-OGSRL ``guardian.py``).

Inputs are scaled per column to [−1, 1] with the training min/max (``ScalingConfig(quantile=0, log1p_columns=())``),
the density is a Gaussian KDE with bandwidth 0.535 over all training points (scikit-learn ``KernelDensity``), and
the score is ``−log density``. A discrete action id is one-hot encoded (n indicators at ±1, :mod:`scaling`), so a
different id at the same state is 2√2 away in scaled units (≈ 5.3 bandwidths) instead of an ordinal step; an id
outside 0 … n−1 scores +inf. The authors' threshold is the 5th percentile of the training densities, i.e. the
``train_percentile`` rule with α_c = 0.95 (training densities include each point's own kernel, as theirs do).
The conformal/PAC rules can be used instead to compare with the Christoffel guardian at equal coverage.

KDE queries cost O(N) kernel evaluations per point, so calibration and assessment score a seeded subsample of at
most ``max_eval`` rows (recorded as n_cal / n_test in the certificate); given the stay of each row, whole stays are
drawn, so per-stay coverage stays exact for the stays scored.

The saved KDE *is* its training rows (``arrays.npz: centres``, scaled by an invertible per-column map), so it is
row-level patient data: :attr:`KDEGuardian.stores_rows` is True and the model registry refuses to bundle it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
from sklearn.neighbors import KernelDensity

from ogsrl.guardian.base import (
    FloatArray,
    ThresholdGuardian,
    load_dir,
    save_dir,
    settings_from_meta,
    settings_meta,
)
from ogsrl.guardian.conformal import CalibrationConfig, group_index
from ogsrl.guardian.scaling import Scaler, ScalingConfig, check_matrix

AUTHORS_SCALING = ScalingConfig(quantile=0.0, log1p_columns=())
"""min/max to [−1, 1], no log compression (the authors' normalisation)"""


@dataclass(frozen=True, slots=True)
class KDEConfig:
    """KDE baseline hyper-parameters."""

    bandwidth: float = 0.535
    """Gaussian kernel bandwidth σ in scaled units (authors: 0.535)"""
    rtol: float = 0.0
    """relative tolerance of sklearn's tree-based density sum (0 = exact, as the authors' brute-force sum)"""
    algorithm: Literal["kd_tree", "ball_tree"] = "kd_tree"
    """sklearn KernelDensity tree"""
    max_eval: int = 3000
    """at most this many rows are scored when calibrating / assessing (seeded subsample)"""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise ValueError(f"bandwidth must be positive, got {self.bandwidth}")
        if not (0.0 <= self.rtol < 1.0):
            raise ValueError(f"rtol must lie in [0, 1), got {self.rtol}")
        if self.max_eval < 1:
            raise ValueError(f"max_eval must be positive, got {self.max_eval}")


class KDEGuardian(ThresholdGuardian):
    """G = {x : −log KDE(z) ≤ threshold}; see the module docstring."""

    kind = "kde"
    label = "KDE"
    stores_rows = True
    """the saved model holds every (scaled, invertible) training row: never bundled into the registry"""

    def __init__(
        self,
        feature_names: tuple[str, ...] | list[str],
        cfg: KDEConfig = KDEConfig(),
        calibration: CalibrationConfig = CalibrationConfig(rule="train_percentile"),
        scaling: ScalingConfig = AUTHORS_SCALING,
        discrete: Mapping[str, int] | None = None,
        declared: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        super().__init__(feature_names, calibration, scaling, discrete, declared)
        self.cfg = cfg
        self.centres: npt.NDArray[np.float64] | None = None  # scaled training points (N, D)
        self._kde: KernelDensity | None = None

    def fit(self, x_fit: FloatArray) -> Self:
        """Scale ``x_fit (N, D)`` and build the KDE over all its rows."""
        x = check_matrix(x_fit, self.feature_names, "guardian fit split")
        if x.shape[0] < 2:
            raise ValueError(f"KDE guardian needs at least 2 fit rows, got {x.shape[0]}")
        self.scaler = Scaler.fit(x, self.feature_names, self.scaling, self.discrete, self.declared)
        self._set_centres(self.scaler.transform(x))
        self._cert = None
        return self

    def _set_centres(self, z: npt.NDArray[np.float64]) -> None:
        self.centres = z
        self._kde = KernelDensity(
            kernel="gaussian", bandwidth=self.cfg.bandwidth, rtol=self.cfg.rtol, algorithm=self.cfg.algorithm
        ).fit(z)

    def _subsample(self, x: npt.NDArray[np.float64], groups: npt.ArrayLike | None,
                   rng: np.random.Generator | None) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any] | None]:
        """At most ``max_eval`` rows: seeded rows, or (given ``groups``) all rows of seeded whole stays."""
        g = None if groups is None else np.asarray(groups).reshape(-1)
        if x.shape[0] <= self.cfg.max_eval:
            return x, g
        if rng is None:
            raise ValueError(f"{x.shape[0]} rows exceed max_eval={self.cfg.max_eval}; pass rng to subsample")
        if g is None:
            return x[np.sort(rng.choice(x.shape[0], self.cfg.max_eval, replace=False))], None
        idx, n = group_index(g, x.shape[0])
        sizes = np.bincount(idx, minlength=n)
        order = rng.permutation(n)
        take = order[: max(1, int(np.searchsorted(np.cumsum(sizes[order]), self.cfg.max_eval, side="right")))]
        keep = np.isin(idx, take)
        return x[keep], g[keep]

    def calibrate(self, x_cal: FloatArray, *, groups: npt.ArrayLike | None = None,
                  rng: np.random.Generator | None = None) -> Self:
        """Threshold from the scores of ``x_cal`` (the fit split itself for the authors' train_percentile rule);
        ``groups``: the stay of each row (required for unit stay with the conformal/pac rules)."""
        x, g = self._subsample(check_matrix(x_cal, self.feature_names, "guardian calibration split"), groups, rng)
        scores = self.score(x)
        self._calibrate_on(scores, int(self._require_fit()[1].shape[0]),
                           {"bandwidth": self.cfg.bandwidth, "rtol": self.cfg.rtol, "max_eval": self.cfg.max_eval}, g)
        return self

    def assess(self, x_test: FloatArray, *, rng: np.random.Generator, volume_samples: int,
               groups: npt.ArrayLike | None = None) -> Self:
        """Record test coverage (on ≤ max_eval rows; whole stays given ``groups``) and the volume proxy (≤ max_eval
        draws) in the certificate."""
        self.certificate()
        x, g = self._subsample(check_matrix(x_test, self.feature_names, "guardian test split"), groups, rng)
        self._assess_on(self.score(x), rng, min(volume_samples, self.cfg.max_eval), g)
        return self

    def _require_fit(self) -> tuple[Scaler, npt.NDArray[np.float64], KernelDensity]:
        if self.scaler is None or self.centres is None or self._kde is None:
            raise RuntimeError("KDE guardian is not fitted; call fit() first")
        return self.scaler, self.centres, self._kde

    def _score_scaled(self, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return -self._require_fit()[2].score_samples(z)

    def release_problem(self) -> str | None:
        """Why this saved guardian must not leave the project: it is its training rows."""
        return (f"a KDE guardian stores its {self._require_fit()[1].shape[0]} training rows (scaled by an invertible "
                "map): patient-level data; register the Christoffel guardian (calibrate_guardian's certificate.json)")

    def save(self, path: str | Path) -> None:
        """Write guardian.json + arrays.npz (the scaled KDE centres) + certificate.json atomically."""
        scaler, centres, _ = self._require_fit()
        meta = settings_meta(self.kind, self.cfg, self.calibration, self.scaling, scaler)
        save_dir(path, meta, {"centres": centres}, self.certificate())

    @classmethod
    def load(cls, path: str | Path, feature_names: tuple[str, ...] | list[str] | None = None) -> KDEGuardian:
        """Load a saved guardian; ``feature_names``, when given, must match the fitted columns exactly."""
        meta, arrays, cert = load_dir(path, cls.kind, feature_names)
        cfg, calibration, scaling, scaler = settings_from_meta(meta, KDEConfig)
        g = cls(cert.feature_names, cfg, calibration, scaling, scaler.discrete)
        g.scaler = scaler
        g._set_centres(arrays["centres"])
        g._cert = cert
        return g
