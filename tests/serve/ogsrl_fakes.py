"""Small stand-ins for the trained components the registry bundles, and a tiny project on disk.

They implement the same interfaces as the real ones (``ogsrl.policy.Policy``: ``feature_names`` + ``act``; a
guardian: ``feature_names`` + ``contains``; directories loaded without pickle), so the registry, lineage, serving
and retraining tests run in seconds without training anything. Loaded by name (``ogsrl_fakes:load_policy``) the
way the bundle loads real components, so the directory holding this file must be on ``sys.path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ogsrl.io import write_json
from ogsrl.registry import lineage

HERE = Path(__file__).resolve().parent
STATE = ("gcs", "spo2", "fluid_cum")
ACTION_MAX = np.array([10000.0, 5.0])


class LinearPolicy:
    """a = clip(W s + b, 0, max): deterministic, as the serving path needs."""

    def __init__(self, feature_names: tuple[str, ...], weights: np.ndarray, bias: np.ndarray) -> None:
        self.feature_names = tuple(feature_names)
        self.weights = np.asarray(weights, dtype=np.float64)  # (2, S)
        self.bias = np.asarray(bias, dtype=np.float64)  # (2,)

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[1] != len(self.feature_names):
            raise ValueError(f"obs shape {obs.shape}, expected (B, {len(self.feature_names)})")
        return np.clip(obs @ self.weights.T + self.bias, 0.0, ACTION_MAX)


class BoxGuardian:
    """Accepts x when every column lies inside [low, high]."""

    def __init__(self, feature_names: tuple[str, ...], low: np.ndarray, high: np.ndarray) -> None:
        self.feature_names = tuple(feature_names)
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)

    def contains(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.all((x >= self.low) & (x <= self.high), axis=1)


class SpO2CostModel:
    """P(cost_spo2_low = 1) = clip((100 − spo2) / 50, 0, 1); ignores the action."""

    feature_names = ("spo2",)
    cost_names = ("cost_spo2_low",)

    def predict_costs(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        assert obs.shape[1] == 1 and act.shape == (obs.shape[0], 2)
        return np.clip((100.0 - obs) / 50.0, 0.0, 1.0)


def load_cost_model(path: Path) -> SpO2CostModel:
    if not (Path(path) / "costs.json").is_file():
        raise FileNotFoundError(path)
    return SpO2CostModel()


def save_policy(path: Path, weights: Any, bias: Any, feature_names: tuple[str, ...] = STATE) -> None:
    write_json(Path(path) / "config.json", {"kind": "fake-linear", "feature_names": list(feature_names),
                                            "weights": np.asarray(weights).tolist(), "bias": list(bias)})


def load_policy(path: Path) -> LinearPolicy:
    cfg = json.loads((Path(path) / "config.json").read_text())
    return LinearPolicy(tuple(cfg["feature_names"]), np.array(cfg["weights"]), np.array(cfg["bias"]))


def save_guardian(path: Path, names: tuple[str, ...], low: Any, high: Any, alpha_c: float = 0.95,
                  test_coverage: float = 0.951) -> None:
    write_json(Path(path) / "guardian.json", {"kind": "box", "feature_names": list(names),
                                              "low": list(low), "high": list(high)})
    write_json(Path(path) / "certificate.json", {"method": "box", "alpha_c": alpha_c, "unit": "stay",
                                                 "test_coverage": test_coverage, "test_coverage_stay": test_coverage,
                                                 "feature_names": list(names)})


def load_guardian(path: Path) -> BoxGuardian:
    cfg = json.loads((Path(path) / "guardian.json").read_text())
    return BoxGuardian(tuple(cfg["feature_names"]), np.array(cfg["low"]), np.array(cfg["high"]))


def trajectory_rows(n: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns of a tiny trajectory split: the fake policy's states and the two actions."""
    rng = np.random.default_rng(seed)
    return {"stay_key": np.array([f"k{i // 5}" for i in range(n)]), "gcs": rng.integers(3, 16, n).astype(float),
            "spo2": rng.uniform(85, 100, n), "fluid_cum": rng.uniform(0, 8000, n),
            "fluid_ml": rng.uniform(0, 2000, n), "nee_max": rng.uniform(0, 1, n)}


def write_trajectories(root: Path) -> None:
    """data/trajectories/{train,test}.parquet with :func:`trajectory_rows` (what the registry's row check reads)."""
    import pandas as pd

    for i, split in enumerate(("train", "test")):
        path = Path(root) / f"data/trajectories/{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(trajectory_rows(seed=i)).to_parquet(path, index=False)


