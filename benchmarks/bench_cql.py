"""Our CQL against d3rlpy's on the same demo trajectories (issue 14): updates per second and the true value,
mortality and per-stay cost of both trained policies.

Same problem for both: the train split's paper-state transitions (states z-scored with the train mean/std), the 2-D
dose on the scaled axis y = log(1 + a/c)/log(1 + max/c) (d3rlpy sees 2y − 1 ∈ [−1, 1]), reward −SOFA, γ =
``--gamma``; same networks (twin critics and actor of ``--hidden``), batch 256, 10 action samples per
logsumexp term, conservative weight 5 (fixed), learning rates 1e-4 / 3e-4 / 1e-4 (actor / critics / temperature),
Polyak 0.005 and the same number of updates. Ours starts from a fresh actor and critics (``warm_start: false``,
``critic_warm_start: 0``, K = 1), as d3rlpy does. d3rlpy (optional, never installed by ``make run``) runs in
its own virtual environment (``--d3-python``, e.g.
``python3.11 -m venv /work/d3venv && /work/d3venv/bin/pip install torch==2.13.0 d3rlpy``); its greedy policy is
exported as TorchScript and served through a small wrapper (doses below the recording resolution c are no dose:
tanh never reaches the atom).

Speed: wall-clock and CPU seconds (``time.process_time``) per update after ``--warmup`` updates, one torch thread
each, measured in the same run; on a shared machine the CPU-time ratio is the steadier one. Ours runs as the pipeline
runs it: with ``ogsrl.env.keep_freed_memory`` (glibc keeps freed blocks instead of page-faulting them back each
update). d3rlpy runs as installed, and once more (a fifth of the updates, speed only) with the same allocator
settings through ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``, so the ratio the allocator alone explains is
visible. Truth: ``ogsrl truth``'s simulator (cohort population, ``--episodes`` patients, seed ``--seed``) for d3rlpy's
greedy policy and our policy as the learner returns it (no guardian fallback), sampled (what OPE scores) and at its
mode (deterministic, like d3rlpy's), beside the clinicians.

Usage:
  .venv/bin/python benchmarks/bench_cql.py --root /work/main --d3-python /work/d3venv/bin/python [--steps 1000]
Writes benchmarks/results/<--out, default cql>.md (collected into benchmarks/RESULTS.md by collect.py) and .json. The
machine line records torch's CPU capability and whether the CPU has AMX tiles: the bfloat16 critics are ~2.7× faster
than float32 with AMX and slower without (docs/policies-and-ope.md, session 12).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ogsrl import env
from ogsrl.agents import common, cql, onpolicy as op
from ogsrl.config import build, load_params
import exclusive

HERE = Path(__file__).resolve().parent
COSTS = ("cost_spo2_low", "cost_urine_low")

D3_SCRIPT = r"""
import json, sys, time
import numpy as np, torch, d3rlpy
torch.set_num_threads(1)
a = json.loads(sys.argv[1]); z = np.load(a["data"])
ds = d3rlpy.dataset.MDPDataset(z["obs"], z["act"], z["rew"], z["done"], action_space=d3rlpy.ActionSpace.CONTINUOUS)
cfg = d3rlpy.algos.CQLConfig(batch_size=256, gamma=a["gamma"], actor_learning_rate=1e-4, critic_learning_rate=3e-4,
    temp_learning_rate=1e-4, alpha_learning_rate=0.0, conservative_weight=5.0, n_action_samples=10, tau=0.005,
    initial_temperature=1.0, actor_encoder_factory=d3rlpy.models.VectorEncoderFactory(a["hidden"]),
    critic_encoder_factory=d3rlpy.models.VectorEncoderFactory(a["hidden"]))
