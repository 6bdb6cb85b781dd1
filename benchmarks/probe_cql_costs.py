"""Why a constrained model-free learner ends above its cost limit (issue 14): per CQL-family checkpoint, the true
cost per stay of the raw learner (``<checkpoint>/policy``, no guardian fallback) beside the policy as served
(fallback to SOC where the guardian rejects an action), and the cost critics' closing reading of the expected cost
per stay (``train/cost_value/<c>`` in ``train.json``: the mean over the last ``log_every`` updates — what the
multipliers drive to the limit; with ``cost_check_every`` already shifted by the check) and, for runs with the cost
check, the check's reading of the trained actor (``train/cost_checked/<c>``: its cost per stay in the train split's
nearest-neighbour simulator).

Usage (after ``ogsrl train-policies`` in each root; same patients for every policy):
  .venv/bin/python benchmarks/probe_cql_costs.py --root A --root B [--episodes 5000] [--seed 11] [--workers 2]
      [--out cql_costs]
Writes benchmarks/results/<out>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ogsrl.config import load_params
from ogsrl.synth.stage import run_truth
import exclusive

HERE = Path(__file__).resolve().parent
RUNS = ("cql", "ccql", "gcql", "gccql")


def score(root: str, spec: str, episodes: int, seed: int) -> dict:
    return run_truth(load_params(Path(root) / "params.yaml"), Path(root), spec, episodes, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, action="append", required=True, help="a trained project (repeatable)")
    ap.add_argument("--episodes", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="cql_costs")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    jobs: list[tuple[str, str, str, str]] = []  # (root, checkpoint label, form, spec)
    limits: dict[str, float] = {}
    train: dict[str, dict] = {}
    for root in (r.resolve() for r in args.root):
        train[str(root)] = doc = json.loads((root / "data/reports/train.json").read_text(encoding="utf-8"))
        limits.update({k.split("/")[-1]: float(v) for k, v in doc.items()
                       if k.startswith("cost_limit/") and not k.endswith("from_params")})
        runs = (root / "data/models/policies" / run for run in RUNS)
        for ckpt in sorted(p for run_dir in runs for p in run_dir.glob("seed*") if p.is_dir()):
            label = f"{ckpt.parent.name}/{ckpt.name}"
            jobs += [(str(root), label, "served", str(ckpt.relative_to(root))),
                     (str(root), label, "raw", str((ckpt / "policy").relative_to(root)))]
    if not jobs:
        raise SystemExit(f"probe_cql_costs: no {'/'.join(RUNS)} checkpoint under the roots given")
    costs = sorted(limits)
    with ProcessPoolExecutor(args.workers) as ex:
        truths = list(ex.map(score, *zip(*((r, s, args.episodes, args.seed) for r, _, _, s in jobs))))
    rows: dict[str, dict] = {}
    for (root, label, form, _), t in zip(jobs, truths):
        row = rows.setdefault(label, {"critic": {c: train[root].get(f"{label}/train/cost_value/{c}") for c in costs},
                                      "check": {c: train[root].get(f"{label}/train/cost_checked/{c}") for c in costs},
                                      "rejected_in_training": train[root].get(f"{label}/train/rejected")})
        row[form] = {"mortality": t["truth/mortality_hosp"], "return": t["truth/return"],
                     **{c: t[f"truth/cost_return_{c}"] for c in costs}}
    result = {"episodes": args.episodes, "seed": args.seed, "limits": limits, "roots": [str(r) for r in args.root],
              "rows": rows}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    def cell(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f}"

    lines = ["# The CQL family's cost per stay: raw learner, served policy, the critics' reading "
             "(`benchmarks/probe_cql_costs.py`)\n",
             f"Command: `benchmarks/probe_cql_costs.py {' '.join(f'--root {r}' for r in args.root)} --episodes "
             f"{args.episodes} --seed {args.seed} --out {args.out}`. {args.episodes} simulated patients per policy "
             f"(seed {args.seed}, cohort population). Limits: "
             + ", ".join(f"{c} {limits[c]:.2f}" for c in costs) + ". Critic: the cost critics' closing reading of the "
             "expected cost per stay (constrained runs only; shifted by the check where it ran). Check: the trained actor's "
             "cost per stay in the train split's nearest-neighbour simulator (runs with `cost_check_every`). Over: "
             "served cost / limit − 1 where above.\n",
             "| checkpoint | " + " | ".join(f"{c}: critic / check / raw / served (over)" for c in costs)
             + " | mortality raw / served | return raw / served |",
             "|---|" + "---|" * (len(costs) + 2)]
    for label, r in rows.items():
        cells = []
        for c in costs:
            over = r["served"][c] / limits[c] - 1
            cells.append(f"{cell(r['critic'][c])} / {cell(r['check'][c])} / {r['raw'][c]:.2f} / {r['served'][c]:.2f}"
                         + (f" (+{100 * over:.0f} %)" if over > 0 else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['raw']['mortality']:.3f} / "
                     f"{r['served']['mortality']:.3f} | {r['raw']['return']:.1f} / {r['served']['return']:.1f} |")
    for c in costs:
        gap = [rows[k]["served"][c] - rows[k]["raw"][c] for k in rows]
        lines.append(f"\nServed − raw {c} per stay (the fallback's share): mean {np.mean(gap):+.2f}, range "
                     f"{min(gap):+.2f} … {max(gap):+.2f}.")
    text = "\n".join(lines) + "\n"
    (HERE / "results" / f"{args.out}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
