"""Promotion gate: the pure decision on hand-picked evidence, and its application in a real (sqlite) registry."""

from __future__ import annotations

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
    )
    base.update(kw)
    return Evidence(**base)  # type: ignore[arg-type]


CFG = GateConfig(cost_limits={"cost_total": 0.5}, guardian_coverage_slack=0.015, validation_reports=REPORTS)


def _check(decision: gate.Decision, name: str) -> gate.Check:
    return next(c for c in decision.checks if c.name == name)


def test_all_pass_without_champion() -> None:
    d = gate.decide(_evidence(), CFG, champion_return=None)
    assert d.promote and not d.failed
    assert [c.name for c in d.checks] == ["validation", "guardian", "cost:cost_total", "return"]
    assert "no champion" in _check(d, "return").reason


@pytest.mark.parametrize(
    ("kw", "champion", "failing", "reason_part"),
    [
        ({"validation": {"a.json": True, "b.json": False}}, None, "validation", "failed report(s) ['b.json']"),
        ({"validation": {"a.json": True}}, None, "validation", "missing report(s) ['b.json']"),
        ({"guardian_coverage": 0.9349}, None, "guardian", "0.9349 < alpha_c 0.9500"),
        ({"guardian_coverage": float("nan")}, None, "guardian", "lacks"),
        ({"ope_costs": {"cost_total": Estimate(0.4, 0.3, 0.5001, 500.0)}}, None, "cost:cost_total", "0.5001 > limit 0.5"),
        ({"ope_costs": {}}, None, "cost:cost_total", "no finite OPE estimate"),
        ({}, -54.9, "return", "lower CI -55 < champion estimate -54.9"),
        ({"ope_return": None}, None, "return", "no finite OPE estimate"),
    ],
    ids=["validation-failed", "validation-missing", "guardian-low", "guardian-nan", "cost-over", "cost-missing",
         "return-below-champion", "return-missing"],
)
def test_each_check_blocks_promotion(kw: dict, champion: float | None, failing: str, reason_part: str) -> None:
    d = gate.decide(_evidence(**kw), CFG, champion_return=champion)
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
    free = GateConfig(cost_limits={"cost_total": 0.5}, validation_reports=REPORTS, min_ess=0.0)
    assert gate.decide(_evidence(ope_return=Estimate(-50.0, -55.0, -45.0), guardian_coverage=0.96), free, None).promote


def test_every_check_states_its_margin() -> None:
    d = gate.decide(_evidence(), CFG, champion_return=-56.0)
    assert _check(d, "cost:cost_total").margin == pytest.approx(0.0)
    assert _check(d, "return").margin == pytest.approx(1.0) and "(margin +1)" in _check(d, "return").reason
    assert _check(d, "guardian").margin == pytest.approx(0.94 - 0.935)
    assert d.to_dict()["checks"][3]["margin"] == pytest.approx(1.0) and d.to_dict()["outcome"] == "promote"


def test_boundaries_are_inclusive() -> None:
    ev = _evidence(guardian_coverage=0.935, ope_costs={"cost_total": Estimate(0.4, 0.3, 0.5, 500.0)})
    d = gate.decide(ev, CFG, champion_return=-55.0)
    assert d.promote, d.summary()


def test_no_guardian_skips_check_and_tags_cover_every_check() -> None:
    d = gate.decide(_evidence(guardian_alpha=None, guardian_coverage=None), CFG, champion_return=None)
    assert d.promote and "skipped" in _check(d, "guardian").reason
    tags = gate.decision_tags(d)
    assert tags["gate.decision"] == "promoted"
    assert {k for k in tags if k.startswith("gate.check.")} == {
        "gate.check.validation", "gate.check.guardian", "gate.check.cost.cost_total", "gate.check.return"}


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


def test_first_run_creates_champion_then_unsafe_candidate_stays_challenger(project: tuple[Path, dict]) -> None:
    import json

    import mlflow

    root, params = project
    first = stage.run(params, root)
    assert first["registry/promoted"] is True and first["registry/version"] == 1
    report = json.loads((root / "data/reports/registry.json").read_text())
    assert report["registry/promoted"] is True and report["registry/cost_model_bundled"] is True
    assert report["next/lineage"] == "ogsrl lineage models:/ogsrl-policy@champion --verify"
    assert report["next/mlflow_ui"] == f"mlflow ui --backend-store-uri sqlite:///{(root / 'mlflow.db').as_posix()}"
    client = mlflow.MlflowClient()
    champ = client.get_model_version_by_alias("ogsrl-policy", "champion")
    assert str(champ.version) == "1" and champ.tags["gate.decision"] == "promoted"

    # a deliberately unsafe candidate: cost upper CI 2.5 over the limit 1.0
    fakes.write_ope(root, cost=(2.0, 1.5, 2.5), ret=(-40.0, -42.0, -38.0))
    reg = stage.register(params, root)
    assert reg["version"] == "2"
    dry = stage.promote(params, root, dry_run=True)
    assert dry["promote"] is False and dry["dry_run"] is True
    assert "gate.decision" not in client.get_model_version("ogsrl-policy", "2").tags  # dry run changed nothing

    dec = stage.promote(params, root)
    assert dec["promote"] is False and dec["champion_before"] == "1"
    assert [c["name"] for c in dec["checks"] if not c["passed"]] == ["cost:cost_total"]
    v2 = client.get_model_version("ogsrl-policy", "2")
    assert v2.tags["gate.decision"] == "rejected"
    assert v2.tags["gate.check.cost.cost_total"] == "fail"
    assert v2.tags["gate.reason.cost.cost_total"] == "upper CI 2.5 > limit 1 (margin -1.5)"
    assert "challenger" in v2.aliases
    assert str(client.get_model_version_by_alias("ogsrl-policy", "champion").version) == "1"

    # a safe candidate whose lower CI beats the champion's estimate (-50) is promoted
    fakes.write_ope(root, cost=(0.2, 0.1, 0.3), ret=(-40.0, -42.0, -38.0))
    stage.register(params, root)
    dec = stage.promote(params, root)
    assert dec["promote"] is True and dec["version"] == "3"
    assert str(client.get_model_version_by_alias("ogsrl-policy", "champion").version) == "3"
    assert "challenger" not in client.get_model_version("ogsrl-policy", "3").aliases
    with pytest.raises(ValueError, match="already is the champion"):
        stage.promote(params, root, version="3")
    with pytest.raises(ValueError, match="ogsrl-policy v9"):
        stage.promote(params, root, version="9")


def test_guardian_check_reads_the_stay_level_coverage_without_slack(tmp_path: Path) -> None:
    cfg = GateConfig(cost_limits={"cost_total": 0.5}, validation_reports=REPORTS)
    assert cfg.guardian_coverage_slack == 0.0
    ok = gate.decide(_evidence(guardian_coverage=0.9612, guardian_unit="stay"), cfg, champion_return=None)
    assert ok.promote and _check(ok, "guardian").reason == (
        "test coverage per stay 0.9612 ≥ alpha_c 0.9500 (margin +0.0112)")
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
