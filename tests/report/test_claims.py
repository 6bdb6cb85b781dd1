"""The report's benchmark claims recomputed from the committed benchmark pages.

The report quotes measured figures (the return and SpO₂ advice, :func:`anchored_note`, the choice under the
limits); these tests derive each from ``benchmarks/results/*.json``, so a re-run benchmark and an edited sentence
cannot drift apart unnoticed.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from ogsrl.report import stage

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
SPO2 = "cost_spo2_low"
EARLIER = [f"anchored_s35_set{n}" for n in range(1, 16)]
FRESH = [f"anchored_s36_set{n}" for n in range(16, 24)]
GMB = "gmb_cpo/seed42"
WORDS = {3: "three", 5: "five", 7: "seven", 8: "eight"}


def page(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def spo2_error(name: str, variant: str) -> float:
    """The page's median relative error of the SpO₂ cost over all its policies."""
    return next(r["median_rel_error"] for r in page(name)["summary"]
                if r["subset"] == "all" and r["target"] == SPO2 and r["variant"] == variant)


def test_the_spo2_advice_quotes_the_pre_registered_sets() -> None:
    goals = page("anchored_goals_s36fresh")
    rows = [r for s in goals["groups"]["fresh"] for r in s["rows"]
            if r["subset"] == "admitted" and r["target"] == SPO2 and r["variant"] == "mb_anchored"]
    assert len(rows) == len(FRESH) == 8 and all(r["meets"] for r in rows)
    errors = [r["median_rel_error"] for r in rows]
    advice = stage.ANCHORED_SPO2_ADVICE
    assert f"on {WORDS[len(rows)]} fresh demo datasets" in advice and "met all three ranking goals on each" in advice
    assert f"median relative error {min(errors):.3f} – {max(errors):.3f}" in advice
    assert min(r["spearman"] for r in rows) >= 0.995 and "Spearman ≥ 0.995" in advice
    assert all(r["regret"] == 0 for r in rows) and "regret 0)" in advice
    pooled = page("anchored_support_s36")["pooled"]["fresh"]
    assert f"covered the truth for {pooled['admitted'][0]} of {pooled['admitted'][1]} of them" in advice
    assert f"({pooled['rejected'][0]} of {pooled['rejected'][1]} beyond the support" in advice


def test_the_anchored_note_quotes_all_scored_datasets() -> None:
    sets = EARLIER + FRESH
    anchored = [spo2_error(s, "mb_anchored") for s in sets]
    plain = [spo2_error(s, "mb") for s in sets]
    closer = sum(a < m for a, m in zip(anchored, plain))
    note = stage.anchored_note({"ope/anchored": True, "anchored/attendings": 10.0})
    assert f"On {len(sets)} demo datasets its point reading was closer to the truth than <code>mb</code>'s on " \
           f"{closer} " in note
    assert f"median relative error {min(anchored):.3f} – {max(anchored):.3f} against {min(plain):.3f} – " \
           f"{max(plain):.3f} over 18 policies" in note
    shipped = [page("anchored_support_s34pages")["pooled"]["exploratory"],
               page("anchored_support_s36")["pooled"]["fresh"]]
    admitted = [sum(p["admitted"][i] for p in shipped) for i in (0, 1)]
    rejected = [sum(p["rejected"][i] for p in shipped) for i in (0, 1)]
    scored = len(page("anchored_support_s34pages")["groups"]["exploratory"]) + len(FRESH)
    assert f"on the {scored} scored with this interval it covered the truth for {admitted[0]} of the {admitted[1]}" \
           in note
    assert f"{rejected[0]} of the {rejected[1]} it rejects" in note


UNIONS = ["ope_rank_s21union_seed42_t20k", "ope_rank_s21union_seed7_t20k", "ope_rank_s21union_fresh",
          "ope_rank_s22union55", "ope_rank_s23union56", "ope_rank_s23union57", "ope_rank_s24union58"]
"""the union rows the `cautious` advice cites (docs/policies-and-ope.md, sessions 20 – 24)"""
CHOICE_UNIONS = UNIONS[2:]
"""the unions the choice-under-limits evidence cites (those scored with the learners' cost limits)"""


