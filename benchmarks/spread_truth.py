"""The simulator's truth for the spread set of a project (issue 12): the page the probes read with ``--pages``.

The 18 policies of ``bench_ope.build_policies(spread=True)`` (the project's trained runs, the weight-perturbed SOC
networks, the rule clones and mixtures, the scaled clinicians), each simulated on the same ``--episodes`` patients
(``--seed``) by :func:`bench_ope.truth_of` (cached in ``--work``, which must be the work directory the probes then
read: the rule clones are trained and kept there).

Usage:
  .venv/bin/python benchmarks/spread_truth.py --root <make-run project> --work <dir> [--episodes 10000]
      [--seed 13] [--out spread_truth]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

from ogsrl.agents import common  # noqa: E402
from ogsrl.config import load_params  # noqa: E402
import exclusive  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the project whose policies and simulator to use")
    ap.add_argument("--work", type=Path, required=True, help="bench_ope's work directory (rule clones, truths)")
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="spread_truth")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, meta = common.read_split(root / "data/trajectories/val.parquet")
    pols = bench_ope.build_policies(root, params, train, val, args.work, spread=True)
    truth = {}
    for name, policy in pols.items():
        truth[name] = bench_ope.truth_of(name, policy, params, args.episodes, args.seed, args.work)
        print(f"truth {name}: return {truth[name]['return']:.2f}", file=sys.stderr, flush=True)
    costs = list(meta["cost_columns"])
    command = f"benchmarks/spread_truth.py {' '.join(sys.argv[1:])}"
    seconds = round(time.perf_counter() - t0, 1)
    md = [f"# The spread set's truth (`{args.out}`, {dt.date.today()})", "", f"Command: `{command}` ({seconds:.0f} s; "
          f"{args.episodes} patients per policy, seed {args.seed}).", "",
          "| policy | return | " + " | ".join(costs) + " | in-hospital mortality |",
          "|---|---|" + "---|" * len(costs) + "---|"]
    md += [f"| {n} | {t['return']:.2f} | " + " | ".join(f"{t[f'cost_return_{c}']:.3f}" for c in costs)
           + f" | {t['mortality_hosp']:.3f} |" for n, t in truth.items()]
    page = {"truth": truth, "meta": {"date": dt.date.today().isoformat(), "seconds": seconds, "command": command,
                                     "truth_episodes": args.episodes, "truth_seed": args.seed}}
    probe_common.write_page(args.out, page, md)


if __name__ == "__main__":
    main()
