"""FQE, WDR and their hull on a fresh spread-set dataset, beside its ``mb`` / ``mb_anchored`` page (issue 12).

For a dataset that ``bench_anchored.py`` has scored (``--anchored`` page: the policies' ``mb`` and ``mb_anchored``
readings and truth) this computes the evaluate stage's critic estimators — FQE (bagged over ``ope.fqe.refits``
stay-bootstrap refits), WDR and the FQE/WDR hull the gate reads — for each policy the support check admits on that
dataset (``--support`` page, ``--limit``), exactly as the evaluate stage does (``bench_ope.evaluate_all`` without
the world models), and writes a page with all five variants so ``anchored_goals.py --variants`` scores them alike.
Policies the check rejects are not evaluated (they are left out of the admitted goals anyway).

Usage:
  .venv/bin/python benchmarks/fqe_spread.py --root <reseeded project> --work <bench_ope work dir> \
      --anchored anchored_s36_set16 --support anchored_support_s36 [--limit 0.10] [--no-mb] --out fqe_s37_set16
  .venv/bin/python benchmarks/fqe_spread.py --root <reseeded project> --work <dir> --truth spread_truth_s36 \
      [--fqe refits=12] --out <page>   (a dataset with no bench_anchored.py page: shares measured, no mb)
  (``--rewrite`` with the same --anchored/--support/--out re-renders a saved page.)
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

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchored_goals  # noqa: E402
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

from ogsrl.agents import common  # noqa: E402
from ogsrl.config import load_params  # noqa: E402
from ogsrl.ope import fqe  # noqa: E402
import exclusive  # noqa: E402

CRITIC_VARIANTS = ("fqe", "wdr", "hull_fqe_wdr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, help="the dataset's project (reseed_set.py's --dest)")
    ap.add_argument("--work", type=Path, help="bench_ope's work directory (the rule clones)")
    ap.add_argument("--anchored", help="the dataset's bench_anchored.py page (its mb readings, truth and shares)")
    ap.add_argument("--support", help="the anchored_support.py page with --anchored's shares")
    ap.add_argument("--truth", help="instead of --anchored/--support: a spread_truth.py page; the shares are "
                                    "measured here (the gate's support check)")
    ap.add_argument("--limit", type=float, default=0.10, help="largest rejected share admitted")
    ap.add_argument("--no-mb", action="store_true",
                    help="leave out --anchored's mb readings (a --root that is not that page's dataset)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fqe", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override ope.fqe fields (yaml values), e.g. refits=12 action=binned")
    ap.add_argument("--rewrite", action="store_true", help="re-render the saved page --out (no estimates computed)")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    if args.rewrite:
        page = json.loads((bench_ope.HERE / "results" / f"{args.out}.json").read_text())
        page["costs"] = ["cost_spo2_low", "cost_urine_low"]
        for v in CRITIC_VARIANTS:  # a page of the first version also carried the cost total
            page["values"][v] = {n: x[:3] for n, x in page["values"][v].items()}
        page["meta"].update(anchored=args.anchored, support=args.support, limit=args.limit)
        write(args.out, page)
        return
    if args.root is None or args.work is None:
        ap.error("--root and --work are required (unless --rewrite)")
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, meta = common.read_split(root / "data/trajectories/val.parquet")
    pols = bench_ope.build_policies(root, params, train, val, args.work, spread=True)
    if args.anchored:
        anchored = json.loads((bench_ope.HERE / "results" / f"{args.anchored}.json").read_text())
        shares = anchored_goals.shares_of([args.support]).get(args.anchored) if args.support else None
        if shares is None:
            raise SystemExit(f"--support {args.support} holds no shares for {args.anchored}")
    elif args.truth:
        anchored = json.loads((bench_ope.HERE / "results" / f"{args.truth}.json").read_text())
        shares = bench_ope.support_shares(root, params, pols, list(anchored["truth"]))[1]
        args.no_mb = True
    else:
        ap.error("--anchored with --support, or --truth")
    names = [n for n in anchored["truth"] if shares[n] <= args.limit]
    params_no_world = {**params, "ope": {**params["ope"], "model": {**params["ope"]["model"], "enabled": False},
                                         "neighbour": {**params["ope"]["neighbour"], "enabled": False},
                                         "consensus": []}}
    for item in args.fqe:
        key, _, value = item.partition("=")
        if key not in fqe.Config.__dataclass_fields__:
            ap.error(f"--fqe {item}: ope.fqe has no field {key!r}")
        params_no_world["ope"]["fqe"] = {**params_no_world["ope"]["fqe"], key: yaml.safe_load(value)}
    evaluated = bench_ope.evaluate_all(root, params_no_world, pols, names)
    costs = [c for c in meta["cost_columns"] if c != "cost_total"]  # score() adds their total
    values = {v: {n: [evaluated[n]["estimates"][f"{v}/{t}"]["value"] for t in ("return", *costs)] for n in names}
              for v in CRITIC_VARIANTS}
    intervals = {v: {n: {t: [evaluated[n]["estimates"][f"{v}/{t}"][k] for k in ("ci_low", "ci_high")]
                         for t in ("return", *costs, "cost_total") if f"{v}/{t}" in evaluated[n]["estimates"]}
                     for n in names} for v in CRITIC_VARIANTS}
    for v in () if args.no_mb else ("mb", "mb_anchored"):
        values[v] = {n: anchored["values"][v][n] for n in names}
    truth = {n: anchored["truth"][n] for n in names}
    page = {"values": values, "intervals": intervals, "truth": truth, "admitted": names,
            "shares": {n: shares[n] for n in names}, "costs": costs, "all_shares": shares,
            "seconds_per_policy": {n: evaluated[n]["seconds"] for n in names},
            "meta": {"date": str(dt.date.today()), "seconds": round(time.perf_counter() - t0, 1),
                     "command": f"benchmarks/fqe_spread.py {' '.join(sys.argv[1:])}",
                     "anchored": args.anchored or args.truth, "support": args.support or "measured here",
                     "limit": args.limit, "fqe": args.fqe}}
    write(args.out, page)


def covered(page: dict[str, Any], variant: str, target: str) -> tuple[int, int]:
    """(policies whose 95 % interval of ``variant`` covers the truth of ``target``, policies)."""
    key = "return" if target == "return" else f"cost_return_{target}"
    hits = [lo <= page["truth"][n][key] <= hi for n, iv in page["intervals"][variant].items()
            for lo, hi in [iv[target]]]
    return sum(hits), len(hits)


def write(out: str, page: dict[str, Any]) -> None:
    """The page's goals (``probe_common.score``), its urine readings and interval coverage, as json and markdown."""
    values, truth, names, costs, meta = page["values"], page["truth"], page["admitted"], page["costs"], page["meta"]
    rows = probe_common.score(values, truth, costs, names)
    page["rows"] = rows
    cover = {f"{v}/{t}": covered(page, v, t) for v in CRITIC_VARIANTS for t in ("return", *costs, "cost_total")}
    page["covers"] = cover
    md = [f"# FQE, WDR and their hull beside mb / mb_anchored (`{out}`, {meta['date']})", "",
          f"Command: `{meta['command']}` ({meta['seconds']:.0f} s).", "",
          f"The {len(names)} policies of `{meta['anchored']}` the support check admits (share ≤ {meta['limit']:g}, "
          f"from `{meta['support']}`); `mb` / `mb_anchored` from that page (absent: another dataset), the critic "
          "estimators computed here as the evaluate stage does (its params, seeds and test split; no world models).",
          "", *probe_common.score_table([r for r in rows if r["subset"] == "all"]), "",
          "95 % intervals covering the truth: " + "; ".join(f"{k} {c[0]} of {c[1]}" for k, c in cover.items()) + ".",
          "", "| policy | true urine cost | fqe [95 % CI] | wdr | mb | mb_anchored |", "|---|---|---|---|---|---|"]
    nan = [float("nan")] * (1 + len(costs))
    k = 1 + costs.index("cost_urine_low")
    for n in sorted(names, key=lambda n: truth[n]["cost_return_cost_urine_low"]):
        lo, hi = page["intervals"]["fqe"][n]["cost_urine_low"]
        md.append(f"| {n} | {truth[n]['cost_return_cost_urine_low']:.3f} | {values['fqe'][n][k]:.3f} "
                  f"[{lo:.3f}, {hi:.3f}] | {values['wdr'][n][k]:.3f} | {values.get('mb', {}).get(n, nan)[k]:.3f} | "
                  f"{values.get('mb_anchored', {}).get(n, nan)[k]:.3f} |")
    probe_common.write_page(out, page, md)


if __name__ == "__main__":
    main()