algo = cfg.create(device="cpu:0")
d3rlpy.seed(a["seed"])
algo.build_with_dataset(ds)
kw = dict(show_progress=False, save_interval=10**9, logger_adapter=d3rlpy.logging.NoopAdapterFactory())
algo.fit(ds, n_steps=a["warmup"], n_steps_per_epoch=a["warmup"], **kw)
w, c = time.perf_counter(), time.process_time()
algo.fit(ds, n_steps=a["steps"], n_steps_per_epoch=a["steps"], **kw)
w, c = time.perf_counter() - w, time.process_time() - c
algo.save_policy(a["policy"])
print(json.dumps({"wall": w, "cpu": c, "version": d3rlpy.__version__}))
"""


class TorchScriptPolicy:
    """d3rlpy's exported greedy policy as an ``ogsrl.policy.Policy``: z-scored state → 2y − 1 → doses."""

    def __init__(self, path: str, feature_names: tuple[str, ...], mean: np.ndarray, std: np.ndarray) -> None:
        self.net = torch.jit.load(path)
        self.feature_names, self.mean, self.std = feature_names, mean, std

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = torch.as_tensor((np.asarray(obs, np.float64) - self.mean) / self.std, dtype=torch.float32)
        with torch.no_grad():
            y = np.clip((self.net(x).double().numpy() + 1.0) / 2.0, 0.0, 1.0)
        dose = common.unscale_actions(y)
        return np.where(dose < common.ACTION_RESOLUTION, 0.0, np.minimum(dose, common.ACTION_MAX))


SAMPLED_NOTE = ("The update budget here is a speed budget from a fresh actor, not a training recipe: our sampled "
                "policy still carries the SAC entropy (the temperature starts at 1 and barely moves in a budget this "
                "short), and draws from that spread are harmful doses — raw, without the guardian fallback, as here. "
                "Its mode shows what the critics learnt. The pipeline's CQL runs start from SOC, train 5,000 updates and are "
                "served with the guardian fallback (docs/policies-and-ope.md, \"Unconstrained CQL's raw actor is "
                "dangerous\"; `benchmarks/results/policies_s19.md`).")


def truth(params: dict, root: Path, policy: object, episodes: int, seed: int) -> dict:
    """``ogsrl truth`` (cohort population) for a policy object."""
    from ogsrl.cohort.extract import CohortConfig
    from ogsrl.costs import build_costs
    from ogsrl.synth.stage import SynthConfig, world_from_params
    from ogsrl.synth.truth import evaluate_policy

    cfg = build(SynthConfig, params.get("synth"), "synth")
    res = evaluate_policy(policy, episodes, seed, world=world_from_params(params), chunk=cfg.chunk_stays,
                          cohort=build(CohortConfig, params.get("cohort"), "cohort"), costs=build_costs(params))
    return res.to_dict()


def critic_flops(rows: int, dims: tuple[int, ...], input_grad: bool = False, weight_grad: bool = False) -> float:
    """Multiply-add FLOPs (2 per MAC) of one MLP critic with layer widths ``dims`` on ``rows`` inputs: the forward,
    plus the backward's input gradients (every layer but the first, all of them with ``input_grad``) and weight
    gradients (every layer) when asked."""
    macs = [a * b for a, b in zip(dims[:-1], dims[1:])]
    total = sum(macs)
    if weight_grad:
        total += sum(macs)
    total += sum(macs) if input_grad else (sum(macs[1:]) if weight_grad else 0)
    return 2.0 * rows * total


