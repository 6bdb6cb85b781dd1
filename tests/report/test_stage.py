"""The report page: structure (always), rendering in headless Chromium (when installed), bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ogsrl import cli
from ogsrl.errors import DataError
from ogsrl.report import stage


class Page(HTMLParser):
    """Tables (header cells + rows of cell text), inline SVG count, every src/href, and tags that load things."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list]] = []
        self.svgs = 0
        self.refs: list[str] = []
        self.loads: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag in ("link", "script", "img", "iframe") and (a.get("src") or a.get("href")):
            self.loads.append(tag)
        if tag == "svg":
            self.svgs += 1
        elif tag == "table":
            self.tables.append({"header": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            (t["rows"] if t["header"] else t["header"]).extend([self._row] if t["header"] else self._row)
            self._row = None


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_report_has_the_comparison_tables_every_figure_and_no_external_reference(reports_root: Path) -> None:
    out = stage.run({}, reports_root)
    index = reports_root / "data/reports/index.html"
    page = parse(index)
    # the paper-style OPE table of each target: clinicians + 3 policies x every estimator (fqe too) + truth
    ope = [t for t in page.tables if t["header"][:1] == ["policy"]]
    assert len(ope) == out["report/targets"] == 3
    assert ope[0]["header"] == ["policy", "fqe", "pdwis", "wis", "truth"]
    assert [r[0] for r in ope[0]["rows"]] == ["clinicians (on-policy)", "gmb_cpo/seed42", "gmb_cpo/seed43",
                                              "soc/seed42"]
    soc = ope[0]["rows"][3]
    assert soc[3].startswith("-80.000 [-82.000, -78.000] ✔ ESS 5") and soc[-1] == "-88.000"
    assert soc[1].startswith("-78.000") and "✘" in soc[1]
    # ▲ marks, per estimator, the learned policy with the highest return (lowest cost, mortality); never the clinicians
    for table, best in zip(ope, (max, min, min)):
        for col in range(1, len(table["header"]) - 1):
            values = {r[0]: float(r[col].split()[0]) for r in table["rows"][1:] if r[col] != "—"}
            marked = [r[0] for r in table["rows"] if "▲" in r[col]]
            assert marked == ([best(values, key=values.get)] if len(values) >= 2 else []), (table["header"][col], values)
    assert sum("▲" in c for r in ope[0]["rows"] for c in r) >= 2
    # the note under each table: choose the return by `cautious`; no advice the benchmark does not back elsewhere
    text = index.read_text(encoding="utf-8")
    notes = {t: text.split(f"<h3>{t}</h3>", 1)[1].split("</table>", 1)[1].split("</p>", 1)[0]
             for t in ("return", "cost_total", "mortality_hosp")}
    assert "Choose by <code>cautious</code>" in notes["return"]
    assert "Read this cost by <code>fqe</code>" in notes["cost_total"] and "cautious" not in notes["cost_total"]
    assert "cautious" not in notes["mortality_hosp"] and "cost" not in notes["mortality_hosp"]
    # the clinical metrics table: clinicians, soc (one seed: its value and CI), gmb_cpo (two seeds: mean ± sd)
    clin = next(t for t in page.tables if t["header"][:2] == ["method", "ME (95 % CI)"])
    assert [r[0] for r in clin["rows"]] == ["clinicians (logged)", "gmb_cpo (2 seeds)", "soc"]
    assert clin["rows"][2][1] == "0.228 [0.200, 0.270]" and clin["rows"][1][2] == "0.500 ± 0.500"
    assert "spo2_low share (model)" in clin["header"]
    # every figure is inline and also written as a file
    figs = sorted(p.stem for p in (reports_root / "data/reports/figures").glob("*.svg"))
    assert figs == sorted(["world_calibration", "ope_vs_truth_return", "ope_vs_truth_mortality_hosp",
                           "ope_estimates_cost_total", "learning_curves", "mortality_relation"])
    assert page.svgs == len(figs) == out["report/figures"]
    # self-contained: nothing loaded, the only links are the relative Data Docs (and in-SVG #ids)
    assert page.loads == []
    external = [r for r in page.refs if not r.startswith("#")]
    assert external == ["validation/raw/index.html", "validation/trajectories/index.html"]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", index.read_text(encoding="utf-8"))
    assert "passed" in index.read_text() and "failed" in index.read_text()  # the two gates' status


def test_paired_truth_against_the_clinicians_is_tabled_when_simulated(reports_root: Path) -> None:
    stage.run({}, reports_root)
    assert not any(t["header"][:2] == ["policy", "patients"] for t in parse(
        reports_root / "data/reports/index.html").tables)  # no paired truths: no table
    gain = {"vs_behaviour_patients": 1900.0, "vs_behaviour_return": 2.5, "vs_behaviour_return_ci_lo": 1.25,
            "vs_behaviour_return_ci_hi": 3.75, "vs_behaviour_mortality_hosp": -0.04,
            "vs_behaviour_mortality_hosp_ci_lo": -0.06, "vs_behaviour_mortality_hosp_ci_hi": -0.02}
    doc = {"truth/available": True, "truth/behaviour/return": -88.0,
           **{f"truth/soc/seed42/{k}": v for k, v in gain.items()}}
    (reports_root / "data/reports/truth.json").write_text(json.dumps(doc), encoding="utf-8")
    stage.run({}, reports_root)
    table = next(t for t in parse(reports_root / "data/reports/index.html").tables
                 if t["header"][:2] == ["policy", "patients"])
    assert table["header"][2:] == ["Δ return (95 % CI)", "Δ in-hospital mortality (95 % CI)",
                                   "Δ total cost per stay (95 % CI)"]
    assert table["rows"] == [["soc/seed42", "1,900", "2.500 [1.250, 3.750]", "-0.040 [-0.060, -0.020]", "–"]]


def test_estimators_and_targets_follow_params(reports_root: Path) -> None:
    stage.run({"report": {"estimators": ["wis", "dr"], "targets": ["mortality_hosp", "nope"]}}, reports_root)
    page = parse(reports_root / "data/reports/index.html")
    ope = [t for t in page.tables if t["header"][:1] == ["policy"]]
    assert [t["header"] for t in ope] == [["policy", "wis", "truth"]]  # dr is absent, nope has no estimates
    with pytest.raises(ValueError, match="report.targets|targets"):
        stage.run({"report": {"targets": []}}, reports_root)


def test_missing_input_is_a_one_line_cli_error(reports_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (reports_root / "data/reports/evaluate/metrics.json").unlink()
    with pytest.raises(DataError, match="report input missing: data/reports/evaluate/metrics.json"):
        stage.run({}, reports_root)
    (reports_root / "params.yaml").write_text(json.dumps({}), encoding="utf-8")
    assert cli.main(["report", "--root", str(reports_root), "--no-track"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ogsrl report: error: table 'metrics.json': report input missing")
    assert not (reports_root / "data/reports/index.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(reports_root: Path, tmp_path: Path) -> None:
    from PIL import Image

    stage.run({}, reports_root)
    url = (reports_root / "data/reports/index.html").as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    rendered = Page()
    rendered.feed(dom)
    assert rendered.svgs == 6 and len(rendered.tables) >= 6
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,3000", url], capture_output=True,
                   timeout=120, check=True)
    img = Image.open(shot).convert("L")
    assert img.size == (1200, 3000)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # something was drawn (a blank or unstyled-error page is one colour)
    band = list(img.crop((0, 0, 1200, 30)).getdata())
    assert sum(band) / len(band) < 100  # the dark page header (white text on it): the inline CSS applied


def _with_choice_inputs(root: Path, limits: dict[str, float], clinicians: dict[str, float]) -> None:
    """Add cautious / consensus estimates and the training cost limits to the fake tree."""
    path = root / "data/reports/evaluate/metrics.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    #                   cautious return, consensus spo2 cost, consensus urine cost
    for policy, (ret, spo2, urine) in {"soc/seed42": (-95.0, 1.0, 5.8), "gmb_cpo/seed42": (-90.0, 0.7, 4.9),
                                       "gmb_cpo/seed43": (-92.0, 0.6, 4.0)}.items():
        m[f"{policy}/cautious/return/value"] = ret
        m[f"{policy}/consensus/cost_spo2_low/value"] = spo2
        m[f"{policy}/consensus/cost_urine_low/value"] = urine
    path.write_text(json.dumps(m), encoding="utf-8")
    train = {**{f"cost_limit/{c}": v for c, v in limits.items()}, "cost_limit/cost_spo2_low/from_params": False,
             **{f"clinicians/cost_return/{c}": v for c, v in clinicians.items()}}
    (root / "data/reports/train.json").write_text(json.dumps(train), encoding="utf-8")


def choice_note(root: Path) -> str:
    text = (root / "data/reports/index.html").read_text(encoding="utf-8")
    return text.split("<h3>Choice under the cost limits</h3>", 1)[1].split("</p>", 1)[0] \
        if "<h3>Choice under the cost limits</h3>" in text else ""


def test_choice_under_the_cost_limits(reports_root: Path) -> None:
    stage.run({}, reports_root)
    assert choice_note(reports_root) == ""  # no training limits, no choice
    clinicians = {"cost_spo2_low": 1.0, "cost_urine_low": 5.75}
    _with_choice_inputs(reports_root, {"cost_spo2_low": 0.83, "cost_urine_low": 4.6}, clinicians)
    stage.run({}, reports_root)
    note = choice_note(reports_root)
    # gmb_cpo/seed42 has the best cautious return but reads over the urine limit; seed43 is the only one within both
    assert "1 of 3 learned policies read within every limit" in note
    assert ("<b>gmb_cpo/seed43</b> (return -92.000; cost_spo2_low 0.600, margin +28%, cost_urine_low 4.000, "
            "margin +13%)") in note
    assert "class='bad'" not in note  # both limits below the clinicians' level, both margins above 10 %
    _with_choice_inputs(reports_root, {"cost_spo2_low": 0.83, "cost_urine_low": 4.2}, clinicians)
    stage.run({}, reports_root)
    note = choice_note(reports_root)
    assert "cost_urine_low 4.000, margin +5%" in note  # (4.2 - 4.0) / 4.2
    assert "cost_urine_low: within 10% of the limit" in note and "insufficient evidence that it keeps it" in note
    assert "cost_spo2_low: within" not in note
    _with_choice_inputs(reports_root, {"cost_spo2_low": 0.5, "cost_urine_low": 6.0}, clinicians)
    stage.run({}, reports_root)
    note = choice_note(reports_root)
    assert "insufficient evidence" in note and "<b>gmb_cpo" not in note
    assert "cost_urine_low: the limit lies above the clinicians' level" in note  # 6.0 > 5.75; spo2 0.5 < 1.0


def _with_support(root: Path, shares: dict[str, float], clinicians: float) -> None:
    """Add the evaluate stage's support shares to the fake tree."""
    path = root / "data/reports/evaluate/metrics.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m.update({f"{p}/support/reject_share": v for p, v in shares.items()})
    m.update({"support/available": True, "support/seed": 42, "support/clinicians_reject_share": clinicians})
    path.write_text(json.dumps(m), encoding="utf-8")


def test_policies_outside_the_support_are_marked_and_never_picked(reports_root: Path) -> None:
    path = reports_root / "data/reports/evaluate/metrics.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    for policy, value in {"soc/seed42": -80.0, "gmb_cpo/seed42": -50.0, "gmb_cpo/seed43": -60.0}.items():
        m[f"{policy}/wis/return/value"] = value
    path.write_text(json.dumps(m), encoding="utf-8")

    def wis_pick() -> tuple[list[str], dict[str, str]]:
        ope = [t for t in parse(reports_root / "data/reports/index.html").tables if t["header"][:1] == ["policy"]][0]
        col = ope["header"].index("wis")
        support = ({r[0]: r[1] for r in ope["rows"]} if ope["header"][1] == "support: own actions rejected"
                   else {})
        return [r[0] for r in ope["rows"] if "▲" in r[col]], support

    stage.run({}, reports_root)
    assert wis_pick() == (["gmb_cpo/seed42"], {})  # not measured: no column, every policy eligible
    _with_support(reports_root, {"soc/seed42": 0.031, "gmb_cpo/seed42": 0.25, "gmb_cpo/seed43": 0.05}, 0.04)
    stage.run({}, reports_root)
    picked, support = wis_pick()
    assert picked == ["gmb_cpo/seed43"]  # the best reading inside the support
    assert support == {"clinicians (on-policy)": "4.0% (logged)", "gmb_cpo/seed42": "25.0% ✘ outside",
                       "gmb_cpo/seed43": "5.0%", "soc/seed42": "3.1%"}
    stage.run({"registry": {"gate": {"tolerance": {"support": 0.06}}}}, reports_root)  # the gate's band: near it
    assert wis_pick()[1]["gmb_cpo/seed43"] == "5.0% ≈ limit" and wis_pick()[1]["gmb_cpo/seed42"] == "25.0% ✘ outside"
    assert wis_pick()[0] == []  # near the limit the gate decides nothing: left out (soc/seed42 alone: no pick)
    stage.run({"registry": {"gate": {"max_support_reject_share": 0.3}}}, reports_root)  # the gate's limit moves it
    assert wis_pick()[0] == ["gmb_cpo/seed42"] and "✘" not in "".join(wis_pick()[1].values())
    # the choice under the limits leaves them out too: gmb_cpo/seed43, the only one within both, lies outside
    _with_choice_inputs(reports_root, {"cost_spo2_low": 0.83, "cost_urine_low": 4.6},
                        {"cost_spo2_low": 1.0, "cost_urine_low": 5.75})
    _with_support(reports_root, {"soc/seed42": 0.031, "gmb_cpo/seed42": 0.05, "gmb_cpo/seed43": 0.2}, 0.04)
    stage.run({}, reports_root)
    note = choice_note(reports_root)
    assert "<b>insufficient evidence</b> to choose under these limits (2 policies)" in note and "<b>gmb_cpo" not in note
    assert "Left out as outside the data's support or at its limit: gmb_cpo/seed43." in note
    stage.run({"registry": {"gate": {"tolerance": {"support": 0.06}}}}, reports_root)  # seed42's 5 %: at the limit
    assert "Left out as outside the data's support or at its limit: gmb_cpo/seed42, gmb_cpo/seed43." in \
        choice_note(reports_root)
    _with_support(reports_root, {"soc/seed42": 0.5, "gmb_cpo/seed42": 0.5, "gmb_cpo/seed43": 0.5}, 0.04)
    stage.run({}, reports_root)
    assert "Every learned policy lies outside the data's support: <b>insufficient evidence</b>" in \
        choice_note(reports_root)


def test_the_report_says_how_mb_anchored_was_anchored_or_why_not() -> None:
    from ogsrl.report.stage import anchored_note

    assert anchored_note({}) == ""
    why = "insufficient evidence: the attendings' patients differ in age (Kruskal-Wallis, Bonferroni p = 1e-09 < 0.01)"
    text = anchored_note({"ope/anchored": False, "anchored/unavailable": why})
    assert "not made: insufficient evidence: the attendings&#x27; patients differ in age" in text
    made = anchored_note({"ope/anchored": True, "anchored/attendings": 10.0, "anchored/balance_p": 0.412,
                          "anchored/balance_feature": "gender", "anchored/cost_spo2_low/intercept": -0.37,
                          "anchored/cost_spo2_low/slope": 1.276, "anchored/cost_spo2_low/tau": 0.129})
    assert "cost_spo2_low: ȳ = -0.370 + 1.276·m (scatter τ 0.129)" in made and "across 10 attendings" in made
    assert "smallest Bonferroni p 0.412 (gender)" in made and "No gate decision reads it" in made


def test_the_spo2_table_names_mb_anchored_only_where_it_was_computed() -> None:
    import pandas as pd

    rows = [{"policy": p, "estimator": e, "target": "cost_spo2_low", "value": v, "ci_low": v - 0.1,
             "ci_high": v + 0.1} for p, v in (("a/seed1", 0.5), ("b/seed1", 0.9)) for e in ("mb", "mb_anchored")]
    est = pd.DataFrame(rows)
    with_anchor = stage.ope_table(est, {}, "cost_spo2_low", ["mb", "mb_anchored"], {"a/seed1": 0.02}, 0.10)
    assert "Read this cost by <code>mb_anchored</code> for the policies inside the data's support" in with_anchor
    without = stage.ope_table(est[est["estimator"] == "mb"], {}, "cost_spo2_low", ["mb", "mb_anchored"])
    assert "mb_anchored" not in without and "no estimator picked the lowest cost return reliably" in without
    other = stage.ope_table(est.assign(target="cost_urine_low"), {}, "cost_urine_low", ["mb", "mb_anchored"])
    assert "Read this cost" not in other


def test_support_cell_flags_the_limit_and_its_band() -> None:
    assert stage.support_cell(None, 0.1, 0.02) == "—"
    assert stage.support_cell(0.05, 0.1, 0.02) == "5.0%"
    assert "≈ limit" in stage.support_cell(0.09, 0.1, 0.02) and "outside" not in stage.support_cell(0.09, 0.1, 0.02)
    assert "✘ outside" in stage.support_cell(0.11, 0.1, 0.02) and "≈ limit" in stage.support_cell(0.11, 0.1, 0.02)
    assert "≈" not in stage.support_cell(0.2, 0.1, 0.02) and "≈" not in stage.support_cell(0.09, 0.1, 0.0)
    assert stage.support_cell(0.03, 0.1, 0.02, logged=True).endswith("(logged)</span>")
