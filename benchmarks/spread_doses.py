"""The doses each spread-set policy gives on the project's test states, beside the clinicians' logged ones (issue 12).

Checks that the spread set's policies are what their names say (``clin_vaso2``: the clinicians' vasopressor doses
× 2, …): per policy, the mean fluid volume and vasopressor dose over every test state, the share of states with a
non-zero dose, and the mean non-zero dose; each policy draws ``--draws`` actions per state (seeds 0, 1, …). The
ratio column is the policy's mean vasopressor dose over SOC's.

Usage:
  .venv/bin/python benchmarks/spread_doses.py --root <make-run project> --work <dir> [--draws 5]
      [--out spread_doses]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

from ogsrl import features  # noqa: E402
from ogsrl.agents import common  # noqa: E402
from ogsrl.config import load_params  # noqa: E402
import exclusive  # noqa: E402


def dose_summary(actions: np.ndarray) -> dict[str, float]:
    """Mean, share non-zero and mean non-zero of each action column of ``actions (N, 2)`` (fluid mL, NEE µg/kg/min)."""
    out: dict[str, float] = {}
    for j, name in enumerate(features.ACTIONS):
        a = actions[:, j]
        given = a > 0
        out[f"{name}_mean"] = float(a.mean())
        out[f"{name}_share_given"] = float(given.mean())
        out[f"{name}_mean_given"] = float(a[given].mean()) if given.any() else float("nan")
    return out


def policy_doses(policy: Any, test: Any, draws: int) -> dict[str, float]:
    obs = test[list(policy.feature_names)].to_numpy(np.float64)
    acts = [np.asarray(policy.act(obs, np.random.default_rng(r)), dtype=np.float64) for r in range(draws)]
    return dose_summary(np.concatenate(acts))


def render(doc: dict[str, Any]) -> str:
    fl, ne = features.ACTIONS
    meta = doc["meta"]
    lines = [f"# The doses of the spread-set policies on the test states (`{meta['out']}`, {meta['date']})",
             "", f"Command: `{doc['meta']['command']}` ({doc['meta']['seconds']:.0f} s).", "",
             f"{doc['meta']['states']} test states, {doc['meta']['draws']} draws per state. Fluid in mL per step, "
             "vasopressor in µg/kg/min norepinephrine-equivalent.", "",
             "| policy | fluid mean | fluid given | vasopressor mean | vasopressor given | mean when given | "
             "vasopressor mean / SOC's |", "|---|---|---|---|---|---|---|"]
    soc = doc["rows"].get("soc/seed42", {}).get(f"{ne}_mean", float("nan"))
    for name, r in doc["rows"].items():
        lines.append(f"| {name} | {r[f'{fl}_mean']:.1f} | {r[f'{fl}_share_given']:.3f} | {r[f'{ne}_mean']:.4f} | "
                     f"{r[f'{ne}_share_given']:.3f} | {r[f'{ne}_mean_given']:.4f} | {r[f'{ne}_mean'] / soc:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the project whose policies and test split to use")
    ap.add_argument("--work", type=Path, required=True, help="bench_ope's work directory (rule clones kept there)")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--out", default="spread_doses")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, _ = common.read_split(root / "data/trajectories/val.parquet")
    test, _ = common.read_split(root / "data/trajectories/test.parquet")
    pols = bench_ope.build_policies(root, params, train, val, args.work, spread=True)
    rows = {"clinicians (logged)": dose_summary(test[list(features.ACTIONS)].to_numpy(np.float64))}
    rows.update({name: policy_doses(pol, test, args.draws) for name, pol in pols.items()})
    doc = {"rows": rows, "meta": {"date": dt.date.today().isoformat(), "seconds": round(time.perf_counter() - t0, 1),
                                  "states": len(test), "draws": args.draws, "out": args.out,
                                  "command": "benchmarks/spread_doses.py " + " ".join(sys.argv[1:])}}
    probe_common.write_page(args.out, doc, render(doc).splitlines())


if __name__ == "__main__":
    main()
