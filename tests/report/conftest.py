"""A small fake pipeline output tree for the report tests (every file the report reads, with made-up numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

ESTIMATORS = ("wis", "pdwis", "fqe")  # fqe: an estimator the report code has never heard of
RUNS = {"soc": (42,), "gmb_cpo": (42, 43)}


def _ope_metrics() -> dict:
    m: dict = {"ope/gamma": 1.0, "test/stays": 40, "behaviour_model/features": 23.0, "truth/available": True,
               "ope/fqe_action": "continuous", "ope/fqe_history": 3, "ope/fqe_previous_action": False}
    for target, base, true in (("return", -80.0, -88.0), ("cost_total", 6.0, 6.5), ("mortality_hosp", 0.2, 0.22)):
        m.update({f"behaviour/onpolicy/{target}/{k}": v for k, v in
                  (("value", base), ("ci_low", base - 1), ("ci_high", base + 1), ("ess", 40.0))})
        for run, seeds in RUNS.items():
            for seed in seeds:
                for i, est in enumerate(ESTIMATORS):
                    v = base + i
                    m.update({f"{run}/seed{seed}/{est}/{target}/{k}": x for k, x in
                              (("value", v), ("ci_low", v - 2), ("ci_high", v + 2), ("ess", 5.0 + i))})
                    if target == "return":
                        m[f"{run}/seed{seed}/{est}/{target}/covers_truth"] = i == 0
                if target == "return":
                    m[f"truth/{run}/seed{seed}/return"] = true + seed - 42
                    m[f"truth/{run}/seed{seed}/mortality_hosp"] = 0.25
            m.update({f"{run}/mean/wis/{target}/value": base, f"{run}/sd/wis/{target}/value": 0.0})
    m.update({"truth/behaviour/return": -88.0, "truth/behaviour/mortality_hosp": 0.22,
              "soc/seed42/weights/top1_share": 0.1})
    return m


def _clinical() -> dict:
    c = {"clinicians/air": 0.69, "clinicians/air/escalate_when_deteriorating": 0.35,
         "clinicians/air/hold_when_stable": 0.75, "clinicians/acp": 3.0, "clinicians/below/spo2_low/model": 0.07,
         "clinicians/below/spo2_low/observed": 0.069, "clinicians/below/urine_low/model": 0.40,
         "clinicians/below/urine_low/observed": 0.39, "clinicians/me": 0.23, "clinicians/me/return_estimate": -80.0,
         "clinicians/mortality_observed": 0.2, "me_relation/spearman": -0.14, "me_relation/stays": 40,
         "me_relation/mortality_at_min_return": 0.6, "me_relation/mortality_at_max_return": 0.0}
    for run, seeds in RUNS.items():
        for seed in [*[f"seed{s}" for s in seeds], "mean", "sd"]:
            p = f"{run}/{seed}"
            c.update({f"{p}/mcr": 0.5, f"{p}/air": 0.7, f"{p}/air/escalate_when_deteriorating": 0.3,
                      f"{p}/air/hold_when_stable": 0.78, f"{p}/acp": 1.4, f"{p}/below/spo2_low/model": 0.06,
                      f"{p}/below/urine_low/model": 0.39, f"{p}/me": 0.228, f"{p}/me/ci_low": 0.2,
                      f"{p}/me/ci_high": 0.27, f"{p}/me/return_estimate": -72.0, f"{p}/truth/mortality_hosp": 0.25})
    return c


@pytest.fixture
def reports_root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    rep = root / "data" / "reports"
    docs = {
        "cohort.json": {"source": "demo", "icu_stays": 60, "cohort_stays": 50, "rows": 600, "stays_train": 30,
                        "stays_val": 10, "stays_test": 10, "mortality_in_hosp": 0.2, "cost_spo2_low_rate": 0.07},
        "validation_raw.json": {"success": True, "n_expectations": 97, "n_failed": 0, "rows_checked": 1000},
        "validation_trajectories.json": {"success": False, "n_expectations": 24, "n_failed": 1, "rows_checked": 600},
        "world.json": {"world/beats_baselines_on_central": True, "world/coverage90/ensemble": 0.89,
                       "world/cost_brier/cost_spo2_low": 0.04},
        "guardian.json": {"alpha_c": 0.95, "christoffel/test_coverage": 0.954, "kde/test_coverage": 0.956,
                          "christoffel/false_accept_extreme_policy": 0.0, "ood/n_extreme_actions": 2000},
        "evaluate/metrics.json": _ope_metrics(),
        "clinical.json": _clinical(),
    }
    for rel, doc in docs.items():
        (rep / rel).parent.mkdir(parents=True, exist_ok=True)
        (rep / rel).write_text(json.dumps(doc), encoding="utf-8")
    for sub in ("raw", "trajectories"):
        (rep / "validation" / sub).mkdir(parents=True)
        (rep / "validation" / sub / "index.html").write_text("<html></html>", encoding="utf-8")
    (rep / "world_plots").mkdir()
    pd.DataFrame({"nominal": [0.1, 0.5, 0.9], "ensemble": [0.12, 0.55, 0.89], "knn": [0.4, 0.6, 0.9]}).to_csv(
        rep / "world_plots" / "calibration.csv", index=False)
    pd.DataFrame({"step": [1, 2, 3], "train_loss": [0.4, 0.3, 0.2], "val_loss": [0.3, 0.25, 0.24]}).to_csv(
        rep / "world_plots" / "learning_curve.csv", index=False)
    pd.DataFrame({"run": ["soc"] * 3 + ["gmb_cpo"] * 3, "seed": [42] * 6, "step": [1, 2, 3] * 2,
                  "loss/val_nll": [0.6, 0.5, 0.45, None, None, None],
                  "reward_return": [None, None, None, -130.0, -90.0, -80.0],
                  "cost_return/cost_spo2_low": [None, None, None, 1.0, 0.5, 0.2]}).to_csv(
        rep / "train_curves.csv", index=False)
    (rep / "clinical_plots").mkdir()
    pd.DataFrame({"return": [-200.0, -100.0, -20.0], "mortality": [0.6, 0.25, 0.0]}).to_csv(
        rep / "clinical_plots" / "mortality_curve.csv", index=False)
    return root
