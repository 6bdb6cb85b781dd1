"""Benchmark the on-policy learners: iterations per second at B = 2 000 episodes × T = 20 steps.

    .venv/bin/python benchmarks/bench_onpolicy.py [--iterations 5] [--threads 2] [--envs 2000]

1. The toy CMDP (:mod:`ogsrl.agents.toy_cmdp`, horizon 20, hazard 0.05): TRPO, CPO with one constraint (closed
   form), CPO with two (subspace QCQP, cvxpy) and PPO-Lagrangian, default networks (64, 64).
2. CPO with two constraints inside :class:`WorldModelEnv` on a small ensemble fitted to the toy trajectory table
   (so rollouts pay for the model's forward passes), paper state, guard off.

Each figure is the mean over ``--iterations`` iterations after one warm-up iteration. Prints a table and writes
``benchmarks/results/onpolicy.md``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

from ogsrl import features as F
from ogsrl.agents import cpo, onpolicy, ppo_lag, toy_cmdp
from ogsrl.world.data import Layout, transitions_from_frame
from ogsrl.world.ensemble import EnsembleConfig, WorldModel
from ogsrl.world.env import EnvConfig, WorldModelEnv, start_states
from ogsrl.world.toy import COST_RULES, toy_trajectories
import exclusive

ROOT = Path(__file__).resolve().parents[1]


def per_iteration(history: list[dict[str, float]]) -> float:
    """Mean seconds per iteration, skipping the first (warm-up)."""
    return float(np.mean([h["seconds"] for h in history[1:]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--envs", type=int, default=2000)
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    torch.set_num_threads(args.threads)
    n_it = args.iterations + 1
    rows: list[tuple[str, float]] = []

    toy = toy_cmdp.make_env(horizon=20, hazard=0.05)
    init = toy(500, 0).reset(seed=0)[0]
    actor = onpolicy.fresh_actor(toy_cmdp.FEATURES, (64, 64), 1, init, 0)
    base = cpo.Config(iterations=n_it, num_envs=args.envs, horizon=20, log_every=n_it)
    two = np.array([4.0, 6.0])
    runs = {
        "toy · TRPO": lambda: cpo.train(base, toy, toy_cmdp.FEATURES, toy_cmdp.COSTS, two, actor, 0,
                                        constrained=False),
        "toy · CPO, 1 constraint (closed form)": lambda: cpo.train(
            base, toy_cmdp.make_env(20, 0.05, toy_cmdp.COSTS[:1]), toy_cmdp.FEATURES, toy_cmdp.COSTS[:1],
            np.array([4.0]), actor, 0, constrained=True),
        "toy · CPO, 2 constraints (cvxpy)": lambda: cpo.train(base, toy, toy_cmdp.FEATURES, toy_cmdp.COSTS, two,
                                                              actor, 0, constrained=True),
        "toy · PPO-Lag, 2 constraints": lambda: ppo_lag.train(
            ppo_lag.Config(iterations=n_it, num_envs=args.envs, horizon=20, log_every=n_it), toy, toy_cmdp.FEATURES,
            toy_cmdp.COSTS, two, actor, 0),
    }
    for name, run in runs.items():
        _, _, hist = run()
        rows.append((name, per_iteration(hist)))
        print(f"{name}: {1 / rows[-1][1]:.2f} it/s")

    frame = toy_trajectories(600, np.random.default_rng(0))
    state = F.PAPER_STATE
    costs = tuple(f"cost_{r}" for r, _, _ in COST_RULES)
    ens = EnsembleConfig(n_members=5, n_elites=3, hidden=(200, 200, 200, 200), max_epochs=3, seed=0)
    model = WorldModel(ens, Layout.make(state, costs, ens.copy_features, ens.sum_features))
    keys = frame["stay_key"].unique()
    val = frame["stay_key"].isin(set(keys[::5]))
    model.fit(transitions_from_frame(frame[~val], state, costs), transitions_from_frame(frame[val], state, costs))
    starts = start_states(frame, state)

    def world(num_envs: int, seed: int) -> WorldModelEnv:
        return WorldModelEnv(model, starts, num_envs, EnvConfig(horizon=20, seed=seed))

    world_actor = onpolicy.fresh_actor(state, (64, 64), 3, starts, 0)
    _, _, hist = cpo.train(base, world, state, costs, np.array([2.0, 2.0]), world_actor, 0, constrained=True)
    rows.append(("world model (5 × 4×200) · CPO, 2 constraints, K = 3 actor", per_iteration(hist)))
    print(f"{rows[-1][0]}: {1 / rows[-1][1]:.2f} it/s")

    lines = [
        "# On-policy learners: iterations per second",
        "",
        f"B = {args.envs} episodes × T = 20 steps per iteration, actor and critics (64, 64), {args.threads} torch "
        f"threads, mean of {args.iterations} iterations after a warm-up; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}. Written by `benchmarks/bench_onpolicy.py`.",
        "",
        "| run | s / iteration | iterations / s |",
        "|---|---|---|",
        *[f"| {name} | {sec:.2f} | {1 / sec:.2f} |" for name, sec in rows],
        "",
    ]
    out = ROOT / "benchmarks" / "results" / "onpolicy.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
