"""Ground truth: deterministic, rewards per the cohort params, and states distributed like the extracted data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogsrl.synth import engine as E
from ogsrl.synth import policies, stage, truth


def test_truth_is_deterministic_and_reports_cis() -> None:
    short = E.WorldConfig(n_steps=8)
    a = truth.evaluate_policy(policies.get_policy("heuristic"), 40, seed=3, chunk=40, world=short)
    b = truth.evaluate_policy(policies.get_policy("heuristic"), 40, seed=3, chunk=40, world=short)
    assert a.to_dict() == {**b.to_dict(), "truth/seconds": a.to_dict()["truth/seconds"]}
    d = a.to_dict()
    assert d["truth/episodes"] == 40 and d["truth/steps"] > 40 * 2
    assert d["truth/return_ci_lo"] <= d["truth/return"] <= d["truth/return_ci_hi"] < 0
    assert 0 <= d["truth/mortality_hosp"] <= d["truth/mortality_90d"] <= 1
    assert {"truth/rate_cost_spo2_low", "truth/rate_cost_urine_low", "truth/rate_cost_total"} <= set(d)
    # cost return per stay = rate × steps per stay; the total is the sum of the rules
    assert d["truth/cost_return_cost_total"] == pytest.approx(
        d["truth/cost_return_cost_spo2_low"] + d["truth/cost_return_cost_urine_low"])
    assert d["truth/cost_return_cost_total"] == pytest.approx(
        d["truth/rate_cost_total"] * d["truth/steps"] / d["truth/stays"])


def test_per_stay_truths_reproduce_the_means_and_pair_policies_on_the_same_patients() -> None:
    """Per-patient returns reproduce every mean the result reports, and name the same simulated patients under two
    policies scored with one seed (what lets a benchmark compare them paired)."""
    from ogsrl.cohort.extract import CohortConfig

    short = E.WorldConfig(n_steps=8)
    a = truth.evaluate_policy(policies.get_policy("heuristic"), 60, seed=4, chunk=30, world=short)
    b = truth.evaluate_policy(policies.get_policy("no-treatment"), 60, seed=4, chunk=30, world=short)
    for res in (a, b):
        per = res.per_stay
        assert per is not None and per.index.is_unique and len(per) == res.stays
        assert per["return"].mean() == pytest.approx(res.mean_return.value)
        for col, est in res.cost_returns.items():
            assert per[f"cost_return_{col}"].mean() == pytest.approx(est.value)
    both = a.per_stay.index.intersection(b.per_stay.index)  # the chunk draws its patients before anyone acts
    assert len(both) >= 0.9 * 60 and a.per_stay.index.max() < 60
    assert (a.per_stay.loc[both, "return"] != b.per_stay.loc[both, "return"]).any()
    cohort = CohortConfig(n_steps=8)
    c = truth.evaluate_policy(None, 120, seed=4, chunk=60, world=short, cohort=cohort)
    d = truth.evaluate_policy(policies.get_policy("no-treatment"), 120, seed=4, chunk=60, world=short, cohort=cohort)
    for res in (c, d):
        assert res.per_stay.index.is_unique and len(res.per_stay) == res.stays
        assert res.per_stay["return"].mean() == pytest.approx(res.mean_return.value)
        assert res.per_stay["died_in_hosp"].mean() == pytest.approx(res.mortality_hosp.value)
    common = c.per_stay.index.intersection(d.per_stay.index)
    assert len(common) >= 0.8 * min(c.stays, d.stays)


def test_paired_difference_is_the_mean_over_the_common_patients() -> None:
    a = pd.DataFrame({"return": [-10.0, -20.0, -30.0, -99.0], "died_in_hosp": [0.0, 1.0, 0.0, 1.0]},
                     index=pd.Index(["p1", "p2", "p3", "p9"], name="patient"))
    b = pd.DataFrame({"return": [-14.0, -21.0, -32.0, -50.0], "cost_return_cost_total": [1.0, 2.0, 3.0, 4.0],
                      "died_in_hosp": [1.0, 1.0, 0.0, 0.0]}, index=pd.Index(["p1", "p2", "p3", "p4"], name="patient"))
    d = truth.paired_difference(a, b)
    assert set(d) == {"return", "died_in_hosp"}  # columns both hold; p9 and p4 are in one cohort only
    # differences 4, 1, 2: mean 7/3, SD 1.5275, half-width 1.96 · 1.5275 / √3
    assert d["return"].value == pytest.approx(7 / 3) and d["return"].ess == 3
    assert d["return"].ci_high - d["return"].value == pytest.approx(truth.Z95 * np.std([4, 1, 2], ddof=1) / np.sqrt(3))
    assert d["died_in_hosp"].value == pytest.approx(-1 / 3)
    with pytest.raises(ValueError, match="share 1 patients"):
        truth.paired_difference(a.iloc[:1], b)


def test_rewards_follow_the_cohort_schemes() -> None:
    steps = pd.DataFrame({"stay": [0, 0, 1], "step": [0, 1, 3], "next_sofa": [1.0, 20.0, 7.0],
                          "death_in_step": [False, False, True], "done": [False, True, True]})
    stays = pd.DataFrame({"died_in_hosp": [False, True], "died_90d": [True, True]})
    r = truth.rewards(steps, stays, truth.RewardConfig(n_steps=5))
    assert r.tolist() == [-2.5, -12.5, -12.5 * 2]  # a death at window step 3 of 5 pays for steps 3 and 4
    r = truth.rewards(steps, stays, truth.RewardConfig(n_steps=5, death_reward="step"))
    assert r.tolist() == [-2.5, -12.5, -12.5]
    r = truth.rewards(steps, stays, truth.RewardConfig(scheme="terminal", terminal_reward=15.0))
    assert r.tolist() == [0.0, 15.0, -15.0]
    r = truth.rewards(steps, stays, truth.RewardConfig(scheme="terminal", terminal_outcome="died_90d"))
    assert r.tolist() == [0.0, -15.0, -15.0]


def test_truth_states_match_extracted_data_under_behaviour() -> None:
    """The behaviour policy's states in `truth` and in generated data (same loop, independent seeds) agree."""
    obs = E.cohort_observer()
    gen = E.simulate(120, np.random.default_rng(21), first_index=0, world=E.WorldConfig(), observer=obs)
    sep = gen.stays.loc[gen.stays["kind"] == E.KIND_SEPSIS, "stay"]
    g = gen.steps[gen.steps["stay"].isin(sep)]
    tr = E.simulate(100, np.random.default_rng(22), first_index=0, world=E.WorldConfig(), observer=obs,
                    cohort_only=True, keep_tables=False).steps
    for f in ("map", "sofa", "spo2", "lactate", "urine_step", "fluid_cum", "gcs", "fio2", "fluid_ml"):
        ga, ta = g.groupby("stay")[f].mean(), tr.groupby("stay")[f].mean()
        z = (ga.mean() - ta.mean()) / np.sqrt(ga.var() / len(ga) + ta.var() / len(ta))
        assert abs(z) < 4.0, (f, ga.mean(), ta.mean())


