"""The clinical stage end to end on a tiny contract-shaped project (train_policies and evaluate first; the world
model is a stand-in whose cost probabilities are known)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ogsrl import cli
from ogsrl.agents import stage as train_stage
from ogsrl.errors import DataError
from ogsrl.ope import clinical_stage, stage as ope_stage
from tests.agents.trajectory_fakes import STATE, write_split

TINY = {"hidden": [8, 8], "batch_size": 64, "max_epochs": 3}


def _params(runs: dict | None = None, **clinical) -> dict:
    return {
        "data": {"source": "trajectories"},
        "policies": {"runs": runs or {"soc": {"algorithm": "bc"}}, "algorithms": {"bc": TINY},
                     "serve_guardian_fallback": False},
        "ope": {"n_boot": 200, "behaviour": TINY},
        "clinical": {"samples": 2, "me_estimator": "wis", **clinical},
    }


class FakeWorld:
    """P(spo2 cost) = 0.5 where the vasopressor is on, else 0; P(urine cost) = 0.25."""

    layout = SimpleNamespace(state_features=("spo2", "age"), cost_names=("cost_urine_low", "cost_spo2_low"))
    elites = np.array([1])

    def predict(self, obs: np.ndarray, act: np.ndarray) -> SimpleNamespace:
        assert obs.shape == (len(act), 2)
        spo2 = 0.5 * (np.asarray(act)[:, 1] > 0)
        probs = np.stack([np.full(len(act), 0.25), spo2], axis=-1)
        return SimpleNamespace(cost_prob=np.stack([np.ones_like(probs), probs]))  # member 0 is not an elite


@pytest.fixture(scope="module")
def project(traj_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clinical") / "p"
    shutil.copytree(traj_root, root)
    params = _params({"soc": {"algorithm": "bc"}, "soc2": {"algorithm": "bc"}})
    train_stage.run(params, root)
    ope_stage.run_behaviour(params, root)
    ope_stage.run(params, root)
    return root


@pytest.fixture(autouse=True)
def fake_world(monkeypatch: pytest.MonkeyPatch) -> None:
    from ogsrl.world import ensemble

    monkeypatch.setattr(ensemble.WorldModel, "load", classmethod(lambda cls, path, *a, **k: FakeWorld()))


def test_metrics_for_clinicians_and_policies(project: Path) -> None:
    m = clinical_stage.run(_params(), project)
    assert json.loads((project / "data/reports/clinical.json").read_text()) == pytest.approx(m, nan_ok=True)
    test = pd.read_parquet(project / "data/trajectories/test.parquet")
    # the clinicians: observed shares are the cost columns' means, model shares follow the stand-in's rule
    assert m["clinicians/below/spo2_low/observed"] == pytest.approx(test["cost_spo2_low"].mean())
    assert m["clinicians/below/spo2_low/model"] == pytest.approx(0.5 * (test["nee_max"] > 0).mean())
    assert m["clinicians/below/urine_low/model"] == pytest.approx(0.25)
    assert m["clinicians/mortality_observed"] == 0.0 and m["clinicians/me"] == 0.0  # nobody dies in the fake data
    assert "clinicians/mcr" not in m
    for key in ("mcr", "air", "air/escalate_when_deteriorating", "air/hold_when_stable"):
        assert 0.0 <= m[f"soc/seed42/{key}"] <= 1.0, key
    assert m["soc/seed42/acp"] > 0 and m["soc/seed42/acp/fluid_ml"] > 0
    assert m["soc/mean/mcr"] == m["soc/seed42/mcr"]
    ope = json.loads((project / "data/reports/evaluate/metrics.json").read_text())
    assert m["soc/seed42/me/return_estimate"] == ope["soc/seed42/wis/return/value"]
    table = pd.read_csv(project / "data/reports/clinical_plots/metrics.csv")
    assert set(table["policy"]) == {"clinicians", "soc"}
    row = table[(table["policy"] == "soc") & (table["metric"] == "me")].iloc[0]
    assert row["ci_low"] == m["soc/seed42/me/ci_low"] and row["value"] == m["soc/seed42/me"]
    curve = pd.read_csv(project / "data/reports/clinical_plots/mortality_curve.csv")
    assert (np.diff(curve["return"]) >= 0).all() and (np.diff(curve["mortality"]) <= 0).all()


def test_draws_are_seeded_and_keyed_per_policy(project: Path) -> None:
    one = clinical_stage.run(_params(), project)
    both = clinical_stage.run(_params({"soc2": {"algorithm": "bc"}, "soc": {"algorithm": "bc"}}), project)
    assert {k: v for k, v in both.items() if k.startswith("soc/")} == pytest.approx(
        {k: v for k, v in one.items() if k.startswith("soc/")})  # adding a policy changes no other policy's draws
    other = clinical_stage.run(_params(seed=7), project)
    assert other["soc/seed42/mcr"] != one["soc/seed42/mcr"]


def test_bad_input_is_one_line(project: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no 'magic' return estimate .*estimators there: \[.*'pdwis'"):
        clinical_stage.run(_params(me_estimator="magic"), project)
    with pytest.raises(ValueError, match="clinical.tolerance"):
        clinical_stage.run(_params(tolerance={"fluid_ml": 0.0}), project)

    other = tmp_path / "other"
    shutil.copytree(project, other)
    (other / "data/reports/evaluate/metrics.json").unlink()
    with pytest.raises(DataError, match=r"report input missing: data/reports/evaluate/metrics.json .*ogsrl evaluate"):
        clinical_stage.run(_params(), other)

    shutil.copy2(project / "data/reports/evaluate/metrics.json", other / "data/reports/evaluate/metrics.json")
    test = pd.read_parquet(other / "data/trajectories/test.parquet").drop(columns=["gcs", "next_gcs"])
    write_split(test, other / "data/trajectories/test.parquet", state=tuple(s for s in STATE if s != "gcs"))
    with pytest.raises(DataError, match=r"column 'gcs': policy soc/seed42 reads feature\(s\) \['gcs'\]"):
        clinical_stage.run(_params(), other)
    (other / "params.yaml").write_text(json.dumps(_params()), encoding="utf-8")
    assert cli.main(["clinical", "--root", str(other), "--no-track"]) == cli.EXIT_BAD_INPUT
