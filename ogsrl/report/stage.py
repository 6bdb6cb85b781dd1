"""Stage ``report``: one self-contained HTML page of the pipeline's results → ``data/reports/index.html``.

Sections: cohort and validation status (links to the validation Data Docs, the only links in the page, relative),
world-model calibration, the guardian's certificate, the paper-style comparison tables (clinical metrics per method;
OPE estimates per method × estimator with CIs and, on the demo, the simulator's truth), and the figures (OPE against
truth, learning curves, world-model calibration, return → mortality). Inline CSS, figures as inline SVG: nothing is
loaded from anywhere. The same figures are written to ``data/reports/figures/*.svg`` (logged to MLflow).
Every input is read through :mod:`ogsrl.report.inputs`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ogsrl import config
from ogsrl.io import atomic_path, write_text
from ogsrl.ope.selection import constrained_choice, within_limits
from ogsrl.ope.stage import CAUTIOUS, CONSENSUS
from ogsrl.registry.gate import GateConfig
from ogsrl.report import figures, inputs

INDEX = Path("data/reports/index.html")
FIGURES_DIR = Path("data/reports/figures")
DATA_DOCS = {"raw tables": "validation/raw/index.html", "trajectories": "validation/trajectories/index.html"}
"""Data Docs pages, relative to data/reports/"""


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """The ``report:`` section of params.yaml."""

    estimators: tuple[str, ...] = ()
    """OPE estimators shown, in order (empty: every estimator found in the OPE metrics, sorted)"""
    targets: tuple[str, ...] = ("return", "cost_total", "cost_spo2_low", "cost_urine_low", "mortality_hosp")
    """OPE targets with a comparison table, in order (those absent from the metrics are skipped)"""
    min_ess: float = 20.0
    """estimates with a smaller effective sample size are drawn hollow and may run off the OPE-vs-truth axis (set
    from ``registry.gate.min_ess`` unless the ``report:`` section sets it: what the gate calls insufficient evidence)"""
    max_support_reject_share: float = 0.10
    """a policy whose own actions the guardian rejects more often than this on the test states is marked outside the
    data's support and left out of the picks (set from ``registry.gate.max_support_reject_share`` unless the
    ``report:`` section sets it: the share beyond which the gate refuses a candidate)"""
    support_band: float = 0.0
    """a share within this of the limit is flagged as near it (set from ``registry.gate.tolerance.support`` unless the
    ``report:`` section sets it: inside that band the gate calls the support check insufficient evidence)"""

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("targets must name at least one OPE target")


CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0;color:#1d2733;background:#f5f7fa;font-size:14px}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}main{padding:8px 32px 40px;max-width:1320px}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 20px;margin:16px 0;
overflow-x:auto}
h2{font-size:18px;margin:6px 0 10px;color:#1f3a5f}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde3ea;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#eef2f7;white-space:normal;vertical-align:bottom}td:first-child,th:first-child{text-align:left}
.ok{color:#1e7b34;font-weight:bold}.bad{color:#b3261e;font-weight:bold}.muted{color:#6b7785}
.ci{color:#6b7785;font-size:11px}.grid{display:flex;flex-wrap:wrap;gap:14px}.kv td{text-align:left}
figure{margin:8px 0}figure svg{max-width:100%;height:auto}figcaption{font-size:12px;color:#6b7785}
.note{font-size:12px;color:#6b7785;max-width:1100px}
"""


def report_config(params: Mapping[str, Any]) -> ReportConfig:
    gate = ((params.get("registry") or {}).get("gate") or {})
    section = {"min_ess": gate.get("min_ess", GateConfig().min_ess),
               "max_support_reject_share": gate.get("max_support_reject_share",
                                                    GateConfig().max_support_reject_share),
               "support_band": (gate.get("tolerance") or {}).get("support", 0.0),
               **(params.get("report") or {})}
    return config.build(ReportConfig, section, "report")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        a = abs(v)
        if a != 0 and (a >= 1e4 or a < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}f}" if a < 100 else f"{v:.1f}"
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(pairs: Iterable[tuple[str, Any]]) -> str:
    return _table(["", "value"], [(html.escape(k), _fmt(v)) for k, v in pairs], "kv")


def _status(ok: Any) -> str:
    return "<span class='ok'>passed</span>" if ok is True else "<span class='bad'>failed</span>"


def _figure(svg: str | None, caption: str) -> str:
    if svg is None:
        return ""
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


# ---- sections --------------------------------------------------------------------------------------------------


