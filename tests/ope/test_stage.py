"""The evaluate stage end to end on a tiny contract-shaped project (train_policies first)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogsrl.agents import load_policy
from ogsrl.agents import stage as train_stage
from ogsrl.ope import stage, wis

TINY = {"hidden": [8, 8], "batch_size": 64, "max_epochs": 3}
TINY_FQE = {"hidden": [8], "iterations": 3, "epochs": 1, "batch_size": 64, "mc_actions": 2, "refits": 2}


def _params(source: str = "trajectories", runs: dict | None = None, **ope) -> dict:
    return {
        "data": {"source": source},
        "policies": {"runs": runs or {"soc": {"algorithm": "bc"}}, "algorithms": {"bc": TINY},
                     "serve_guardian_fallback": False},
        "ope": {"n_boot": 200, "truth_episodes": 7, "behaviour": TINY, "fqe": TINY_FQE, **ope},
    }


@pytest.fixture(scope="module")
def trained(traj_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ope") / "p"
    shutil.copytree(traj_root, root)
    train_stage.run(_params(), root)
    stage.run_behaviour(_params(), root)
    return root


def test_evaluate_writes_estimates_for_every_target(trained: Path) -> None:
    from ogsrl.agents import load_policy
    from ogsrl.io import file_sha256

    metrics = stage.run(_params(), trained)
    assert json.loads((trained / "data/reports/evaluate/metrics.json").read_text()) == pytest.approx(metrics)
    assert metrics["test/sha256"] == file_sha256(trained / "data/trajectories/test.parquet")
    # the promotion gate's re-evaluation of a policy gives the stage's numbers for the same key
    again = stage.evaluate_current(_params(), trained, load_policy(trained / "data/models/policies/soc/seed42"),
                                   "soc/seed42")
    for e in ("wdr", "mb", "knn"):
        assert again[(e, "return")].to_dict() == pytest.approx(
            {f: metrics[f"soc/seed42/{e}/return/{f}"] for f in ("value", "ci_low", "ci_high", "ess")})
    costs = ["cost_spo2_low", "cost_urine_low", "cost_total"]
    discounted = ("behaviour/onpolicy", *(f"soc/seed42/{e}" for e in ("wis", "pdwis", "wis_clip", "pdwis_clip",
                                                                       "fqe", "dr", "wdr", "hull_fqe_wdr", "mb",
                                                                       "knn", "consensus")))
    keys = [f"{k}/{t}" for k in discounted for t in ("return", *costs)]
    rates = ("mortality_hosp", *(f"rate_{c}" for c in costs))
    keys += [f"{k}/{t}" for k in ("behaviour/onpolicy", "soc/seed42/wis", "soc/seed42/wis_clip") for t in rates]
    keys.append("soc/seed42/cautious/return")
    for t in ("return", *costs):  # the hull of FQE and WDR, with FQE's value and WDR's ESS
        f, w, h = ({k: metrics[f"soc/seed42/{e}/{t}/{k}"] for k in ("value", "ci_low", "ci_high", "ess")}
                   for e in ("fqe", "wdr", "hull_fqe_wdr"))
        assert h == {"value": f["value"], "ci_low": min(f["ci_low"], w["ci_low"]),
                     "ci_high": max(f["ci_high"], w["ci_high"]), "ess": w["ess"]}
    for t in ("return", *costs):  # the consensus: kNN's, MB's and FQE's mean inside the hull of their intervals
        k, m, f, c = ({k: metrics[f"soc/seed42/{e}/{t}/{k}"] for k in ("value", "ci_low", "ci_high")}
                      for e in ("knn", "mb", "fqe", "consensus"))
        assert c == pytest.approx({"value": (k["value"] + m["value"] + f["value"]) / 3,
                                   "ci_low": min(k["ci_low"], m["ci_low"], f["ci_low"]),
                                   "ci_high": max(k["ci_high"], m["ci_high"], f["ci_high"])})
        if t == "return":  # cautious: the return's consensus lowered by its parts' spread; no cost has one
            spread = float(np.std([k["value"], m["value"], f["value"]]))
            assert metrics["soc/seed42/cautious/return/value"] == pytest.approx(c["value"] - spread) and spread > 0
            assert metrics["soc/seed42/cautious/return/ci_low"] == c["ci_low"]
        else:
            assert f"soc/seed42/cautious/{t}/value" not in metrics
    assert metrics["soc/seed42/flags/consensus_unavailable"] is False
    for key in keys:
        lo, v, hi = (metrics[f"{key}/{k}"] for k in ("ci_low", "value", "ci_high"))
        assert lo <= hi and np.isfinite(v)
        assert 1.0 <= metrics[f"{key}/ess"] <= 40.0
    assert metrics["behaviour/onpolicy/mortality_hosp/value"] == 0.0  # nobody dies in the fake data
    assert metrics["truth/available"] is False and metrics["test/stays"] == 40
    assert metrics["support/available"] is False and not any("/support/" in k for k in metrics)  # no guardian yet
    assert metrics["ope/model_based"] is True and metrics["ope/neighbour"] is True
    # the critic's settings, which the report's pre-registered FQE advice is checked against
    assert (metrics["ope/fqe_action"], metrics["ope/fqe_history"], metrics["ope/fqe_previous_action"]) == \
        ("continuous", 0, False)
    for k in ("wis/return/value", "pdwis/cost_total/ci_high", "weights/top1_share"):  # one seed: mean = it, sd 0
        assert metrics[f"soc/mean/{k}"] == metrics[f"soc/seed42/{k}"] and metrics[f"soc/sd/{k}"] == 0.0

    # the behaviour's own value is the plain mean of the discounted test returns
    test = pd.read_parquet(trained / "data/trajectories/test.parquet").sort_values(["stay_key", "step"])
    ep = wis.pad_by_stay(test["stay_key"].to_numpy(), {"r": test["reward"].to_numpy()})
    g = wis.discounted_returns(ep.values["r"], ep.mask, 1.0)
    assert metrics["behaviour/onpolicy/return/value"] == pytest.approx(g.mean())
    assert metrics["behaviour/onpolicy/return/ess"] == pytest.approx(40.0)
    rate = metrics["behaviour/onpolicy/rate_cost_spo2_low/value"]
    assert rate == pytest.approx(test["cost_spo2_low"].mean())  # equal lengths: pooled rate = row mean

    est = pd.read_csv(trained / "data/reports/evaluate/estimates.csv")
    assert len(est) == len(keys) and set(est["policy"]) == {"behaviour", "soc"}
    weights = pd.read_csv(trained / "data/reports/evaluate/weights.csv")
    assert weights["weight_share"].is_monotonic_increasing and weights["weight_share"].iloc[-1] == pytest.approx(1)
    assert load_policy(trained / "data/models/behaviour").feature_names[0] == "gender"
    assert metrics["soc/seed42/flags/no_overlap"] is False and metrics["soc/seed42/fqe/refit_sd_return"] > 0
    assert metrics["soc/seed42/dr/return/ess"] == metrics["soc/seed42/wis/return/ess"]  # ESS of the same weights
    # model-based: the total cost return is the sum of the rules' (same per-stay values), ESS of the same weights
    assert metrics["soc/seed42/flags/mb_unavailable"] is False
    assert metrics["soc/seed42/mb/cost_total/value"] == pytest.approx(
        metrics["soc/seed42/mb/cost_spo2_low/value"] + metrics["soc/seed42/mb/cost_urine_low/value"])
    assert metrics["soc/seed42/mb/return/ess"] == metrics["soc/seed42/wis/return/ess"]
    assert metrics["soc/seed42/knn/cost_total/value"] == pytest.approx(
        metrics["soc/seed42/knn/cost_spo2_low/value"] + metrics["soc/seed42/knn/cost_urine_low/value"])

    again = stage.run(_params(), trained)  # same seeds → same numbers
    assert again == metrics


def test_support_check_draws_each_policy_as_the_gate_does(trained: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
    import ogsrl_fakes as fakes

    from ogsrl.registry.stage import support_reject_share

    test_path = trained / "data/trajectories/test.parquet"
    test = pd.read_parquet(test_path)
    cut = float(test["fluid_ml"].quantile(0.7))  # the box rejects the logged fluid doses above it
    root = tmp_path / "p"
    fakes.save_guardian(root / "data/models/guardian", ("fluid_ml", "nee_max"), [0.0, 0.0], [cut, 1e9])
    params = {**_params(), "registry": {"guardian_loader": "ogsrl_fakes:load_guardian", "support_seed": 7}}
    check = stage.support_check(params, root, test)
    assert check.metrics == {"support/available": True, "support/seed": 7,
                             "support/clinicians_reject_share": pytest.approx((test["fluid_ml"] > cut).mean())}
    soc = load_policy(trained / "data/models/policies/soc/seed42")
    share = check.of(soc)["support/reject_share"]
    assert share == support_reject_share(soc, fakes.load_guardian(root / "data/models/guardian"), test_path, 7)
    assert 0.0 < share < 1.0
    missing = stage.support_check(params, tmp_path / "none", test)  # no certified guardian: no check, said so
    assert missing.metrics == {"support/available": False} and missing.of(soc) == {}


def test_weight_clip_adds_capped_estimators(trained: Path) -> None:
    clipped = stage.run(_params(weight_clip=1.0), trained)
    assert clipped["soc/seed42/wis_clip/return/ess"] >= clipped["soc/seed42/wis/return/ess"]
    free = stage.run(_params(weight_clip=None), trained)
    assert not any("_clip/" in k for k in free)
    assert free["soc/seed42/wis/return/value"] == clipped["soc/seed42/wis/return/value"]
    assert free["behaviour/onpolicy/return/value"] == clipped["behaviour/onpolicy/return/value"]


def _fake_truth(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    """Every policy's true means as below; per patient, the clinicians score patients a, b, c and any other policy
    a, b, d (a patient only one cohort keeps), so against the clinicians it gains (3 − 1)/2 = 1.0 in return and
    (0 − 1)/2 = −0.5 in mortality on the two patients both keep."""
    def truth_result(params: dict, root: Path, policy: str, episodes: int, seed: int) -> types.SimpleNamespace:
        calls.append((policy, episodes, seed))
        if policy != "behaviour":  # the saved policy directory is loadable as the same stochastic policy
            load_policy(policy)
        values = {"truth/return": -15.0, "truth/mortality_hosp": 0.2, "truth/rate_cost_total": 0.3,
                  "truth/cost_return_cost_total": 4.0, "truth/episodes": episodes}
        clinicians = policy == "behaviour"
        per_stay = pd.DataFrame({"return": [-16.0, -14.0, -15.0] if clinicians else [-13.0, -15.0, -17.0],
                                 "died_in_hosp": [0.0, 1.0, 0.0] if clinicians else [0.0, 0.0, 1.0],
                                 "cost_return_cost_total": [4.0, 4.0, 4.0]},
                                index=pd.Index(["a", "b", "c"] if clinicians else ["a", "b", "d"], name="patient"))
        return types.SimpleNamespace(to_dict=lambda: values, per_stay=per_stay)

    fake = types.ModuleType("ogsrl.synth.stage")
    fake.truth_result = truth_result  # type: ignore[attr-defined]
    import ogsrl.synth

    monkeypatch.setitem(sys.modules, "ogsrl.synth.stage", fake)
    monkeypatch.setattr(ogsrl.synth, "stage", fake, raising=False)


def test_demo_source_puts_true_values_beside_the_estimates(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    _fake_truth(monkeypatch, calls)
    truth = stage.run_truth(_params(source="demo"), trained)
    assert [c[0] for c in calls] == ["behaviour", str(trained / "data/models/policies/soc/seed42")]
    assert all(c[1:] == (7, 42) for c in calls)
    assert truth["truth/soc/seed42/cost_return_cost_total"] == 4.0 and truth["truth/cached_policies"] == 0
    paired = {k.removeprefix("truth/soc/seed42/vs_behaviour_"): v for k, v in truth.items() if "vs_behaviour_" in k}
    assert paired["patients"] == 2 and paired["return"] == 1.0 and paired["mortality_hosp"] == -0.5
    assert paired["cost_return_cost_total"] == 0.0 == paired["cost_return_cost_total_ci_hi"]
    assert paired["return_ci_lo"] == pytest.approx(1.0 - 1.959963984540054 * np.sqrt(8.0) / np.sqrt(2))
    assert not any(k.startswith("truth/behaviour/vs_behaviour") for k in truth)
    again = stage.run_truth(_params(source="demo"), trained)  # cached: nothing simulated again
    assert len(calls) == 2 and again["truth/cached_policies"] == 2
    assert again == {**truth, "truth/cached_policies": 2}  # the per-patient values come back from the cache
    written = json.loads((trained / "data/reports/truth.json").read_text())
    assert "truth/cached_policies" not in written  # a cache hit must not change evaluate's dependency
    assert written == {k: v for k, v in again.items() if k != "truth/cached_policies"}
    code = stage.truth_code_sha256()
    monkeypatch.setattr(stage, "TRUTH_CODE", ("synth",))  # other simulation code: every cached value is stale
    assert stage.truth_code_sha256() != code
    assert stage.run_truth(_params(source="demo"), trained)["truth/cached_policies"] == 0 and len(calls) == 4
    monkeypatch.setattr(stage, "TRUTH_CODE", ("synth", "cohort", "agents", "guardian", "costs.py", "features.py"))
    assert stage.truth_code_sha256() == code  # by source only: the interpreter's caches (__pycache__) do not count
    metrics = stage.run(_params(source="demo"), trained)
    assert metrics["truth/available"] is True
    assert metrics["truth/soc/seed42/mortality_hosp"] == 0.2 and metrics["truth/behaviour/return"] == -15.0
    assert "truth/soc/seed42/policy" not in metrics  # no paths in the metrics
    for est in ("wis", "pdwis", "fqe", "dr", "wdr", "hull_fqe_wdr"):  # every estimator × target with a truth
        for target, true in (("return", -15.0), ("cost_total", 4.0)):
            k = f"soc/seed42/{est}/{target}"
            assert metrics[f"{k}/covers_truth"] is (metrics[f"{k}/ci_low"] <= true <= metrics[f"{k}/ci_high"])
    assert metrics["behaviour/onpolicy/mortality_hosp/covers_truth"] is False  # 0 deaths in the fake test split
    assert "soc/seed42/wis/rate_cost_total/covers_truth" in metrics
    assert "soc/seed42/fqe/cost_spo2_low/covers_truth" not in metrics  # the fake truth has no value for it
    est = pd.read_csv(trained / "data/reports/evaluate/estimates.csv")
    assert est.loc[(est.policy == "soc") & (est.target == "return"), "truth"].eq(-15.0).all()
    discounted = stage.run({**_params(source="demo"), "ope": {**_params()["ope"], "gamma": 0.9}}, trained)
    assert "soc/seed42/wis/return/covers_truth" not in discounted  # truth's return is undiscounted
    other = stage.run_truth(_params(), trained)
    assert other == {"truth/available": False} and len(calls) == 4


def test_adding_a_policy_never_changes_another_policys_numbers(trained: Path) -> None:
    runs = {"soc": {"algorithm": "bc"}, "soc_b": {"algorithm": "bc", "overrides": {"hidden": [4]}}}
    train_stage.run(_params(runs=runs), trained)
    both = stage.run(_params(runs=runs), trained)
    alone = stage.run(_params(), trained)
    soc = {k: v for k, v in alone.items() if k.startswith("soc/seed42/")}
    assert soc and all(both[k] == v for k, v in soc.items())
    assert both["soc_b/seed42/wis/return/value"] != both["soc/seed42/wis/return/value"]


def test_bad_input_is_one_line_or_a_flagged_fallback(trained: Path, tmp_path: Path) -> None:
    from ogsrl.agents import common
    from ogsrl.errors import DataError

    bare = tmp_path / "bare"
    shutil.copytree(trained, bare, ignore=shutil.ignore_patterns("behaviour"))
    with pytest.raises(DataError, match="behaviour model missing at data/models/behaviour; run `ogsrl fit-behav"):
        stage.run(_params(), bare)

    cfg = stage.ope_config(_params())
    train, _ = common.read_split(trained / "data/trajectories/train.parquet")
    test, meta = common.read_split(trained / "data/trajectories/test.parquet")
    costs = tuple(meta["cost_columns"])
    soc = load_policy(trained / "data/models/policies/soc/seed42")
    bmodel = stage.load_behaviour(trained)
    cols = {"return": test["reward"].to_numpy(), "mortality_hosp": np.zeros(len(test)),
            **{c: test[c].to_numpy() for c in costs}}
    cd = stage.critic_data(cfg, train, test, costs, None)

    class NoOverlap:  # acts like SOC but gives every logged action density 0
        feature_names = soc.feature_names

        def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return soc.act(obs, rng)

        def log_prob(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
            return np.full(len(obs), -np.inf)

    ev = stage.evaluate_policy(NoOverlap(), "x/seed1", bmodel, train, test, cols, cd, cfg)
    assert ev.diagnostics["flags/no_overlap"] is True
    assert {e for e, _ in ev.estimates} == {"fqe"} and ev.estimates[("fqe", "return")].ess == 0.0

    class OtherFeatures(NoOverlap):
        feature_names = ("lactate_velocity",)

    with pytest.raises(DataError, match=r"policy x/seed1 reads feature columns the trajectories lack: "
                                        r"\['lactate_velocity'\]"):
        stage.evaluate_policy(OtherFeatures(), "x/seed1", bmodel, train, test, cols, cd, cfg)


def test_critic_state_gains_the_previous_logged_action_and_states(trained: Path) -> None:
    from ogsrl.agents import common
    from ogsrl.ope import fqe

    train, _ = common.read_split(trained / "data/trajectories/train.parquet")
    test, meta = common.read_split(trained / "data/trajectories/test.parquet")
    costs = tuple(meta["cost_columns"])
    plain = stage.critic_data(stage.ope_config(_params()), train, test, costs, None)
    prev = stage.critic_data(stage.ope_config(_params(fqe={**TINY_FQE, "previous_action": True})), train, test,
                             costs, None)
    n = plain.train.obs.shape[1]
    assert prev.train.obs.shape[1] == n + 4 and np.array_equal(prev.train.obs[:, :n], plain.train.obs)
    later = np.nonzero(prev.train.step > 0)[0]
    enc = fqe.encode_actions(train[["fluid_ml", "nee_max"]].to_numpy("float64"))
    np.testing.assert_array_equal(prev.train.obs[later, n:], enc[later - 1])
    np.testing.assert_array_equal(prev.train.obs[prev.train.step == 0, n:], 0.0)
    vaso = stage.critic_data(stage.ope_config(_params(fqe={**TINY_FQE, "previous_action": ["nee_max"]})), train,
                             test, costs, None)
    np.testing.assert_array_equal(vaso.train.obs[:, n:], prev.train.obs[:, [n + 1, n + 3]])
    with pytest.raises(ValueError, match=r"previous_action: \['dopamine'\] are not action columns"):
        stage.critic_data(stage.ope_config(_params(fqe={**TINY_FQE, "previous_action": ["dopamine"]})), train, test,
                          costs, None)
    both = stage.critic_data(stage.ope_config(_params(fqe={**TINY_FQE, "history": 2, "previous_action": True})),
                             train, test, costs, None)
    assert both.test.obs.shape[1] == 3 * n + 4  # the state, two previous states, then the previous action
    np.testing.assert_array_equal(both.train.obs[:, 3 * n:], prev.train.obs[:, n:])
    np.testing.assert_array_equal(both.train.obs[later, n: 2 * n], plain.train.obs[later - 1])
    np.testing.assert_array_equal(both.train.obs[prev.train.step == 0, n: 2 * n], plain.train.obs[prev.train.step == 0])


def test_bad_ope_params_are_config_errors(trained: Path) -> None:
    from ogsrl.config import ConfigError

    with pytest.raises(ConfigError, match="gamma"):
        stage.run(_params(gamma=1.5), trained)
    with pytest.raises(ConfigError, match="weight_clip"):
        stage.run(_params(weight_clip=-1.0), trained)
    with pytest.raises(ConfigError, match=r"consensus: unknown estimator\(s\) \['hull'\]"):
        stage.run(_params(consensus=["fqe", "hull"]), trained)
    with pytest.raises(ConfigError, match="consensus needs at least two estimators"):
        stage.run(_params(consensus=["fqe"]), trained)
    with pytest.raises(ConfigError, match="cautious_k must be a finite number ≥ 0, got -1.0"):
        stage.run(_params(cautious_k=-1.0), trained)
    with pytest.raises(ConfigError, match=r"consensus combines \['mb'\], which this configuration does not compute"):
        stage.run(_params(model={"enabled": False}), trained)


def test_summary_prints_each_seeds_estimates_with_ci_ess_and_truth_coverage() -> None:
    from ogsrl.ope.stage import summary

    metrics = {"gmb_cpo/seed42/wdr/return/value": -90.65, "gmb_cpo/seed42/wdr/return/ci_low": -99.71,
               "gmb_cpo/seed42/wdr/return/ci_high": -66.14, "gmb_cpo/seed42/wdr/return/ess": 1.04,
               "gmb_cpo/seed42/wdr/return/covers_truth": True,
               "gmb_cpo/seed42/wdr/cost_spo2_low/value": 0.5,  # not a summary target
               "gmb_cpo/mean/wdr/return/value": -90.65, "gmb_cpo/sd/wdr/return/value": 0.0,  # aggregates
               "soc/seed42/fqe/cost_total/value": 6.59, "soc/seed42/fqe/cost_total/ci_low": 6.11,
               "soc/seed42/fqe/cost_total/ci_high": 7.06,
               "truth/gmb_cpo/seed42/return": -78.3, "truth/gmb_cpo/seed42/rate_cost_total": 0.3, "test/stays": 862}
    assert summary(metrics) == {
        "gmb_cpo/seed42/wdr/return": "-90.7 [-99.7, -66.1] ESS 1.0, covers truth: yes",
        "soc/seed42/fqe/cost_total": "6.59 [6.11, 7.06]",
        "truth/gmb_cpo/seed42/return": -78.3, "test/stays": 862,
        "metrics_file": "data/reports/evaluate/metrics.json"}


def test_too_few_test_transitions_skip_knn_with_a_warning(trained: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ogsrl.agents import common

    params = _params(model={"enabled": False}, neighbour={"k": 10**6}, consensus=[])
    cfg = stage.ope_config(params)
    test, meta = common.read_split(trained / "data/trajectories/test.parquet")
    with caplog.at_level("WARNING"):
        assert stage.eval_world(params, cfg, trained, test, meta) is None
    assert "fewer than ope.neighbour.k = 1000000; no knn estimates" in caplog.text
    no_mb = _params(model={"enabled": False}, consensus=[])
    world = stage.eval_world(no_mb, stage.ope_config(no_mb), trained, test, meta)
    assert world is not None and not world.models and len(world.pools) == 4 and len(world.pool_offsets) == 4


def _with_attendings(trained: Path, dest: Path, by_feature: str | None = None) -> Path:
    """A copy of ``trained`` whose stays (every split) have one of five attendings: in turn, or by quintile of a
    first-state feature (case mix that differs by attending)."""
    from ogsrl.agents import common

    shutil.copytree(trained, dest)
    first = pd.concat([common.read_split(dest / f"data/trajectories/{s}.parquet")[0] for s in ("train", "val", "test")]
                      ).sort_values(["stay_key", "step"]).drop_duplicates("stay_key").reset_index(drop=True)
    who = np.arange(len(first)) % 5 if by_feature is None else \
        pd.qcut(first[by_feature].rank(method="first"), 5, labels=False).to_numpy()
    pd.DataFrame({"stay_key": first["stay_key"], "provider_key": [f"att{w}" for w in who]}).to_parquet(
        dest / "data/trajectories/providers.parquet")
    return dest


def test_mb_anchored_reads_the_spo2_cost_through_the_attendings_line(trained: Path, tmp_path: Path) -> None:
    root = _with_attendings(trained, tmp_path / "att")
    params = _params(anchored={"min_stays": 30})
    metrics = stage.run(params, root)
    assert metrics["ope/anchored"] is True and metrics["anchored/attendings"] == 5.0
    assert metrics["anchored/stays_with_attending"] == 200 and metrics["anchored/balance_p"] >= 0.01
    key = "soc/seed42/mb_anchored/cost_spo2_low"
    lo, value, hi = (metrics[f"{key}/{f}"] for f in ("ci_low", "value", "ci_high"))
    assert 0.0 <= lo <= value <= hi
    c, d = metrics["anchored/cost_spo2_low/intercept"], metrics["anchored/cost_spo2_low/slope"]
    assert "soc/seed42/mb_anchored/cost_urine_low/value" not in metrics  # only the listed targets
    plain = stage.run(_params(), trained)  # no attendings recorded: no mb_anchored
    assert plain["ope/anchored"] is False
    assert plain["anchored/unavailable"] == "the trajectories record no attendings (providers.parquet)"
    # anchoring draws from its own streams: every other estimate is the same with or without it
    assert {k: v for k, v in metrics.items() if k.startswith("soc/") and "mb_anchored" not in k} == \
        {k: v for k, v in plain.items() if k.startswith("soc/")}
    assert np.isfinite(c) and np.isfinite(d)
    # the gate's re-evaluation of a champion skips the anchors (no decision reads them) and changes nothing else
    again = stage.evaluate_current(params, root, load_policy(root / "data/models/policies/soc/seed42"), "soc/seed42")
    assert {f"{e}/{t}" for e, t in again} == {k.removeprefix("soc/seed42/").removesuffix("/value") for k in plain
                                             if k.startswith("soc/seed42/") and k.endswith("/value")}
    assert again[("mb", "cost_spo2_low")].value == pytest.approx(metrics["soc/seed42/mb/cost_spo2_low/value"])


def test_attendings_with_different_case_mix_give_insufficient_evidence(trained: Path, tmp_path: Path) -> None:
    from ogsrl.agents import common

    def world(root: Path, **anchored: object) -> stage.EvalWorld:
        params = _params(anchored={"min_stays": 30, **anchored}, neighbour={"enabled": False}, consensus=[],
                         model={"refits": 0})  # one evaluation fit is enough to anchor
        test, meta = common.read_split(root / "data/trajectories/test.parquet")
        out = stage.eval_world(params, stage.ope_config(params), root, test, meta)
        assert out is not None
        return out

    skew = world(_with_attendings(trained, tmp_path / "skew", by_feature="age"))  # a baseline (copied) feature
    assert skew.anchors is None and skew.anchor_report["anchored/balance_p"] < 0.01
    assert skew.anchor_report["anchored/unavailable"].startswith(
        "insufficient evidence: the attendings' patients differ in age")
    by_spo2 = _with_attendings(trained, tmp_path / "spo2", by_feature="spo2")  # not a baseline feature ...
    assert world(by_spo2).anchors is not None
    listed = world(by_spo2, balance_features=["age", "spo2"])
    assert listed.anchors is None and listed.anchor_report["anchored/balance_feature"] == "spo2"  # ... unless listed
    assert world(by_spo2, min_stays=41).anchor_report["anchored/unavailable"] == \
        "insufficient evidence: 0 attendings have >= 41 stays; an anchor line needs 5"
    with pytest.raises(ValueError, match=r"ope.anchored.targets lists \['cost_map_low'\], which the world models do"):
        world(by_spo2, targets=["cost_map_low"])