def ceiling(state_dim: int, action_dim: int, hidden: tuple[int, ...], batch: int, samples: int) -> dict:
    """The fastest any implementation of each library's CQL update could run on this CPU: its critic matmul FLOPs
    per update (twin critics; the actor's own network and all element-wise work left out, so a lower bound on the
    work) over the single-thread GEMM rate measured here on the critics' hidden-layer shape, float32 and bfloat16.

    Rows per update — ours: B(1 + 3N) through forward and backward (data action fused with the logsumexp draws),
    B target rows, B·K·2^A actor rows (the exact expectation over the zero patterns, K = 1) forward and input
    gradient. d3rlpy 2.8 (``CQLImpl``): B TD rows + 3BN draw rows + B rows recomputed for E_D[Q], B target rows, B
    actor rows."""
    dims = (state_dim + action_dim, *hidden, 1)
    e = 2
    ours = e * (critic_flops(batch * (1 + 3 * samples), dims, weight_grad=True) + critic_flops(batch, dims)
                + critic_flops(batch * 2 ** action_dim, dims, input_grad=True))
    d3 = e * (critic_flops(batch * (2 + 3 * samples), dims, weight_grad=True) + critic_flops(batch, dims)
              + critic_flops(batch, dims, input_grad=True))
    rows, width = batch * (1 + 3 * samples), hidden[-1]
    rate = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, w = torch.randn(rows, width, dtype=dtype), torch.randn(width, width, dtype=dtype)
        for _ in range(3):
            a @ w
        t = time.perf_counter()
        for _ in range(30):
            a @ w
        rate[str(dtype).removeprefix("torch.")] = 2.0 * rows * width * width * 30 / (time.perf_counter() - t)
    return {"flops_ours": ours, "flops_d3rlpy": d3, "gemm_flops_per_s": rate,
            "gemm_shape": [rows, width, width]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="project holding data/trajectories and params.yaml")
    ap.add_argument("--d3-python", required=True, help="python of a venv with d3rlpy and torch==2.13.0")
    ap.add_argument("--steps", type=int, default=1000, help="updates for each library (the same budget)")
    ap.add_argument("--warmup", type=int, default=20, help="updates before the clock starts")
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--gamma", type=float, default=1.0)
    ap.add_argument("--episodes", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=11, help="truth patients")
    ap.add_argument("--train-seed", type=int, default=42)
    ap.add_argument("--out", default="cql", help="result page name under benchmarks/results/")
    ap.add_argument("--rounds", type=int, default=1,
                    help="speed rounds in all: after the main run, alternate d3rlpy and ours (default precision) "
                         "for --round-steps updates each, and report every round's ratio, the median and the lowest")
    ap.add_argument("--round-steps", type=int, default=300, help="updates per library in each extra round")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    torch.set_num_threads(1)
    allocator = env.keep_freed_memory()
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    frame, meta = common.read_split(root / "data/trajectories/train.parquet")
    names = meta["state_features"]
    mean, std = common.fit_normaliser(frame[list(names)].to_numpy(np.float64))
    data = cql.transitions(frame, names, COSTS, mean, std)
    amx = cql.resolve_precision("auto") == "bfloat16"
    out: dict = {"date": dt.date.today().isoformat(), "load_before": f"{os.getloadavg()[0]:.2f}", "steps": args.steps,
                 "hidden": args.hidden, "gamma": args.gamma, "rows": len(frame),
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch CPU capability "
                            f"{torch.backends.cpu.get_cpu_capability()}, AMX tiles: {amx}", "speed": {}}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "data.npz"
        np.savez(npz, obs=data.obs_n.numpy(), act=(2.0 * data.y - 1.0).numpy(), rew=data.rew.numpy(),
                 done=data.done.numpy())
        policy_file = str(Path(tmp) / "d3.pt")
        spec = {"data": str(npz), "gamma": args.gamma, "hidden": args.hidden, "seed": args.train_seed,
                "warmup": args.warmup, "steps": args.steps, "policy": policy_file}
        same_allocator = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
        def run_d3(key: str, steps: int, extra: dict[str, str], policy: str) -> dict:
            print(f"{key}: {steps} updates ...", flush=True)
            proc = subprocess.run([args.d3_python, "-c", D3_SCRIPT, json.dumps({**spec, "steps": steps,
                                                                                "policy": policy})],
                                  capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", **extra}, check=False)
            if proc.returncode:
                raise SystemExit(f"d3rlpy run failed: {proc.stderr.strip().splitlines()[-1]}")
            res = {**json.loads(proc.stdout.strip().splitlines()[-1]), "steps": steps}
            print(f"  {steps / res['wall']:.2f} updates/s wall, {steps / res['cpu']:.2f} per CPU second", flush=True)
            return res

        speed_only = str(Path(tmp) / "d3_speed_only.pt")
        out["speed"]["d3rlpy"] = d3 = run_d3("d3rlpy", args.steps, {}, policy_file)
        out["speed"]["d3rlpy_allocator"] = run_d3("d3rlpy_allocator", max(args.steps // 5, 50), same_allocator,
                                                  speed_only)
        d3_policy = TorchScriptPolicy(policy_file, names, mean, std)

        def run_ours(precision: str, steps: int) -> tuple[dict, Any]:
            cfg = cql.Config(steps=steps, batch_size=256, critic_hidden=tuple(args.hidden), hidden=tuple(args.hidden),
                             warm_start=False, critic_warm_start=0, alpha=5.0, precision=precision,
                             log_every=max(steps // 4, 1))
            actor = op.fresh_actor(names, tuple(args.hidden), 1, frame[list(names)].to_numpy(np.float64),
                                   args.train_seed)
            cql.train(cql.Config(steps=args.warmup, precision=precision, critic_hidden=tuple(args.hidden),
                                 critic_warm_start=0), data,
                      actor, COSTS, np.zeros(2), args.train_seed, discount=args.gamma)
            print(f"ours ({precision}): {steps} updates ...", flush=True)
            w, c = time.perf_counter(), time.process_time()
            trained, _, _ = cql.train(cfg, data, actor, COSTS, np.zeros(2), args.train_seed, discount=args.gamma)
            w, c = time.perf_counter() - w, time.process_time() - c
            print(f"  {steps / w:.2f} updates/s wall, {steps / c:.2f} per CPU second", flush=True)
            return {"wall": w, "cpu": c, "steps": steps}, trained

        default = cql.resolve_precision("auto")
        out["speed"][f"ours_{default}"], ours = run_ours(default, args.steps)
        for precision in {"bfloat16", "float32"} - {default}:  # speed only
            out["speed"][f"ours_{precision}"], _ = run_ours(precision, max(args.steps // 5, 50))
        rounds = [(args.steps / d3["wall"], args.steps / out["speed"][f"ours_{default}"]["wall"])]
        for _ in range(args.rounds - 1):
            extra_d3 = run_d3("d3rlpy", args.round_steps, {}, speed_only)
            extra_ours, _ = run_ours(default, args.round_steps)
            rounds.append((args.round_steps / extra_d3["wall"], args.round_steps / extra_ours["wall"]))
        out["rounds"] = [{"d3rlpy": a, "ours": b, "ratio": b / a} for a, b in rounds]
        out["ceiling"] = ceiling(len(names), 2, tuple(args.hidden), 256, 10)
    from ogsrl.agents.actor import SavedPolicy

    rows = {}
    for name, pol in (("clinicians", None), ("d3rlpy CQL (greedy)", d3_policy),
                      ("ours CQL (sampled)", SavedPolicy(ours, names, "sample", sample_seed=args.train_seed)),
                      ("ours CQL (mode)", SavedPolicy(ours, names, "mode"))):
        print(f"truth: {name} ...", flush=True)
        rows[name] = truth(params, root, pol, args.episodes, args.seed)
    out["truth"] = rows
    sp = out["speed"]
    rate = {k: (v.get("steps", args.steps) / v["wall"], v.get("steps", args.steps) / v["cpu"]) for k, v in sp.items()}
    ratio = {k: (rate[k][0] / rate["d3rlpy"][0], rate[k][1] / rate["d3rlpy"][1]) for k in rate}
    out["ratio"] = ratio
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.out}.json").write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    rounds_flags = f" --rounds {args.rounds} --round-steps {args.round_steps}" if args.rounds > 1 else ""
    lines = [f"# CQL vs d3rlpy {d3['version']} on a CPU {'with' if amx else 'without'} AMX (`benchmarks/bench_cql.py`, "
             f"{out['date']})\n",
             f"Command: `.venv/bin/python benchmarks/bench_cql.py --root {args.root} --d3-python {args.d3_python} "
             f"--steps {args.steps} --out {args.out}{rounds_flags}`. {out['machine']}, load average before the run "
             f"{out['load_before']}, one "
             f"torch thread each (ours with glibc keeping freed blocks: {allocator}); "
             f"{len(frame)} train transitions ({len(names)}-d state, 2-d dose), networks {args.hidden}, batch 256, "
             f"γ = {args.gamma}, {args.steps} updates each (ours in the precision `auto` picks here, {default}; the "
             f"other {min(v['steps'] for v in sp.values())} updates, speed only), clock started after {args.warmup} "
             "warm-up updates.\n",
             "| learner | updates/s (wall) | updates per CPU second | ratio to d3rlpy (wall / CPU) |",
             "|---|---|---|---|"]
    labels = {"d3rlpy": "d3rlpy CQL (as installed)",
              "d3rlpy_allocator": "d3rlpy CQL, glibc keeping freed blocks (speed only)",
              "ours_bfloat16": "ours, critics' hidden layers bfloat16", "ours_float32": "ours, float32"}
    labels[f"ours_{default}"] += " (`precision: auto` here)"
    for k in ("d3rlpy", "d3rlpy_allocator", "ours_bfloat16", "ours_float32"):
        lines.append(f"| {labels[k]} | {rate[k][0]:.2f} | {rate[k][1]:.2f} | {ratio[k][0]:.2f} / {ratio[k][1]:.2f} |")
    if len(rounds) > 1:
        ratios = sorted(r["ratio"] for r in out["rounds"])
        lines += ["", f"Speed rounds (the main run, then {len(rounds) - 1} alternating rounds of {args.round_steps} "
                  f"updates each, d3rlpy as installed against ours in `{default}`, wall clock): ratio median "
                  f"**{float(np.median(ratios)):.2f}×**, lowest {ratios[0]:.2f}×, highest {ratios[-1]:.2f}×.", "",
                  "| round | d3rlpy updates/s | ours updates/s | ratio |", "|---|---|---|---|"]
        lines += [f"| {i} | {r['d3rlpy']:.2f} | {r['ours']:.2f} | {r['ratio']:.2f} |"
                  for i, r in enumerate(out["rounds"])]
    top = out["ceiling"]
    best = max(top["gemm_flops_per_s"].values())
    lines += ["", f"Arithmetic ceiling (`ceiling()`): the critics' matmuls alone are {top['flops_ours'] / 1e9:.2f} GFLOP "
              f"per update for ours and {top['flops_d3rlpy'] / 1e9:.2f} for d3rlpy; one thread multiplies the "
              f"{'×'.join(map(str, top['gemm_shape']))} hidden-layer shape at "
              + " and ".join(f"{v / 1e9:.0f} GFLOP/s in {k}" for k, v in top["gemm_flops_per_s"].items())
              + f". No implementation of either update runs faster than {best / top['flops_ours']:.1f} (ours) / "
              f"{best / top['flops_d3rlpy']:.1f} (d3rlpy) updates/s here: at most "
              f"{best / top['flops_ours'] / rate['d3rlpy'][0]:.2f}× d3rlpy's measured rate. Achieved: d3rlpy "
              f"{rate['d3rlpy'][0] * top['flops_d3rlpy'] / 1e9:.0f} GFLOP/s, ours "
              f"{rate[f'ours_{default}'][0] * top['flops_ours'] / 1e9:.0f} GFLOP/s."]
    lines += ["", f"Truth ({args.episodes} simulated patients, seed {args.seed}, cohort population; policies after "
              f"{args.steps} updates):", "",
              "| policy | true SOFA return | true in-hospital mortality | true cost_spo2_low / cost_urine_low per stay |",
              "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['truth/return']:.1f} [{r['truth/return_ci_lo']:.1f}, {r['truth/return_ci_hi']:.1f}]"
                     f" | {r['truth/mortality_hosp']:.3f} [{r['truth/mortality_hosp_ci_lo']:.3f}, "
                     f"{r['truth/mortality_hosp_ci_hi']:.3f}] | {r['truth/cost_return_cost_spo2_low']:.2f} / "
                     f"{r['truth/cost_return_cost_urine_low']:.2f} |")
    lines += ["", SAMPLED_NOTE]
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.out}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