def cohort_section(cohort: Mapping[str, Any], val_raw: Mapping[str, Any], val_traj: Mapping[str, Any],
                   root: Path) -> str:
    keys = [("source", "source"), ("ICU stays read", "icu_stays"), ("cohort stays", "cohort_stays"),
            ("rows (4-h steps)", "rows"), ("train / val / test stays", None),
            ("steps per stay (mean)", "steps_per_stay_mean"), ("in-hospital mortality", "mortality_in_hosp"),
            ("90-day mortality", "mortality_90d"), ("SOFA at onset (mean)", "sepsis_sofa_at_onset_mean")]
    pairs = []
    for label, key in keys:
        if key is None:
            pairs.append((label, " / ".join(_fmt(cohort.get(f"stays_{s}")) for s in ("train", "val", "test"))))
        elif key in cohort:
            pairs.append((label, cohort[key]))
    pairs += [(f"steps breaking {k.removeprefix('cost_').removesuffix('_rate').replace('total', 'any rule')}", v)
              for k, v in sorted(cohort.items()) if k.startswith("cost_") and k.endswith("_rate")]
    rows = []
    for (name, rel), doc in zip(DATA_DOCS.items(), (val_raw, val_traj)):
        link = (f"<a href='{rel}'>Data Docs</a>" if (root / inputs.REPORTS / rel).is_file()
                else "<span class='muted'>not written</span>")
        status = "<span class='muted'>skipped</span>" if doc.get("skipped") else _status(doc.get("success"))
        rows.append((html.escape(name), status, _fmt(doc.get("n_expectations")), _fmt(doc.get("n_failed")),
                     _fmt(doc.get("rows_checked")), link))
    return ("<section id='cohort'><h2>Cohort and validation</h2><div class='grid'><div>"
            + _kv(pairs) + "</div><div><h3>Validation gates (Great Expectations)</h3>"
            + _table(["gate", "status", "expectations", "failed", "rows checked", "report"], rows)
            + "</div></div></section>")


def world_section(world: Mapping[str, Any], calib: pd.DataFrame | None, learning: pd.DataFrame | None
                  ) -> tuple[str, str | None]:
    w = {k.removeprefix("world/"): v for k, v in world.items()}
    pairs = [(label, w[key]) for label, key in (
        ("beats 1-NN and linear on the central features", "beats_baselines_on_central"),
        ("central features", "central_features"),
        ("90 % interval coverage, ensemble (test)", "coverage90/ensemble"),
        ("90 % interval coverage, 1-NN", "coverage90/knn"),
        ("90 % interval coverage, linear", "coverage90/linear"),
        ("NLL per feature, ensemble", "nll/ensemble"), ("NLL, linear", "nll/linear"),
        ("death Brier score", "death_brier"), ("discharge Brier score", "discharge_brier"),
        ("epochs", "epochs"), ("test rows", "n_test")) if key in w]
    pairs += [(f"cost Brier score, {k.split('/')[-1]}", v) for k, v in sorted(w.items()) if k.startswith("cost_brier/")]
    svg = figures.world_calibration(calib, learning)
    body = ("<section id='world'><h2>World model</h2><div class='grid'><div>" + _kv(pairs) + "</div><div>"
            + _figure(svg, "Left: share of test transitions inside the model's central predictive interval at each "
                           "nominal level (on the diagonal = calibrated). Right: ensemble loss by epoch.")
            + "</div></div></section>")
    return body, svg


def guardian_section(g: Mapping[str, Any]) -> str:
    methods = sorted({k.split("/")[0] for k in g if "/" in k and k.split("/")[0] not in ("ood", "scaling")})
    cols = [("calibration coverage", "calibration_coverage"), ("test coverage", "test_coverage"),
            ("false accept: extreme actions", "false_accept_extreme_actions"),
            ("false accept: shifted states", "false_accept_shifted_states"),
            ("false accept: extreme policy", "false_accept_extreme_policy"), ("n_cal", "n_cal"),
            ("volume proxy", "volume_proxy"), ("queries / s", "query_points_per_s")]
    rows = [[html.escape(m)] + [_fmt(g.get(f"{m}/{key}")) for _, key in cols] for m in methods]
    head = [("target coverage α_c", g.get("alpha_c")), ("features (s, a)", g.get("n_features")),
            ("fit rows", g.get("n_fit")), ("test rows", g.get("n_test"))]
    return ("<section id='guardian'><h2>Guardian certificate</h2>" + _kv([(k, v) for k, v in head if v is not None])
            + _table(["guardian", *[c for c, _ in cols]], rows)
            + "<p class='note'>Coverage: share of in-distribution (s, a) points the guardian accepts (target ≥ α_c). "
              "False accept: share of out-of-distribution probes it accepts (lower is better).</p></section>")


CLINICAL_COLUMNS = (
    ("ME", "me", True), ("MCR", "mcr", False), ("AIR", "air", False), ("ACP", "acp", False),
)