def test_the_return_advice_cautious_is_the_only_pick_within_the_goal_on_every_union() -> None:
    import pandas as pd

    regret = {u: {r["estimator"]: r["regret"] for r in page(u)["supported_summary"] if r["target"] == "return"}
              for u in UNIONS}
    estimators = set().union(*(r.keys() for r in regret.values()))
    within_all = sorted(e for e in estimators if all(regret[u].get(e, float("inf")) <= 0.03 for u in UNIONS))
    assert within_all == ["cautious"]
    est = pd.DataFrame([{"policy": p, "estimator": "cautious", "target": "return", "value": v, "ci_low": v - 1,
                         "ci_high": v + 1} for p, v in (("a/seed1", -90.0), ("b/seed1", -95.0))])
    table = html.unescape(stage.ope_table(est, {}, "return", ["cautious"]))
    assert f"on the demo's {WORDS[len(UNIONS)]} benchmark unions" in table
    assert "pick came within 3 % of the return range of the truly best policy on every one" in table


def test_the_choice_under_limits_evidence_matches_its_unions() -> None:
    import pandas as pd

    chosen = [next(c for c in page(u)["constrained"]["choice"] if c["return_estimator"] == "cautious"
                   and c["cost_estimator"] == "consensus" and c["cost_bound"] == "value") for u in CHOICE_UNIONS]
    assert all(c["excess"] < 0 for c in chosen)  # each chosen policy truly within every limit
    near_best = sum(c["regret"] <= 0.03 for c in chosen)
    est = pd.DataFrame([{"policy": "a/seed1", "estimator": e, "target": t, "value": v}
                        for e, t, v in (("cautious", "return", -90.0), ("consensus", "cost_spo2_low", 0.5))])
    note = html.unescape(stage.choice_under_limits(est, {"cost_limit/cost_spo2_low": 0.8}))
    assert f"On the demo's {WORDS[len(CHOICE_UNIONS)]} benchmark unions" in note
    assert f"chose a policy truly within every limit on all {WORDS[len(CHOICE_UNIONS)]}" in note
    assert f"of the best such policy on {WORDS[near_best]};" in note


BAND = [f"fqe_s42_set{n}_h3" for n in range(36, 44)]
"""the fresh sets of session 42's pre-registered test (docs/policies-and-ope.md)"""


def band_rows(target: str) -> list[dict]:
    goals = page("band_goals_s42")
    assert goals["limit"] == 0.08 and [s["page"] for s in goals["groups"]["fresh"]] == BAND
    return [r for s in goals["groups"]["fresh"] for r in s["rows"]
            if r["subset"] == "admitted" and r["target"] == target and r["variant"] == stage.CRITIC_COST_ESTIMATOR]


def band_coverage(estimator: str, target: str) -> tuple[int, int]:
    """How many of the policies with share ≤ 0.08 on the session-42 sets the estimator's 95 % interval covers."""
    covered = scored = 0
    for name in BAND:
        p = page(name)
        assert p["meta"]["fqe"] == ["history=3"]
        for policy, share in p["shares"].items():
            if share <= 0.08:
                lo, hi = p["intervals"][estimator][policy][target]
                covered += lo <= p["truth"][policy][f"cost_return_{target}"] <= hi
                scored += 1
    return covered, scored


@pytest.mark.parametrize("target", [stage.TOTAL_COST, stage.URINE_COST])
def test_the_critic_cost_advice_quotes_the_pre_registered_sets(target: str) -> None:
    import pandas as pd

    rows = band_rows(target)
    assert len(rows) == 8 and all(r["policies"] >= 10 for r in rows)
    met = sum(r["meets"] for r in rows)
    advice = stage.CRITIC_COST_ADVICE[target]
    sets = "each" if met == 8 else f"{met} of 8"
    assert "pre-registered on eight fresh demo datasets (session 42;" in advice
    assert f"met all three ranking goals on {sets} among" in advice
    errors, rho = [r["median_rel_error"] for r in rows], [r["spearman"] for r in rows]
    regret = "0" if all(r["regret"] == 0 for r in rows) else f"{min(r['regret'] for r in rows):.3f} – " \
                                                             f"{max(r['regret'] for r in rows):.3f}"
    assert f"median relative error {min(errors):.3f} – {max(errors):.3f}, Spearman {min(rho):.3f} – " \
           f"{max(rho):.3f}, regret {regret})" in advice
    own, hull = band_coverage("fqe", target), band_coverage("hull_fqe_wdr", target)
    assert f"covered the truth for {own[0]} of {own[1]} of them" in advice
    assert f"the FQE/WDR hull's, whose upper bound the gate reads, for {hull[0]} of {hull[1]}" in advice
    est = pd.DataFrame([{"policy": p, "estimator": "fqe", "target": target, "value": v, "ci_low": v - 1,
                         "ci_high": v + 1} for p, v in (("a/seed1", 3.0), ("b/seed1", 4.0))])
    measured = stage.CRITIC_AS_MEASURED
    assert "Read this cost by <code>fqe</code>" in stage.ope_table(est, {}, target, ["fqe"], critic=measured)
    assert "Read this cost" not in stage.ope_table(est.assign(estimator="wis"), {}, target, ["wis"], critic=measured)
    assert all(p["meta"]["fqe"] == [f"history={measured['ope/fqe_history']}"] for p in map(page, BAND))


