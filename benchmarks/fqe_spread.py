"""FQE, WDR and their hull on a fresh spread-set dataset, beside its ``mb`` / ``mb_anchored`` page (issue 12).

For a dataset that ``bench_anchored.py`` has scored (``--anchored`` page: the policies' ``mb`` and ``mb_anchored``
readings and truth) this computes the evaluate stage's critic estimators — FQE (bagged over ``ope.fqe.refits``
stay-bootstrap refits), WDR and the FQE/WDR hull the gate reads — for each policy the support check admits on that
dataset (``--support`` page, ``--limit``), exactly as the evaluate stage does (``bench_ope.evaluate_all`` without
the world models), and writes a page with all five variants so ``anchored_goals.py --variants`` scores them alike.
Policies the check rejects are not evaluated (they are left out of the admitted goals anyway).

Usage:
  .venv/bin/python benchmarks/fqe_spread.py --root <reseeded project> --work <bench_ope work dir> \
      --anchored anchored_s36_set16 --support anchored_support_s36 [--limit 0.10] --out fqe_s37_set16
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchored_goals  # noqa: E402
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

from ogsrl.agents import common  # noqa: E402
from ogsrl.config import load_params  # noqa: E402

CRITIC_VARIANTS = ("fqe", "wdr", "hull_fqe_wdr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the dataset's project (reseed_set.py's --dest)")
    ap.add_argument("--work", type=Path, required=True, help="bench_ope's work directory (the rule clones)")
    ap.add_argument("--anchored", required=True, help="the dataset's bench_anchored.py page")
    ap.add_argument("--support", required=True, help="the anchored_support.py page with the dataset's shares")
    ap.add_argument("--limit", type=float, default=0.10, help="largest rejected share admitted")
    ap.add_argument("--no-mb", action="store_true",
                    help="leave out --anchored's mb readings (a --root that is not that page's dataset)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    root = args.root.resolve()
    anchored = json.loads((bench_ope.HERE / "results" / f"{args.anchored}.json").read_text())
    shares = anchored_goals.shares_of([args.support]).get(args.anchored)
    if shares is None:
        raise SystemExit(f"{args.support} holds no shares for {args.anchored}")
    names = [n for n in anchored["truth"] if shares[n] <= args.limit]
    params = load_params(root / "params.yaml")
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, meta = common.read_split(root / "data/trajectories/val.parquet")
    pols = bench_ope.build_policies(root, params, train, val, args.work, spread=True)
    params_no_world = {**params, "ope": {**params["ope"], "model": {**params["ope"]["model"], "enabled": False},
                                         "neighbour": {**params["ope"]["neighbour"], "enabled": False},
                                         "consensus": []}}
    evaluated = bench_ope.evaluate_all(root, params_no_world, pols, names)
    costs = list(meta["cost_columns"])
    values = {v: {n: [evaluated[n]["estimates"][f"{v}/{t}"]["value"] for t in ("return", *costs)] for n in names}
              for v in CRITIC_VARIANTS}
    intervals = {v: {n: {t: [evaluated[n]["estimates"][f"{v}/{t}"][k] for k in ("ci_low", "ci_high")]
                         for t in ("return", *costs, "cost_total") if f"{v}/{t}" in evaluated[n]["estimates"]}
                     for n in names} for v in CRITIC_VARIANTS}
    for v in () if args.no_mb else ("mb", "mb_anchored"):
        values[v] = {n: anchored["values"][v][n] for n in names}
    truth = {n: anchored["truth"][n] for n in names}
    rows = probe_common.score(values, truth, costs, names)
    seconds = round(time.perf_counter() - t0, 1)
    command = f"benchmarks/fqe_spread.py {' '.join(sys.argv[1:])}"
    md = [f"# FQE, WDR and their hull beside mb / mb_anchored (`{args.out}`, {dt.date.today()})", "",
          f"Command: `{command}` ({seconds:.0f} s).", "",
          f"The {len(names)} policies of `{args.anchored}` the support check admits (share ≤ {args.limit:g}, from "
          f"`{args.support}`); `mb` / `mb_anchored` from that page, the critic estimators computed here as the "
          "evaluate stage does (its params, seeds and test split; no world models).", "",
          *probe_common.score_table([r for r in rows if r["subset"] == "all"]), "",
          "| policy | true urine cost | fqe [95 % CI] | wdr | mb | mb_anchored |", "|---|---|---|---|---|---|"]
    nan = [float("nan")] * (1 + len(costs))
    k = 1 + costs.index("cost_urine_low")
    for n in sorted(names, key=lambda n: truth[n]["cost_return_cost_urine_low"]):
        lo, hi = intervals["fqe"][n]["cost_urine_low"]
        md.append(f"| {n} | {truth[n]['cost_return_cost_urine_low']:.3f} | {values['fqe'][n][k]:.3f} "
                  f"[{lo:.3f}, {hi:.3f}] | {values['wdr'][n][k]:.3f} | {values.get('mb', {}).get(n, nan)[k]:.3f} | "
                  f"{values.get('mb_anchored', {}).get(n, nan)[k]:.3f} |")
    page = {"values": values, "intervals": intervals, "truth": truth, "admitted": names,
            "shares": {n: shares[n] for n in names},
            "seconds_per_policy": {n: evaluated[n]["seconds"] for n in names},
            "meta": {"date": str(dt.date.today()), "seconds": seconds, "command": command}}
    probe_common.write_page(args.out, page, md)


if __name__ == "__main__":
    main()
