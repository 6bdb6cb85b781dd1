"""The issue's three ranking goals per dataset, over the policies the gate's support check admits (issue 12).

Reads saved pages only: each ``bench_anchored.py`` page (the policies' ``mb`` and ``mb_anchored`` readings and their
truth; an ``fqe_spread.py`` page adds ``fqe``, ``wdr``, ``hull_fqe_wdr`` and its shares) and the
``anchored_support.py`` page that holds each policy's rejected share on that dataset. Per dataset,
target (the return, each cost, their total), variant and subset (all policies; those admitted): median relative
error, Spearman and regret as :func:`probe_common.score` computes them, and whether all three goals hold (median
relative error ≤ 0.10, Spearman ≥ 0.9, regret ≤ 0.03). ``--limit`` re-draws the admitted set from the saved shares
(default: each support page's own limit, the gate's ``max_support_reject_share``).

Usage:
  .venv/bin/python benchmarks/anchored_goals.py --support anchored_support_s35 \
      --sets anchored_s35_set1 … [--fresh PAGE …] [--limit 0.10] [--out anchored_goals]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

COSTS = ["cost_spo2_low", "cost_urine_low"]
TARGETS = ["return", *COSTS, "cost_total"]
VARIANTS = ["mb", "mb_anchored"]
GOALS = {"median_rel_error": 0.10, "spearman": 0.9, "regret": 0.03}


def meets(row: dict[str, Any]) -> bool:
    """All three goals: median relative error ≤ 0.10, Spearman ≥ 0.9, regret ≤ 0.03."""
    return (row["median_rel_error"] <= GOALS["median_rel_error"] and row["spearman"] >= GOALS["spearman"]
            and row["regret"] <= GOALS["regret"])


def shares_of(support_pages: list[str]) -> dict[str, dict[str, float]]:
    """anchored page → policy → the guardian's rejected share of its own actions on that dataset's test states."""
    out: dict[str, dict[str, float]] = {}
    for name in support_pages:
        doc = json.loads((bench_ope.HERE / "results" / f"{name}.json").read_text())
        for sets in doc["groups"].values():
            for s in sets:
                out[s["page"]] = {p: r["support_reject_share"] for p, r in s["policies"].items()}
    return out


def score_page(page: str, shares: dict[str, float], limit: float, variants: list[str] = VARIANTS
               ) -> dict[str, Any]:
    doc = json.loads((bench_ope.HERE / "results" / f"{page}.json").read_text())
    shares = {**shares, **doc.get("shares", {})}  # fqe_spread.py pages carry their dataset's shares
    missing = sorted(set(doc["truth"]) - set(shares))
    if missing:
        raise SystemExit(f"{page}: no support share for {missing}")
    admitted = [p for p in doc["truth"] if shares[p] <= limit]
    rows = probe_common.score({v: doc["values"][v] for v in variants}, doc["truth"], COSTS, admitted)
    return {"page": page, "admitted": admitted, "rows": [{**r, "meets": meets(r)} for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--support", nargs="+", required=True, help="anchored_support.py pages with the shares")
    ap.add_argument("--sets", nargs="+", default=[], help="bench_anchored.py pages of the exploratory datasets")
    ap.add_argument("--fresh", nargs="+", default=[], help="bench_anchored.py pages of the pre-registered datasets")
    ap.add_argument("--limit", type=float, default=0.10, help="largest rejected share admitted (the gate's default)")
    ap.add_argument("--variants", nargs="+", default=VARIANTS,
                    help="estimators read from the pages (fqe_spread.py pages also hold fqe, wdr, hull_fqe_wdr)")
    ap.add_argument("--out", default="anchored_goals")
    args = ap.parse_args()
    t0 = time.perf_counter()
    shares = shares_of(args.support)
    variants = args.variants
    groups = {g: [score_page(p, shares.get(p, {}), args.limit, args.variants) for p in pages]
              for g, pages in (("exploratory", args.sets), ("fresh", args.fresh)) if pages}
    command = f"benchmarks/anchored_goals.py {' '.join(sys.argv[1:])}"
    md = [f"# The ranking goals over the policies the support check admits (`{args.out}`, {dt.date.today()})", "",
          f"Command: `{command}` ({time.perf_counter() - t0:.0f} s).", "",
          f"Admitted: the guardian rejects ≤ {args.limit:g} of the policy's own actions on the dataset's test states. "
          "Cell: median relative error / Spearman / regret, ✔ when all three goals hold (≤ 0.10, ≥ 0.9, ≤ 0.03).", ""]
    pooled: dict[str, dict[str, list[int]]] = {}
    only_admitted = all(len(s["admitted"]) == next(r["policies"] for r in s["rows"] if r["subset"] == "all")
                        for sets in groups.values() for s in sets)
    for subset in ("admitted", "all"):
        table = [f"## {subset} policies", "",
                 "| dataset | group | n | " + " | ".join(f"{t}: {v}" for t in TARGETS for v in variants) + " |",
                 "|---|---|---|" + "---|" * (len(TARGETS) * len(variants))]
        for group, sets in groups.items():
            for s in sets:
                rows = {(r["target"], r["variant"]): r for r in s["rows"] if r["subset"] == subset}
                n = next(iter(rows.values()))["policies"]
                cells = []
                for t in TARGETS:
                    for v in variants:
                        r = rows[(t, v)]
                        tally = pooled.setdefault(f"{group}/{subset}/{t}/{v}", [0, 0])
                        tally[0] += r["meets"]
                        tally[1] += 1
                        cells.append(f"{r['median_rel_error']:.3f} / {r['spearman']:.3f} / {r['regret']:.3f}"
                                     f"{' ✔' if r['meets'] else ''}")
                table.append(f"| {s['page']} | {group} | {n} | " + " | ".join(cells) + " |")
            table.append(f"| **sets meeting all three** | {group} | | " + " | ".join(
                f"{pooled[f'{group}/{subset}/{t}/{v}'][0]} of {pooled[f'{group}/{subset}/{t}/{v}'][1]}"
                for t in TARGETS for v in variants) + " |")
        if subset == "all" and only_admitted:
            table = ["## all policies", "", "The admitted ones: every page scored holds only admitted policies."]
        md += [*table, ""]
    page = {"limit": args.limit, "groups": groups, "pooled": pooled,
            "meta": {"date": str(dt.date.today()), "seconds": round(time.perf_counter() - t0, 1), "command": command}}
    probe_common.write_page(args.out, page, md)


if __name__ == "__main__":
    main()
