"""Discrete CQL's update speed against d3rlpy's DiscreteCQL on the demo's train split.

Both learn Q over the 25 AI-Clinician dose bins (``action_bin``) from the same normalised states with the same MLP
(``--hidden``), batch size and update count, one torch thread each, alternating for ``--rounds`` rounds; the page
reports every round's updates per second and ratio. Ours: :func:`ogsrl.agents.cql_discrete.train` (expected-SARSA
targets under the served Boltzmann policy, so one more forward pass per update than d3rlpy's max-backup target);
d3rlpy: ``DiscreteCQLConfig`` with its other defaults, γ as given, run by ``--d3-python`` (a venv with d3rlpy and
torch==2.13.0; not a project dependency).

    .venv/bin/python benchmarks/bench_cql_discrete.py --root <project with data/trajectories> \\
        --d3-python <venv>/bin/python --batch 256 32 --steps 2000 --rounds 3 --out cql_discrete_s26
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ogsrl import env  # noqa: E402
from ogsrl.agents import common, cql_discrete  # noqa: E402
import exclusive  # noqa: E402

D3_SCRIPT = r'''
import json, sys, time, numpy as np, torch, d3rlpy
torch.set_num_threads(1)
spec = json.loads(sys.argv[1]); z = np.load(spec["data"])
ds = d3rlpy.dataset.MDPDataset(z["obs"], z["act"][:, None], z["rew"], z["done"],
                               action_space=d3rlpy.constants.ActionSpace.DISCRETE, action_size=spec["actions"])
algo = d3rlpy.algos.DiscreteCQLConfig(
    batch_size=spec["batch"], gamma=spec["gamma"],
    encoder_factory=d3rlpy.models.encoders.VectorEncoderFactory(hidden_units=spec["hidden"])).create(device="cpu:0")
algo.build_with_dataset(ds)
for _ in range(spec["warmup"]):
    algo.update(ds.sample_transition_batch(spec["batch"]))
w = time.perf_counter()
for _ in range(spec["steps"]):
    algo.update(ds.sample_transition_batch(spec["batch"]))
print(json.dumps({"wall": time.perf_counter() - w}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="project holding data/trajectories")
    ap.add_argument("--d3-python", required=True, help="python of a venv with d3rlpy and torch==2.13.0")
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 32], help="batch sizes to compare (32: d3rlpy's)")
    ap.add_argument("--steps", type=int, default=2000, help="updates per library and round")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--gamma", type=float, default=1.0)
    ap.add_argument("--out", default="cql_discrete", help="result page name under benchmarks/results/")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    torch.set_num_threads(1)
    allocator = env.keep_freed_memory()
    frame, meta = common.read_split(args.root.resolve() / "data/trajectories/train.parquet")
    if "action_bin" not in frame.columns:
        raise SystemExit("the train split has no action_bin column (the 5 × 5 dose bins)")
    names = meta["state_features"]
    obs = frame[list(names)].to_numpy(np.float64)
    nxt = frame[[f"next_{n}" for n in names]].to_numpy(np.float64)
    mean, std = common.fit_normaliser(obs)
    obs_n, nxt_n = ((obs - mean) / std).astype(np.float32), ((nxt - mean) / std).astype(np.float32)
    bins = frame["action_bin"].to_numpy(np.int64)
    rew, done = frame["reward"].to_numpy(np.float32), frame["done"].to_numpy(np.float32)
    tensors = (torch.tensor(obs_n), torch.tensor(nxt_n), torch.tensor(bins), torch.tensor(rew),
               torch.zeros(len(obs), 0), torch.tensor(done), torch.zeros(1, dtype=torch.int64))

    def ours(batch: int) -> float:
        cfg = dict(batch_size=batch, hidden=tuple(args.hidden))
        cql_discrete.train(cql_discrete.Config(steps=args.warmup, **cfg), *tensors, np.zeros(0), 42,
                           discount=args.gamma, n_actions=cql_discrete.N_BINS)
        w = time.perf_counter()
        cql_discrete.train(cql_discrete.Config(steps=args.steps, log_every=args.steps, **cfg), *tensors, np.zeros(0),
                           42, discount=args.gamma, n_actions=cql_discrete.N_BINS)
        return args.steps / (time.perf_counter() - w)

    out: dict = {"date": dt.date.today().isoformat(), "rows": len(frame), "state_dim": len(names),
                 "hidden": args.hidden, "steps": args.steps, "allocator": allocator, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "data.npz"
        np.savez(npz, obs=obs_n, act=bins, rew=rew, done=done)

        def d3(batch: int) -> float:
            spec = {"data": str(npz), "batch": batch, "gamma": args.gamma, "hidden": args.hidden,
                    "warmup": args.warmup, "steps": args.steps, "actions": cql_discrete.N_BINS}
            proc = subprocess.run([args.d3_python, "-c", D3_SCRIPT, json.dumps(spec)], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
            if proc.returncode:
                raise SystemExit(f"d3rlpy run failed: {proc.stderr.strip().splitlines()[-1]}")
            return args.steps / json.loads(proc.stdout.strip().splitlines()[-1])["wall"]

        for batch in args.batch:
            rounds = []
            for r in range(args.rounds):
                a, b = d3(batch), ours(batch)
                rounds.append({"d3rlpy": a, "ours": b, "ratio": b / a})
                print(f"batch {batch} round {r}: d3rlpy {a:.1f}, ours {b:.1f} updates/s, {b / a:.2f}×", flush=True)
            out["results"][str(batch)] = rounds
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.out}.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    lines = [f"# Discrete CQL vs d3rlpy DiscreteCQL (`benchmarks/bench_cql_discrete.py`, {out['date']})", "",
             f"Command: `.venv/bin/python benchmarks/bench_cql_discrete.py {' '.join(sys.argv[1:])}`. "
             f"{len(frame)} train transitions, {len(names)}-d state, 25 dose bins, MLP {args.hidden}, γ = "
             f"{args.gamma}, {args.steps} updates per library and round after {args.warmup} warm-up updates, one "
             f"torch thread each, alternating (d3rlpy first); ours with glibc keeping freed blocks: {allocator}.", "",
             "| batch | round | d3rlpy DiscreteCQL updates/s | ours updates/s | ratio |", "|---|---|---|---|---|"]
    for batch, rounds in out["results"].items():
        for i, r in enumerate(rounds):
            lines.append(f"| {batch} | {i} | {r['d3rlpy']:.1f} | {r['ours']:.1f} | {r['ratio']:.2f} |")
    lines += ["", " ".join(f"Batch {b}: ratio median {statistics.median(r['ratio'] for r in rs):.2f}×, lowest "
                           f"{min(r['ratio'] for r in rs):.2f}×." for b, rs in out["results"].items())]
    text = "\n".join(lines) + "\n"
    (HERE / "results" / f"{args.out}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
