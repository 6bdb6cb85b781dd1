"""Is model-based OPE's error on a cost a linear shrinkage, and can the logged data undo it? (issue 12)

Post hoc over saved union pages of ``bench_ope.py`` (no simulation): per union and cost, the line MB's reading makes
against the truth over the admitted policies (``mb = a + b·truth``, its r and fixed point a / (1 − b)), MB's median
relative error, the error left after inverting the true line (an oracle, in-sample: what a perfect linear
calibration could reach), and the error after a data-only calibration — an unbiased-but-noisy estimator (WIS,
PDWIS) regressed on MB across the policy set, whose noise sits in the response and so would not bias the slope.

Usage:
  .venv/bin/python benchmarks/probe_cost_shrinkage.py [--unions s21union_fresh,s22union55,...] [--out NAME]
Writes benchmarks/results/<--out>.md (collected into benchmarks/RESULTS.md by collect.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
from scipy import stats
import exclusive

HERE = Path(__file__).resolve().parent
UNIONS = ("s21union_fresh", "s22union55", "s23union56", "s23union57", "s24union58")
COSTS = ("cost_spo2_low", "cost_urine_low", "cost_total")
RESPONSES = ("wis", "pdwis")


def union_rows(union: str) -> tuple[dict[str, tuple[dict, dict]], list[str]]:
    """(policy → (truth, estimates)) over a union page's source pages, and the admitted policies."""
    page = json.loads((HERE / "results" / f"ope_rank_{union}.json").read_text(encoding="utf-8"))
    rows: dict[str, tuple[dict, dict]] = {}
    for source in page["pages"]:
        d = json.loads((HERE / "results" / f"{source}.json").read_text(encoding="utf-8"))
        rows.update({k: (d["truth"][k], v["estimates"]) for k, v in d["rank"]["policies"].items() if k in d["truth"]})
    return rows, [k for k in page["admitted"] if k in rows]


def median_rel_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.median(np.abs(estimate - truth) / np.abs(truth)))


def shrinkage(truth: np.ndarray, mb: np.ndarray, responses: dict[str, np.ndarray]) -> dict[str, float]:
    """MB's line against the truth, the oracle inversion, and each data-only calibration's slope and error."""
    line = stats.linregress(truth, mb)
    out = {"a": line.intercept, "b": line.slope, "r": line.rvalue, "fixed": line.intercept / (1.0 - line.slope),
           "mb": median_rel_error(mb, truth),
           "oracle": median_rel_error((mb - line.intercept) / line.slope, truth)}
    for name, resp in responses.items():
        ok = np.isfinite(resp)
        fit = stats.linregress(mb[ok], resp[ok])
        out[f"{name}_slope"] = fit.slope
        out[f"{name}_error"] = median_rel_error(fit.intercept + fit.slope * mb, truth)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unions", default=",".join(UNIONS), help="union page names without the ope_rank_ prefix")
    ap.add_argument("--out", default="cost_shrinkage_s25", help="result page name under benchmarks/results/")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    lines = [f"# Model-based OPE's cost readings against the truth: shrinkage and calibration "
             f"(`benchmarks/probe_cost_shrinkage.py`, {dt.date.today().isoformat()})\n",
             f"Command: `.venv/bin/python benchmarks/probe_cost_shrinkage.py --unions {args.unions} --out {args.out}`. "
             "Admitted policies of each union; median relative errors against the truth. *Oracle*: MB inverted with "
             "the true line (in-sample). *WIS / PDWIS*: MB calibrated by regressing that estimator on MB across the "
             "policies (data only); its slope beside the true 1/b.\n"]
    for cost in COSTS:
        lines += [f"## {cost}\n", "| union | policies | MB reads a + b·truth | r | fixed point | MB error | oracle | "
                  "WIS-calibrated | PDWIS-calibrated | slope WIS / PDWIS (true 1/b) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for union in args.unions.split(","):
            rows, names = union_rows(union)
            truth = np.array([rows[k][0][f"cost_return_{cost}"] for k in names])
            est = {e: np.array([rows[k][1][f"{e}/{cost}"]["value"] for k in names]) for e in ("mb", *RESPONSES)}
            r = shrinkage(truth, est["mb"], {e: est[e] for e in RESPONSES})
            lines.append(f"| {union} | {len(names)} | {r['a']:.3f} + {r['b']:.3f}·truth | {r['r']:.3f} | "
                         f"{r['fixed']:.2f} | {r['mb']:.3f} | {r['oracle']:.3f} | {r['wis_error']:.3f} | "
                         f"{r['pdwis_error']:.3f} | {r['wis_slope']:.2f} / {r['pdwis_slope']:.2f} ({1 / r['b']:.2f}) |")
        lines.append("")
    text = "\n".join(lines)
    (HERE / "results" / f"{args.out}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
