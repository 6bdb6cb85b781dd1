"""Search the best-known policy of the demo simulator (issue 10): a targeted, interpretable bedside rule
(`ogsrl.synth.policies.RuleParams`: thresholds on MAP, lactate, urine output, fluid balance and SpO2; doses) whose
true in-hospital mortality is as low as a seeded search can make it.

The search runs on simulator truth (`evaluate_policy`, population `simulator`) with common random numbers: every
candidate of a round is scored on the same simulated patients, so differences between candidates are not sampling
noise between patient draws. The search seeds (`SEARCH_SEEDS`) are never used for evaluation: `bench_blanket.py` and
the docs score the winner on other seeds.

1. screen: a scrambled Latin hypercube (scipy.stats.qmc, seeded) of `--screen` candidates over `RANGES`, plus the
   hand-set heuristic, `--screen-episodes` patients each (seed SEARCH_SEEDS[0]);
2. refine: `--rounds` rounds of a seeded (1 + λ) evolution strategy around the incumbent (Gaussian steps of
   `--step` × each range, clipped to the range), `--refine-episodes` patients each (seed SEARCH_SEEDS[1]);
3. confirm: the `--finalists` best distinct candidates of both phases, `--confirm-episodes` patients each (seed
   SEARCH_SEEDS[2]); the lowest mortality there wins.

Writes the winner to `ogsrl/synth/best_known.json` (scored by `ogsrl truth --policy best-known`) and the search
record to `benchmarks/results/best_known.md`.

Usage: .venv/bin/python benchmarks/search_best_known.py [--workers 2]   (about 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.stats import qmc

from ogsrl.synth.engine import WorldConfig
from ogsrl.synth.policies import BEST_KNOWN_FILE, RuleParams, RulePolicy
from ogsrl.synth.truth import evaluate_policy
import exclusive

HERE = Path(__file__).resolve().parent
SEARCH_SEEDS = (9001, 9002, 9003)
"""screen, refine and confirm seeds; evaluation elsewhere uses other seeds"""
RANGES: dict[str, tuple[float, float]] = {
    "fluid_map": (55.0, 75.0),
    "fluid_lactate": (2.0, 6.0),
    "fluid_urine": (0.0, 1.0),
    "fluid_ml": (100.0, 1000.0),
    "fluid_max_balance": (10.0, 80.0),
    "fluid_min_spo2": (88.0, 97.0),
    "ne_map": (55.0, 75.0),
    "ne_prefill": (0.0, 40.0),
    "ne_base": (0.01, 0.15),
    "ne_slope": (0.0, 0.04),
    "ne_max": (0.05, 0.5),
    "keep_map": (60.0, 85.0),
    "keep_lactate": (1.0, 5.0),
    "keep_dose": (0.0, 0.1),
}
"""search box per RuleParams field (physical units)"""


def score(params: dict[str, float], episodes: int, seed: int) -> float:
    """True in-hospital mortality of the rule (population simulator)."""
    res = evaluate_policy(RulePolicy(RuleParams(**params)), episodes, seed, world=WorldConfig())
    return res.mortality_hosp.value


def score_all(candidates: list[dict[str, float]], episodes: int, seed: int, workers: int) -> list[float]:
    with ProcessPoolExecutor(workers) as ex:
        return list(ex.map(score, candidates, [episodes] * len(candidates), [seed] * len(candidates)))


def rounded(x: dict[str, float]) -> dict[str, float]:
    return {k: float(np.round(v, 4)) for k, v in x.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screen", type=int, default=48)
    ap.add_argument("--screen-episodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--offspring", type=int, default=8)
    ap.add_argument("--step", type=float, default=0.12)
    ap.add_argument("--refine-episodes", type=int, default=2000)
    ap.add_argument("--finalists", type=int, default=4)
    ap.add_argument("--confirm-episodes", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampler and the evolution steps")
    ap.add_argument("--out", type=Path, default=BEST_KNOWN_FILE)
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    names = list(RANGES)
    lo = np.array([RANGES[k][0] for k in names])
    hi = np.array([RANGES[k][1] for k in names])
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()

    heuristic = dataclasses.asdict(RuleParams())
    unit = qmc.LatinHypercube(d=len(names), seed=rng).random(args.screen)
    screen = [heuristic] + [rounded(dict(zip(names, qmc.scale(u[None], lo, hi)[0]))) for u in unit]
    screen_m = score_all(screen, args.screen_episodes, SEARCH_SEEDS[0], args.workers)
    print(f"screen: {len(screen)} candidates, best {min(screen_m):.3f} (heuristic {screen_m[0]:.3f}), "
          f"{time.perf_counter() - t0:.0f} s", flush=True)

    order = np.argsort(screen_m)
    incumbent = screen[int(order[0])]
    # re-score the incumbent on the refine seed so it competes with its offspring on the same patients
    best_m = score_all([incumbent], args.refine_episodes, SEARCH_SEEDS[1], 1)[0]
    history = [(incumbent, best_m)]
    for r in range(args.rounds):
        x = np.array([incumbent[k] for k in names])
        kids = []
        for _ in range(args.offspring):
            y = np.clip(x + rng.normal(0.0, args.step, len(names)) * (hi - lo), lo, hi)
            kids.append(rounded(dict(zip(names, y))))
        kid_m = score_all(kids, args.refine_episodes, SEARCH_SEEDS[1], args.workers)
        j = int(np.argmin(kid_m))
        history += list(zip(kids, kid_m))
        if kid_m[j] < best_m:
            incumbent, best_m = kids[j], kid_m[j]
        print(f"refine round {r + 1}: best offspring {kid_m[j]:.3f}, incumbent {best_m:.3f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

    pool = [screen[int(i)] for i in order[: args.finalists]] + [c for c, _ in sorted(history, key=lambda t: t[1])]
    finalists: list[dict[str, float]] = []
    for c in pool:
        if c not in finalists:
            finalists.append(c)
        if len(finalists) == 2 * args.finalists:
            break
    finalists.append(heuristic)
    final_m = score_all(finalists, args.confirm_episodes, SEARCH_SEEDS[2], args.workers)
    w = int(np.argmin(final_m))
    winner = finalists[w]
    seconds = time.perf_counter() - t0
    print(f"confirm: winner {final_m[w]:.3f} vs heuristic {final_m[-1]:.3f} ({args.confirm_episodes} episodes), "
          f"{seconds:.0f} s", flush=True)

    record = {
        "params": winner,
        "search": {"objective": "true in-hospital mortality, population simulator", "seeds": list(SEARCH_SEEDS),
                   "sampler_seed": args.seed, "screen": len(screen), "screen_episodes": args.screen_episodes,
                   "rounds": args.rounds, "offspring": args.offspring, "step": args.step,
                   "refine_episodes": args.refine_episodes, "confirm_episodes": args.confirm_episodes,
                   "confirm_mortality": round(final_m[w], 4), "confirm_mortality_heuristic": round(final_m[-1], 4),
                   "ranges": RANGES},
    }
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)

    rows = "\n".join(f"| {k} | {heuristic[k]:g} | {winner[k]:g} | {RANGES[k][0]:g} – {RANGES[k][1]:g} |" for k in names)
    finals = "\n".join(f"| {i + 1}{' (heuristic)' if i == len(finalists) - 1 else ''} | {m:.3f} |"
                       for i, m in enumerate(final_m))
    page = f"""# Best-known policy search (`benchmarks/search_best_known.py`)

Machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.workers} worker processes; {seconds:.0f} s in all.
Objective: true in-hospital mortality on simulator truth (population `simulator`), common random numbers per phase;
search seeds {list(SEARCH_SEEDS)} (screen, refine, confirm), never used for evaluation.
Phases: {len(screen)} Latin-hypercube candidates + the heuristic × {args.screen_episodes} episodes; {args.rounds}
rounds of a (1 + {args.offspring}) evolution strategy × {args.refine_episodes} episodes; {len(finalists)} finalists
× {args.confirm_episodes} episodes.

Confirm phase: winner {final_m[w]:.3f} vs the hand-set heuristic {final_m[-1]:.3f}
(baseline measured in the same run, same patients). Saved to `ogsrl/synth/best_known.json`.

| rule parameter | heuristic | best-known | search range |
|---|---|---|---|
{rows}

| finalist | mortality (confirm) |
|---|---|
{finals}
"""
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "best_known.md").write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
