"""The yardstick check (issue 10): no blanket treatment beats the clinicians, targeted rules do.

Scores, on simulator truth with the cohort population (`synth.truth_population: cohort`, the demo's params), each
policy that gives every patient the same action at every 4-h step — norepinephrine-equivalent 0, 0.05, 0.1, 0.2,
0.3, 0.5 µg/kg/min × IV fluid 0, 250, 500, 1,000, 1,500 mL — beside the clinicians, the hand-set heuristic, the
best-known rule (`ogsrl/synth/best_known.json`, searched on other seeds by `search_best_known.py`), no treatment and
random. Every policy is scored on the same `--episodes` simulated patients (seed `--seed`, common random numbers).

Acceptance (issue 10), printed PASS/FAIL and written with the table:
* no blanket policy reaches a true in-hospital mortality below 0.95 × the clinicians';
* the heuristic stays below 0.85 × the clinicians'; the best-known policy is at least as good as the heuristic;
* the clinicians' mortality lies in 10–30 %; best-known ≤ heuristic < clinicians < no treatment < random.

Usage: .venv/bin/python benchmarks/bench_blanket.py [--episodes 5000] [--seed 11] [--workers 2]   (~11 min on 2 cores)
Writes benchmarks/results/blanket.md and benchmarks/results/blanket.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ogsrl.cohort.extract import CohortConfig
from ogsrl.config import build, load_params
from ogsrl.costs import build_costs
from ogsrl.policy import FloatArray
from ogsrl.synth.policies import get_policy
from ogsrl.synth.stage import world_from_params
from ogsrl.synth.truth import evaluate_policy
import exclusive

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOSES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
FLUIDS = (0.0, 250.0, 500.0, 1000.0, 1500.0)
REFERENCES = ("behaviour", "heuristic", "best-known", "no-treatment", "random")


class ConstantPolicy:
    """The same (fluid mL, NE-equivalent µg/kg/min) for every patient at every step."""

    feature_names: tuple[str, ...] = ("map",)

    def __init__(self, fluid_ml: float, nee: float) -> None:
        self.action = np.array([fluid_ml, nee], dtype=np.float64)

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        return np.tile(self.action, (len(obs), 1))


def score(name: str, episodes: int, seed: int) -> dict[str, float | str]:
    params = load_params(ROOT / "params.yaml")
    if name.startswith("constant:"):
        fluid, nee = (float(v) for v in name.split(":")[1].split(","))
        policy = ConstantPolicy(fluid, nee)
    else:
        policy = get_policy(name)
    res = evaluate_policy(policy, episodes, seed, world=world_from_params(params),
                          cohort=build(CohortConfig, params.get("cohort"), "cohort"), costs=build_costs(params))
    m, r = res.mortality_hosp, res.mean_return
    c = res.cost_returns["cost_total"]
    return {"policy": name, "mortality": m.value, "mortality_lo": m.ci_low, "mortality_hi": m.ci_high, "return": r.value,
            "return_lo": r.ci_low, "return_hi": r.ci_high, "cost_return": c.value, "cost_return_lo": c.ci_low,
            "cost_return_hi": c.ci_high, "cost_rate": res.cost_rates["cost_total"].value, "stays": res.stays,
            "seconds": res.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    names = list(REFERENCES) + [f"constant:{f:g},{d:g}" for d in DOSES for f in FLUIDS]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        rows = list(ex.map(score, names, [args.episodes] * len(names), [args.seed] * len(names)))
    seconds = time.perf_counter() - t0
    by = {r["policy"]: r for r in rows}
    clin = float(by["behaviour"]["mortality"])
    blanket = [r for r in rows if str(r["policy"]).startswith("constant:")]
    best_blanket = min(blanket, key=lambda r: float(r["mortality"]))
    mort = {k: float(by[k]["mortality"]) for k in REFERENCES}
    checks = {
        f"no blanket policy below 0.95 × clinicians ({0.95 * clin:.3f}); best blanket {best_blanket['policy']} "
        f"{float(best_blanket['mortality']):.3f}": float(best_blanket["mortality"]) >= 0.95 * clin,
        f"heuristic below 0.85 × clinicians ({0.85 * clin:.3f}): {mort['heuristic']:.3f}":
            mort["heuristic"] < 0.85 * clin,
        f"best-known ≤ heuristic: {mort['best-known']:.3f} ≤ {mort['heuristic']:.3f}":
            mort["best-known"] <= mort["heuristic"],
        f"clinicians within 10–30 %: {clin:.3f}": 0.10 <= clin <= 0.30,
        "ordering best-known ≤ heuristic < clinicians < no treatment < random":
            mort["best-known"] <= mort["heuristic"] < clin < mort["no-treatment"] < mort["random"],
    }
    for text, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {text}")

    def line(r: dict[str, float | str]) -> str:
        name = str(r["policy"])
        label = name
        if name.startswith("constant:"):
            f, d = name.split(":")[1].split(",")
            label = f"constant: {f} mL, NE {d}"
        ratio = float(r["mortality"]) / clin
        return (f"| {label} | {float(r['mortality']):.3f} [{float(r['mortality_lo']):.3f}, "
                f"{float(r['mortality_hi']):.3f}] | {ratio:.2f} | {float(r['return']):.1f} "
                f"[{float(r['return_lo']):.1f}, {float(r['return_hi']):.1f}] | {float(r['cost_return']):.2f} "
                f"[{float(r['cost_return_lo']):.2f}, {float(r['cost_return_hi']):.2f}] | {float(r['cost_rate']):.3f} |")

    table = "\n".join(line(by[k]) for k in REFERENCES)
    grid = "\n".join(line(r) for r in sorted(blanket, key=lambda r: float(r["mortality"])))
    check_lines = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks.items())
    page = f"""# Blanket treatment vs targeted rules on simulator truth (`benchmarks/bench_blanket.py`)

Machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.workers} worker processes; {seconds:.0f} s in all.
{args.episodes} simulated septic patients per policy (seed {args.seed}, the same patients for every policy), scored
on the stays the cohort extraction keeps ({int(by['behaviour']['stays'])} under the clinicians); 95 % CIs
(normal approximation over stays). Baseline: the clinicians, measured in the same run. The best-known rule was
searched on seeds 9001–9003 (`search_best_known.py`), never on this seed.

{check_lines}

| policy | in-hospital mortality [95 % CI] | × clinicians | SOFA return [95 % CI] | cost return per stay [95 % CI] | cost rate per step |
|---|---|---|---|---|---|
{table}

Blanket policies (the same action for every patient at every 4-h step), best first:

| policy | in-hospital mortality [95 % CI] | × clinicians | SOFA return [95 % CI] | cost return per stay [95 % CI] | cost rate per step |
|---|---|---|---|---|---|
{grid}

The SOFA return is the paper's reward (−SOFA per step); it is not mortality: see docs/simulator.md §7 for how it
can be gamed.
"""
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "blanket.md").write_text(page, encoding="utf-8")
    (HERE / "results" / "blanket.json").write_text(json.dumps({"seed": args.seed, "episodes": args.episodes,
                                                               "rows": rows, "checks": checks}, indent=2) + "\n",
                                                    encoding="utf-8")


if __name__ == "__main__":
    main()
