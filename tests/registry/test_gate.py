"""Promotion gate: the pure decision on hand-picked evidence, and its application in a real (sqlite) registry."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl.config import ConfigError, build  # noqa: E402
from ogsrl.registry import gate, stage  # noqa: E402
from ogsrl.ope.estimate import Estimate  # noqa: E402
from ogsrl.registry.gate import Evidence, GateConfig  # noqa: E402

REPORTS = ("a.json", "b.json")


def _evidence(**kw: object) -> Evidence:
    base: dict[str, object] = dict(
        validation={r: True for r in REPORTS},
        ope_return=Estimate(-50.0, -55.0, -45.0, 500.0),
        ope_costs={"cost_total": Estimate(0.4, 0.3, 0.5, 500.0)},
        guardian_alpha=0.95,
        guardian_coverage=0.94,
        support_reject_share=0.04,
        logged_return=Estimate(-52.0, -56.0, -48.0, 1000.0),
    )
    base.update(kw)
    return Evidence(**base)  # type: ignore[arg-type]


CFG = GateConfig(cost_limits={"cost_total": 0.5}, guardian_coverage_slack=0.015, validation_reports=REPORTS,
                 noninferiority_margin=5.0)


def _check(decision: gate.Decision, name: str) -> gate.Check:
    return next(c for c in decision.checks if c.name == name)


def test_all_pass_without_champion() -> None:
    d = gate.decide(_evidence(), CFG, champion_return=None)
    assert d.promote and not d.failed
    assert [c.name for c in d.checks] == ["validation", "guardian", "support", "cost:cost_total", "return"]
    ret = _check(d, "return")
    assert ret.reason == ("no champion yet: non-inferiority, lower CI -55 ≥ clinicians' logged return -52 - margin 5 "
                          "= -57 (margin +2)")
    assert (ret.value, ret.threshold, ret.margin) == (-55.0, -57.0, 2.0)


@pytest.mark.parametrize(
    ("kw", "champion", "failing", "reason_part"),
    [
        ({"validation": {"a.json": True, "b.json": False}}, None, "validation", "failed report(s) ['b.json']"),
        ({"validation": {"a.json": True}}, None, "validation", "missing report(s) ['b.json']"),
        ({"guardian_coverage": 0.9349}, None, "guardian", "0.9349 < alpha_c 0.9500 - slack 0.0150 = 0.935"),
        ({"guardian_coverage": float("nan")}, None, "guardian", "lacks"),
        ({"ope_costs": {"cost_total": Estimate(0.4, 0.3, 0.5001, 500.0)}}, None, "cost:cost_total", "0.5001 > limit 0.5"),
        ({"ope_costs": {}}, None, "cost:cost_total", "no finite OPE estimate"),
        ({}, -54.9, "return", "lower CI -55 < champion estimate on the current test split -54.9"),
        ({"ope_return": None}, None, "return", "no finite OPE estimate"),
        ({"guardian_alpha": None, "guardian_coverage": None}, None, "guardian", "no certified guardian bundled"),
        ({"support_reject_share": 0.1001}, None, "support", "own test actions 0.1001 > 0.1 (margin -0.0001)"),
        ({"support_reject_share": None}, None, "support", "no measurement of the candidate's own support"),
        ({"ope_return": Estimate(-50.0, -57.01, -45.0, 500.0)}, None, "return",
         "non-inferiority, lower CI -57.01 < clinicians' logged return -52 - margin 5 = -57"),
        ({"logged_return": None}, None, "return", "no logged clinicians' return"),
    ],
    ids=["validation-failed", "validation-missing", "guardian-low", "guardian-nan", "cost-over", "cost-missing",
         "return-below-champion", "return-missing", "guardian-none", "support-over", "support-missing",
         "return-inferior-to-clinicians", "logged-return-missing"],
)
def test_each_check_blocks_promotion(kw: dict, champion: float | None, failing: str, reason_part: str) -> None:
    cfg = GateConfig(cost_limits={"cost_total": 0.5}, guardian_coverage_slack=0.015, validation_reports=REPORTS,
                     noninferiority_margin=5.0, max_support_reject_share=0.1)
    d = gate.decide(_evidence(**kw), cfg, champion_return=champion)
    assert not d.promote
    assert [c.name for c in d.failed] == [failing]
    assert reason_part in _check(d, failing).reason
    assert d.summary().startswith("REJECT: " + failing)


def test_low_effective_sample_size_is_insufficient_evidence_not_a_reject() -> None:
    few = Estimate(0.4, 0.3, 0.6, 19.9)  # over the limit 0.5, but on 19.9 effective stays
    d = gate.decide(_evidence(ope_costs={"cost_total": few}), CFG, champion_return=None)
    assert not d.promote and d.outcome == "insufficient_evidence"
    c = _check(d, "cost:cost_total")
    assert c.insufficient and "effective sample size 19.9 < min_ess 20" in c.reason
    assert d.summary().startswith("INSUFFICIENT EVIDENCE (no decision): cost:cost_total")
    assert gate.decision_tags(d)["gate.decision"] == "insufficient_evidence"
    assert gate.decision_tags(d)["gate.check.cost.cost_total"] == "undecided"
    # a decided failure elsewhere still rejects; enough stays decide the same estimate normally
    d = gate.decide(_evidence(ope_costs={"cost_total": few}, guardian_coverage=0.5), CFG, champion_return=None)
    assert d.outcome == "reject"
    d = gate.decide(_evidence(ope_costs={"cost_total": Estimate(0.4, 0.3, 0.6, 20.0)}), CFG, champion_return=None)
    assert d.outcome == "reject" and not _check(d, "cost:cost_total").insufficient
    # unknown ESS (evidence recorded before ESS was stored) decides nothing either; min_ess 0 switches it off
    d = gate.decide(_evidence(ope_return=Estimate(-50.0, -55.0, -45.0)), CFG, champion_return=None)
    assert d.outcome == "insufficient_evidence" and "effective sample size unknown" in _check(d, "return").reason
    free = GateConfig(cost_limits={"cost_total": 0.5}, validation_reports=REPORTS, min_ess=0.0,
                      noninferiority_margin=5.0)
    assert gate.decide(_evidence(ope_return=Estimate(-50.0, -55.0, -45.0), guardian_coverage=0.96), free, None).promote


def test_every_check_states_value_threshold_and_margin() -> None:
    d = gate.decide(_evidence(), CFG, champion_return=-56.0)
    assert _check(d, "cost:cost_total").margin == pytest.approx(0.0)
    assert _check(d, "return").margin == pytest.approx(1.0) and "(margin +1)" in _check(d, "return").reason
    assert _check(d, "guardian").margin == pytest.approx(0.94 - 0.935)
    assert _check(d, "support").margin == pytest.approx(0.06)
    assert d.to_dict()["checks"][4]["margin"] == pytest.approx(1.0) and d.to_dict()["outcome"] == "promote"
    for c in d.checks[1:]:
        assert c.value is not None and c.threshold is not None and c.margin is not None
        assert f"value {c.value:.4g}, threshold {c.threshold:.4g}, margin {c.margin:+.4g}" in c.line()
    assert _check(d, "return").line().startswith("PASS      return: value -55, threshold -56, margin +1 —")


def test_a_margin_inside_the_tolerance_band_is_insufficient_evidence_not_pass_or_fail() -> None:
    banded = GateConfig(cost_limits={"cost_total": 0.5}, validation_reports=REPORTS, noninferiority_margin=5.0,
                        tolerance={"cost": 0.05, "return": 1.5, "guardian": 0.005, "support": 0.02})
    # cost upper CI 0.47: passes by 0.03 < band 0.05 → undecided; 0.56 fails by 0.06 > band → reject
    near = gate.decide(_evidence(guardian_coverage=0.97, ope_costs={"cost_total": Estimate(0.4, 0.3, 0.47, 500.0)}),
                       banded, None)
    assert near.outcome == "insufficient_evidence"
    c = _check(near, "cost:cost_total")
    assert c.insufficient and c.reason.startswith("margin +0.03 inside the tolerance band ±0.05: undecided")
    assert gate.decision_tags(near)["gate.check.cost.cost_total"] == "undecided"
    far = gate.decide(_evidence(guardian_coverage=0.97, ope_costs={"cost_total": Estimate(0.4, 0.3, 0.56, 500.0)}),
                      banded, None)
    assert far.outcome == "reject"
    # the same margins without a band decide; each kind has its own band
    assert gate.decide(_evidence(guardian_coverage=0.97, ope_costs={"cost_total": Estimate(0.4, 0.3, 0.47, 500.0)}),
                       CFG, None).promote
    assert _check(gate.decide(_evidence(guardian_coverage=0.953), banded, None), "guardian").insufficient
    assert _check(gate.decide(_evidence(guardian_coverage=0.97, support_reject_share=0.09), banded, None),
                  "support").insufficient
    ret = _check(gate.decide(_evidence(guardian_coverage=0.97), banded, champion_return=-56.0), "return")
    assert ret.insufficient and "±1.5" in ret.reason
    with pytest.raises(ConfigError, match="tolerance.costs: unknown check kind"):
        build(GateConfig, {"tolerance": {"costs": 1.0}}, "registry.gate")
    with pytest.raises(ConfigError, match="tolerance.cost must be a finite number"):
        build(GateConfig, {"tolerance": {"cost": -1.0}}, "registry.gate")


def test_boundaries_are_inclusive() -> None:
    ev = _evidence(guardian_coverage=0.935, ope_costs={"cost_total": Estimate(0.4, 0.3, 0.5, 500.0)})
    d = gate.decide(ev, CFG, champion_return=-55.0)
    assert d.promote, d.summary()


def test_no_guardian_fails_and_tags_cover_every_check() -> None:
    d = gate.decide(_evidence(guardian_alpha=None, guardian_coverage=None, support_reject_share=None), CFG,
                    champion_return=None)
    assert d.outcome == "reject" and [c.name for c in d.failed] == ["guardian", "support"]
    tags = gate.decision_tags(d)
    assert tags["gate.decision"] == "rejected"
    assert {k for k in tags if k.startswith("gate.check.")} == {
        "gate.check.validation", "gate.check.guardian", "gate.check.support", "gate.check.cost.cost_total",
        "gate.check.return"}


def test_support_is_measured_on_the_policys_own_actions_not_its_fallback(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    box = fakes.BoxGuardian(("gcs", "fluid_ml", "nee_max"), np.array([3, 0, 0]), np.array([15, 1000, 5]))
    inside = fakes.LinearPolicy(("gcs",), np.zeros((2, 1)), np.array([500.0, 0.0]))
    outside = fakes.LinearPolicy(("gcs",), np.zeros((2, 1)), np.array([5000.0, 0.0]))  # fluid over the box

    class Guarded:  # the GuardedPolicy shape: own policy + fallback, acting with the fallback outside
        def __init__(self) -> None:
            self.policy, self.fallback, self.feature_names = outside, inside, ("gcs",)

        def act(self, obs: np.ndarray, rng: object = None) -> np.ndarray:
            return inside.act(obs)

    test = tmp_path / "test.parquet"
    pd.DataFrame({"gcs": [3.0, 8.0, 15.0, 16.0]}).to_parquet(test)  # gcs 16 lies outside the box whatever the dose
    assert stage.support_reject_share(inside, box, test, 0) == 0.25
    assert stage.support_reject_share(Guarded(), box, test, 0) == 1.0  # its served actions would all pass
    assert stage.support_reject_share(inside, box, tmp_path / "none.parquet", 0) is None
    pd.DataFrame({"spo2": [90.0]}).to_parquet(test)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['gcs'\]"):
        stage.support_reject_share(inside, box, test, 0)


def test_evidence_round_trip() -> None:
    ev = _evidence()
    assert Evidence.from_dict(ev.to_dict()) == ev


def test_gate_config_validation() -> None:
    with pytest.raises(ConfigError, match="cost_limits"):
        build(GateConfig, {"cost_limits": {}}, "registry.gate")
    with pytest.raises(ConfigError, match="must be finite"):
        build(GateConfig, {"cost_limits": {"cost_total": math.inf}}, "registry.gate")
    with pytest.raises(ConfigError, match="unknown key"):
        build(GateConfig, {"cost_limit": {"cost_total": 1.0}}, "registry.gate")


# ---- in a real registry -------------------------------------------------------------------------------------------


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = tmp_path / "proj"
    return root, fakes.make_project(root)


def _cand(root: Path, name: str = "cand", gain: float = 0.02) -> None:
    """A second trained policy (other weights, so another hash) under data/models/policies/<name>/seed42."""
    fakes.save_policy(root / f"data/models/policies/{name}/seed42", weights=[[0.0, 0.0, gain], [0.1, 0.0, 0.0]],
                      bias=[100.0, 0.0])


def test_first_run_creates_champion_then_unsafe_candidate_stays_challenger(project: tuple[Path, dict]) -> None:
    import mlflow

    root, params = project
    first = stage.run(params, root)
    assert first["registry/promoted"] is True and first["registry/version"] == 1
    report = json.loads((root / "data/reports/registry.json").read_text())
    assert report["registry/promoted"] is True and report["registry/cost_model_bundled"] is True
    assert report["registry/champion"] == "1" and report["registry/challenger"] is None
    assert report["next/lineage"] == "ogsrl lineage models:/ogsrl-policy@champion --verify"
    assert report["next/mlflow_ui"] == f"mlflow ui --backend-store-uri sqlite:///{(root / 'mlflow.db').as_posix()}"
    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"  # the calls point MLflow at it only while they run
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champ = client.get_model_version_by_alias("ogsrl-policy", "champion")
    assert str(champ.version) == "1" and champ.tags["gate.decision"] == "promoted"
    assert champ.tags["gate.check.support"] == "pass"

    # a deliberately unsafe candidate: cost upper CI 2.5 over the limit 1.0
    _cand(root)
    fakes.write_ope(root, others={"cand": ((-40.0, -42.0, -38.0), (2.0, 1.5, 2.5))})
    reg = stage.register(params, root, run="cand")
    assert reg["version"] == "2"
    dry = stage.promote(params, root, dry_run=True)
    assert dry["promote"] is False and dry["dry_run"] is True
    assert "gate.decision" not in client.get_model_version("ogsrl-policy", "2").tags  # dry run changed nothing

    dec = stage.promote(params, root)
    assert dec["promote"] is False and dec["champion_before"] == "1"
    assert [c["name"] for c in dec["checks"] if not c["passed"]] == ["cost:cost_total"]
    assert dec["champion_return"] == -50.0 and "champion v1 = soc/seed42" in dec["comparison_basis"]
    v2 = client.get_model_version("ogsrl-policy", "2")
    assert v2.tags["gate.decision"] == "rejected"
    assert v2.tags["gate.check.cost.cost_total"] == "fail"
    assert v2.tags["gate.reason.cost.cost_total"] == "hull_fqe_wdr upper CI 2.5 > limit 1 (margin -1.5)"
    assert "challenger" in v2.aliases
    assert str(client.get_model_version_by_alias("ogsrl-policy", "champion").version) == "1"

    # a safe candidate whose lower CI beats the champion's current estimate (-50) is promoted
    fakes.write_ope(root, others={"cand": ((-40.0, -42.0, -38.0), (0.2, 0.1, 0.3))})
    stage.register(params, root, run="cand")
    dec = stage.promote(params, root)
    assert dec["promote"] is True and dec["version"] == "3"
    assert str(client.get_model_version_by_alias("ogsrl-policy", "champion").version) == "3"
    assert "challenger" not in client.get_model_version("ogsrl-policy", "3").aliases
    with pytest.raises(ValueError, match="already is the champion"):
        stage.promote(params, root, version="3")
    with pytest.raises(ValueError, match="ogsrl-policy v9"):
        stage.promote(params, root, version="9")


def test_the_gate_reads_the_return_from_estimator_and_the_costs_from_cost_estimator(
        project: tuple[Path, dict]) -> None:
    """Defaults: WDR's lower bound for the return, the FQE/WDR hull's upper bound for every cost; each check's
    reason names the estimator it read, and the evidence records both."""
    root, params = project
    metrics_path = root / "data/reports/evaluate/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    # WDR alone would clear the cost limit 1.0 (upper 0.5); the hull's upper bound 1.4 (FQE's) does not
    metrics.update({"soc/seed42/hull_fqe_wdr/cost_total/ci_high": 1.4, "soc/seed42/hull_fqe_wdr/return/ci_low": -90.0})
    metrics_path.write_text(json.dumps(metrics))
    ev = stage.gather_evidence(stage.registry_config(params), root)
    assert (ev.return_estimator, ev.cost_estimator) == ("wdr", "hull_fqe_wdr")
    assert ev.ope_return == Estimate(-50.0, -55.0, -45.0, 100.0)  # WDR's, not the hull's lower bound -90
    assert ev.ope_costs["cost_total"].ci_high == 1.4 and set(ev.ope_costs) == {"cost_total", "cost_spo2_low"}
    assert Evidence.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev
    ev = dataclasses.replace(ev, support_reject_share=0.02)  # measured at registration, not from the metrics
    dec = gate.decide(ev, stage.registry_config(params).gate, champion_return=None)
    assert [c.name for c in dec.failed] == ["cost:cost_total"]
    assert _check(dec, "cost:cost_total").reason == "hull_fqe_wdr upper CI 1.4 > limit 1 (margin -0.4)"
    assert _check(dec, "return").reason.startswith("no champion yet: non-inferiority, wdr lower CI -55 ≥ ")

    # the same metrics with the gate told to read WDR for the costs: the cost check passes on WDR's 0.5
    wdr = {**params, "registry": {**params["registry"], "cost_estimator": "wdr"}}
    ev = dataclasses.replace(stage.gather_evidence(stage.registry_config(wdr), root), support_reject_share=0.02)
    assert ev.ope_costs["cost_total"].ci_high == 0.5
    assert gate.decide(ev, stage.registry_config(wdr).gate, champion_return=None).promote
    with pytest.raises(ConfigError, match="cost_estimator must be a non-empty string"):
        stage.registry_config({"registry": {"cost_estimator": " "}})


def test_the_same_policy_cannot_beat_itself(project: tuple[Path, dict]) -> None:
    """Both returns come from the same current estimate: re-registering the champion's policy is no improvement,
    however good the estimate frozen in its evidence looks."""
    root, params = project
    assert stage.run(params, root)["registry/promoted"] is True
    fakes.write_ope(root, ret=(-40.0, -42.0, -38.0))  # the same soc policy, re-evaluated higher
    stage.register(params, root)
    dec = stage.promote(params, root)
    assert dec["promote"] is False and dec["champion_return"] == -40.0
    assert [c["name"] for c in dec["checks"] if not c["passed"]] == ["return"]


def test_champion_comparison_is_recomputed_on_the_current_test_split(
        project: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    root, params = project
    assert stage.run(params, root)["registry/promoted"] is True  # v1 soc, evidence says return -50
    # the evaluate stage reran on a new test split: the champion now scores -30 there, the candidate lower CI -35.
    # Against the number frozen in v1's evidence (-50) the candidate would pass; against the current one it fails.
    pd.DataFrame(fakes.trajectory_rows(seed=5)).to_parquet(root / "data/trajectories/test.parquet", index=False)
    _cand(root)
    fakes.write_ope(root, ret=(-30.0, -33.0, -27.0), others={"cand": ((-32.0, -35.0, -29.0), (0.2, 0.1, 0.3))})
    stage.register(params, root, run="cand")
    dec = stage.promote(params, root, dry_run=True)
    assert dec["champion_return"] == -30.0 and not dec["promote"]
    ret = next(c for c in dec["checks"] if c["name"] == "return")
    assert ret["value"] == -35.0 and ret["threshold"] == -30.0 and ret["margin"] == -5.0

    # metrics computed on another split (hash differs): both policies are re-evaluated, nothing frozen is used
    pd.DataFrame(fakes.trajectory_rows(seed=6)).to_parquet(root / "data/trajectories/test.parquet", index=False)
    calls: list[str] = []

    def fake_reevaluate(params: dict, root: Path, name: str, mv: object) -> dict:
        calls.append(str(mv.version))  # type: ignore[attr-defined]
        value = {"1": -60.0, "2": -45.0}[str(mv.version)]  # type: ignore[attr-defined]
        return {("wdr", "return"): Estimate(value, value - 3.0, value + 3.0, 500.0)}

    monkeypatch.setattr(stage, "_reevaluate", fake_reevaluate)
    dec = stage.promote(params, root, dry_run=True)
    assert calls == ["2", "1"] and dec["champion_return"] == -60.0 and dec["promote"] is True
    assert "candidate v2 re-evaluated; champion v1 re-evaluated" in dec["comparison_basis"]


def test_release_makes_the_baseline_the_first_champion_and_says_how_to_serve(project: tuple[Path, dict]) -> None:
    import mlflow

    root, params = project
    _cand(root)
    # the learned candidate's estimate rests on 3 effective stays: insufficient evidence, whatever it says
    fakes.write_ope(root, others={"cand": ((-40.0, -42.0, -38.0), (0.2, 0.1, 0.3))})
    metrics = json.loads((root / "data/reports/evaluate/metrics.json").read_text())
    metrics.update({k: 3.2 for k in metrics if k.startswith("cand/") and k.endswith("/ess")})
    (root / "data/reports/evaluate/metrics.json").write_text(json.dumps(metrics))
    gate_params = {**params["registry"]["gate"], "tolerance": {"cost": 0.1, "return": 0.5}}
    params = {**params, "registry": {**params["registry"], "run": "cand", "baseline_run": "soc", "gate": gate_params}}
    out = stage.release(params, root)
    assert [(s["run"], s["role"], s["outcome"]) for s in out["steps"]] == [
        ("soc", "baseline", "promote"), ("cand", "candidate", "insufficient_evidence")]
    assert (out["champion"], out["challenger"]) == ("1", "2")
    text = out["conclusion"]
    # soc: cost upper CI 0.5 ≤ limit 1 (margin 0.5 = 5 bands of 0.1); return -55 ≥ -52 - 8 (margin 5 = 10 bands)
    assert text.startswith("Gate: v1 (soc, baseline): PROMOTED to champion, every check passed, the tightest by "
                           "5.0x its tolerance band: cost:cost_total margin +0.5 (band 0.1) | ")
    assert "v2 (cand, candidate): INSUFFICIENT EVIDENCE (no decision), cost:cost_total: effective sample size 3.2" \
        in text
    assert "serve `ogsrl serve` (= models:/ogsrl-policy@champion)" in text
    assert "`ogsrl serve --model-uri models:/ogsrl-policy@challenger`" in text
    assert "`ogsrl lineage models:/ogsrl-policy@challenger --verify`" in text
    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_model_version("ogsrl-policy", "1").tags["ogsrl.role"] == "baseline"
    # with a champion in place, a second release registers only the candidate
    again = stage.release(params, root)
    assert [s["role"] for s in again["steps"]] == ["candidate"] and again["champion"] == "1"


def test_release_without_a_trained_baseline_gates_the_candidate_alone(project: tuple[Path, dict]) -> None:
    root, params = project
    _cand(root)
    fakes.write_ope(root, others={"cand": ((-40.0, -42.0, -38.0), (0.2, 0.1, 0.3))})
    params = {**params, "registry": {**params["registry"], "run": "cand", "baseline_run": "clinician_clone"}}
    out = stage.release(params, root)
    assert [(s["run"], s["role"], s["outcome"]) for s in out["steps"]] == [("cand", "candidate", "promote")]
    assert out["champion"] == "1" and "v1 (cand, candidate): PROMOTED to champion" in out["conclusion"]


def test_guardian_check_reads_the_stay_level_coverage_without_slack(tmp_path: Path) -> None:
    cfg = GateConfig(cost_limits={"cost_total": 0.5}, validation_reports=REPORTS, noninferiority_margin=5.0)
    assert cfg.guardian_coverage_slack == 0.0
    ok = gate.decide(_evidence(guardian_coverage=0.9612, guardian_unit="stay"), cfg, champion_return=None)
    assert ok.promote and _check(ok, "guardian").reason == (
        "test coverage per stay 0.9612 ≥ alpha_c 0.95 (margin +0.0112)")
    low = gate.decide(_evidence(guardian_coverage=0.9499, guardian_unit="stay"), cfg, champion_return=None)
    assert [c.name for c in low.failed] == ["guardian"] and "margin -0.0001" in _check(low, "guardian").reason
    rows = gate.decide(_evidence(guardian_coverage=0.99, guardian_unit="row"), cfg, champion_return=None)
    assert [c.name for c in rows.failed] == ["guardian"] and "calibrated by rows" in _check(rows, "guardian").reason

    # gather_evidence: a stay certificate gives its per-stay test coverage; one without a unit counts as rows
    root = tmp_path
    cert = root / "data/models/guardian/certificate.json"
    cert.parent.mkdir(parents=True)
    cert.write_text(json.dumps({"alpha_c": 0.95, "unit": "stay", "test_coverage": 0.97, "test_coverage_stay": 0.96}))
    ev = stage.gather_evidence(stage.RegistryConfig(), root)
    assert (ev.guardian_alpha, ev.guardian_coverage, ev.guardian_unit) == (0.95, 0.96, "stay")
    cert.write_text(json.dumps({"alpha_c": 0.95, "test_coverage": 0.97}))
    ev = stage.gather_evidence(stage.RegistryConfig(), root)
    assert (ev.guardian_coverage, ev.guardian_unit) == (0.97, "row")
    assert Evidence.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev
