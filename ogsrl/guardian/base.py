"""The guardian interface and its coverage certificate.

A guardian is a set ``G = {x : score(x) ≤ threshold}`` in the (state, action) input space
``x = (state features…, fluid_ml, nee_max)`` (columns in ``feature_names``, units of ``ogsrl.features``; a
bring-your-own table: its schema's state features and action columns, a discrete action as its id column, which the
scaler one-hot encodes; an id outside 0 … n−1 scores +inf). Larger
scores mean less data support. Every guardian is fitted on a fit split, calibrated on a calibration split (which
sets the threshold, see :mod:`ogsrl.guardian.conformal`), assessed on a test split, and saved without pickle as
``guardian.json`` (config, scaler, certificate) + ``arrays.npz``.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

import ogsrl
from ogsrl.guardian import conformal
from ogsrl.guardian.conformal import CalibrationConfig
from ogsrl.guardian.scaling import Scaler, ScalingConfig, check_matrix
from ogsrl.io import atomic_path

FloatArray = npt.NDArray[np.floating]
BoolArray = npt.NDArray[np.bool_]

FORMAT_VERSION = 1
"""On-disk format version of a saved guardian directory."""


@dataclass(frozen=True, slots=True)
class GuardianCertificate:
    """What a calibrated guardian guarantees, and how it was obtained (written as certificate.json)."""

    method: str
    """christoffel | kde"""
    threshold_rule: str
    """conformal | pac | train_percentile (see ogsrl.guardian.conformal)"""
    guarantee: str
    """the statement the threshold carries, in words"""
    alpha_c: float
    """target coverage α_c"""
    delta: float | None
    """PAC failure probability δ (None unless threshold_rule = pac)"""
    threshold: float
    """accept x when score(x) ≤ threshold"""
    rank: int
    """1-based order statistic of the calibration scores used as threshold (0: interpolated percentile)"""
    n_fit: int
    """rows used to fit the model (moment matrix / KDE centres)"""
    n_cal: int
    """rows whose scores set the threshold"""
    calibration_coverage: float
    """fraction of calibration rows accepted"""
    feature_names: tuple[str, ...]
    """input columns, in order"""
    params: dict[str, float | int | str | None]
    """method parameters (degree k, ridge λ, n_monomials; or bandwidth, rtol)"""
    test_coverage: float | None = None
    """fraction of test rows accepted (None until assessed)"""
    n_test: int | None = None
    """test rows scored"""
    volume_proxy: float | None = None
    """Monte-Carlo fraction of the scaled box [−1, 1]^D accepted (seeded uniform draws)"""
    volume_samples: int | None = None
    """uniform draws behind volume_proxy"""
    unit: str = "row"
    """calibration unit: stay (the guarantee's n counts stays) | row (rows taken as exchangeable; older files)"""
    level: float | None = None
    """unit stay: the pooled per-stay coverage F_n the rule requires on calibration (> alpha_c; conformal.py)"""
    n_cal_stays: int | None = None
    """stays behind the calibration rows (the guarantee's n when unit = stay)"""
    calibration_coverage_stay: float | None = None
    """mean over calibration stays of the fraction of the stay's rows accepted (F_n at the threshold)"""
    test_coverage_stay: float | None = None
    """mean over test stays of the fraction of the stay's rows accepted: the quantity the stay guarantee is about"""
    n_test_stays: int | None = None
    """test stays scored"""
    test_stays_all_inside: float | None = None
    """share of test stays with every row accepted"""
    created_by: str = f"ogsrl {ogsrl.__version__}"
    """package and version that produced it"""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples → lists)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["feature_names"] = list(self.feature_names)
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GuardianCertificate:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"certificate: unknown key(s) {unknown}")
        kw = dict(d)
        kw["feature_names"] = tuple(kw.get("feature_names", ()))
        try:
            return cls(**kw)
        except TypeError as exc:
            raise ValueError(f"certificate: {exc}") from exc


@runtime_checkable
class Guardian(Protocol):
    """The support set used to end model rollouts that leave the data (Christoffel and KDE implement it)."""

    feature_names: tuple[str, ...]
    """input columns, in order (state features, then fluid_ml, nee_max)"""

    def fit(self, x_fit: FloatArray) -> Self:
        """Fit the model on ``x_fit (N, D)``."""
        ...

    def calibrate(self, x_cal: FloatArray, *, groups: npt.ArrayLike | None = None,
                  rng: np.random.Generator | None = None) -> Self:
        """Set the threshold from the scores of ``x_cal (M, D)`` by the configured rule (``groups (M,)``: the stay of
        each row, required when the calibration unit is stay)."""
        ...

    def assess(self, x_test: FloatArray, *, rng: np.random.Generator, volume_samples: int,
               groups: npt.ArrayLike | None = None) -> Self:
        """Record test coverage on ``x_test (T, D)`` (row- and, with ``groups``, stay-level) and the volume proxy."""
        ...

    def score(self, x: FloatArray) -> npt.NDArray[np.float64]:
        """Scores ``(B,)`` for ``x (B, D)``; larger = less supported."""
        ...

    def contains(self, x: FloatArray, threshold: float | None = None) -> BoolArray:
        """``score(x) ≤ threshold`` per row ``(B,)`` (default: the calibrated threshold)."""
        ...

    def certificate(self) -> GuardianCertificate:
        """The calibrated guardian's certificate."""
        ...

    def save(self, path: str | Path) -> None:
        """Write the directory ``path`` (guardian.json, arrays.npz, certificate.json) atomically."""
        ...