def test_policies_and_lookup() -> None:
    h = policies.HeuristicPolicy()
    names = h.feature_names
    base = dict(map=58.0, lactate=4.5, spo2=97.0, pf_ratio=350.0, urine_step=40.0, urine_cum=200.0,
                fluid_cum=500.0, weight=80.0)
    filled = {**base, "fluid_cum": 2400.0}       # 30 mL/kg given
    wet = {**filled, "spo2": 90.0}
    shock = {**base, "map": 50.0}
    fine = {**base, "map": 85.0, "lactate": 1.0, "urine_step": 400.0}
    obs = np.array([[d[n] for n in names] for d in (base, filled, wet, shock, fine)])
    a = h.act(obs)
    assert a[0, 0] == 1000.0 and a[0, 1] == 0.04  # hypotensive, dry: fluids first, maintenance dose only
    assert a[1, 0] == 500.0 and a[1, 1] > 0.1     # fluids given: norepinephrine 0.05 + 0.015·(65 − 58)
    np.testing.assert_allclose(a[1, 1], 0.155)
    assert a[2, 0] == 0.0 and a[2, 1] > 0.1       # hypoxic: no more fluids, vasopressor instead
    np.testing.assert_allclose(a[3, 1], 0.275)    # MAP 50: norepinephrine without waiting for fluids
    assert a[4].tolist() == [0.0, 0.0]            # stable: nothing
    assert policies.get_policy("behaviour") is None
    assert (policies.get_policy("no-treatment").act(obs) == 0).all()
    r = policies.get_policy("random").act(obs, np.random.default_rng(0))
    assert r.shape == (5, 2) and (r >= 0).all()
    with pytest.raises(ValueError, match="unknown policy"):
        policies.get_policy("no-such-policy")


