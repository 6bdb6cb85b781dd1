"""SOS / empirical Christoffel-function guardian.

The score of a point is the inverse empirical Christoffel function (Lasserre & Pauwels 2019, "The empirical
Christoffel function with applications in data analysis")

    score(x) = v(z)ᵀ (M + λI)⁻¹ v(z),   M = (1/N) Σ_i v(z_i) v(z_i)ᵀ,   z = scaler(x),

with ``v`` the ``C(D' + k, k)`` monomials of degree ≤ k of the scaled input (D' = D = 15, k = 2 → 136). It is a
sum-of-squares polynomial whose sublevel sets track the support of the fit data; the threshold comes from split
conformal calibration (:mod:`ogsrl.guardian.conformal`), which is what the OGSRL paper's polynomial-sublevel-set
guardian asks for. With the Cholesky factor ``M + λI = L Lᵀ`` and ``W = L⁻ᵀ`` the score is ``‖v(z) W‖²``: one
(B, m) × (m, m) product per batch, in numpy and (differentiably) in torch.

Discrete actions (one-hot). A discrete action id ``a ∈ {0 … n−1}`` enters as ``n`` indicators ``z_c ∈ {−1, +1}``
(+1 for c = a; :mod:`ogsrl.guardian.scaling`), so D' = D − 1 + n and the basis spans every polynomial of degree ≤ k
in (state, indicators): with k = 2 a separate linear-in-state term per action next to the shared quadratic. On the
one-hot set the indicators obey polynomial identities, ``z_c² = 1`` and ``Σ_c z_c = 2 − n`` (and their products
with other monomials), so some fixed combinations ``cᵀv(z)`` vanish at *every* valid point: ``M c = 0`` and the
moment matrix is singular. The ridge keeps ``M + λI`` invertible, and scores of valid queries are unaffected:
with ``M = Σ_i μ_i u_i u_iᵀ``, ``score(z) = Σ_i (u_iᵀ v(z))² / (μ_i + λ)`` and a valid query's ``v(z)`` has no
component along the null directions (``u_iᵀ v(z) = 0`` exactly when μ_i = 0 comes from such an identity), so its
score is the Christoffel function of the polynomials restricted to the one-hot set, up to the usual O(λ/μ) of the
non-null directions. A point off that set (several or no indicators on) has a component along a null direction
and scores ≈ (cᵀv)²/λ, far above any threshold; an id that is not an integer in 0 … n−1 is scored +inf outright.
An id the clinicians never chose in the fit data is such a null direction too (its indicator is constant −1 there),
so it is rejected wherever it is queried.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Self

import numpy as np
import numpy.typing as npt
import scipy.linalg
import torch

from ogsrl.errors import DataError
from ogsrl.guardian.base import (
    FloatArray,
    ThresholdGuardian,
    load_dir,
    save_dir,
    settings_from_meta,
    settings_meta,
)
from ogsrl.guardian.conformal import CalibrationConfig
from ogsrl.guardian.scaling import Scaler, ScalingConfig, check_matrix

log = logging.getLogger(__name__)

_CHUNK = 65_536
"""rows per block when forming monomials (bounds memory: 65k × 136 float64 ≈ 70 MB)"""


@dataclass(frozen=True, slots=True)
class ChristoffelConfig:
    """Christoffel guardian hyper-parameters."""

    degree: int = 2
    """k: maximal total degree of the monomial basis v"""
    ridge: float = 1e-6
    """λ: ridge added to the moment matrix M (keeps it invertible for binary/collinear inputs)"""

    def __post_init__(self) -> None:
        if not (1 <= self.degree <= 6):
            raise ValueError(f"degree must be in 1..6, got {self.degree}")
        if not (math.isfinite(self.ridge) and self.ridge > 0):
            raise ValueError(f"ridge must be a positive finite number, got {self.ridge}")


@dataclass(frozen=True, slots=True)
class MonomialBasis:
    """All monomials of degree ≤ k in D variables, built degree by degree as parent monomial × one variable."""

    dim: int
    """D: number of variables"""
    degree: int
    """k: maximal total degree"""
    parents: tuple[npt.NDArray[np.intp], ...]
    """per degree t ≥ 1: (m_t,) index (within degree t−1) of the parent monomial"""
    variables: tuple[npt.NDArray[np.intp], ...]
    """per degree t ≥ 1: (m_t,) variable multiplied onto the parent"""

    @classmethod
    def build(cls, dim: int, degree: int) -> MonomialBasis:
        """Index tables for ``combinations_with_replacement(range(dim), t)``, t = 1..degree."""
        prev: dict[tuple[int, ...], int] = {(): 0}
        parents, variables = [], []
        for t in range(1, degree + 1):
            combos = list(itertools.combinations_with_replacement(range(dim), t))
            parents.append(np.array([prev[c[:-1]] for c in combos], dtype=np.intp))
            variables.append(np.array([c[-1] for c in combos], dtype=np.intp))
            prev = {c: i for i, c in enumerate(combos)}
        return cls(dim, degree, tuple(parents), tuple(variables))

    @property
    def size(self) -> int:
        """m = C(D + k, k) basis functions."""
        return math.comb(self.dim + self.degree, self.degree)

    def numpy(self, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``v(z)``: (B, D) → (B, m), columns ordered by degree then lexicographically."""
        blocks = [np.ones((z.shape[0], 1), dtype=z.dtype)]
        cur = blocks[0]
        for par, var in zip(self.parents, self.variables):
            cur = cur[:, par] * z[:, var]  # (B, m_{t-1}) → (B, m_t)
            blocks.append(cur)
        return np.concatenate(blocks, axis=1)

    def torch(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable torch version of :meth:`numpy`."""
        cur = torch.ones((z.shape[0], 1), dtype=z.dtype, device=z.device)
        blocks = [cur]
        for par, var in zip(self.parents, self.variables):
            p = torch.as_tensor(par, device=z.device)
            v = torch.as_tensor(var, device=z.device)
            cur = cur[:, p] * z[:, v]  # (B, m_{t-1}) → (B, m_t)
            blocks.append(cur)
        return torch.cat(blocks, dim=1)


class ChristoffelGuardian(ThresholdGuardian):
    """G = {x : v(z)ᵀ (M + λI)⁻¹ v(z) ≤ threshold}; see the module docstring."""

    kind = "christoffel"
    label = "christoffel"
    stores_rows = False
    """the saved model is the whitened moment matrix (an average over rows) and the per-column scaler"""

    def __init__(
        self,
        feature_names: tuple[str, ...] | list[str],
        cfg: ChristoffelConfig = ChristoffelConfig(),
        calibration: CalibrationConfig = CalibrationConfig(),
        scaling: ScalingConfig = ScalingConfig(),
        discrete: Mapping[str, int] | None = None,
        declared: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        super().__init__(feature_names, calibration, scaling, discrete, declared)
        self.cfg = cfg
        self.basis = MonomialBasis.build(self.scaled_dim, cfg.degree)
        self.whitener: npt.NDArray[np.float64] | None = None  # W = L⁻ᵀ, (m, m)
        self.n_fit = 0
        self._w_torch: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    # ---- fitting ------------------------------------------------------------------------------------------
    def fit(self, x_fit: FloatArray) -> Self:
        """Fit scaler and moment matrix on ``x_fit (N, D)``; needs N ≥ m = C(D + k, k) rows."""
        x = check_matrix(x_fit, self.feature_names, "guardian fit split")
        m = self.basis.size
        if x.shape[0] < m:
            raise DataError(
                f"{x.shape[0]} rows but the degree-{self.cfg.degree} basis has {m} monomials; "
                f"need at least {m} rows (lower guardian.christoffel.degree or add data)",
                table="guardian fit split",
            )
        self.scaler = Scaler.fit(x, self.feature_names, self.scaling, self.discrete, self.declared)
        moment = np.zeros((m, m), dtype=np.float64)
        for start in range(0, x.shape[0], _CHUNK):
            v = self.basis.numpy(self.scaler.transform(x[start : start + _CHUNK]))  # (b, m)
            moment += v.T @ v
        moment /= x.shape[0]
        moment[np.diag_indices(m)] += self.cfg.ridge
        try:
            chol = scipy.linalg.cholesky(moment, lower=True)
        except np.linalg.LinAlgError as exc:  # pragma: no cover - ridge > 0 makes M positive definite
            raise DataError(f"moment matrix not positive definite even with ridge {self.cfg.ridge}: {exc}") from exc
        self.whitener = scipy.linalg.solve_triangular(chol, np.eye(m), lower=True).T  # L⁻ᵀ
        self.n_fit = int(x.shape[0])
        self._cert = None
        self._w_torch.clear()
        eig_min = float(np.linalg.eigvalsh(moment)[0])
        log.info("christoffel guardian: fitted %d rows, %d monomials, min eigenvalue %.3g", x.shape[0], m, eig_min)
        return self

    def calibrate(self, x_cal: FloatArray, *, groups: npt.ArrayLike | None = None,
                  rng: np.random.Generator | None = None) -> Self:
        """Threshold from the scores of the calibration split ``x_cal (M, D)`` (rule and unit in ``calibration``;
        ``groups (M,)`` the stay of each row, required for unit stay).

        Every row is scored; ``rng`` is accepted for the :class:`Guardian` protocol and unused.
        """
        self._calibrate_on(self.score(x_cal), self.n_fit,
                           {"degree": self.cfg.degree, "ridge": self.cfg.ridge, "n_monomials": self.basis.size},
                           groups)
        return self

    def assess(self, x_test: FloatArray, *, rng: np.random.Generator, volume_samples: int,
               groups: npt.ArrayLike | None = None) -> Self:
        """Record test coverage on ``x_test (T, D)`` (per stay too, given ``groups``) and the Monte-Carlo volume
        proxy in the certificate."""
        self.certificate()
        self._assess_on(self.score(x_test), rng, volume_samples, groups)
        return self

    # ---- queries ------------------------------------------------------------------------------------------
    def _require_fit(self) -> tuple[Scaler, npt.NDArray[np.float64]]:
        if self.scaler is None or self.whitener is None:
            raise RuntimeError("christoffel guardian is not fitted; call fit() first")
        return self.scaler, self.whitener

    def _score_scaled(self, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        _, w = self._require_fit()
        out = np.empty(z.shape[0], dtype=np.float64)
        for start in range(0, z.shape[0], _CHUNK):
            u = self.basis.numpy(z[start : start + _CHUNK]) @ w  # (b, m) @ (m, m) → (b, m)
            out[start : start + _CHUNK] = np.einsum("ij,ij->i", u, u)
        return out

    def score_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable score ``(B,)`` for a tensor ``x (B, D)``; computed in ``x.dtype`` on ``x.device``."""
        scaler, w = self._require_fit()
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected a (B, {len(self.feature_names)}) tensor, got shape {tuple(x.shape)}")
        key = (x.dtype, x.device)
        if key not in self._w_torch:
            self._w_torch[key] = torch.as_tensor(w, dtype=x.dtype, device=x.device)
        u = self.basis.torch(scaler.transform_torch(x)) @ self._w_torch[key]  # (B, m)
        s = (u * u).sum(dim=1)
        if scaler.has_discrete:  # an action id outside 0 … n−1 is out of support
            s = torch.where(scaler.valid_torch(x), s, torch.full_like(s, math.inf))
        return s

    def release_problem(self) -> str | None:
        """Why this saved guardian must not leave the project (None: it may be bundled).

        The saved model is ``W = L⁻ᵀ`` of the moment matrix ``M`` = the fit rows' empirical moments of degree ≤ 2k
        (``C(D + 2k, 2k)`` distinct numbers), plus per-column quantiles. With few rows those moments could pin the
        rows down; they are refused unless the rows hold at least twice as many numbers (``n_fit·D``) as there are
        distinct moments.
        """
        d = len(self.feature_names)
        moments = math.comb(self.basis.dim + 2 * self.cfg.degree, 2 * self.cfg.degree)
        if self.n_fit * d < 2 * moments:
            return (f"its moment matrix summarises only {self.n_fit} fit rows ({self.n_fit * d} numbers for {moments} "
                    f"distinct moments); need at least {math.ceil(2 * moments / d)} rows")
        return None

    # ---- persistence --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write guardian.json + arrays.npz + certificate.json to the directory ``path`` atomically."""
        scaler, w = self._require_fit()
        meta = settings_meta(self.kind, self.cfg, self.calibration, self.scaling, scaler)
        meta["n_fit"] = self.n_fit
        save_dir(path, meta, {"whitener": w}, self.certificate())

    @classmethod
    def load(cls, path: str | Path, feature_names: tuple[str, ...] | list[str] | None = None) -> ChristoffelGuardian:
        """Load a saved guardian; ``feature_names``, when given, must match the fitted columns exactly."""
        meta, arrays, cert = load_dir(path, cls.kind, feature_names)
        cfg, calibration, scaling, scaler = settings_from_meta(meta, ChristoffelConfig)
        g = cls(cert.feature_names, cfg, calibration, scaling, scaler.discrete)
        g.scaler = scaler
        w = arrays["whitener"]
        if w.shape != (g.basis.size, g.basis.size):
            raise ValueError(f"{path}: whitener shape {w.shape} does not match {g.basis.size} monomials")
        g.whitener = w
        g.n_fit = int(meta["n_fit"])
        g._cert = cert
        return g