class ThresholdGuardian(ABC):
    """What the score-threshold guardians share: input names, certificate bookkeeping and queries.

    Subclasses set ``kind`` and ``label`` and implement ``fit``, ``_require_fit`` (whose first item is the fitted
    :class:`Scaler`) and ``_score_scaled`` (scores of already-scaled rows, ``(B, D')``: a discrete column one-hot).
    """

    @property
    def scaled_dim(self) -> int:
        """D': scaled input columns (a discrete column with n ids counts n)."""
        return len(self.feature_names) - len(self.discrete) + sum(int(n) for n in self.discrete.values())


    kind = ""
    """guardian.json ``kind``"""
    label = ""
    """name used in error messages"""

    def __init__(self, feature_names: tuple[str, ...] | list[str], calibration: CalibrationConfig,
                 scaling: ScalingConfig, discrete: Mapping[str, int] | None = None,
                 declared: Mapping[str, tuple[float, float]] | None = None) -> None:
        if len(feature_names) == 0 or len(set(feature_names)) != len(feature_names):
            raise ValueError(f"feature_names must be non-empty and unique, got {list(feature_names)}")
        self.feature_names = tuple(feature_names)
        self.calibration = calibration
        self.scaling = scaling
        self.discrete = dict(discrete or {})
        """{column: n}: discrete action-id columns, one-hot encoded by the scaler (see scaling.py)"""
        bad = {c: k for c, k in self.discrete.items() if c not in self.feature_names or int(k) < 2}
        if bad:
            raise ValueError(f"discrete columns must be inputs with n >= 2, got {bad}")
        self.declared = dict(declared or {})
        """{column: (low, high)} declared by the table schema (used with scaling.bounds = schema)"""
        self.scaler: Scaler | None = None
        self._cert: GuardianCertificate | None = None
        self.assessed_scores: npt.NDArray[np.float64] | None = None
        """scores (T,) of the test rows scored by the last assess(), for re-thresholding without re-scoring"""
        self.assessed_groups: npt.NDArray[Any] | None = None
        """stay labels (T,) of those rows (None when assess() got no groups)"""

    @abstractmethod
    def _require_fit(self) -> tuple[Any, ...]:
        """The fitted state, the :class:`Scaler` first (RuntimeError before fit())."""

    @abstractmethod
    def _score_scaled(self, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Scores ``(B,)`` of rows ``z`` already in scaled units."""

    def score(self, x: FloatArray) -> npt.NDArray[np.float64]:
        """Scores ``(B,)`` for ``x (B, D)`` in input units; larger = less supported."""
        scaler = self._require_fit()[0]
        x = check_matrix(x, self.feature_names, "guardian query")
        scores = self._score_scaled(scaler.transform(x))
        if scaler.has_discrete:  # an action id outside 0 … n−1 (or not an integer) is out of support
            scores[~scaler.valid(x)] = np.inf
        return scores

    def contains(self, x: FloatArray, threshold: float | None = None) -> BoolArray:
        """``score(x) ≤ threshold`` per row (default: the calibrated threshold)."""
        thr = self.certificate().threshold if threshold is None else float(threshold)
        return self.score(x) <= thr

    def certificate(self) -> GuardianCertificate:
        """The certificate of the calibrated guardian (RuntimeError before calibrate())."""
        if self._cert is None:
            raise RuntimeError(f"{self.label} guardian is not calibrated; call fit() then calibrate()")
        return self._cert

    def _calibrate_on(self, scores: npt.NDArray[np.float64], n_fit: int, params: dict[str, Any],
                      groups: npt.ArrayLike | None = None) -> None:
        """Set the threshold from calibration ``scores`` by the configured rule and write the certificate.

        With unit ``stay`` the rule counts stays (``groups``, one label per row, required); see conformal.py.
        """
        c = self.calibration
        level = n_stays = cov_stay = None
        if c.unit == "stay" and c.rule != "train_percentile":
            if groups is None:
                raise ValueError(f"{self.label} guardian: calibration unit 'stay' needs the stay of each calibration "
                                 "row (groups=); pass them or set guardian.calibration.unit: row")
            thr, rank, level, n_stays = conformal.stay_threshold(scores, groups, c.alpha_c, c.delta, c.rule)
            cov_stay = conformal.stay_coverage(scores <= thr, groups)[0]
            guarantee = conformal.STAY_GUARANTEES[c.rule]
        else:
            thr, rank = conformal.threshold(scores, c.alpha_c, c.delta, c.rule)
            guarantee = conformal.GUARANTEES[c.rule]
            if groups is not None:
                cov_stay, n_stays, _ = conformal.stay_coverage(scores <= thr, groups)
        self._cert = GuardianCertificate(
            method=self.kind,
            threshold_rule=c.rule,
            guarantee=guarantee,
            alpha_c=c.alpha_c,
            delta=c.delta if c.rule == "pac" else None,
            threshold=thr,
            rank=rank,
            n_fit=n_fit,
            n_cal=int(scores.size),
            calibration_coverage=float(np.mean(scores <= thr)),
            feature_names=self.feature_names,
            params=params,
            unit="stay" if level is not None else "row",
            level=level,
            n_cal_stays=n_stays,
            calibration_coverage_stay=cov_stay,
        )

    def _assess_on(self, scores: npt.NDArray[np.float64], rng: np.random.Generator, volume_samples: int,
                   groups: npt.ArrayLike | None = None) -> None:
        """Record the test coverage of ``scores`` (per row and, with ``groups``, per stay) and the volume proxy
        (``volume_samples`` draws) in the certificate."""
        cert = self.certificate()
        self.assessed_scores = scores
        self.assessed_groups = None if groups is None else np.asarray(groups).reshape(-1)
        inside = scores <= cert.threshold
        stay: dict[str, Any] = {}
        if groups is not None:
            cov, n_stays, full = conformal.stay_coverage(inside, groups)
            stay = {"test_coverage_stay": cov, "n_test_stays": n_stays, "test_stays_all_inside": full}
        vol = volume_proxy(self._score_scaled, cert.threshold, self._require_fit()[0], rng, volume_samples)
        self._cert = dataclasses.replace(cert, test_coverage=float(inside.mean()), n_test=int(inside.size),
                                         volume_proxy=vol, volume_samples=volume_samples, **stay)


def settings_meta(kind: str, cfg: Any, calibration: CalibrationConfig, scaling: ScalingConfig,
                  scaler: Scaler) -> dict[str, Any]:
    """The settings every guardian records in guardian.json (its own config dataclass, calibration, scaling)."""
    return {
        "kind": kind,
        "config": dataclasses.asdict(cfg),
        "calibration": dataclasses.asdict(calibration),
        "scaling": {"quantile": scaling.quantile, "log1p_columns": list(scaling.log1p_columns),
                    "bounds": scaling.bounds},
        "scaler": scaler.to_dict(),
        "encoding": {name: {"type": "one_hot", "n": n, "levels": [-1.0, 1.0]} for name, n in scaler.discrete.items()},
    }


def settings_from_meta(meta: dict[str, Any], config_cls: type) -> tuple[Any, CalibrationConfig, ScalingConfig, Scaler]:
    """Inverse of :func:`settings_meta`: (config, calibration, scaling, fitted scaler); the discrete columns are
    the scaler's (:attr:`Scaler.discrete`)."""
    scaling = meta["scaling"]
    return (
        config_cls(**meta["config"]),
        CalibrationConfig(**{"unit": "row", **meta["calibration"]}),  # files older than `unit` were by row
        ScalingConfig(scaling["quantile"], tuple(scaling["log1p_columns"]), scaling.get("bounds", "data")),
        Scaler.from_dict(meta["scaler"]),  # files without `levels`/`encoding`: no discrete column, data bounds
    )


def save_dir(path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], cert: GuardianCertificate) -> None:
    """Write a guardian directory atomically: guardian.json (meta + certificate), arrays.npz, certificate.json."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        body = dict(meta, format_version=FORMAT_VERSION, certificate=cert.to_dict())
        (tmp / "guardian.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "certificate.json").write_text(
            json.dumps(cert.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        with (tmp / "arrays.npz").open("wb") as fh:
            np.savez(fh, **arrays)


def load_dir(
    path: str | Path, kind: str, feature_names: tuple[str, ...] | list[str] | None
) -> tuple[dict[str, Any], dict[str, np.ndarray], GuardianCertificate]:
    """Read a guardian directory written by :func:`save_dir` (no pickle), checking kind, version and features."""
    path = Path(path)
    meta_path = path / "guardian.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no guardian at {path} (missing guardian.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    if meta.get("kind") != kind:
        raise ValueError(f"{meta_path}: holds a {meta.get('kind')!r} guardian, not {kind!r}")
    cert = GuardianCertificate.from_dict(meta["certificate"])
    if feature_names is not None and tuple(feature_names) != cert.feature_names:
        raise ValueError(
            f"{meta_path}: guardian was fitted on features {list(cert.feature_names)}, "
            f"caller expects {list(feature_names)}"
        )
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays, cert


def volume_proxy(
    score_scaled: Any, threshold: float, scaler: Scaler, rng: np.random.Generator, n: int, chunk: int = 50_000
) -> float:
    """Fraction of ``n`` uniform draws from the scaled box (:meth:`Scaler.sample_box`) with
    ``score_scaled(z) ≤ threshold``."""
    if n <= 0:
        raise ValueError(f"volume samples must be positive, got {n}")
    hits = 0
    left = n
    while left > 0:
        m = min(chunk, left)
        z = scaler.sample_box(rng, m)
        hits += int(np.count_nonzero(score_scaled(z) <= threshold))
        left -= m
    return hits / n