@pytest.mark.parametrize("critic, differs", [
    ({**stage.CRITIC_AS_MEASURED, "ope/fqe_history": 0}, "fqe_history 0 (measured: 3)"),
    ({**stage.CRITIC_AS_MEASURED, "ope/fqe_action": "binned"}, "fqe_action binned (measured: continuous)"),
    ({**stage.CRITIC_AS_MEASURED, "ope/fqe_previous_action": True}, "fqe_previous_action True (measured: False)"),
    ({"ope/gamma": 1.0}, "fqe_history not recorded (measured: 3)"),  # metrics written before the stage recorded it
])
def test_the_critic_cost_advice_shows_only_for_the_critic_it_was_measured_with(critic: dict, differs: str) -> None:
    import pandas as pd

    est = pd.DataFrame([{"policy": p, "estimator": "fqe", "target": stage.URINE_COST, "value": v, "ci_low": v - 1,
                         "ci_high": v + 1} for p, v in (("a/seed1", 3.0), ("b/seed1", 4.0))])
    table = html.unescape(stage.ope_table(est, {}, stage.URINE_COST, ["fqe"], critic=critic))
    assert "Read this cost by <code>fqe</code>" not in table and "below the truth" not in table
    assert "The pre-registered <code>fqe</code> advice for this cost does not apply" in table and differs in table


def test_the_urine_advice_warns_of_the_learned_policys_low_reading() -> None:
    """Every fresh set's FQE reads GMB-CPO's urine cost below the truth; the advice quotes the range."""
    gaps = [page(n)["values"]["fqe"][GMB][2] - page(n)["truth"][GMB]["cost_return_cost_urine_low"] for n in BAND]
    assert all(g < 0 for g in gaps)
    assert f"{-max(gaps):.2f} – {-min(gaps):.2f} below the truth" in stage.CRITIC_COST_ADVICE[stage.URINE_COST]


def test_the_thin_wdr_warning_quotes_the_coverage_calibration_page() -> None:
    import pandas as pd

    rows = {(r["estimator"], r["target"], r["regime"]): r for r in page("coverage_calibration_s43")["rows"]}
    below, gate = rows[("wdr", "return", "below")], rows[("wdr", "return", "gate")]
    cov = page("ope_coverage_s43x40")["coverage"]
    assert cov["datasets"] == 40 and cov["min_ess"] == 20.0
    text = stage.THIN_WDR_RETURN.format(min_ess=cov["min_ess"])
    assert f"on {cov['datasets']} fresh demo datasets" in text and "ESS below 20 " in text
    assert f"{below['covered']} of {below['intervals']} policies at ESS {below['ess_min']:.1f} – " \
           f"{below['ess_max']:.1f} " in text and f"SD {below['z_sd']:.2f}," in text
    assert f"{gate['covered']} of {gate['intervals']} at ESS ≥ 20 (SD {gate['z_sd']:.2f})" in text
    assert below["z_sd"] > 1.2 > gate["z_sd"]  # too narrow below the threshold, calibrated above it

    def table(ess: float) -> str:
        est = pd.DataFrame([{"policy": p, "estimator": "wdr", "target": "return", "value": v, "ci_low": v - 1,
                             "ci_high": v + 1, "ess": ess} for p, v in (("a/seed1", -90.0), ("b/seed1", -92.0))])
        return html.unescape(stage.ope_table(est, {}, "return", ["wdr"], min_ess=20.0))

    assert "WDR's are too narrow there" in table(1.1) and "WDR's are too narrow there" not in table(25.0)
