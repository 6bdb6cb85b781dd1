"""How well the simulator's truth orders the spread set's policies by itself (issue 12): the ceiling of a Spearman goal.

The truths (``spread_truth.py``) simulate the same patients under every policy. Two independent paired bootstrap
resamples of those patients (the same draw of patients for every policy) give two truths a re-simulation of other
patients would give; their Spearman rank correlation over the policies a dataset's support check admits measures
how reproducibly the truth orders them. An estimator cannot be asked to order policies the truth does not.

Usage:
  .venv/bin/python benchmarks/truth_repro.py --work <bench_ope work dir> --support anchored_support_s36 \
      [--episodes 10000] [--seed 13] [--draws 400] [--out truth_repro]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchored_goals  # noqa: E402
import bench_ope  # noqa: E402
import probe_common  # noqa: E402
import exclusive  # noqa: E402

TARGETS = {"return": "return", "cost_spo2_low": "cost_return_cost_spo2_low",
           "cost_urine_low": "cost_return_cost_urine_low", "cost_total": "cost_return_cost_total"}


def patient_matrix(per_stay: dict[str, pd.DataFrame], names: list[str], column: str) -> np.ndarray:
    """(patients, policies) of one per-patient truth column; nan where the policy's cohort left the patient out."""
    ids = sorted(set().union(*(per_stay[n].index for n in names)))
    m = pd.DataFrame({n: per_stay[n][column] for n in names}).reindex(ids)
    return m.to_numpy(np.float64)


def resample_spearman(m: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman of the policies' means between two independent paired bootstrap resamples of the patients."""
    n = m.shape[0]
    out = np.empty(draws)
    for b in range(draws):
        a = np.nanmean(m[rng.integers(0, n, n)], axis=0)
        c = np.nanmean(m[rng.integers(0, n, n)], axis=0)
        out[b] = stats.spearmanr(a, c)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="the work directory holding truth/*.parquet")
    ap.add_argument("--support", required=True, help="anchored_support.py page: each dataset's admitted policies")
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--limit", type=float, default=0.10)
    ap.add_argument("--out", default="truth_repro")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    shares = anchored_goals.shares_of([args.support])
    names = sorted({n for s in shares.values() for n in s})
    per_stay = bench_ope.per_stay_truths(args.work, names, args.episodes, args.seed)
    missing = sorted(set(names) - set(per_stay))
    if missing:
        raise SystemExit(f"{args.work}/truth: no per-patient truth ({args.episodes} patients, seed {args.seed}) "
                         f"for {missing}")
    rng = np.random.default_rng(0)
    rows = []
    for page, s in shares.items():
        admitted = [n for n in names if s.get(n, np.inf) <= args.limit]
        for target, column in TARGETS.items():
            if column not in per_stay[admitted[0]]:
                continue
            rho = resample_spearman(patient_matrix(per_stay, admitted, column), args.draws, rng)
            rows.append({"dataset": page, "admitted": len(admitted), "target": target,
                         "median": float(np.median(rho)), "q05": float(np.quantile(rho, 0.05))})
    command = f"benchmarks/truth_repro.py {' '.join(sys.argv[1:])}"
    md = [f"# The truth's own ranking precision over the admitted policies (`{args.out}`, {dt.date.today()})", "",
          f"Command: `{command}` ({time.perf_counter() - t0:.0f} s).", "",
          f"Spearman between two independent paired bootstrap resamples of the truth's {args.episodes} patients "
          f"(seed {args.seed}), {args.draws} pairs per cell: median [5 % quantile]. Admitted: rejected share ≤ "
          f"{args.limit:g} on that dataset (`{args.support}`).", "",
          "| dataset | admitted | " + " | ".join(TARGETS) + " |", "|---|---|" + "---|" * len(TARGETS)]
    for page in shares:
        cells = {r["target"]: f"{r['median']:.3f} [{r['q05']:.3f}]" for r in rows if r["dataset"] == page}
        n = next(r["admitted"] for r in rows if r["dataset"] == page)
        md.append(f"| {page} | {n} | " + " | ".join(cells.get(t, "–") for t in TARGETS) + " |")
    probe_common.write_page(args.out, {"rows": rows, "meta": {"date": str(dt.date.today()), "command": command,
                                                              "seconds": round(time.perf_counter() - t0, 1)}}, md)


if __name__ == "__main__":
    main()
