"""DVC stage ``calibrate_guardian``: fit, calibrate and assess the Christoffel guardian and the KDE baseline.

Reads ``data/trajectories/{train,val,test}.parquet`` (docs/data-contract.md §3); the guardian input is
``x = (state features in the parquet metadata ``ogsrl.state_features``, action columns)`` (canonical: fluid_ml,
nee_max; a bring-your-own table: its schema's actions, a discrete id one-hot encoded inside the guardians; the
extreme-policy probe needs the demo simulator and runs on canonical tables only; ``guardian.scaling.bounds: schema``
scales from the schema's declared bounds, recorded as the report's ``scaling/…`` keys). Writes

* ``data/models/guardian/``: ``christoffel/`` and ``kde/`` (each guardian.json + arrays.npz + certificate.json) and
  ``certificate.json`` (the Christoffel guardian's, the one downstream stages use);
* ``data/reports/guardian.json``: coverage (per row and per stay: the certificate counts stays), false-accept rates on the OOD probes, volume proxy and query speed for
  ``christoffel``, ``kde`` (authors' train-percentile threshold) and ``kde_eq`` (the same KDE calibrated on the
  validation split by the Christoffel guardian's rule, i.e. at equal coverage).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ogsrl.config import build, section
from ogsrl.errors import DataError
from ogsrl.data.schema import ContinuousAction, DiscreteAction, Schema, load_table_schema
from ogsrl.guardian import conformal, ood
from ogsrl.guardian.christoffel import ChristoffelConfig, ChristoffelGuardian
from ogsrl.guardian.conformal import CalibrationConfig
from ogsrl.guardian.kde import AUTHORS_SCALING, KDEConfig, KDEGuardian
from ogsrl.guardian.scaling import ScalingConfig
from ogsrl.io import atomic_path, write_json

log = logging.getLogger(__name__)

TRAJ_DIR = Path("data/trajectories")
MODEL_DIR = Path("data/models/guardian")
REPORT = Path("data/reports/guardian.json")


@dataclass(frozen=True, slots=True)
class GuardianStageConfig:
    """params.yaml section ``guardian``."""

    seed: int = 42
    """seeds subsampling, OOD probes and the volume proxy"""
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    """α_c, δ and threshold rule of the Christoffel guardian (and of the equal-coverage KDE)"""
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    """input scaling of the Christoffel guardian (the KDE uses the authors' min/max scaling)"""
    christoffel: ChristoffelConfig = field(default_factory=ChristoffelConfig)
    """degree k and ridge λ"""
    kde: KDEConfig = field(default_factory=KDEConfig)
    """KDE baseline (bandwidth 0.535, threshold at the (1 − α_c) percentile of training densities)"""
    volume_samples: int = 100_000
    """uniform draws for the volume proxy (the KDE uses at most kde.max_eval)"""
    ood_samples: int = 2000
    """rows per OOD probe"""
    extreme_policy_stays: int = 100
    """simulated stays for the extreme-policy probe (0 = skip it, e.g. without the demo simulator)"""
    extreme_policy_dose: tuple[float, float] = (4000.0, 1.5)
    """(fluid mL per step, NE-equivalent µg/kg/min) the extreme policy gives at every step"""
    ood_rare_share: float = 0.01
    """discrete actions: the extreme_actions probe uses ids chosen by fewer than this share of the 200 nearest
    clinician states (ood.rare_actions)"""

    def __post_init__(self) -> None:
        if self.volume_samples < 1 or self.ood_samples < 2:
            raise ValueError("volume_samples must be ≥ 1 and ood_samples ≥ 2")
        if not (0.0 < self.ood_rare_share < 1.0):
            raise ValueError(f"ood_rare_share must lie in (0, 1), got {self.ood_rare_share}")
        if self.extreme_policy_stays < 0 or min(self.extreme_policy_dose) < 0:
            raise ValueError("extreme_policy_stays and extreme_policy_dose must be non-negative")


def read_split(path: Path) -> tuple[npt.NDArray[np.float64], tuple[str, ...]]:
    """Guardian input matrix ``(N, S + A)`` and its column names from one trajectory parquet: the state features
    of ``ogsrl.state_features`` and the table's action columns (its schema's; canonical: fluid_ml, nee_max; a discrete
    action: its id column, which the guardians one-hot encode, see :func:`guardian_inputs`)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(f"trajectory split not found: {path}")
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"ogsrl.state_features")
    if raw is None:
        raise DataError("parquet metadata lacks 'ogsrl.state_features'", table=str(path))
    schema = load_table_schema(path)
    names = tuple(json.loads(raw)) + tuple(schema.action_columns)
    table = pq.read_table(path, columns=list(names))
    x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in names])
    return x, names


def guardian_inputs(schema: Schema, names: tuple[str, ...]) -> tuple[dict[str, int], dict[str, tuple[float, float]]]:
    """The guardian's discrete columns ({action column: n}; one-hot encoded) and the schema's declared (low, high)
    of each input (±inf where unbounded), for ``guardian.scaling.bounds: schema``."""
    discrete = {schema.action.column: schema.action.n} if isinstance(schema.action, DiscreteAction) else {}
    declared = {f.name: (f.low, f.high) for f in schema.state if f.name in names}
    if isinstance(schema.action, ContinuousAction):
        declared.update({c: (lo, hi) for c, lo, hi in zip(schema.action.columns, schema.action.low,
                                                           schema.action.high)})
    return discrete, declared


def read_stays(path: Path) -> npt.NDArray[Any]:
    """The ``stay_key`` of each row of one trajectory parquet (the calibration unit of the certificate)."""
    import pyarrow.parquet as pq

    if "stay_key" not in pq.read_schema(path).names:
        raise DataError("no stay_key column: the certificate counts stays", table=str(path), column="stay_key")
    return pq.read_table(path, columns=["stay_key"]).column("stay_key").to_numpy(zero_copy_only=False)


def _probe_metrics(prefix: str, scores: dict[str, npt.NDArray[np.float64]], thr: float) -> dict[str, float]:
    return {f"{prefix}/false_accept_{k}": float(np.mean(s <= thr)) for k, s in scores.items()}


def _throughput(score: Callable[[npt.NDArray[np.float64]], Any], x: npt.NDArray[np.float64]) -> float:
    t0 = time.perf_counter()
    score(x)
    return x.shape[0] / max(time.perf_counter() - t0, 1e-9)


SUMMARY_KEYS = ("test_coverage_stay", "test_coverage", "threshold", "false_accept_shifted_states",
                "false_accept_extreme_actions", "false_accept_extreme_policy")
"""per-guardian metrics the CLI prints (the certificate's test coverage and the OOD probes)"""


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The short form the CLI prints: sizes, target and, per guardian, :data:`SUMMARY_KEYS` (all metrics:
    ``data/reports/guardian.json``)."""
    out = {k: v for k, v in metrics.items() if "/" not in k or k.startswith("query_speedup")}
    out.update({k: v for k, v in metrics.items() if k.count("/") == 1 and k.split("/")[1] in SUMMARY_KEYS})
    out["metrics_file"] = str(REPORT)
    return out


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Fit + calibrate + assess both guardians; write models, certificate and metrics. Returns flat metrics."""
    cfg = build(GuardianStageConfig, section(params, "guardian"), "guardian")
    root = Path(root)
    x_fit, names = read_split(root / TRAJ_DIR / "train.parquet")
    x_cal, names_cal = read_split(root / TRAJ_DIR / "val.parquet")
    x_test, names_test = read_split(root / TRAJ_DIR / "test.parquet")
    if not (names == names_cal == names_test):
        raise DataError(f"state features differ between splits: {names}, {names_cal}, {names_test}")
    g_fit, g_cal, g_test = (read_stays(root / TRAJ_DIR / f"{s}.parquet") for s in ("train", "val", "test"))
    schema = load_table_schema(root / TRAJ_DIR / "train.parquet")
    acts = tuple(schema.action_columns)
    discrete, declared = guardian_inputs(schema, names)
    rng = np.random.default_rng(cfg.seed)
    if isinstance(schema.action, DiscreteAction):  # ids the clinicians (almost) never chose there, or skipped
        extreme, why = ood.rare_actions(x_test, x_fit, names, rng, cfg.ood_samples, schema.action.column,
                                        schema.action.n, rare_share=cfg.ood_rare_share)
    else:
        extreme, why = ood.extreme_actions(x_test, x_fit, names, rng, cfg.ood_samples, acts), None
    skipped = {} if why is None else {"extreme_actions": why}
    probes = {} if why is not None else {"extreme_actions": extreme}
    if why is not None:
        log.warning("guardian: extreme_actions probe skipped: %s", why)
    probes["shifted_states"] = ood.shifted_states(x_test, x_fit, names, rng, cfg.ood_samples, acts)
    if cfg.extreme_policy_stays > 0 and schema.is_canonical:  # the demo simulator's patients: canonical tables only
        from ogsrl.synth.stage import world_from_params  # lazy: the simulator is only needed for this probe

        probes["extreme_policy"] = ood.extreme_policy_rows(
            names, world_from_params(params), cfg.extreme_policy_stays, *cfg.extreme_policy_dose, cfg.seed
        )
        act = probes["extreme_policy"][:, -2:]  # (n, 2) fluid_ml, nee_max
        p999 = np.quantile(x_fit[:, -2:], 0.999, axis=0)
        extreme_share = float(np.mean((act > p999).any(axis=1)))
    metrics: dict[str, Any] = {
        "alpha_c": cfg.calibration.alpha_c,
        "n_fit": int(x_fit.shape[0]),
        "n_cal": int(x_cal.shape[0]),
        "n_test": int(x_test.shape[0]),
        "n_cal_stays": int(np.unique(g_cal).size),
        "n_test_stays": int(np.unique(g_test).size),
        "n_features": len(names),
        **{f"ood/n_{k}": int(v.shape[0]) for k, v in probes.items()},
    }
    metrics.update({f"ood/skipped_{k}": 1.0 for k in skipped})  # the reason is logged (and in docs/guardian.md)
    if "extreme_policy" in probes:
        metrics["ood/extreme_policy_share_action_above_p999"] = extreme_share

    # ---- Christoffel guardian ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    chris = ChristoffelGuardian(names, cfg.christoffel, cfg.calibration, cfg.scaling, discrete, declared).fit(x_fit)
    metrics["christoffel/fit_s"] = time.perf_counter() - t0
    chris.calibrate(x_cal, groups=g_cal).assess(x_test, rng=rng, volume_samples=cfg.volume_samples, groups=g_test)
    c_cert = chris.certificate()
    metrics.update(_cert_metrics("christoffel", c_cert))
    # which bounds the inputs were scaled from (per column with bounds: schema): 1 the declared [low, high], 0 the data
    metrics["scaling/bounds_schema"] = float(cfg.scaling.bounds == "schema")
    metrics["scaling/n_from_schema"] = sum(s == "schema" for s in chris.scaler.source)
    if cfg.scaling.bounds == "schema":
        metrics.update({f"scaling/from_schema/{n}": float(s == "schema")
                        for n, s in zip(names, chris.scaler.source) if s != "one_hot"})
    metrics.update(_probe_metrics("christoffel", {k: chris.score(v) for k, v in probes.items()}, c_cert.threshold))
    metrics["christoffel/query_points_per_s"] = _throughput(chris.score, x_test)

    # ---- KDE baseline, authors' threshold ----------------------------------------------------------------
    kde_cal = CalibrationConfig(cfg.calibration.alpha_c, cfg.calibration.delta, "train_percentile")
    t0 = time.perf_counter()
    kde = KDEGuardian(names, cfg.kde, kde_cal, AUTHORS_SCALING, discrete).fit(x_fit)
    metrics["kde/fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kde.calibrate(x_fit, groups=g_fit, rng=rng)
    n_scored = kde.certificate().n_cal
    metrics["kde/query_points_per_s"] = n_scored / max(time.perf_counter() - t0, 1e-9)
    kde.assess(x_test, rng=rng, volume_samples=cfg.volume_samples, groups=g_test)
    k_cert = kde.certificate()
    metrics.update(_cert_metrics("kde", k_cert))
    kde_probe_scores = {k: kde.score(v[: cfg.kde.max_eval]) for k, v in probes.items()}
    metrics.update(_probe_metrics("kde", kde_probe_scores, k_cert.threshold))

    # ---- KDE at equal coverage: same fitted KDE, threshold by the Christoffel rule on the validation split --
    kde_eq = copy.copy(kde)
    kde_eq.calibration = cfg.calibration
    kde_eq.calibrate(x_cal, groups=g_cal, rng=rng)
    e_cert = kde_eq.certificate()
    metrics.update(_cert_metrics("kde_eq", e_cert))
    assert kde.assessed_scores is not None and kde.assessed_groups is not None  # set by kde.assess above
    inside_eq = kde.assessed_scores <= e_cert.threshold  # the same test rows
    metrics["kde_eq/test_coverage"] = float(np.mean(inside_eq))
    metrics["kde_eq/test_coverage_gap"] = metrics["kde_eq/test_coverage"] - cfg.calibration.alpha_c
    metrics["kde_eq/test_coverage_stay"] = conformal.stay_coverage(inside_eq, kde.assessed_groups)[0]
    metrics.update(_probe_metrics("kde_eq", kde_probe_scores, e_cert.threshold))
    metrics["query_speedup_christoffel_over_kde"] = (
        metrics["christoffel/query_points_per_s"] / metrics["kde/query_points_per_s"]
    )

    with atomic_path(root / MODEL_DIR) as tmp:
        tmp.mkdir()
        chris.save(tmp / "christoffel")
        kde.save(tmp / "kde")
        (tmp / "certificate.json").write_text(
            json.dumps(c_cert.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    write_json(root / REPORT, metrics)
    log.info(
        "guardian: christoffel test coverage %.4f by row, %.4f by stay (target %.3f, %s rule on %d stays), "
        "kde %.4f, kde_eq %.4f",
        c_cert.test_coverage, c_cert.test_coverage_stay, cfg.calibration.alpha_c, c_cert.unit, c_cert.n_cal_stays,
        k_cert.test_coverage, metrics["kde_eq/test_coverage"],
    )
    return metrics


def _cert_metrics(prefix: str, cert: Any) -> dict[str, float]:
    out = {
        f"{prefix}/threshold": cert.threshold,
        f"{prefix}/calibration_coverage": cert.calibration_coverage,
        f"{prefix}/n_cal": cert.n_cal,
    }
    if cert.test_coverage is not None:
        out[f"{prefix}/test_coverage"] = cert.test_coverage
        out[f"{prefix}/test_coverage_gap"] = cert.test_coverage - cert.alpha_c
    if cert.volume_proxy is not None:
        out[f"{prefix}/volume_proxy"] = cert.volume_proxy
    for name in ("level", "n_cal_stays", "calibration_coverage_stay", "test_coverage_stay", "test_stays_all_inside"):
        if getattr(cert, name) is not None:
            out[f"{prefix}/{name}"] = getattr(cert, name)
    if cert.test_coverage_stay is not None:
        out[f"{prefix}/test_coverage_stay_gap"] = cert.test_coverage_stay - cert.alpha_c
    return out
