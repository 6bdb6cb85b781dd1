"""Each policy's estimation error across datasets, split into its steady part and its scatter (issue 12).

Reads saved ``fqe_spread.py`` / ``bench_anchored.py`` pages of several datasets that score the same policies against
the same truth. Per variant, target and policy: the mean error (estimate − truth) over the datasets — the part a
policy keeps on every dataset, which averaging more critics or models cannot remove — and the SD of the error across
them (the part that changes with the data and the fits). Then, per variant and target, the median of each over the
policies, and the Spearman of the truth with the mean estimate over the datasets (the ranking an estimator with no
scatter, only its steady error, would give).

A ranking does not see an error every policy shares on a dataset (the critic's level on that dataset). With
``--relative-to NAME`` each dataset's errors are taken relative to NAME's error on it (NAME's own becomes 0), so the
steady part and the scatter left are the ones that can reorder policies; the Spearman columns are unchanged by it.
With ``--limit`` only the policies whose rejected share is at most the limit on every page are scored (the pages'
``shares``; policies the gate cannot decide on are left out, as in ``anchored_goals.py --limit``).

Usage:
  .venv/bin/python benchmarks/estimate_errors.py --pages fqe_s37_set16 … [--target cost_urine_low]
      [--variants fqe mb] [--limit 0.08] [--relative-to soc/seed42] [--out estimate_errors]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402
import exclusive  # noqa: E402

COSTS = ["cost_spo2_low", "cost_urine_low"]


def value_of(v: list[float], target: str) -> float:
    """``[return, SpO₂ cost, urine cost]`` → the target's value (``cost_total``: the costs' sum)."""
    return v[0] if target == "return" else (sum(v[1:3]) if target == "cost_total" else v[1 + COSTS.index(target)])


def steady_and_scatter(est: np.ndarray, true: np.ndarray, reference: int | None = None) -> dict[str, Any]:
    """Errors of ``est (D datasets, P policies)`` against ``true (P,)``: per policy the mean error over the datasets
    (steady) and its SD across them (scatter, ddof 1); the median of each over the policies; the Spearman of the
    truth with the mean estimate, and the median of the per-dataset Spearman.

    With ``reference`` (a policy's column) the errors are relative: e_dp − e_d,reference, the part of each dataset's
    errors that a ranking sees (the reference's own row of errors is then 0 and left out of the medians)."""
    err = est - true
    if reference is not None:
        err = err - err[:, [reference]]
    mean_err, sd_err = err.mean(axis=0), err.std(axis=0, ddof=1)
    scored = np.arange(err.shape[1]) != (-1 if reference is None else reference)
    return {"mean_error": mean_err, "sd_error": sd_err,
            "median_abs_mean_error": float(np.median(np.abs(mean_err[scored]))),
            "median_sd_error": float(np.median(sd_err[scored])),
            "spearman_of_mean": float(stats.spearmanr(est.mean(axis=0), true)[0]),
            "median_spearman": float(np.median([stats.spearmanr(e, true)[0] for e in est]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", nargs="+", required=True)
    ap.add_argument("--targets", nargs="+", default=["return", *COSTS, "cost_total"])
    ap.add_argument("--variants", nargs="+", default=["fqe", "mb"])
    ap.add_argument("--limit", type=float, help="keep the policies whose rejected share is ≤ this on every page")
    ap.add_argument("--relative-to", metavar="NAME", help="errors relative to this policy's on the same dataset")
    ap.add_argument("--out", default="estimate_errors")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    docs = [json.loads((bench_ope.HERE / "results" / f"{p}.json").read_text()) for p in args.pages]
    names = sorted(set.intersection(*(set(d["truth"]) for d in docs)))
    if args.limit is not None:
        missing = [p for p, d in zip(args.pages, docs) if "shares" not in d]
        if missing:
            raise SystemExit(f"--limit: pages without support shares: {', '.join(missing)}")
        names = [n for n in names if all(d["shares"].get(n, np.inf) <= args.limit for d in docs)]
    if args.relative_to is not None and args.relative_to not in names:
        raise SystemExit(f"--relative-to {args.relative_to}: not among the scored policies ({', '.join(names)})")
    reference = None if args.relative_to is None else names.index(args.relative_to)
    rows, per_policy = [], {}
    for variant in args.variants:
        for target in args.targets:
            key = "return" if target == "return" else f"cost_return_{target}"
            true = np.array([docs[0]["truth"][n][key] for n in names])
            est = np.array([[value_of(d["values"][variant][n], target) for n in names] for d in docs])  # (D, P)
            parts = steady_and_scatter(est, true, reference)
            per_policy[f"{variant}/{target}"] = {n: [float(parts["mean_error"][i]), float(parts["sd_error"][i])]
                                                 for i, n in enumerate(names)}
            rows.append({"variant": variant, "target": target, "policies": len(names), "datasets": len(docs),
                         **{k: v for k, v in parts.items() if k not in ("mean_error", "sd_error")}})
    command = f"benchmarks/estimate_errors.py {' '.join(sys.argv[1:])}"
    md = [f"# Steady and scattered estimation error across datasets (`{args.out}`, {dt.date.today()})", "",
          f"Command: `{command}` ({time.perf_counter() - t0:.0f} s).", "",
          f"{len(names)} policies scored on all {len(docs)} pages"
          + (f" (rejected share ≤ {args.limit} on every page)" if args.limit is not None else "")
          + ". Per policy: mean error over the datasets (steady) and its SD across them (scatter)"
          + (f", both relative to `{args.relative_to}`'s error on the same dataset (what a ranking sees)"
             if args.relative_to else "")
          + "; the medians of their sizes over the policies; the Spearman of the truth with the estimates averaged "
          "over the datasets, and the median of the per-dataset Spearman.", "",
          "| variant | target | median abs. steady error | median scatter SD | Spearman of the mean estimate | "
          "median Spearman per dataset |", "|---|---|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['target']} | {r['median_abs_mean_error']:.3f} | {r['median_sd_error']:.3f} | "
           f"{r['spearman_of_mean']:.3f} | {r['median_spearman']:.3f} |" for r in rows]
    for variant in args.variants:
        if "cost_urine_low" not in args.targets:
            continue
        md += ["", f"**{variant}, urine cost per policy** (truth; steady error ± scatter SD)", "",
               "| policy | truth | steady error | scatter SD |", "|---|---|---|---|"]
        cells = per_policy[f"{variant}/cost_urine_low"]
        for n in sorted(names, key=lambda n: docs[0]["truth"][n]["cost_return_cost_urine_low"]):
            md.append(f"| {n} | {docs[0]['truth'][n]['cost_return_cost_urine_low']:.3f} | {cells[n][0]:+.3f} | "
                      f"{cells[n][1]:.3f} |")
    probe_common.write_page(args.out, {"rows": rows, "per_policy": per_policy, "policies": names,
                                       "meta": {"date": str(dt.date.today()), "command": command}}, md)


if __name__ == "__main__":
    main()
