"""Model-based OPE that replays each patient's own noise: counterfactual rollouts by abduction (issue 12).

The ``mb`` estimator re-draws a simulated patient's Gaussian state noise at every step, so a patient forgets its own
course (``probe_mb_states.py``). Treating each fitted elite e as an additive-noise structural model,
``s'_g = μ_e,g(s, a) + σ_e,g(s, a)·z_g``, the noise a logged stay experienced is recovered exactly (abduction):

    z_{e,t,g} = (s_{t+1,g} − μ_{e,g}(s_t, a_t)) / σ_{e,g}(s_t, a_t)        (each Gaussian state column g, and the reward)

and an episode started from that stay's first state replays it under the evaluated policy's actions (Buesing et al.
2019, "Woulda, coulda, shoulda"; Oberst & Sontag 2019 for the discrete case): the step t draw of elite e is
``z_{e,t}`` instead of a fresh normal, and each binary column (e.g. ventilation) replays a uniform drawn where it
reproduces the logged outcome — so under the logged actions the episode is the logged stay (checked: every state
column to 1e-3 over ten steps). Steps the stay never logged (it ended before the simulated patient) draw fresh
noise; deaths and discharges are drawn as in ``mb``. For every policy of the saved rank pages: the value averaged over ``--fits`` evaluation fits
(``mb``'s fits, seeds and rollouts), with and without replay, against the truth (10,000 patients, seed 13).

Usage:
  .venv/bin/python benchmarks/probe_mb_replay.py --root /work/s21/S \
      --pages ope_rank_s21spread_fresh,ope_rank_s24seed58_a,ope_rank_s24seed58_b --policy-roots /work/s24/E,/work/s24/F \
      --work /work/s21/w_spread --admitted ope_rank_s24union58 [--fits 4] [--out mb_replay]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_common  # noqa: E402

from ogsrl.ope import stage as ope_stage  # noqa: E402
from ogsrl.world.data import Transitions  # noqa: E402
from ogsrl.world.ensemble import StepSample, WorldModel  # noqa: E402
from ogsrl.world.env import EnvConfig, WorldModelEnv, first_rows, rollout  # noqa: E402
import exclusive  # noqa: E402


def stay_steps(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(start index, step within the stay) of each row: start indices in :func:`first_rows` (stay-key) order."""
    first = first_rows(frame, "test")
    keys = frame["stay_key"].to_numpy()
    index = {k: i for i, k in enumerate(keys[first])}
    start = np.array([index[k] for k in keys], dtype=np.int64)
    step = frame["step"].to_numpy(dtype=np.int64)
    return start, step - step[first][start]