def clinical_table(clin: Mapping[str, Any], runs: Sequence[str], seeds_of: Mapping[str, list[int]]) -> str:
    """Methods × clinical metrics; several seeds → mean ± sd over seeds (one seed: its value, ME with its CI)."""
    rules = sorted({k.split("/")[2] for k in clin if k.startswith("clinicians/below/")})
    header = ["method", "ME (95 % CI)", "MCR", "AIR", "escalate | deteriorating", "hold | stable", "ACP (τ units)",
              *[f"{r} share (model)" for r in rules], "true mortality"]

    def cell(prefix: str, key: str, ci: bool = False) -> str:
        v = clin.get(f"{prefix}/{key}")
        text = _fmt(v)
        if ci and clin.get(f"{prefix}/{key}/ci_low") is not None:
            text += (f" <span class='ci'>[{_fmt(clin[f'{prefix}/{key}/ci_low'])}, "
                     f"{_fmt(clin[f'{prefix}/{key}/ci_high'])}]</span>")
        return text

    def row(label: str, prefix: str, sd_prefix: str | None) -> list[str]:
        def c(key: str, ci: bool = False) -> str:
            text = cell(prefix, key, ci and sd_prefix is None)
            if sd_prefix is not None and clin.get(f"{sd_prefix}/{key}") is not None:
                text += f" <span class='ci'>± {_fmt(clin[f'{sd_prefix}/{key}'])}</span>"
            return text
        return [html.escape(label), c("me", True), c("mcr"), c("air"), c("air/escalate_when_deteriorating"),
                c("air/hold_when_stable"), c("acp"), *[c(f"below/{r}/model") for r in rules],
                c("truth/mortality_hosp")]

    rows = [row("clinicians (logged)", "clinicians", None)]
    rows[0][2] = "<span class='muted'>1 (self)</span>"
    for run in runs:
        seeds = seeds_of.get(run, [])
        if len(seeds) == 1:
            rows.append(row(run, f"{run}/seed{seeds[0]}", None))
        elif seeds:
            rows.append(row(f"{run} ({len(seeds)} seeds)", f"{run}/mean", f"{run}/sd"))
    observed = ", ".join(f"{r} {_fmt(clin.get(f'clinicians/below/{r}/observed'))}" for r in rules)
    return (_table(header, rows)
            + f"<p class='note'>Clinicians' observed shares of next steps below the thresholds: {observed}; "
              f"observed in-hospital mortality {_fmt(clin.get('clinicians/mortality_observed'))}. Return → mortality "
              f"relation on {_fmt(clin.get('me_relation/stays'))} test stays: Spearman "
              f"{_fmt(clin.get('me_relation/spearman'))}, m̂ from {_fmt(clin.get('me_relation/mortality_at_min_return'))}"
              f" (lowest return) to {_fmt(clin.get('me_relation/mortality_at_max_return'))} (highest). Several "
              "seeds: mean ± sd over seeds. Definitions: docs/metrics.md.</p>")


def vs_clinicians_table(truth: Mapping[str, Mapping[str, float]], runs: Sequence[str],
                        seeds_of: Mapping[str, list[int]]) -> str:
    """Each policy's true difference to the clinicians on the same simulated patients (demo truth, paired): return,
    in-hospital mortality and total cost return with 95 % CIs; empty without such truths."""
    metrics = (("return", "return"), ("mortality_hosp", "in-hospital mortality"),
               ("cost_return_cost_total", "total cost per stay"))
    rows = []
    for run in runs:
        for seed in seeds_of.get(run, []):
            t = truth.get(f"{run}/seed{seed}", {})
            if "vs_behaviour_return" not in t:
                continue
            n = t.get("vs_behaviour_patients")
            cells = [html.escape(f"{run}/seed{seed}"), _fmt(None if n is None else int(n))]
            for key, _ in metrics:
                k = f"vs_behaviour_{key}"
                cells.append(f"{_fmt(t.get(k))} <span class='ci'>[{_fmt(t.get(f'{k}_ci_lo'))}, "
                             f"{_fmt(t.get(f'{k}_ci_hi'))}]</span>" if k in t else "–")
            rows.append(cells)
    if not rows:
        return ""
    note = ("Demo truth: each policy and the clinicians simulated on the same patients (one seed); per patient the "
            "policy's value minus the clinicians', averaged over the patients both cohorts keep, with a 95 % CI. "
            "Return: higher is better; mortality and cost: lower is better.")
    return (f"<h3>Against the clinicians on the same simulated patients (truth, paired)</h3>"
            f"<p class='note'>{html.escape(note)}</p>"
            + _table(["policy", "patients", *[f"Δ {label} (95 % CI)" for _, label in metrics]], rows))


