"""``mb_anchored`` exactly as the evaluate stage computes it, scored against the truth on the spread set (issue 12).

The project root must carry ``data/trajectories/providers.parquet`` (``ogsrl extract`` writes it from
``admissions.admit_provider_id``); its ``eval_world`` fits the evaluation models and the attendings' anchor lines
(:func:`ogsrl.ope.stage.attending_anchors`), and every policy of the pages' truth is read by
:func:`ogsrl.ope.stage.estimate_model_based` with the policy's own seed stream. Variants scored: ``mb`` and
``mb_anchored`` (the SpO₂ cost through the line; return and urine cost as ``mb``, the total their sum). Also: how
often each estimator's 95 % interval of the SpO₂ cost covers the truth, and the intervals' widths.

Usage:
  .venv/bin/python benchmarks/bench_anchored.py --root <make-run project> --pages mb_more_stays_s30 \
      --work <bench_ope work dir> [--out anchored]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_common  # noqa: E402

from ogsrl.ope import stage as ope_stage  # noqa: E402
import exclusive  # noqa: E402

SPO2 = "cost_spo2_low"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_common.add_args(ap)
    ap.add_argument("--admitted", default="", help="a saved union page whose admitted policies form the subset")
    ap.add_argument("--out", default="anchored")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    ps = probe_common.load(args)
    world, cfg = ps.world, ps.cfg
    if world.anchors is None:
        raise SystemExit(f"no anchors: {world.anchor_report.get('anchored/unavailable')}")
    t_world = time.perf_counter() - t0
    costs = list(ps.table.cost_columns)
    est = {n: ope_stage.estimate_model_based(world, ps.policies[n], cfg, ope_stage.policy_streams(cfg.seed, n)[2],
                                             math.nan) for n in ps.truth}
    variants = {
        "mb": {n: [e[("mb", "return")].value, *(e[("mb", c)].value for c in costs)] for n, e in est.items()},
        "mb_anchored": {n: [e[("mb", "return")].value, *(e[("mb_anchored", c)].value if ("mb_anchored", c) in e
                                                          else e[("mb", c)].value for c in costs)]
                        for n, e in est.items()}}
    true = {n: ps.truth[n][f"cost_return_{SPO2}"] for n in ps.truth}
    cover, rows = {}, []
    for name in ("mb", "mb_anchored"):
        iv = {n: est[n][(name, SPO2)] for n in ps.truth}
        hits = [iv[n].covers(true[n]) for n in ps.truth]
        width = [(iv[n].ci_high - iv[n].ci_low) / true[n] for n in ps.truth]
        cover[name] = {"covers": hits, "n_covered": int(sum(hits)), "median_width_over_truth": float(np.median(width)),
                       "low": [iv[n].ci_low for n in ps.truth], "high": [iv[n].ci_high for n in ps.truth]}
    for i, n in enumerate(ps.truth):
        cells = [f"{est[n][(e, SPO2)].value:.3f} [{cover[e]['low'][i]:.3f}, {cover[e]['high'][i]:.3f}]"
                 f"{'' if cover[e]['covers'][i] else ' ✘'}" for e in ("mb", "mb_anchored")]
        rows.append(f"| {n} | {true[n]:.3f} | {cells[0]} | {cells[1]} |")
    rep = world.anchor_report
    spo2 = {k.rsplit("/", 1)[1]: v for k, v in rep.items() if k.startswith(f"anchored/{SPO2}/")}
    sections = [f"Anchors: {int(rep['anchored/attendings'])} attendings, {int(world.anchors.stays.sum())} stays "
                f"(fewest {int(rep['anchored/stays_min'])}); SpO₂ line {spo2['intercept']:.3f} + "
                f"{spo2['slope']:.3f}·m, scatter τ = {spo2['tau']:.3f}; "
                f"baseline balance: smallest Bonferroni p {rep['anchored/balance_p']:.3g} "
                f"({rep['anchored/balance_feature']}). Evaluation models, pools and anchors built in "
                f"{t_world:.0f} s.", "",
                "95 % intervals of the SpO₂ cost covering the truth: " + "; ".join(
                    f"`{e}` {c['n_covered']} of {len(true)} (median width {c['median_width_over_truth']:.3f} of "
                    "the truth)" for e, c in cover.items()) + ".", "",
                "| policy | true SpO₂ cost | mb [95 % CI] | mb_anchored [95 % CI] |", "|---|---|---|---|", *rows, ""]
    probe_common.write_variants(
        "bench_anchored.py", args.out, t0, "mb_anchored as the evaluate stage computes it",
        f"`mb` and `mb_anchored` of the evaluate stage ({len(world.models)} evaluation fits) for {len(ps.truth)} "
        "policies; truth from the pages (10,000 patients, seed 13).", variants, ps.truth, costs,
        probe_common.admitted_by(args.admitted),
        extra={"anchors": {k: v for k, v in rep.items()}, "spo2_intervals": cover, "truth": ps.truth,
               "seconds_world": round(t_world, 1)}, sections=sections)


if __name__ == "__main__":
    main()
