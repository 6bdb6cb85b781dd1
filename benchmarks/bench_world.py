"""Benchmark the world model: fit time on a demo-sized table and batched rollout throughput.

    .venv/bin/python benchmarks/bench_world.py [--stays 5000] [--threads 2] [--max-epochs N]

1. Fit time of the ensemble with the ``world.model`` settings of params.yaml on the training split (60 %) of a
   toy table with ``--stays`` stays (ogsrl.world.toy; the demo default is 5 000 stays).
2. Rollout throughput (transitions/s) of :class:`WorldModelEnv` at batch 1 000 and 10 000, and of the bare ensemble
   forward pass batched over members (one ``baddbmm`` per layer) vs a Python loop over members (the baseline,
   measured in the same run; the ratio is the figure to read).

Prints the numbers and writes ``benchmarks/results/world.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as tf

from ogsrl.config import build, load_params
from ogsrl.world.data import Layout, transitions_from_frame
from ogsrl.world.ensemble import WorldModel
from ogsrl.world.net import soft_clamp
from ogsrl.world.env import EnvConfig, WorldModelEnv, rollout, start_states
from ogsrl.world.stage import WorldConfig
from ogsrl.world.toy import COST_RULES, toy_trajectories
import exclusive

ROOT = Path(__file__).resolve().parents[1]


def loop_forward(model: WorldModel, x: torch.Tensor) -> torch.Tensor:
    """Baseline: the same network evaluated member by member in a Python loop. x: (B, S+A) → (E, B, out)."""
    net = model.net
    outs = []
    for e in range(model.cfg.n_members):
        h = x
        for layer in net.layers:
            h = tf.silu(h @ layer.weight[e] + layer.bias[e])
        out = h @ net.head.weight[e] + net.head.bias[e] + x @ net.skip.weight[e] + net.skip.bias[e]
        g = net.n_gauss
        logvar = soft_clamp(out[:, g:2 * g], net.min_logvar[e], net.max_logvar[e])
        outs.append(torch.cat([out[:, :g], logvar, out[:, 2 * g:]], dim=-1))
    return torch.stack(outs)


def batched_forward(model: WorldModel, x: torch.Tensor) -> torch.Tensor:
    """The model's own batched pass. x: (B, S+A) → (E, B, out) (means/log-variances/logits concatenated)."""
    mean, logvar, logits = model.forward(x)
    return torch.cat([mean, logvar, logits], dim=-1)


def _rate(fn, n_items: int, min_s: float = 0.5, trials: int = 3) -> float:
    """Items per second, best of ``trials`` timed windows (the machine is shared; the best window is least noisy)."""
    fn()  # warm-up
    best = 0.0
    for _ in range(trials):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_s:
            fn()
            reps += 1
        best = max(best, n_items * reps / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stays", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-epochs", type=int, default=None, help="override world.model.max_epochs")
    ap.add_argument("--skip-fit", action="store_true", help="fit one epoch only (throughput numbers only)")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    torch.set_num_threads(args.threads)
    cfg = build(WorldConfig, load_params(ROOT / "params.yaml")["world"], "world")
    mcfg = cfg.model if args.max_epochs is None else replace(cfg.model, max_epochs=args.max_epochs)

    frame = toy_trajectories(args.stays, np.random.default_rng(0))
    keys = frame["stay_key"].unique()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(keys))
    split = np.empty(len(keys), dtype=object)
    split[order[: int(0.6 * len(keys))]] = "train"
    split[order[int(0.6 * len(keys)): int(0.8 * len(keys))]] = "val"
    split[order[int(0.8 * len(keys)):]] = "test"
    frame["split"] = frame["stay_key"].map(dict(zip(keys, split)))
    feats = tuple(load_params(ROOT / "params.yaml")["cohort"]["state_features"])
    costs = tuple(f"cost_{r}" for r, _, _ in COST_RULES)
    train = transitions_from_frame(frame[frame["split"] == "train"], feats, costs, "train")
    val = transitions_from_frame(frame[frame["split"] == "val"], feats, costs, "val")

    if args.skip_fit:
        mcfg = replace(mcfg, max_epochs=1)
    model = WorldModel(mcfg, Layout.make(feats, costs, mcfg.copy_features, mcfg.sum_features))
    t0 = time.perf_counter()
    fit = model.fit(train, val)
    fit_s = time.perf_counter() - t0
    print(f"fit: {len(frame)} rows total, {len(train)} train rows, {fit.epochs} epochs "
          f"(early stop: {fit.stopped_early}), {fit_s:.1f} s, {fit_s / fit.epochs:.2f} s/epoch")

    starts = start_states(frame[frame["split"] == "train"], feats)
    rows = []
    model.net.eval()
    for batch in (1000, 10000):
        env = WorldModelEnv(model, starts, batch, EnvConfig(horizon=20, mode="random_elite"))
        act = np.tile(np.array([[300.0, 0.05]], np.float32), (batch, 1))
        env_rate = 0.0
        for trial in range(3):  # whole 20-step episodes; count only transitions of running rows; best of 3
            t0 = time.perf_counter()
            n_tr = int(rollout(env, lambda o, r: act, seed=trial).active.sum())
            env_rate = max(env_rate, n_tr / (time.perf_counter() - t0))
        x = model._inputs(starts[rng.integers(0, len(starts), batch)], act)
        with torch.inference_mode():
            np.testing.assert_allclose(batched_forward(model, x).numpy(), loop_forward(model, x).numpy(),
                                       rtol=1e-4, atol=1e-4)
            fwd = _rate(lambda: batched_forward(model, x), batch)
            loop = _rate(lambda: loop_forward(model, x), batch)
        rows.append((batch, env_rate, fwd, loop, fwd / loop))
        print(f"batch {batch}: env rollouts {env_rate:,.0f} transitions/s; forward batched {fwd:,.0f}/s vs "
              f"member loop {loop:,.0f}/s (ratio {fwd / loop:.2f})")

    out = ROOT / "benchmarks" / "results" / "world.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# World model benchmark (`benchmarks/bench_world.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch threads {args.threads}, "
        f"torch {torch.__version__}. Shared machine: each rate is the best of 3 windows; timings are rough.",
        f"Ensemble: {mcfg.n_members} members / {mcfg.n_elites} elites, hidden {list(mcfg.hidden)}, "
        f"batch {mcfg.batch_size}, max_epochs {mcfg.max_epochs}, patience {mcfg.patience}.",
        "",
        "## Fit",
        "",
        "| table | train rows | epochs | early stop | fit s | s/epoch |",
        "|---|---|---|---|---|---|",
        f"| toy, {args.stays} stays ({len(frame)} rows) | {len(train)} | {fit.epochs} | {fit.stopped_early} | "
        f"{fit_s:.1f} | {fit_s / fit.epochs:.2f} |",
        "",
        "## Rollout throughput (transitions/s)",
        "",
        "| batch | WorldModelEnv rollouts, 20 steps (random_elite) | forward, batched members | forward, Python loop "
        "over members (baseline) | batched / loop |",
        "|---|---|---|---|---|",
        *[f"| {b:,} | {e:,.0f} | {f:,.0f} | {lp:,.0f} | {r:.2f} |" for b, e, f, lp, r in rows],
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