ANCHORED, ANCHORED_SPO2 = "mb_anchored", "cost_spo2_low"
ANCHORED_SPO2_ADVICE = (
    "Read this cost by <code>mb_anchored</code> for the policies inside the data's support: pre-registered on eight "
    "fresh demo datasets (session 36) it met all three ranking goals on each among the policies the support check "
    "admits (median relative error 0.037 – 0.096, Spearman ≥ 0.995, regret 0) and its 95 % interval covered the "
    "truth for 105 of 115 of them (23 of 29 beyond the support, where every estimate extrapolates). No gate decision "
    "reads it")
"""the SpO₂ cost's advice, by the pre-registered rule of docs/policies-and-ope.md, session 36"""
TOTAL_COST, URINE_COST, CRITIC_COST_ESTIMATOR = "cost_total", "cost_urine_low", "fqe"
_CRITIC_SCOPE = ("Read this cost by <code>fqe</code> for the policies the gate can decide on: pre-registered on eight "
                 "fresh demo datasets (session 42; the critic sees the stay's last three states) it met all three "
                 "ranking goals on {sets} among the policies whose rejected share lies at or below the gate's limit "
                 "less its margin (median relative error {err}, Spearman {rho}, regret {regret}). Its own 95 % "
                 "interval covered the truth for {own}; the FQE/WDR hull's, whose upper bound the gate reads, "
                 "for {hull}")
CRITIC_COST_ADVICE = {
    TOTAL_COST: _CRITIC_SCOPE.format(sets="each", err="0.013 – 0.083", rho="0.962 – 0.984", regret="0",
                                     own="95 of 105 of them", hull="104 of 105"),
    URINE_COST: _CRITIC_SCOPE.format(sets="each", err="0.016 – 0.068", rho="0.907 – 0.962", regret="0",
                                     own="98 of 105 of them", hull="104 of 105")
    + ". It read the learned policy's urine cost 0.24 – 0.81 below the truth on every one of those sets: against a "
      "limit, read the hull's upper bound, as the gate does",
}
"""the total and urine costs' advice, by the pre-registered rule of docs/policies-and-ope.md, session 42"""
CRITIC_AS_MEASURED = {"ope/fqe_action": "continuous", "ope/fqe_history": 3, "ope/fqe_previous_action": False}
"""the critic :data:`CRITIC_COST_ADVICE` was measured with (the OPE metrics' ``ope/fqe_*``); another critic gets no
such advice"""


def critic_differs(ope: Mapping[str, Any]) -> str:
    """"" when the OPE metrics' FQE critic is the one :data:`CRITIC_COST_ADVICE` was measured with, else what
    differs (a setting the metrics do not record counts as different)."""
    return ", ".join(f"{k.removeprefix('ope/')} {ope.get(k, 'not recorded')!s} (measured: {v!s})"
                     for k, v in CRITIC_AS_MEASURED.items() if ope.get(k) != v)
UNCHECKED = "Compare only policies the gate's support check admits (not measured for these policies)."
THIN_WDR_RETURN = (
    "Intervals on an ESS below {min_ess:g} decide nothing at the gate, and WDR's are too narrow there: on 40 fresh "
    "demo datasets (session 43) its return interval covered the truth for 68 of 80 policies at ESS 1.0 – 9.1 "
    "(standardised errors' SD 1.35, 1 when calibrated), against 37 of 40 at ESS ≥ 20 (SD 1.02)")
"""the return table's warning where a WDR estimate rests on fewer effective stays than the gate's min_ess"""


def outside_support(support: Mapping[str, float], limit: float) -> set[str]:
    """The learned policies whose own actions the guardian rejects more often than ``limit``."""
    return {p for p, share in support.items() if p != inputs.CLINICIANS and share > limit}


def unpickable(support: Mapping[str, float], limit: float, band: float) -> set[str]:
    """The learned policies no pick may choose: beyond ``limit``, or within ``band`` below it, where the gate's
    support check decides nothing ("insufficient evidence") and so could never promote them."""
    return {p for p, share in support.items() if p != inputs.CLINICIANS and share > limit - band}


def support_cell(share: float | None, limit: float, band: float, logged: bool = False) -> str:
    """A policy's support share for the OPE tables: "✘ outside" beyond ``limit``, "≈ limit" within ``band`` of it
    (where the gate's support check decides nothing), "(logged)" for the clinicians' own actions."""
    if share is None:
        return "—"
    if logged:
        return f"{share:.1%} <span class='muted'>(logged)</span>"
    near = abs(share - limit) < band
    flag = (" <span class='bad' title='beyond the gate&#39;s support limit: estimates are extrapolations'>✘ outside"
            "</span>" if share > limit else "")
    if near:
        flag += (" <span class='bad' title='within the gate&#39;s tolerance band of the limit: the gate would call "
                 "its support check insufficient evidence'>≈ limit</span>")
    return f"{share:.1%}{flag}"


