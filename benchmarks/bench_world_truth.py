"""Closed-loop check of the world model against the simulator's ground truth (issue 4, "against ground truth").

The same policy — SOC, the behaviour clone the pipeline trains on the model's state features — drives both
(a) the learned world model (`WorldModelEnv`, random elite per step) from the test split's start states and
(b) fresh simulated cohort patients (`ogsrl.synth.engine.simulate`, states from the cohort feature code).
The simulator's clinicians cannot act inside the model (they read features the model does not predict, such as
MAP and lactate), so their clone stands in for "the behaviour policy" on both sides.

Both sides leave the window the same three ways: death, discharge (an alive exit; the model predicts it) and the
window's end (a model episode gets the steps its start state's stay had left in the window). Compared: the fraction
of patients who die in the window and who are discharged alive, and the mean path of each state feature over the
patients still in the window, per step since the first decision, where the simulator has at least `--min-at-risk`
patients.

Documented tolerances: mortality and discharge gaps ≤ 5 percentage points; mean-path gap ≤ 0.5 standard deviations
of the feature (simulator side) at every compared step.

Usage (after `make run`):  .venv/bin/python benchmarks/bench_world_truth.py [--root .] [--episodes 2000]
Writes benchmarks/results/world_truth.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ogsrl.agents import load_policy
from ogsrl.config import build, load_params, section
from ogsrl.synth import engine as E
from ogsrl.synth.truth import cohort_observer
from ogsrl.world.ensemble import WorldModel
from ogsrl.world.env import EnvConfig, WorldModelEnv, first_rows, rollout, start_states

HERE = Path(__file__).resolve().parent
MORTALITY_TOL = 0.05
PATH_TOL_SD = 0.5


def simulate_truth(policy, episodes: int, seed: int, world: E.WorldConfig) -> pd.DataFrame:
    observer = cohort_observer()
    frames = []
    for c, start in enumerate(range(0, episodes, 2500)):
        n = min(2500, episodes - start)
        res = E.simulate(n, np.random.default_rng([seed, c, 11]), first_index=start, world=world,
                         observer=observer, policy=policy, cohort_only=True, keep_tables=False)
        steps = res.steps.copy()
        steps["stay"] += start
        frames.append(steps)
    steps = pd.concat(frames, ignore_index=True)
    steps["k"] = steps["step"] - steps.groupby("stay")["step"].transform("min")  # steps from the first decision
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=HERE.parent, help="project root after `make run`")
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-at-risk", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(2)
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    cohort = section(params, "cohort")
    world_cfg = E.WorldConfig(window_start_h=int(cohort["window_start_h"]), step_h=int(cohort["step_h"]),
                              n_steps=int(cohort["n_steps"]))
    policy = load_policy(root / "data" / "models" / "policies" / "soc")
    model = WorldModel.load(root / "data" / "models" / "world")
    feats = model.layout.state_features
    test = pd.read_parquet(root / "data" / "trajectories" / "test.parquet")
    horizon = int(cohort["n_steps"])

    t0 = time.perf_counter()
    env_cfg = build(EnvConfig, {**section(params, "world.env"), "horizon": horizon, "seed": args.seed}, "world.env")
    if tuple(policy.feature_names) != tuple(feats):
        raise ValueError(f"SOC reads {policy.feature_names}, the world model predicts {feats}")
    env = WorldModelEnv(model, start_states(test, feats, "test"), args.episodes, env_cfg)
    ro = rollout(env, lambda obs, rng: policy.act(obs, rng), seed=args.seed)
    first_h = test["hours_since_onset"].to_numpy()[first_rows(test, "test")]
    left = horizon - np.rint((first_h - world_cfg.window_start_h) / world_cfg.step_h).astype(int)  # steps in window
    in_window = ro.active & (np.arange(horizon)[:, None] < left[ro.start_index][None, :])
    model_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    steps = simulate_truth(policy, args.episodes, args.seed, world_cfg)
    truth_s = time.perf_counter() - t0

    # --- how patients leave the window -------------------------------------------------------------------------
    last = steps.groupby("stay").tail(1)
    n_truth = steps["stay"].nunique()
    mort_t = float(last["death_in_step"].sum() / n_truth)
    disc_t = float((~last["death_in_step"] & (last["step"] < horizon - 1)).sum() / n_truth)
    mort_m = float((ro.death & in_window).any(0).mean())
    disc_m = float((ro.discharge & in_window).any(0).mean())
    t_at_risk = np.bincount(steps["k"], minlength=horizon)[:horizon]
    compared = int(np.sum(t_at_risk >= args.min_at_risk))

    # --- mean paths over the patients still in the window --------------------------------------------------------
    rows = []
    for j, f in enumerate(feats):
        t_mean = steps.groupby("k")[f].mean().reindex(range(horizon)).to_numpy()
        sd = float(steps[f].std()) or 1.0
        m_mean = np.array([ro.obs[k][in_window[k], j].mean() if in_window[k].any() else np.nan
                           for k in range(horizon)])
        gap = np.abs(t_mean[:compared] - m_mean[:compared])
        rows.append((f, float(np.nanmax(gap)), float(np.nanmax(gap) / sd), float(t_mean[compared - 1]),
                     float(m_mean[compared - 1])))

    lines = [
        "# World model vs simulator ground truth, closed loop (`benchmarks/bench_world_truth.py`)",
        "",
        f"Policy: SOC (`data/models/policies/soc`) in both; {args.episodes} model episodes from the test split's start "
        f"states and {args.episodes} fresh simulated cohort patients; seed {args.seed}. Mean paths compared over the "
        f"first {compared} decision steps (simulator ≥ {args.min_at_risk} patients in the window). Model rollouts "
        f"{model_s:.1f} s, "
        f"simulator {truth_s:.1f} s (2 cores).",
        "",
        "| quantity | simulator (truth) | world model | gap | tolerance | within |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {t:.3f} | {m:.3f} | {m - t:+.3f} | ±{MORTALITY_TOL:.2f} | "
          f"{'yes' if abs(m - t) <= MORTALITY_TOL else 'NO'} |"
          for name, t, m in (("died in the window", mort_t, mort_m),
                             ("discharged alive before the window's end", disc_t, disc_m))),
    ]
    for f, gap, gap_sd, tv, mv in rows:
        lines.append(f"| mean {f}, max gap over steps (last step: {tv:.3g} vs {mv:.3g}) | – | – | {gap:.3g} "
                     f"({gap_sd:.2f} SD) | ≤ {PATH_TOL_SD} SD | {'yes' if gap_sd <= PATH_TOL_SD else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results" / "world_truth.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