def test_run_truth_reads_cohort_and_costs_params() -> None:
    params = {"synth": {"chunk_stays": 10, "truth_population": "simulator"},
              "cohort": {"reward": "terminal", "terminal_reward": 1.0, "n_steps": 6},
              "costs": {"rules": [{"name": "spo2_low", "feature": "spo2", "op": "<", "threshold": 92.0,
                                   "units": "%"}]}}
    d = stage.run_truth(params, Path("."), "no-treatment", 10, 0)
    assert d["truth/policy"] == "no-treatment" and "truth/rate_cost_urine_low" not in d
    assert -1.0 <= d["truth/return"] <= 1.0


def test_cohort_population_drops_the_patients_the_extraction_drops() -> None:
    """Same seed, same simulated patients: the cohort population is the subset the Sepsis-3 extraction keeps, which
    loses mostly early deaths (no culture–antibiotic pair before death), so its mortality is lower."""
    from ogsrl.cohort.extract import CohortConfig

    params = {"synth": {"chunk_stays": 300}, "cohort": {"reward": "terminal", "terminal_reward": 1.0},
              "costs": {"rules": [{"name": "spo2_low", "feature": "spo2", "op": "<", "threshold": 92.0,
                                   "units": "%"}]}}
    cohort = stage.run_truth(params, Path("."), "behaviour", 300, 5)
    sim = stage.run_truth({**params, "synth": {**params["synth"], "truth_population": "simulator"}},
                          Path("."), "behaviour", 300, 5)
    assert cohort["truth/population"] == "cohort" and sim["truth/population"] == "simulator"
    assert cohort["truth/episodes"] == sim["truth/episodes"] == 300
    assert 0.8 * sim["truth/stays"] < cohort["truth/stays"] < sim["truth/stays"]
    assert cohort["truth/mortality_hosp"] < sim["truth/mortality_hosp"]
    assert -1.0 <= cohort["truth/return"] <= 1.0 and "truth/rate_cost_urine_low" not in cohort  # params flow through
    with pytest.raises(ValueError, match="leave reward and rules out"):
        truth.evaluate_policy(None, 5, 0, cohort=CohortConfig(), reward=truth.RewardConfig())
    with pytest.raises(ValueError, match="differs from the cohort"):
        truth.evaluate_policy(None, 5, 0, cohort=CohortConfig(n_steps=6))
    with pytest.raises(ValueError, match="entered the cohort"):
        truth.evaluate_policy(None, 4, 0, world=E.WorldConfig(n_steps=6), cohort=CohortConfig(n_steps=6))


def test_saved_policy_directory_is_loaded_and_run(tmp_path: Path) -> None:
    import torch

    from ogsrl import features as F
    from ogsrl.agents.actor import HurdleActor, SavedPolicy

    torch.set_num_threads(1)
    names = F.PAPER_STATE
    pol = SavedPolicy(HurdleActor(len(names), (64, 64), 1, torch.Generator().manual_seed(0)), names)
    pol.save(tmp_path / "bc")
    params = {"synth": {"chunk_stays": 6, "truth_population": "simulator"}, "cohort": {"n_steps": 4}}
    d = stage.run_truth(params, tmp_path, "bc", 6, 0)
    assert d["truth/episodes"] == 6 and d["truth/steps"] > 0 and np.isfinite(d["truth/return"])


def test_best_known_rule_is_the_saved_search_winner(tmp_path: Path) -> None:
    saved = json.loads(policies.BEST_KNOWN_FILE.read_text(encoding="utf-8"))
    best = policies.get_policy("best-known")
    assert isinstance(best, policies.RulePolicy)
    assert dataclasses.asdict(best.params) == {k: float(v) for k, v in saved["params"].items()}
    assert set(saved["search"]["seeds"]).isdisjoint({1, 11, 42})  # evaluation seeds used in docs and benchmarks
    bad = tmp_path / "best.json"
    bad.write_text(json.dumps({"params": {**saved["params"], "typo_dose": 1.0}}), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown \\['typo_dose'\\]"):
        policies.best_known_policy(bad)
    with pytest.raises(ValueError, match="cannot read"):
        policies.best_known_policy(tmp_path / "missing.json")