def ope_table(est: pd.DataFrame, truth: Mapping[str, Mapping[str, float]], target: str,
              estimators: Sequence[str], support: Mapping[str, float] | None = None, limit: float = 0.10,
              band: float = 0.0, critic: Mapping[str, Any] | None = None, min_ess: float = 20.0) -> str:
    """One target's estimates: a row per policy (with its support share when the evaluate stage measured it,
    :func:`support_cell`), a column per estimator, the truth on the demo; ▲ marks each estimator's pick among the
    policies the gate's support check admits (share ≤ ``limit`` − ``band``, :func:`unpickable`). ``critic``: the
    OPE metrics' FQE settings (``ope/fqe_*``); the FQE cost advice shows only for the critic it was measured with.
    A WDR return estimate on an ESS below ``min_ess`` adds :data:`THIN_WDR_RETURN`."""
    rows_t = est[est["target"] == target]
    if rows_t.empty:
        return ""
    support = support or {}
    estimators = [e for e in estimators if (rows_t["estimator"] == e).any()]  # e.g. mb_anchored: its costs only
    policies = sorted(rows_t["policy"].unique(), key=lambda p: (p != inputs.CLINICIANS, p))
    has_truth = any(inputs.truth_of(truth.get(p, {}), target) is not None for p in policies)
    header = ["policy", *(["support: own actions rejected"] if support else []), *estimators,
              *(["truth"] if has_truth else [])]
    picks = selected(rows_t[~rows_t["policy"].isin(unpickable(support, limit, band))], estimators, target)
    rows = []
    for p in policies:
        cells = [html.escape("clinicians (on-policy)" if p == inputs.CLINICIANS else p)]
        if support:
            cells.append(support_cell(support.get(p), limit, band, p == inputs.CLINICIANS))
        for e in estimators:
            r = rows_t[(rows_t["policy"] == p) & (rows_t["estimator"] == e)]
            if p == inputs.CLINICIANS and r.empty:
                r = rows_t[(rows_t["policy"] == p)].head(1)  # the clinicians' own mean serves every column
            if r.empty:
                cells.append("—")
                continue
            x = r.iloc[0]
            text = f"{_fmt(x['value'])} <span class='ci'>[{_fmt(x['ci_low'])}, {_fmt(x['ci_high'])}]</span>"
            cov = x.get("covers_truth")
            if isinstance(cov, (bool, float)) and not (isinstance(cov, float) and math.isnan(cov)):
                text += " <span class='ok'>✔</span>" if bool(cov) else " <span class='bad'>✘</span>"
            ess = x.get("ess")
            if isinstance(ess, float) and math.isfinite(ess) and p != inputs.CLINICIANS:
                text += f" <span class='ci'>ESS {ess:.0f}</span>"
            if picks.get(e) == p:
                text += " <span class='ok' title='this estimator ranks this policy best'>▲</span>"
            cells.append(text)
        if has_truth:
            cells.append(_fmt(inputs.truth_of(truth.get(p, {}), target)))
        rows.append(cells)
    critic_advice = CRITIC_COST_ADVICE.get(target) if CRITIC_COST_ESTIMATOR in estimators else None
    differs = critic_differs(critic or {}) if critic_advice else ""
    advice = ("Choose by <code>cautious</code> (the consensus lowered by its parts' disagreement): on the demo's "
              "seven benchmark unions (three scored after the rule was written down) it was the only estimator whose "
              "pick came within 3 % of the return range of the truly best policy on every one; <code>consensus</code> "
              "is the value to read"
              if target == "return" else
              ANCHORED_SPO2_ADVICE if target == ANCHORED_SPO2 and ANCHORED in estimators else
              critic_advice if critic_advice and not differs else
              "On the demo's benchmark sets no estimator picked the lowest cost return reliably; "
              "<code>consensus</code> ranked the most steadily" if target.startswith("cost_") else "")
    wdr = rows_t[(rows_t["estimator"] == "wdr") & (rows_t["policy"] != inputs.CLINICIANS)]
    if target == "return" and "wdr" in estimators and "ess" in wdr and (wdr["ess"] < min_ess).any():
        advice += ". " * bool(advice) + THIN_WDR_RETURN.format(min_ess=min_ess)
    if differs:
        advice += (f". The pre-registered <code>fqe</code> advice for this cost does not apply: this run's critic "
                   f"differs from the one measured ({html.escape(differs)})")
    scope = (f"among the policies inside the data's support (the guardian rejects ≤ {limit - band:.0%} of their own "
             f"actions on the test states: the gate's limit, {limit:.0%}, less its margin, within which the gate "
             "decides nothing)" if support else "")
    note = (f"<p class='muted'>▲: the policy each estimator ranks best ({'highest' if target == 'return' else 'lowest'}"
            f" {html.escape(target)}){' ' + scope if scope else ''}. "
            f"{advice + ' (docs/policies-and-ope.md). ' if advice else ''}"
            f"{'' if support else UNCHECKED}</p>") if picks else ""
    return f"<h3>{html.escape(target)}</h3>" + _table(header, rows) + note