def abduct(model: WorldModel, data: Transitions, start: np.ndarray, t: np.ndarray, n_starts: int, horizon: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each elite's noise behind the logged transitions: state (E, T, N, S) — the standardised residual of each
    Gaussian column; for each binary column a uniform u with ``u < p ⇔ logged 1`` (p the elite's probability), so
    ``u < p'`` replays it — reward (E, T, N), and (T, N) whether that step was logged; unlogged cells hold NaN."""
    p = model.predict(data.obs, data.act)
    el = model.elites
    keep = t < horizon
    gi, bi = list(model.layout.gauss_idx), list(model.layout.binary_idx)
    zs = np.full((len(el), horizon, n_starts, data.obs.shape[1]), np.nan, np.float32)
    zr = np.full((len(el), horizon, n_starts), np.nan, np.float32)
    for j, e in enumerate(el):
        z = (data.next_obs - p.next_mean[e]) / np.sqrt(np.maximum(p.next_var[e], 1e-12))
        block = np.zeros_like(data.next_obs)
        block[:, gi] = z[:, gi]
        p1 = p.next_mean[e][:, bi]  # binary columns: P(s' = 1)
        u = rng.random(p1.shape)
        block[:, bi] = np.where(data.next_obs[:, bi] > 0.5, u * p1, p1 + u * (1 - p1))
        zs[j, t[keep], start[keep]] = block[keep]
        zr[j, t[keep], start[keep]] = ((data.rew - p.rew_mean[e]) / np.sqrt(np.maximum(p.rew_var[e], 1e-12)))[keep]
    logged = np.zeros((horizon, n_starts), bool)
    logged[t[keep], start[keep]] = True
    return zs, zr, logged


class Replayed:
    """A fitted model whose random-elite steps take each row's Gaussian draws from its stay's abducted residuals."""

    def __init__(self, model: WorldModel, zs: np.ndarray, zr: np.ndarray, logged: np.ndarray) -> None:
        self.model, self.zs, self.zr, self.logged = model, zs, zr, logged
        self.rows = np.zeros(0, np.int64)
        self.t = 0

    layout = property(lambda self: self.model.layout)
    elites = property(lambda self: self.model.elites)
    death_charge = property(lambda self: self.model.death_charge)

    def step(self, obs: np.ndarray, act: np.ndarray, mode: Any, rng: np.random.Generator,
             member: np.ndarray | None = None) -> StepSample:
        m = self.model
        p = m.predict(obs, act)
        el = m.elites
        b = len(obs)
        j = rng.integers(0, len(el), size=b)
        k, rows = el[j], np.arange(b)
        z = rng.standard_normal(obs.shape).astype(np.float32)
        zr = rng.standard_normal(b).astype(np.float32)
        have = self.logged[self.t, self.rows]
        z[have] = self.zs[j[have], self.t, self.rows[have]]
        zr[have] = self.zr[j[have], self.t, self.rows[have]]
        bi = list(m.layout.binary_idx)
        obs = np.asarray(obs, np.float32)
        nxt = p.next_mean[k, rows] + np.sqrt(p.next_var[k, rows]) * z
        u = rng.random((b, len(bi))).astype(np.float32)
        u[have] = z[have][:, bi]
        nxt[:, bi] = (u < p.next_mean[k, rows][:, bi]).astype(np.float32)
        rew = p.rew_mean[k, rows] + np.sqrt(p.rew_var[k, rows]) * zr
        nxt = m.clip_state(obs, nxt)
        nxt = m.clip_state(obs, m.layout.apply_sums(obs, np.asarray(act, np.float32), nxt))
        nxt = m.clip_state(obs, m.apply_ratios(nxt))
        cost = p.cost_prob[k, rows]
        return StepSample(next_obs=nxt, rew=rew.astype(np.float32), cost_prob=cost, death_prob=p.death_prob[k, rows],
                          discharge_prob=p.discharge_prob[k, rows], uncertainty=np.zeros(b, np.float32),
                          cost_prob_max=cost, cost_prob_sd=np.zeros_like(cost))


class TrackedEnv(WorldModelEnv):
    """Tells a :class:`Replayed` model which start state and step each live row is at."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        obs, info = super().reset(seed=seed, options=options)
        self._index = np.asarray(info["start_index"])
        return obs, info

    def step(self, actions: np.ndarray) -> Any:
        self.model.rows, self.model.t = self._index[self._active], self._t
        return super().step(actions)


def replay_values(model: Replayed, starts: np.ndarray, horizons: np.ndarray, act: Any, rollouts: int,
                  env_seed: int, act_rng: np.random.Generator) -> np.ndarray:
    """(1 + C,) mean undiscounted reward and cost returns over the starts (:func:`model_based.stay_values`)."""
    n = len(starts)
    env = TrackedEnv(model, starts, n * rollouts, EnvConfig(horizon=int(horizons.max()), mode="random_elite"),
                     horizons=horizons)
    ro = rollout(env, act, env_seed, start_index=np.tile(np.arange(n), rollouts), act_rng=act_rng)
    live = ro.active.astype(np.float64)
    return np.r_[(ro.rew * live).sum(0).mean(), (ro.cost * live[..., None]).sum(0).mean(0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_common.add_args(ap)
    probe_common.add_scoring_args(ap, "mb_replay")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    ps = probe_common.load(args)
    cfg, test, world, table, pols, truth = ps.cfg, ps.test, ps.world, ps.table, ps.policies, ps.truth
    if cfg.model.mode != "random_elite":
        raise SystemExit(f"replay is written for ope.model.mode random_elite, the root has {cfg.model.mode}")
    costs = list(table.cost_columns)
    feats = list(world.state_features)
    admitted = probe_common.admitted_by(args.admitted)
    plain = probe_common.plain_models(ps, args.fits)
    data = table.transitions(test, "test")
    horizon = int(world.horizons.max())
    start, t = stay_steps(test)
    abduct_rng = np.random.default_rng(world.env_seed)
    replayed = [Replayed(m, *abduct(m, data, start, t, len(world.starts), horizon, abduct_rng)) for m in plain]
    variants = {"none": probe_common.mb_values(ps, plain), "replay": {}}
    for name in truth:
        act = probe_common.act_fn(pols[name], feats)
        per_fit = []
        for model in replayed:
            s_act, _ = ope_stage.policy_streams(cfg.seed, name)[2].spawn(2)
            per_fit.append(replay_values(model, world.starts, world.horizons, act, cfg.model.rollouts,
                                         world.env_seed, np.random.default_rng(s_act)))
        variants["replay"][name] = [float(x) for x in np.mean(per_fit, axis=0)]
    probe_common.write_variants(
        "probe_mb_replay.py", args.out, t0, "Model-based OPE replaying each stay's abducted noise",
        f"Values averaged over {len(plain)} evaluation fit(s) (`mb`'s fits, seeds and rollouts); *none*: `mb` as "
        f"shipped; *replay*: each episode's Gaussian draws are its start stay's abducted residuals; truth from "
        f"{args.pages} (10,000 patients, seed 13); *admitted*: the policies {args.admitted or '–'} admits.",
        variants, truth, costs, admitted)


if __name__ == "__main__":
    main()
