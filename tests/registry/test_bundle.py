"""The policy bundle: its layout, the Recommender it loads into, and the checks on bad bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl.errors import DataError  # noqa: E402
from ogsrl.registry import bundle as bundle_mod  # noqa: E402
from ogsrl.registry import loaders, recommender  # noqa: E402
from tests.registry.bundles import LOADERS, RULES, states as _states  # noqa: E402

def test_bundle_layout_and_manifest(bundle: Path) -> None:
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["format"] == bundle_mod.BUNDLE_FORMAT
    assert manifest["state_features"] == list(fakes.STATE)
    assert manifest["guardian_features"] == [*fakes.STATE, "fluid_ml", "nee_max"]
    assert manifest["certificate"]["alpha_c"] == 0.95
    assert manifest["cost_rules"] == RULES
    assert manifest["ranges"]["spo2"] == {"low": 50, "high": 100, "unit": "%", "kind": "continuous"}
    assert (bundle / "policy/config.json").is_file() and (bundle / "guardian/guardian.json").is_file()


def test_recommend_actions_guardian_and_deferral(bundle: Path) -> None:
    rec = bundle_mod.load_bundle(bundle)
    out = rec.recommend(_states())
    assert list(out.columns) == list(recommender.OUTPUT_COLUMNS)
    # fake policy: fluid = 0.01·fluid_cum + 100, nee = 0.1·gcs
    np.testing.assert_allclose(out["fluid_ml"], [110.0, 130.0])
    np.testing.assert_allclose(out["nee_max"], [1.5, 1.0])
    # guardian box spo2 ∈ [85, 100]: both inside
    assert out["in_guardian"].tolist() == [True, True]
    assert out["defer_to_clinician"].tolist() == [False, False] and out["reason"].tolist() == ["", ""]

    out = rec.recommend(_states(spo2=[80.0, 140.0], weight=[70.0, -3.0]))
    # row 0: plausible but outside the guardian box (spo2 80 < 85) → action kept, deferred
    assert out.loc[0, "fluid_ml"] == 110.0 and bool(out.loc[0, "in_guardian"]) is False
    assert out.loc[0, "defer_to_clinician"] and "outside the guardian" in out.loc[0, "reason"]
    # row 1: SpO2 140 and a negative weight are implausible → no action, both named
    assert np.isnan(out.loc[1, "fluid_ml"]) and pd.isna(out.loc[1, "in_guardian"])
    assert out.loc[1, "defer_to_clinician"]
    assert "implausible spo2=140" in out.loc[1, "reason"] and "implausible weight=-3" in out.loc[1, "reason"]


def test_missing_values_binary_and_missing_columns(bundle: Path) -> None:
    rec = bundle_mod.load_bundle(bundle)
    out = rec.recommend(_states(gcs=[np.nan, 15.0], mechvent=[0.0, 0.5]))
    assert out["reason"].tolist() == ["missing value for gcs", "implausible mechvent=0.5 (binary: 0 or 1)"]
    with pytest.raises(DataError, match=r"missing state feature column\(s\) \['gcs'\]"):
        rec.recommend(_states().drop(columns="gcs"))
    rec.check_units({"spo2": "%"})
    with pytest.raises(DataError, match="unit mismatch: spo2: got 'fraction'"):
        rec.check_units({"spo2": "fraction"})


def test_without_guardian(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    fakes.make_project(root, guardian=False)
    dest = tmp_path / "b"
    manifest = bundle_mod.build_bundle(dest, policy_dir=root / "data/models/policies/soc/seed42", guardian_dir=None,
                                       cost_rules=RULES, **LOADERS)
    assert manifest["guardian_loader"] is None and manifest["certificate"] is None
    out = bundle_mod.load_bundle(dest).recommend(_states())
    assert out["in_guardian"].isna().all() and not out["defer_to_clinician"].any()


def test_bad_bundles(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(FileExistsError):
        bundle_mod.build_bundle(bundle, policy_dir=bundle / "policy", guardian_dir=None, cost_rules=[], **LOADERS)
    with pytest.raises(ValueError, match="must look like"):
        loaders.resolve_loader("ogsrl_fakes.load_policy")
    with pytest.raises(ValueError, match="cannot load"):
        loaders.resolve_loader("ogsrl_fakes:nope")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["format"] = 99
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="bundle format 99"):
        bundle_mod.load_bundle(bundle)
    # a guardian reading a column the policy does not provide is refused
    root = tmp_path / "p2"
    fakes.make_project(root)
    fakes.save_guardian(root / "g", ("gcs", "lactate"), [3, 0], [15, 30])
    with pytest.raises(ValueError, match=r"\['lactate'\]"):
        bundle_mod.build_bundle(tmp_path / "b2", policy_dir=root / "data/models/policies/soc/seed42",
                                guardian_dir=root / "g", cost_rules=[], **LOADERS)


def test_bundle_with_the_real_policy_and_guardian(tmp_path: Path) -> None:
    """The default loaders: an (untrained) BC policy and a Christoffel guardian on (state, action)."""
    import torch

    from ogsrl.agents.actor import HurdleActor, SavedPolicy
    from ogsrl.guardian.christoffel import ChristoffelConfig, ChristoffelGuardian
    from ogsrl.guardian.conformal import CalibrationConfig

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    actor = HurdleActor(len(fakes.STATE), (8, 8), 1, torch.Generator().manual_seed(3))
    actor.set_normaliser(np.array([12.0, 95.0, 2000.0]), np.array([3.0, 3.0, 1500.0]))
    policy = SavedPolicy(actor, fakes.STATE, "sample", sample_seed=3)  # served: a draw from its own generator
    policy.save(tmp_path / "policy")
    names = (*fakes.STATE, "fluid_ml", "nee_max")

    def sample(n: int) -> np.ndarray:
        states = np.column_stack([rng.integers(8, 16, n), rng.normal(95, 2, n), rng.uniform(0, 5000, n)])
        return np.column_stack([states, rng.uniform(0, 10000, n), rng.uniform(0, 5, n)])

    guardian = ChristoffelGuardian(names, ChristoffelConfig(degree=2), CalibrationConfig(rule="conformal", unit="row"))
    guardian.fit(sample(600)).calibrate(sample(300))
    guardian.save(tmp_path / "guardian")
    bundle_mod.build_bundle(tmp_path / "bundle", policy_dir=tmp_path / "policy", guardian_dir=tmp_path / "guardian",
                            cost_rules=RULES)
    rec = bundle_mod.load_bundle(tmp_path / "bundle")
    states = _states(gcs=[15.0, 10.0, 12.0], spo2=[97.0, 94.0, 96.0], fluid_cum=[1000.0, 3000.0, 500.0])
    out = rec.recommend(states)
    acts = policy.act(states[list(fakes.STATE)].to_numpy())  # both generators fresh: the same draws
    np.testing.assert_array_equal(out[["fluid_ml", "nee_max"]].to_numpy(), acts)
    inside = guardian.contains(np.column_stack([states[list(fakes.STATE)].to_numpy(), acts]))
    assert out["in_guardian"].tolist() == inside.tolist()
    assert out["defer_to_clinician"].tolist() == (~inside).tolist()


def test_cost_model_predictions_in_bundle(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    fakes.make_project(root)
    manifest = bundle_mod.build_bundle(
        tmp_path / "b", policy_dir=root / "data/models/policies/soc/seed42", guardian_dir=None, cost_rules=RULES,
        cost_model_dir=root / "data/models/world", cost_model_loader="ogsrl_fakes:load_cost_model", **LOADERS)
    assert manifest["cost_names"] == ["cost_spo2_low"] and manifest["cost_model_features"] == ["spo2"]
    out = bundle_mod.load_bundle(tmp_path / "b").recommend(_states(spo2=[90.0, 140.0]))
    assert list(out.columns) == [*recommender.OUTPUT_COLUMNS, "p_cost_spo2_low"]
    assert out.loc[0, "p_cost_spo2_low"] == pytest.approx(0.2) and np.isnan(out.loc[1, "p_cost_spo2_low"])


def test_world_model_as_cost_model(tmp_path: Path) -> None:
    """The default cost-model loader reads a saved world model and averages its elite members' cost heads."""
    import torch

    from ogsrl.world.ensemble import EnsembleConfig, Layout, WorldModel

    torch.set_num_threads(1)
    cfg = EnsembleConfig(n_members=3, n_elites=2, hidden=(8,), copy_features=(), sum_features=())
    # built the way the fit-world-model stage builds it (ogsrl/world/stage.py)
    world = WorldModel(cfg, Layout.make(fakes.STATE, ("cost_spo2_low", "cost_total"), cfg.copy_features,
                                        cfg.sum_features))
    world.save(tmp_path / "world")
    cm = loaders.load_cost_model(tmp_path / "world")
    assert cm.feature_names == fakes.STATE and cm.cost_names == ("cost_spo2_low", "cost_total")
    obs = np.array([[15.0, 97.0, 1000.0], [10.0, 88.0, 3000.0]])
    act = np.array([[500.0, 0.1], [0.0, 0.0]])
    p = cm.predict_costs(obs, act)
    want = world.predict(obs, act).cost_prob[world.elites].mean(axis=0)
    assert p.shape == (2, 2) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p, want)


def test_float32_boundary_values_are_plausible(bundle: Path) -> None:
    rec = bundle_mod.load_bundle(bundle)
    edge = np.float32(0.21)  # stored as 0.2099999934; fio2's plausible low is 0.21
    out = rec.recommend(_states(fio2=[float(edge), 0.2]))
    assert out["reason"].tolist()[0] == ""
    assert out["reason"].tolist()[1] == "implausible fio2=0.2 (plausible 0.21–1 fraction)"