def anchored_note(ope: Mapping[str, Any]) -> str:
    """What the OPE metrics say about ``mb_anchored``: its anchor lines, or why it was not made."""
    if "ope/anchored" not in ope:
        return ""
    if not ope["ope/anchored"]:
        why = ope.get("anchored/unavailable", "not computed")
        return f"<p class='muted'><code>mb_anchored</code> (costs read through a line across the attendings): " \
               f"not made: {html.escape(str(why))}.</p>"
    lines = [f"{html.escape(k.split('/')[1])}: ȳ = {_fmt(ope[k])} + {_fmt(ope[k[:-len('intercept')] + 'slope'])}·m "
             f"(scatter τ {_fmt(ope.get(k[:-len('intercept')] + 'tau'))})"
             for k in sorted(ope) if k.startswith("anchored/") and k.endswith("/intercept")]
    return (f"<p class='muted'><code>mb_anchored</code>: <code>mb</code>'s reading of {'; '.join(lines)}, fitted "
            f"across {int(ope.get('anchored/attendings', 0))} attendings' own stays (their logged doses replayed in "
            f"the evaluation models against their logged costs); baseline balance across attendings: smallest "
            f"Bonferroni p {_fmt(ope.get('anchored/balance_p'))} "
            f"({html.escape(str(ope.get('anchored/balance_feature')))}). On 23 demo datasets its point reading was "
            "closer to the truth than <code>mb</code>'s on 22 (median relative error 0.031 – 0.143 against 0.068 – "
            "0.306 over 18 policies), and on the 16 scored with this interval it covered the truth for 212 of the 233 "
            "policies the gate's support check admits, 38 of the 55 it rejects (docs/policies-and-ope.md, sessions "
            "34 – 36). No gate decision reads it.</p>")


NEAR_LIMIT = 0.10
"""a chosen policy's consensus cost within this share of its limit is flagged: on the benchmark GMB-CPO seed 58 read
5.8 % under the urine limit while truly 3.8 % over it (docs/policies-and-ope.md, "Choosing under the cost limits")"""


def limits_of(train: Mapping[str, Any] | None) -> dict[str, float]:
    """The cost limits per stay the learners trained under (``cost_limit/<cost>`` of train.json)."""
    return {k.removeprefix("cost_limit/"): float(v) for k, v in (train or {}).items()
            if k.startswith("cost_limit/") and not k.endswith("/from_params") and v is not None}


