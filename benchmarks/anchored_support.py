"""``mb_anchored``'s SpO₂ interval coverage over several datasets, split by the gate's support check (issue 12).

For each dataset (a project root, its ``bench_ope`` work directory and the ``bench_anchored.py`` page scored on it)
every policy of the page gets the share of its own actions on the root's test states that the root's guardian
rejects — the gate's own function and seed (:func:`bench_ope.support_shares`) — and is admitted when that share is
≤ ``registry.gate.max_support_reject_share``.
The page's intervals are then counted over the admitted and the rejected policies, per dataset and pooled; datasets
listed after ``--fresh`` are pooled apart (the pre-registered ones).

Usage:
  .venv/bin/python benchmarks/anchored_support.py --sets ROOT:WORK:PAGE [ROOT:WORK:PAGE ...] \
      [--fresh ROOT:WORK:PAGE ...] [--out anchored_support]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

from ogsrl.agents import common  # noqa: E402
from ogsrl.config import load_params  # noqa: E402

SPO2 = "cost_spo2_low"
ESTIMATOR = "mb_anchored"


def score_set(root: Path, work: Path, page: str) -> dict[str, Any]:
    """Each policy of ``page``: its rejected share on ``root``'s test states, whether the gate admits it, and whether
    the page's ``mb_anchored`` SpO₂ interval covers the truth (with the interval's width over the truth)."""
    saved = json.loads((bench_ope.HERE / "results" / f"{page}.json").read_text())
    params = load_params(root / "params.yaml")
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, _ = common.read_split(root / "data/trajectories/val.parquet")
    pols = bench_ope.build_policies(root, params, train, val, work, spread=True)
    limit, shares = bench_ope.support_shares(root, params, pols, saved["truth"])
    iv = saved["spo2_intervals"][ESTIMATOR]
    rows = {}
    for i, name in enumerate(saved["truth"]):
        truth = saved["truth"][name][f"cost_return_{SPO2}"]
        rows[name] = {"support_reject_share": shares[name], "admitted": bool(shares[name] <= limit),
                      "covers": bool(iv["covers"][i]), "width_over_truth": (iv["high"][i] - iv["low"][i]) / truth}
    return {"page": page, "root": str(root), "support_limit": limit, "policies": rows}


def counts(sets: list[dict[str, Any]], admitted: bool | None) -> tuple[int, int, float]:
    """(covered, pairs, median width over the truth) over the sets' policies (``admitted``: only those the check
    admits, or rejects; None: all)."""
    rows = [r for s in sets for r in s["policies"].values() if admitted is None or r["admitted"] == admitted]
    widths = [r["width_over_truth"] for r in rows]
    return sum(r["covers"] for r in rows), len(rows), float(np.median(widths)) if widths else float("nan")


def cell(c: tuple[int, int, float]) -> str:
    return f"{c[0]} / {c[1]} ({c[0] / c[1]:.0%}; width {c[2]:.2f})" if c[1] else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=[], help="ROOT:WORK:PAGE of each exploratory dataset")
    ap.add_argument("--fresh", nargs="+", default=[], help="ROOT:WORK:PAGE of each pre-registered dataset")
    ap.add_argument("--out", default="anchored_support")
    args = ap.parse_args()
    t0 = time.perf_counter()
    groups: dict[str, list[dict[str, Any]]] = {"exploratory": [], "fresh": []}
    for group, specs in (("exploratory", args.sets), ("fresh", args.fresh)):
        for spec in specs:
            root, work, page = spec.split(":")
            groups[group].append(score_set(Path(root), Path(work), page))
            print(f"{page}: done", file=sys.stderr, flush=True)
    md = [f"# `mb_anchored`'s SpO₂ interval by the gate's support check (`{args.out}`, {dt.date.today()})", "",
          f"Command: `benchmarks/anchored_support.py {' '.join(sys.argv[1:])}` "
          f"({time.perf_counter() - t0:.0f} s).", "",
          "Each cell: intervals covering the truth / policy-dataset pairs (share; median width as a share of the "
          "truth). Admitted: the guardian rejects ≤ the gate's `max_support_reject_share` of the policy's own actions "
          "on the dataset's test states.", "",
          "| dataset | group | admitted | rejected | all | rejected policies (share) |", "|---|---|---|---|---|---|"]
    for group, sets in groups.items():
        for s in sets:
            out = ", ".join(f"{n} ({r['support_reject_share']:.3f})" for n, r in s["policies"].items()
                            if not r["admitted"])
            md.append(f"| {s['page']} | {group} | {cell(counts([s], True))} | {cell(counts([s], False))} | "
                      f"{cell(counts([s], None))} | {out or '–'} |")
    pooled = {group: {k: counts(sets, a) for k, a in (("admitted", True), ("rejected", False), ("all", None))}
              for group, sets in groups.items() if sets}
    for group, c in pooled.items():
        md.append(f"| **pooled ({len(groups[group])} sets)** | {group} | {cell(c['admitted'])} | "
                  f"{cell(c['rejected'])} | {cell(c['all'])} | |")
    page = {"groups": groups, "pooled": {g: {k: list(v) for k, v in c.items()} for g, c in pooled.items()},
            "meta": {"date": str(dt.date.today()), "seconds": round(time.perf_counter() - t0, 1),
                     "command": f"benchmarks/anchored_support.py {' '.join(sys.argv[1:])}"}}
    probe_common.write_page(args.out, page, md)


if __name__ == "__main__":
    main()