def write_ope(root: Path, method: str = "soc", ret: tuple[float, float, float] = (-50.0, -55.0, -45.0),
              cost: tuple[float, float, float] = (0.4, 0.3, 0.5),
              estimators: tuple[str, ...] = ("wdr", "hull_fqe_wdr"),
              logged: tuple[float, float, float] = (-52.0, -56.0, -48.0), ess: float = 100.0,
              others: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] | None = None) -> None:
    """OPE metrics in the evaluate stage's flat layout: <run>/seed<seed>/<estimator>/<target>/{value,ci_low,…}
    (the same numbers under each of ``estimators``: by default the two the gate reads, for the return and the
    costs), the clinicians' logged return (behaviour/onpolicy/return) and the hash of the test split they were
    computed on. ``others``: more runs, run → (ret, cost)."""
    from ogsrl.io import file_sha256

    m: dict[str, Any] = {}
    for run, (r, c) in {method: (ret, cost), **(others or {})}.items():
        for estimator in estimators:
            k = f"{run}/seed42/{estimator}"
            for target, (v, lo, hi) in {"return": r, "cost_total": c, "cost_spo2_low": c}.items():
                m.update({f"{k}/{target}/value": v, f"{k}/{target}/ci_low": lo, f"{k}/{target}/ci_high": hi,
                          f"{k}/{target}/ess": ess})
    v, lo, hi = logged
    m.update({"behaviour/onpolicy/return/value": v, "behaviour/onpolicy/return/ci_low": lo,
              "behaviour/onpolicy/return/ci_high": hi, "behaviour/onpolicy/return/ess": 1000.0})
    test = Path(root) / "data/trajectories/test.parquet"
    if test.is_file():
        m["test/sha256"] = file_sha256(test)
    write_json(root / "data/reports/evaluate/metrics.json", m)


def write_lock(root: Path) -> None:
    """A dvc.lock whose md5s are computed the way DVC computes them."""
    def entry(rel: str) -> dict[str, Any]:
        p = root / rel
        return {"path": rel, "hash": "md5", "md5": lineage.dvc_md5(p)}

    lock = {"schema": "2.0", "stages": {
        "extract": {"cmd": "ogsrl extract", "deps": [entry("data/raw")], "outs": [entry("data/trajectories")]},
        "train_policies": {"cmd": "ogsrl train-policies", "deps": [entry("data/trajectories")],
                           "outs": [entry("data/models/policies")]},
    }}
    import yaml

    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


_DB_TEMPLATE: list[Path] = []


def fresh_tracking_db(path: Path) -> None:
    """Copy an empty, already migrated MLflow sqlite database to ``path`` (migrating one costs 3–15 s, so each
    test process does it once)."""
    import atexit
    import shutil
    import tempfile

    if not _DB_TEMPLATE:
        from mlflow import MlflowClient

        tmpl = Path(tempfile.mkdtemp(prefix="ogsrl-mlflow-template-")) / "mlflow.db"
        atexit.register(shutil.rmtree, tmpl.parent, True)  # one template per test process, gone when it exits
        MlflowClient(tracking_uri=f"sqlite:///{tmpl.as_posix()}").search_experiments()
        _DB_TEMPLATE.append(tmpl)
    shutil.copyfile(_DB_TEMPLATE[0], path)


def make_project(root: Path, *, guardian: bool = True, cost_model: bool = True, validation_ok: bool = True,
                 cost: tuple[float, float, float] = (0.4, 0.3, 0.5),
                 ret: tuple[float, float, float] = (-50.0, -55.0, -45.0)) -> dict[str, Any]:
    """Write a tiny trained project under ``root``; returns its params mapping."""
    root = Path(root)
    for rel, text in {"data/raw/hosp/patients.csv": "subject_id,gender\n1,F\n",
                      "data/raw/icu/icustays.csv": "stay_id\n7\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    write_trajectories(root)
    save_policy(root / "data/models/policies/soc/seed42", weights=[[0.0, 0.0, 0.01], [0.1, 0.0, 0.0]], bias=[100.0, 0.0])
    if guardian:
        names = (*STATE, "fluid_ml", "nee_max")
        save_guardian(root / "data/models/guardian", names, low=[3, 85, 0, 0, 0], high=[15, 100, 20000, 10000, 5])
    if cost_model:
        write_json(root / "data/models/world/costs.json", {"kind": "fake-spo2"})
    for name in ("validation_raw", "validation_trajectories"):
        write_json(root / f"data/reports/{name}.json",
                   {"success": validation_ok, "n_failed": 0 if validation_ok else 2})
    write_ope(root, ret=ret, cost=cost)
    write_lock(root)
    fresh_tracking_db(root / "mlflow.db")
    return {
        "data": {"source": "demo"},
        "synth": {"seed": 7, "stays": 20},
        "costs": {"rules": [{"name": "spo2_low", "feature": "spo2", "op": "<", "threshold": 92.0, "units": "%"}]},
        "mlflow": {"tracking_uri": f"sqlite:///{(root / 'mlflow.db').as_posix()}", "experiment": "test"},
        "registry": {"policy_loader": "ogsrl_fakes:load_policy", "guardian_loader": "ogsrl_fakes:load_guardian",
                     "cost_model_loader": "ogsrl_fakes:load_cost_model",
                     "hash_raw_files": False, "gate": {"cost_limits": {"cost_total": 1.0}}},
    }
