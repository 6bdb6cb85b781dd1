"""Does the vasopressor dose move the true urine cost, and what offsets its renal-perfusion gain? (issue 12)

FQE and ``mb`` both read the clinicians' doses × 2 (``clin_vaso2``) as 0.3 – 0.5 lower in urine cost and × 0.5 as
0.4 – 0.5 higher, where the truth barely moves (``estimate_errors_s37``). In the simulator a vasopressor raises MAP,
hence renal perfusion and urine output at once (``physiology.urine_rate``), and injures the kidney under a volume
deficit (``physiology.K_DRY_PRESSOR``), a slow effect through a hidden state. This script simulates the demo's own
clinicians with every vasopressor dose × ``--scales`` on the same ``--episodes`` patients (``ogsrl truth`` code,
cohort population), once as simulated and once with that kidney injury switched off, and reports each urine cost
(and SpO₂ cost, return, in-hospital mortality) with its paired difference from the clinicians as logged (× 1).
If the injury is what cancels the perfusion gain, the doses separate in urine cost once it is off.

Usage:
  .venv/bin/python benchmarks/vaso_urine_truth.py [--episodes 10000] [--seed 13] [--scales 0.5 1 2]
      [--out vaso_urine_truth]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_common  # noqa: E402

from ogsrl.cohort.extract import CohortConfig  # noqa: E402
from ogsrl.config import build, load_params  # noqa: E402
from ogsrl.costs import build_costs  # noqa: E402
from ogsrl.synth import physiology  # noqa: E402
from ogsrl.synth.stage import SynthConfig, world_from_params  # noqa: E402
from ogsrl.synth.truth import evaluate_policy, paired_difference  # noqa: E402
import exclusive  # noqa: E402

HERE = Path(__file__).resolve().parent
URINE, SPO2 = "cost_return_cost_urine_low", "cost_return_cost_spo2_low"
COLUMNS = (URINE, SPO2, "return", "died_in_hosp")
CONDITIONS = {"as simulated": physiology.K_DRY_PRESSOR, "no pressor kidney injury under a volume deficit": 0.0}


def truths(params: dict[str, Any], scales: list[float], episodes: int, seed: int) -> dict[str, dict[float, Any]]:
    """condition → scale → :class:`ogsrl.synth.truth.TruthResult` of the clinicians with vasopressors × scale."""
    world = world_from_params(params)
    cohort, costs = build(CohortConfig, params.get("cohort"), "cohort"), build_costs(params)
    chunk = build(SynthConfig, params.get("synth"), "synth").chunk_stays
    out: dict[str, dict[float, Any]] = {}
    for condition, k_dry in CONDITIONS.items():
        physiology.K_DRY_PRESSOR = k_dry
        try:
            out[condition] = {
                s: evaluate_policy(None, episodes, seed, chunk=chunk, cohort=cohort, costs=costs,
                                   world=dataclasses.replace(world, clinicians=dataclasses.replace(
                                       world.clinicians, vasopressor_scale=s)))
                for s in scales}
        finally:
            physiology.K_DRY_PRESSOR = CONDITIONS["as simulated"]
    return out


def rows(results: dict[str, dict[float, Any]]) -> list[dict[str, Any]]:
    """Per condition and scale: each column's mean and its paired difference from scale 1 (value, 95 % CI)."""
    out = []
    for condition, by_scale in results.items():
        base = by_scale[1.0].per_stay
        for s, res in by_scale.items():
            diff = paired_difference(res.per_stay, base)
            out.append({"condition": condition, "scale": s,
                        **{c: float(res.per_stay[c].mean()) for c in COLUMNS},
                        **{f"{c}_diff": [diff[c].value, diff[c].ci_low, diff[c].ci_high] for c in COLUMNS}})
    return out


def render(doc: dict[str, Any]) -> str:
    lines = [f"# The vasopressor dose and the true urine cost (`{doc['meta']['out']}`, {doc['meta']['date']})", "",
             f"Command: `{doc['meta']['command']}` ({doc['meta']['seconds']:.0f} s).", "",
             f"The demo's clinicians with every vasopressor dose × scale, {doc['meta']['episodes']} patients (seed "
             f"{doc['meta']['seed']}, the same patients in every cell). Δ: paired difference from × 1 in the same "
             "condition [95 % CI]. Costs are per-stay cost returns (steps below the threshold).", "",
             "| condition | vasopressor × | urine cost | Δ urine | SpO₂ cost | Δ SpO₂ | return | Δ return | "
             "in-hospital mortality |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ci(v: list[float]) -> str:
        return f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"

    for r in doc["rows"]:
        lines.append(f"| {r['condition']} | {r['scale']:g} | {r[URINE]:.3f} | {ci(r[URINE + '_diff'])} | "
                     f"{r[SPO2]:.3f} | {ci(r[SPO2 + '_diff'])} | {r['return']:.2f} | {ci(r['return_diff'])} | "
                     f"{r['died_in_hosp']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--params", type=Path, default=HERE.parent / "params.yaml")
    ap.add_argument("--out", default="vaso_urine_truth")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    if 1.0 not in args.scales:
        raise SystemExit("--scales must include 1 (the clinicians as logged: the paired baseline)")
    t0 = time.perf_counter()
    results = truths(load_params(args.params), args.scales, args.episodes, args.seed)
    doc = {"rows": rows(results),
           "meta": {"date": dt.date.today().isoformat(), "seconds": round(time.perf_counter() - t0, 1),
                    "episodes": args.episodes, "seed": args.seed, "out": args.out, "k_dry_pressor": CONDITIONS,
                    "command": "benchmarks/vaso_urine_truth.py " + " ".join(sys.argv[1:])}}
    probe_common.write_page(args.out, doc, render(doc).splitlines())


if __name__ == "__main__":
    main()
