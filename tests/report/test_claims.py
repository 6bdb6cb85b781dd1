"""The report's benchmark claims about ``mb_anchored`` recomputed from the committed benchmark pages.

The report quotes measured figures (``ANCHORED_SPO2_ADVICE``, :func:`anchored_note`); these tests derive each figure
from ``benchmarks/results/*.json`` so a re-run benchmark or an edited sentence cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ogsrl.report import stage

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
SPO2 = "cost_spo2_low"
EARLIER = [f"anchored_s35_set{n}" for n in range(1, 16)]
FRESH = [f"anchored_s36_set{n}" for n in range(16, 24)]


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
    assert "on eight fresh demo datasets" in advice and "met all three ranking goals on each" in advice
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