def choice_under_limits(est: pd.DataFrame, train: Mapping[str, Any] | None, outside: Iterable[str] = ()) -> str:
    """The learned policy with the highest ``cautious`` return among those whose ``consensus`` point cost returns are
    within every training cost limit (:func:`ogsrl.ope.selection.constrained_choice`), ``outside`` (the policies
    beyond the support limit or within its band, :func:`unpickable`) left out, with what the benchmark says of
    that rule and a warning for any limit above the clinicians' own cost level; "" without limits or estimates."""
    limits = limits_of(train)
    outside = sorted(set(outside))
    learned = est[(est["policy"] != inputs.CLINICIANS) & ~est["policy"].isin(outside)]
    if not limits or not (est["policy"] != inputs.CLINICIANS).any():
        return ""
    left_out = (f" Left out as outside the data's support or at its limit: {html.escape(', '.join(outside))}."
                if outside else "")
    if learned.empty:
        return (f"<h3>Choice under the cost limits</h3><p class='note'>Every learned policy lies outside the data's "
                f"support: <b>insufficient evidence</b> to choose under the limits.{left_out}</p>")

    def values(estimator: str, target: str) -> dict[str, float]:
        r = learned[(learned["estimator"] == estimator) & (learned["target"] == target)]
        return dict(zip(r["policy"], r["value"].astype(float)))

    value = values(CAUTIOUS, "return")
    costs = {c: values(CONSENSUS, c) for c in limits}
    if not value or not all(costs.values()):
        return ""
    names = sorted(value)
    d = np.array(list(limits.values()))
    matrix = np.array([[costs[c].get(p, math.nan) for c in limits] for p in names])
    pick = constrained_choice(np.array([value[p] for p in names]), matrix, d)
    within = int(within_limits(matrix, d).sum())
    clin = {c: (train or {}).get(f"clinicians/cost_return/{c}") for c in limits}
    lim_text = ", ".join(f"{html.escape(c)} ≤ {_fmt(v)}" + (f" (clinicians {_fmt(clin[c])})" if clin[c] is not None
                                                             else "") for c, v in limits.items())
    if pick is None:
        verdict = (f"No learned policy reads within every limit by its <code>consensus</code> cost returns: "
                   f"<b>insufficient evidence</b> to choose under these limits ({len(names)} policies).")
    else:
        p = names[pick]
        margin = {c: (limits[c] - costs[c][p]) / limits[c] if limits[c] > 0 else math.inf for c in limits}
        near = [c for c in limits if margin[c] < NEAR_LIMIT]
        verdict = (f"{within} of {len(names)} learned policies read within every limit by their "
                   f"<code>consensus</code> cost returns; the highest <code>cautious</code> return among them: "
                   f"<b>{html.escape(p)}</b> (return {_fmt(value[p])}; "
                   + ", ".join(f"{html.escape(c)} {_fmt(costs[c][p])}, margin {margin[c]:+.0%}" for c in limits)
                   + ").")
        if near:
            verdict += (f" <span class='bad'>{html.escape(', '.join(near))}: within {NEAR_LIMIT:.0%} of the limit, "
                        "where the benchmark saw a policy read under a limit it truly broke: insufficient evidence "
                        "that it keeps it.</span>")
    above = [c for c in limits if clin[c] is not None and limits[c] > float(clin[c])]
    warning = (f" <span class='bad'>{html.escape(', '.join(above))}: the limit lies above the clinicians' level, "
               "where the estimators' pull towards it reads costly policies within the limit (measured): do not "
               "rely on this choice there.</span>") if above else ""
    evidence = ("On the demo's five benchmark unions (one scored after the rule was written down), with limits below "
                "the clinicians' level, this rule chose a policy truly within every limit on all five and came within "
                "0.03 of the true return range of the best such policy on three; the estimators pull costs towards "
                "the clinicians' level, so safe learners tend to be missed rather than unsafe ones admitted, but "
                "within a few % of a limit they err either way (docs/policies-and-ope.md, \"Choosing under the cost "
                "limits\"). The gate decides promotion on intervals, not on this choice.")
    return (f"<h3>Choice under the cost limits</h3><p class='note'>Limits per stay: {lim_text}. {verdict}{warning}"
            f"{left_out} {html.escape(evidence)}</p>")


def selected(rows: pd.DataFrame, estimators: Sequence[str], target: str) -> dict[str, str]:
    """Estimator → the learned policy it ranks best on ``target`` (highest return, lowest cost or mortality), for
    estimators that estimate at least two learned policies (the clinicians are the reference, never picked)."""
    out = {}
    for e in estimators:
        r = rows[(rows["estimator"] == e) & (rows["policy"] != inputs.CLINICIANS)]
        r = r[np.isfinite(r["value"].to_numpy(dtype=float))]
        if r["policy"].nunique() >= 2:
            best = r["value"].idxmax() if target == "return" else r["value"].idxmin()
            out[e] = str(r.loc[best, "policy"])
    return out


def _seeds(est: pd.DataFrame, clin: Mapping[str, Any]) -> tuple[list[str], dict[str, list[int]]]:
    runs: dict[str, set[int]] = {}
    for key in clin:
        parts = key.split("/")
        if len(parts) > 2 and parts[1].startswith("seed") and parts[1][4:].isdigit():
            runs.setdefault(parts[0], set()).add(int(parts[1][4:]))
    for run, seed in zip(est.get("run", []), est.get("seed", [])):
        if run != inputs.CLINICIANS and seed is not None and not (isinstance(seed, float) and math.isnan(seed)):
            runs.setdefault(run, set()).add(int(seed))
    return sorted(runs), {r: sorted(s) for r, s in runs.items()}


# ---- the stage -------------------------------------------------------------------------------------------------


