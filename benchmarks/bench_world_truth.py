"""Closed-loop check of the world model against the simulator's ground truth (issue 4, "against ground truth").

The same policy — SOC, the behaviour clone the pipeline trains on the model's state features — drives
(a) the learned ensemble (`WorldModelEnv`, random elite per step) from the test split's start states,
(b) a 1-nearest-neighbour world (the OGSRL authors' approach: each step takes the change, death and discharge of the
    training transition nearest to (s, a) in standardised units) from the same start states, and
(c) fresh septic patients simulated under SOC (`ogsrl.synth.engine.simulate`, SOC reading the cohort feature code's
    states as it goes), whose raw tables then go through the same cohort extraction as the demo data: the truth.
The simulator's clinicians cannot act inside a model (they read features the model does not predict, such as MAP
and lactate), so their clone stands in for "the behaviour policy" everywhere.

Every side leaves the window the same three ways: death, discharge (an alive exit, which the models predict) and
the window's end (a model episode gets the steps its start state's stay had left in the window). Compared: the
fraction of patients who die in the window and who are discharged alive, and the mean path of each state feature
over the patients still in the window, per step since the first decision, where the simulator has at least
`--min-at-risk` patients. Each seed draws new simulated patients and new model rollouts.

Documented tolerances, which must hold for every seed: mortality and discharge gaps ≤ 5 percentage points; mean-path
gap ≤ 0.5 standard deviations of the feature (simulator side) at every compared step.

Usage (after `make run`):  .venv/bin/python benchmarks/bench_world_truth.py [--root .] [--episodes 4000]
Writes benchmarks/results/world_truth.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

from ogsrl.agents import load_policy
from ogsrl.cohort.extract import CohortConfig
from ogsrl.config import build, load_params, section
from ogsrl.costs import CostsConfig
from ogsrl.synth import engine as E
from ogsrl.synth.truth import cohort_observer, extract_chunk
from ogsrl.world.data import Transitions, transitions_from_frame
from ogsrl.world.ensemble import WorldModel
from ogsrl.world.env import EnvConfig, WorldModelEnv, rollout, start_states, steps_left
import exclusive

HERE = Path(__file__).resolve().parent
EXIT_TOL = 0.05
PATH_TOL_SD = 0.5
ActFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Episodes:
    """Model episodes as (T+1, B, S) states, (T, B) death / discharge and the (T, B) in-window mask."""

    obs: np.ndarray
    death: np.ndarray
    discharge: np.ndarray
    in_window: np.ndarray


def truth_trajectories(policy, episodes: int, seed: int, world: E.WorldConfig, cohort: CohortConfig,
                       costs: CostsConfig) -> pd.DataFrame:
    """Fresh septic patients simulated under ``policy``, then put through the cohort extraction like the demo data.

    Going through the extraction matters: it defines onset, the window and the cohort from the charted rows, as for
    the training data (4,000 patients under the clinicians: in-window mortality 0.139 on the simulator's own
    decision steps, 0.118 after extraction).
    """
    frames = []
    for c, start in enumerate(range(0, episodes, 2500)):
        n = min(2500, episodes - start)
        res = E.simulate(n, np.random.default_rng([seed, c, 11]), first_index=start, world=world,
                         observer=cohort_observer(), policy=policy, cohort_only=True, keep_tables=True)
        frame = extract_chunk(res, cohort, costs)
        frame["stay_key"] = f"{c}:" + frame["stay_key"].astype(str)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).sort_values(["stay_key", "step"], kind="stable")


def ensemble_episodes(model: WorldModel, starts: np.ndarray, left: np.ndarray, n: int, cfg: EnvConfig,
                      act: ActFn, seed: int) -> Episodes:
    ro = rollout(WorldModelEnv(model, starts, n, cfg, horizons=left), act, seed=seed)
    return Episodes(ro.obs, ro.death, ro.discharge, ro.active)


def knn_episodes(train: Transitions, starts: np.ndarray, left: np.ndarray, n: int, horizon: int, act: ActFn,
                 seed: int, clip: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Episodes:
    """1-NN world: s' = clip(s + (s'_nn − s_nn)) (``clip`` as the ensemble's); death and discharge are the neighbour's."""
    x = np.concatenate([train.obs, train.act], axis=1).astype(np.float64)
    mu, sd = x.mean(0), np.where(x.std(0) > 1e-6, x.std(0), 1.0)
    nn = NearestNeighbors(n_neighbors=1).fit((x - mu) / sd)
    delta = (train.next_obs - train.obs).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(starts), size=n)
    obs = starts[idx].astype(np.float64)
    states, deaths, exits, actives = [obs.copy()], [], [], []
    active = np.ones(n, dtype=bool)
    for _ in range(horizon):
        a = np.asarray(act(obs.astype(np.float32), rng), dtype=np.float64)
        j = nn.kneighbors((np.concatenate([obs, a], axis=1) - mu) / sd, return_distance=False)[:, 0]
        nxt = clip(obs, obs + delta[j]).astype(np.float64)
        death, exit_ = active & (train.death[j] > 0), active & (train.exits[j] > 0)
        obs = np.where(active[:, None], nxt, obs)
        states.append(obs.copy())
        deaths.append(death)
        exits.append(exit_)
        actives.append(active.copy())
        active = active & ~death & ~exit_
    in_window = np.stack(actives) & (np.arange(horizon)[:, None] < left[idx][None, :])
    return Episodes(np.stack(states), np.stack(deaths), np.stack(exits), in_window)


def env_mode(params: dict) -> str:
    return str((section(params, "world.env") or {}).get("mode", EnvConfig().mode))


def compare(ep: Episodes, truth: pd.DataFrame, feats: tuple[str, ...], horizon: int, final_hour: float,
            min_at_risk: int) -> dict[str, float]:
    """Exit fractions of both sides and each feature's max mean-path gap in simulator SDs."""
    last = truth.groupby("stay_key").tail(1)
    out = {"died/truth": float(last["death_in_step"].mean()),
           "discharged/truth": float((~last["death_in_step"] & (last["hours_since_onset"] < final_hour)).mean()),
           "died/model": float((ep.death & ep.in_window).any(0).mean()),
           "discharged/model": float((ep.discharge & ep.in_window).any(0).mean())}
    k = truth["step"].to_numpy()
    compared = int(np.sum(np.bincount(k, minlength=horizon)[:horizon] >= min_at_risk))
    out["compared_steps"] = compared
    for j, f in enumerate(feats):
        t_mean = truth.groupby("step")[f].mean().reindex(range(horizon)).to_numpy()[:compared]
        m_mean = np.array([ep.obs[i][ep.in_window[i], j].mean() if ep.in_window[i].any() else np.nan
                           for i in range(compared)])
        out[f"gap_sd/{f}"] = float(np.nanmax(np.abs(t_mean - m_mean)) / (float(truth[f].std()) or 1.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=HERE.parent, help="project root after `make run`")
    ap.add_argument("--episodes", type=int, default=4000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--min-at-risk", type=int, default=100)
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    torch.set_num_threads(2)
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    cohort = build(CohortConfig, section(params, "cohort"), "cohort")
    costs = build(CostsConfig, section(params, "costs"), "costs")
    world_cfg = E.WorldConfig(window_start_h=int(cohort.window_start_h), step_h=int(cohort.step_h),
                              n_steps=int(cohort.n_steps))
    horizon = world_cfg.n_steps
    soc_dir = root / "data" / "models" / "policies" / "soc" / f"seed{section(params, 'policies')['seeds'][0]}"
    policy = load_policy(soc_dir)
    model = WorldModel.load(root / "data" / "models" / "world")
    feats = model.layout.state_features
    if tuple(policy.feature_names) != tuple(feats):
        raise ValueError(f"SOC reads {policy.feature_names}, the world model predicts {feats}")
    traj = root / "data" / "trajectories"
    test = pd.read_parquet(traj / "test.parquet")
    final_hour = world_cfg.window_start_h + (horizon - 1) * world_cfg.step_h
    train = transitions_from_frame(pd.read_parquet(traj / "train.parquet"), feats, model.layout.cost_names,
                                   "train", final_hour)
    starts = start_states(test, feats, "test")
    left = steps_left(test, world_cfg.window_start_h, world_cfg.step_h, horizon, "test")
    act: ActFn = lambda obs, rng: policy.act(obs, rng)  # noqa: E731

    worlds = {"ensemble": f"ensemble ({env_mode(params)})", "episode": "ensemble (episode_elite)",
              "knn": "1-NN (authors)"}
    results: dict[str, list[dict[str, float]]] = {w: [] for w in worlds}
    seconds = {w: 0.0 for w in (*worlds, "truth")}
    for seed in args.seeds:
        t0 = time.perf_counter()
        truth = truth_trajectories(policy, args.episodes, seed, world_cfg, cohort, costs)
        seconds["truth"] += time.perf_counter() - t0
        env_cfg = build(EnvConfig, {**section(params, "world.env"), "horizon": horizon, "seed": seed}, "world.env")
        for world in worlds:
            t0 = time.perf_counter()
            if world == "knn":
                ep = knn_episodes(train, starts, left, args.episodes, horizon, act, seed, model.clip_state)
            else:
                cfg = env_cfg if world == "ensemble" else dataclasses.replace(env_cfg, mode="episode_elite")
                ep = ensemble_episodes(model, starts, left, args.episodes, cfg, act, seed)
            seconds[world] += time.perf_counter() - t0
            row = compare(ep, truth, feats, horizon, final_hour, args.min_at_risk)
            for q in ("died", "discharged"):
                row[f"gap/{q}"] = row[f"{q}/model"] - row[f"{q}/truth"]
            results[world].append(row)

    def cell(world: str, key: str, tol: float, fmt: str = "{:+.3f}") -> str:
        vals = [r[key] for r in results[world]]
        ok = all(abs(v) <= tol for v in vals)
        return f"{fmt.format(min(vals, key=abs))} … {fmt.format(max(vals, key=abs))} | {'yes' if ok else 'NO'}"

    times = ", ".join(f"{label} {seconds[w]:.1f} s" for w, label in worlds.items())
    lines = [
        "# World model vs simulator ground truth, closed loop (`benchmarks/bench_world_truth.py`)",
        "",
        f"Policy: SOC (`{soc_dir.relative_to(root)}`) everywhere; per seed ({', '.join(map(str, args.seeds))}) "
        f"{args.episodes} model episodes from the test split's start states per world and {args.episodes} fresh "
        f"simulated cohort patients. Mean paths compared over the first {results['ensemble'][0]['compared_steps']} "
        f"decision steps (simulator ≥ {args.min_at_risk} patients in the window). Time for all seeds (2 cores): "
        f"{times}, simulator + extraction {seconds['truth']:.1f} s. Ranges are over seeds (smallest … largest "
        "gap); \"within\" means every seed.",
        "",
        "| quantity | simulator (truth), mean | " + " | ".join(f"{x}, mean | gap | within" for x in worlds.values())
        + " | tolerance |",
        "|---|---|" + "---|---|---|" * len(worlds) + "---|",
    ]
    for q, label in (("died", "died in the window"), ("discharged", "discharged alive before the window's end")):
        t = np.mean([r[f"{q}/truth"] for r in results["ensemble"]])
        cells = " | ".join(f"{np.mean([r[f'{q}/model'] for r in results[w]]):.3f} | {cell(w, f'gap/{q}', EXIT_TOL)}"
                           for w in worlds)
        lines.append(f"| {label} | {t:.3f} | {cells} | ±{EXIT_TOL:.2f} |")
    for f in feats:
        cells = " | ".join(f"– | {cell(w, f'gap_sd/{f}', PATH_TOL_SD, '{:.2f}')}" for w in worlds)
        lines.append(f"| mean {f}: max gap over steps, in SD | – | {cells} | ≤ {PATH_TOL_SD} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results" / "world_truth.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