def build(root: Path, cfg: ReportConfig) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(index.html text, figure name → SVG, summary metrics) from the pipeline outputs under ``root``."""
    root = Path(root)
    docs = {n: inputs.read_json(root, n) for n in ("cohort", "validation_raw", "validation_trajectories", "world",
                                                     "guardian", "ope", "clinical")}
    train_doc = inputs.read_json(root, "train", required=False)
    truth_doc = inputs.read_json(root, "truth", required=False)
    est = inputs.ope_estimates(docs["ope"])
    truth = inputs.truth_values(docs["ope"], truth_doc)
    clin = docs["clinical"]
    found = sorted(e for e in est["estimator"].unique() if e != "onpolicy") if len(est) else []
    estimators = [e for e in cfg.estimators if e in found] if cfg.estimators else found
    targets = [t for t in cfg.targets if len(est) and (est["target"] == t).any()]
    runs, seeds_of = _seeds(est, clin)

    figs: dict[str, str] = {}
    world_html, svg = world_section(docs["world"], inputs.read_csv(root, "world_calibration"),
                                    inputs.read_csv(root, "world_learning_curve"))
    if svg:
        figs["world_calibration"] = svg
    support = inputs.support_shares(docs["ope"])
    outside = outside_support(support, cfg.max_support_reject_share)
    for t in targets:
        s = figures.ope_vs_truth(est[est["estimator"].isin(estimators)], truth, t, cfg.min_ess, outside)
        kind = "ope_vs_truth"
        if s is None:
            s, kind = figures.estimates_forest(est[est["estimator"].isin(estimators)], t, outside), "ope_estimates"
        if s:
            figs[f"{kind}_{t}"] = s
    s = figures.learning_curves(inputs.read_csv(root, "train_curves"))
    if s:
        figs["learning_curves"] = s
    points = {"clinicians": (clin.get("clinicians/me/return_estimate", math.nan), clin.get("clinicians/me", math.nan))}
    for run in runs:
        for seed in seeds_of[run]:
            p = f"{run}/seed{seed}"
            points[p] = (clin.get(f"{p}/me/return_estimate", math.nan), clin.get(f"{p}/me", math.nan))
    s = figures.mortality_relation(inputs.read_csv(root, "mortality_curve"), points)
    if s:
        figs["mortality_relation"] = s

    source = docs["cohort"].get("source", "?")
    truth_note = ("Truth: the demo simulator's values for the same policies (✔ / ✘: the 95 % CI covers it or not)."
                  if truth else "No simulator truth (real data): estimates only.")
    left_out = unpickable(support, cfg.max_support_reject_share, cfg.support_band)
    ope_html = "".join(ope_table(est, truth, t, estimators, support, cfg.max_support_reject_share, cfg.support_band,
                                 docs["ope"], cfg.min_ess) for t in targets)
    fig_ope = "".join(_figure(figs.get(f"ope_vs_truth_{t}") or figs.get(f"ope_estimates_{t}"),
                              f"OPE estimates of {t} with 95 % bootstrap CIs"
                              + (" against the simulator's true value (dashed: y = x)." if f"ope_vs_truth_{t}" in figs
                                 else ".")) for t in targets)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ogsrl results ({html.escape(str(source))})</title>
<style>{CSS}</style></head><body>
<header><h1>ogsrl: offline guarded safe RL for sepsis: results</h1>
<p>data source: {html.escape(str(source))} · {_fmt(docs['cohort'].get('cohort_stays'))} stays ·
policies: {html.escape(', '.join(runs) or 'none')} · estimators: {html.escape(', '.join(estimators) or 'none')}</p></header>
<main>
{cohort_section(docs['cohort'], docs['validation_raw'], docs['validation_trajectories'], root)}
{world_html}
{guardian_section(docs['guardian'])}
<section id="comparison"><h2>Comparison of methods (test split)</h2>
<h3>Clinical metrics</h3>{clinical_table(clin, runs, seeds_of)}
{vs_clinicians_table(truth, runs, seeds_of)}
<h3>Off-policy estimates (methods × estimators, 95 % CI)</h3>
<p class="note">{html.escape(truth_note)} ESS: effective sample size of the importance weights (of the test stays).</p>
{ope_html}{anchored_note(docs['ope'])}{choice_under_limits(est, train_doc, left_out)}</section>
<section id="figures"><h2>Figures</h2><div class="grid">{fig_ope}
{_figure(figs.get('learning_curves'), 'Training curves per run and seed.')}
{_figure(figs.get('mortality_relation'), 'The return → mortality relation ME reads, with each policy at its estimated return.')}
</div></section>
</main></body></html>
"""
    summary = {"report/figures": len(figs), "report/policies": len(runs), "report/estimators": len(estimators),
               "report/targets": len(targets), "report/truth": bool(truth)}
    return page, figs, summary


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Write ``data/reports/index.html`` and ``data/reports/figures/*.svg``; return a small summary."""
    cfg = report_config(params)
    root = Path(root)
    page, figs, summary = build(root, cfg)
    with atomic_path(root / FIGURES_DIR) as tmp:
        tmp.mkdir(parents=True)
        for name, s in figs.items():
            (tmp / f"{name}.svg").write_text(s + "\n", encoding="utf-8")
    write_text(root / INDEX, page)
    return {**summary, "report/path": str(INDEX)}
