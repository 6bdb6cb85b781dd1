"""A small non-MIMIC ICU-like MDP with exactly known policy values (`ogsrl synth-mdp`; docs/data-contract.md §4).

It exercises bring-your-own data (contract v2): its own feature names and units, a terminal survival reward, one
0/1 cost, and either discrete actions or a two-dimensional continuous dose.

Latent chain. A stay has a static frailty ``f ∈ {0, 1}`` (P(f = 1) = 0.3) and a severity ``k ∈ {0 … 5}``: 0 is
recovery (the stay ends alive, discharged), 5 is death (the stay ends), 1 … 4 are alive in the unit; ``k₀`` is
drawn from ``START``. A treatment has a fluid effect ``e_f ∈ [0, 1]`` and a vasopressor effect ``e_p ∈ [0, 1]``
(discrete actions: ids 0 none, 1 fluids, 2 pressor, 3 both; continuous: ``e_f = bolus_ml / 2000``,
``e_p = pressor_rate / 1``, clipped to the bounds). Per step, with [·] the indicator,

    p_up   = 0.10 + 0.20·e_f·[1 ≤ k ≤ 3] + 0.30·e_p·[k ≥ 3]                    (k → k − 1)
    p_down = 0.10 + 0.04·k + 0.08·f + 0.15·e_p·[k ≤ 1] + 0.10·e_f·[k = 4] − 0.10·e_p·[k ≥ 3]   (k → k + 1)
    p_stay = 1 − p_up − p_down                                                 (k → k)

(all within [0.10, 0.76] for every k, f and e ∈ [0, 1]²). Both are *affine* in (e_f, e_p), so for a stochastic
policy ``E_a P(k' | k, a) = P(k' | k, E_a e(a))``: a continuous policy's value depends only on its mean effect per
latent state. A stay ends on recovery, death or after ``horizon`` steps; the reward is 0 except on the last step:
``+R`` alive, ``−R`` dead. The cost ``cost_low_perfusion = [k' ≥ 3]`` (the next state is severe or death).

Observations (what the table and the policies see): ``perfusion_index = 6 − 1.2·k + ε₁`` (%), ``organ_score =
2·k + f + ε₂`` (points), ``frail = f`` (binary), with fresh ``ε₁ ~ N(0, 0.3²)``, ``ε₂ ~ N(0, 0.6²)`` each step,
clipped to the declared ranges.

Exact values. A memoryless policy π(a | o) acts on the latent state through its noise average
``π̄(a | f, k) = E_ε π(a | o(f, k, ε))`` (discrete: a probability vector; continuous: the mean effect), since the
noise is drawn afresh each step. :func:`latent_policy` computes π̄ by averaging over a fixed, seeded set of noise
draws (the only approximation: its Monte-Carlo error, ~1/√draws); :func:`evaluate` then gives, by backward
induction over t = H−1 … 0 on the 2 × 4 live latent states,

    V_t(f, k) = Σ_a π̄(a|f,k) Σ_k' P(k'|f,k,a) · [ r(k', t) + [k' live and t < H−1] · V_{t+1}(f, k') ]

with r(k', t) = −R if k' = 5, +R if k' = 0 or t = H−1, else 0; the cost return and the death probability follow
the same recursion with their own per-step terms. The value of a policy is ``Σ_{f,k} P(f) START(k) V_0(f, k)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from ogsrl.data.schema import METADATA_KEY, ContinuousAction, DiscreteAction, Schema, StateFeature

FloatArray = npt.NDArray[np.floating]

K_DEAD = 5
"""severity of death (absorbing); 0 is recovery"""
LIVE = (1, 2, 3, 4)
"""severities of a stay still in the unit"""
START = np.array([0.0, 0.35, 0.35, 0.2, 0.1, 0.0])
"""P(k₀) over severities 0 … 5"""
P_FRAIL = 0.3
"""P(f = 1)"""
EFFECTS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
"""(e_f, e_p) of the discrete action ids"""
LABELS = ("none", "fluids", "pressor", "fluids+pressor")
"""labels of the discrete action ids"""
DOSE_MAX = np.array([2000.0, 1.0])
"""continuous action bounds: bolus_ml (mL per step), pressor_rate (ug/kg/min); effect = dose / max"""
NOISE = np.array([0.3, 0.6])
"""observation noise s.d. of perfusion_index and organ_score"""
STATE = ("perfusion_index", "organ_score", "frail")
COST = "cost_low_perfusion"
META_KEY = "ogsrl.mdp"
"""parquet metadata key holding the generating config (JSON), from which the true values can be recomputed"""


@dataclass(frozen=True, slots=True)
class MDPConfig:
    """The generator's settings (recorded in the parquet metadata ``ogsrl.mdp``)."""

    actions: Literal["discrete", "continuous"] = "discrete"
    """discrete (4 labelled ids) or continuous (bolus_ml, pressor_rate)"""
    stays: int = 2000
    """logged stays"""
    horizon: int = 10
    """steps per stay at most (≤ params cohort.n_steps)"""
    reward: float = 10.0
    """R: +R alive, −R dead on the last step"""
    seed: int = 0
    """seed of the logged data"""

    def __post_init__(self) -> None:
        if self.actions not in ("discrete", "continuous"):
            raise ValueError(f"actions must be 'discrete' or 'continuous', got {self.actions!r}")
        if self.stays < 1 or self.horizon < 1 or self.reward <= 0:
            raise ValueError(f"stays, horizon and reward must be positive, got {self.stays}, {self.horizon}, "
                             f"{self.reward}")


def schema(actions: str) -> Schema:
    """The v2 schema of the generated table."""
    action: ContinuousAction | DiscreteAction
    if actions == "discrete":
        action = DiscreteAction("treatment", len(LABELS), LABELS)
    else:
        action = ContinuousAction(("bolus_ml", "pressor_rate"), (0.0, 0.0), tuple(DOSE_MAX.tolist()),
                                  ("mL per step", "ug/kg/min"))
    return Schema((StateFeature("perfusion_index", "%", 0.0, 8.0), StateFeature("organ_score", "points", 0.0, 13.0),
                   StateFeature("frail", "1=frail", 0.0, 1.0, "binary")),
                  action, "reward", (COST,), ("died",))


# ---- dynamics ----------------------------------------------------------------------------------------------------
def transition(frail: npt.ArrayLike, k: npt.ArrayLike, effect: FloatArray) -> FloatArray:
    """(p_up, p_stay, p_down), shape (B, 3), for latent states ``(frail, k)`` (B,) and effects ``(B, 2)``."""
    f = np.asarray(frail, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    ef, ep = effect[:, 0], effect[:, 1]
    up = 0.10 + 0.20 * ef * ((k >= 1) & (k <= 3)) + 0.30 * ep * (k >= 3)
    down = (0.10 + 0.04 * k + 0.08 * f + 0.15 * ep * (k <= 1) + 0.10 * ef * (k == 4) - 0.10 * ep * (k >= 3))
    return np.stack([up, 1.0 - up - down, down], axis=1)


def observe(frail: npt.ArrayLike, k: npt.ArrayLike, noise: FloatArray) -> FloatArray:
    """Observations ``(B, 3)`` (``STATE`` order) of latent states with standard-normal ``noise (B, 2)``."""
    f = np.asarray(frail, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    perf = np.clip(6.0 - 1.2 * k + NOISE[0] * noise[:, 0], 0.0, 8.0)
    organ = np.clip(2.0 * k + f + NOISE[1] * noise[:, 1], 0.0, 13.0)
    return np.stack([perf, organ, f], axis=1)


def effect_of(actions: FloatArray, kind: str) -> FloatArray:
    """(e_f, e_p) per row: discrete ids ``(B,)`` or doses ``(B, 2)`` (clipped to their bounds)."""
    if kind == "discrete":
        return EFFECTS[np.asarray(actions, dtype=np.int64).reshape(-1)]
    return np.clip(np.asarray(actions, dtype=np.float64).reshape(-1, 2), 0.0, DOSE_MAX) / DOSE_MAX


# ---- the logging (clinician) policy ------------------------------------------------------------------------------
def clinician(obs: FloatArray, kind: str, rng: np.random.Generator) -> FloatArray:
    """The logging policy on observations: escalate as perfusion falls. Discrete: a softmax over the ids with
    every id ≥ ~4 % likely; continuous: per dose a zero atom and a clipped Gaussian amount."""
    sev = np.clip((6.0 - obs[:, 0]) / 1.2, 0.0, 5.0)  # the clinicians' severity estimate from perfusion
    if kind == "discrete":
        return rng_choice(clinician_probs(obs), rng)
    p_fluid = np.clip(0.15 + 0.2 * sev, 0.0, 0.9)
    p_press = np.clip(-0.35 + 0.3 * sev, 0.05, 0.9)
    fluid = np.where(rng.random(len(obs)) < p_fluid, np.clip(rng.normal(300 + 250 * sev, 250), 10, 2000), 0.0)
    press = np.where(rng.random(len(obs)) < p_press, np.clip(rng.normal(0.1 + 0.12 * sev, 0.1), 0.005, 1.0), 0.0)
    return np.stack([fluid, press], axis=1)


def clinician_probs(obs: FloatArray) -> FloatArray:
    """The discrete logging policy's probabilities ``(B, 4)`` on observations."""
    sev = np.clip((6.0 - obs[:, 0]) / 1.2, 0.0, 5.0)
    logits = np.stack([1.5 - 0.8 * sev, 0.4 + 0.1 * sev, -1.2 + 0.5 * sev, -2.0 + 0.7 * sev], axis=1)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def rng_choice(probs: FloatArray, rng: np.random.Generator) -> FloatArray:
    """One id per row of ``probs (B, n)`` by inverse CDF."""
    u = rng.random(len(probs))[:, None]
    return np.minimum((np.cumsum(probs, axis=1) < u).sum(axis=1), probs.shape[1] - 1)


# ---- the logged table --------------------------------------------------------------------------------------------
def simulate(cfg: MDPConfig) -> pd.DataFrame:
    """The logged table (contract v2, no ``split`` column: the pipeline splits by stay)."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.stays
    frail = (rng.random(n) < P_FRAIL).astype(np.float64)
    k = rng.choice(len(START), size=n, p=START)
    obs = observe(frail, k, rng.standard_normal((n, 2)))
    alive = np.ones(n, dtype=bool)
    rows: list[pd.DataFrame] = []
    for t in range(cfg.horizon):
        idx = np.flatnonzero(alive)
        act = clinician(obs[idx], cfg.actions, rng)
        probs = transition(frail[idx], k[idx], effect_of(act, cfg.actions))
        move = rng_choice(probs, rng)  # 0 up, 1 stay, 2 down
        k_next = k[idx] - 1 + move
        nxt = observe(frail[idx], k_next, rng.standard_normal((len(idx), 2)))
        dead, home = k_next == K_DEAD, k_next == 0
        done = dead | home | (t == cfg.horizon - 1)
        frame = {"stay": idx, "step": np.full(len(idx), t, dtype=np.int16)}
        for j, name in enumerate(STATE):
            frame[name] = obs[idx, j].astype(np.float32)
            frame[f"next_{name}"] = nxt[:, j].astype(np.float32)
        if cfg.actions == "discrete":
            frame["treatment"] = act.astype(np.int16)
        else:
            frame["bolus_ml"] = act[:, 0].astype(np.float32)
            frame["pressor_rate"] = act[:, 1].astype(np.float32)
        frame["reward"] = np.where(done, np.where(dead, -cfg.reward, cfg.reward), 0.0).astype(np.float32)
        frame[COST] = (k_next >= 3).astype(np.float32)
        frame["done"] = done
        frame["_dead"] = dead
        rows.append(pd.DataFrame(frame))
        k[idx], obs[idx] = k_next, nxt
        alive[idx[done]] = False
    df = pd.concat(rows, ignore_index=True)
    died = df.groupby("stay")["_dead"].transform("max").to_numpy(bool)
    df["died"] = died
    df["stay_key"] = [f"mdp{s:06d}" for s in df["stay"].to_numpy()]
    df = df.drop(columns=["stay", "_dead"]).sort_values(["stay_key", "step"], kind="stable").reset_index(drop=True)
    cols = ["stay_key", "step", *STATE, *(f"next_{s}" for s in STATE),
            *(["treatment"] if cfg.actions == "discrete" else ["bolus_ml", "pressor_rate"]), "reward", COST, "done",
            "died"]
    return df[cols]


def write(cfg: MDPConfig, out: str | Path) -> dict[str, Any]:
    """Write the logged table with its schema (``ogsrl.schema``) and config (``ogsrl.mdp``) in the parquet
    metadata, atomically. Returns a summary with the logging policy's exact values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ogsrl.io import atomic_path

    df = simulate(cfg)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({METADATA_KEY: schema(cfg.actions).to_json(),
                                           META_KEY: json.dumps(asdict(cfg), sort_keys=True)})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    truth = evaluate(latent_policy(behaviour_policy(cfg.actions), cfg.actions), cfg)
    per = df.groupby("stay_key").agg(ret=("reward", "sum"), cost=(COST, "sum"), died=("died", "first"))
    return {"stays": int(len(per)), "rows": int(len(df)), "actions": cfg.actions,
            "logged_return_mean": round(float(per["ret"].mean()), 6),
            "logged_cost_mean": round(float(per["cost"].mean()), 6),
            "logged_mortality": round(float(per["died"].mean()), 6),
            "behaviour_true": {k: round(v, 6) for k, v in truth.items()}}


def read_config(path: str | Path) -> MDPConfig:
    """The generating config of a table written by :func:`write` (ValueError when it has none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(META_KEY.encode())
    if raw is None:
        raise ValueError(f"{Path(path).name}: no {META_KEY} metadata (not written by `ogsrl synth-mdp`)")
    return MDPConfig(**json.loads(raw))


# ---- exact evaluation --------------------------------------------------------------------------------------------
PolicyFn = Callable[[FloatArray], FloatArray]
"""observations (B, 3) → discrete: probabilities (B, 4); continuous: doses (B, 2) (draws or means)"""


def behaviour_policy(kind: str, seed: int = 0) -> PolicyFn:
    """The logging policy as a :data:`PolicyFn` (continuous: seeded dose draws, averaged by :func:`latent_policy`)."""
    if kind == "discrete":
        return clinician_probs
    rng = np.random.default_rng(seed)
    return lambda obs: clinician(obs, "continuous", rng)


def latent_policy(policy: PolicyFn, kind: str, draws: int = 4000, seed: int = 0) -> FloatArray:
    """π̄ over the live latent states: ``(2, 6, 4)`` id probabilities or ``(2, 6, 2)`` mean effects (rows of
    severities 0 and 5 unused), averaging ``policy`` over ``draws`` seeded observation-noise draws per state."""
    rng = np.random.default_rng(seed)
    width = len(LABELS) if kind == "discrete" else 2
    out = np.zeros((2, K_DEAD + 1, width))
    noise = rng.standard_normal((draws, 2))
    for f in (0, 1):
        for k in LIVE:
            obs = observe(np.full(draws, f), np.full(draws, k), noise)
            got = np.asarray(policy(obs), dtype=np.float64)
            if kind == "discrete":
                if got.ndim == 1:  # sampled ids → frequencies
                    got = np.eye(len(LABELS))[got.astype(np.int64)]
                out[f, k] = got.mean(axis=0)
            else:
                out[f, k] = effect_of(got, "continuous").mean(axis=0)
    return out


def evaluate(pi: FloatArray, cfg: MDPConfig) -> dict[str, float]:
    """Exact expected return, cost return and death probability of a latent policy ``pi`` (:func:`latent_policy`),
    by backward induction (module docstring)."""
    h, r = cfg.horizon, cfg.reward
    v = np.zeros((3, 2, K_DEAD + 1))  # (return, cost, death) × frail × severity at t + 1
    for t in reversed(range(h)):
        last = t == h - 1
        new = np.zeros_like(v)
        for f in (0, 1):
            for k in LIVE:
                if cfg.actions == "discrete":
                    p = np.einsum("a,aj->j", pi[f, k], transition(np.full(4, f), np.full(4, k), EFFECTS))
                else:
                    p = transition([f], [k], pi[f, k][None])[0]
                for move, pk in enumerate(p):
                    k2 = k - 1 + move
                    dead, ends = k2 == K_DEAD, k2 in (0, K_DEAD) or last
                    rew = (-r if dead else r) if ends else 0.0
                    cont = 0.0 if ends else 1.0
                    new[0, f, k] += pk * (rew + cont * v[0, f, k2])
                    new[1, f, k] += pk * (float(k2 >= 3) + cont * v[1, f, k2])
                    new[2, f, k] += pk * (float(dead) + cont * v[2, f, k2])
        v = new
    w = np.array([1 - P_FRAIL, P_FRAIL])[:, None] * START[None, :]  # P(f, k₀)
    return {"return": float((w * v[0]).sum()), "cost": float((w * v[1]).sum()), "mortality": float((w * v[2]).sum())}


def optimal(cfg: MDPConfig) -> tuple[FloatArray, dict[str, float]]:
    """Optimal discrete control of the latent chain by value iteration, ``V*_t(f,k) = max_a Σ_k' P(k'|f,k,a)·[r +
    V*_{t+1}(f,k')]``: an upper bound on the expected return of every policy (observations are noisier than k).
    Returns (the greedy id per (f, k) at t = 0, ``{"return": V*}``)."""
    h, r = cfg.horizon, cfg.reward
    v = np.zeros((2, K_DEAD + 1))
    greedy = np.zeros((2, K_DEAD + 1), dtype=np.int64)
    for t in reversed(range(h)):
        last = t == h - 1
        new = np.zeros_like(v)
        for f in (0, 1):
            for k in LIVE:
                probs = transition(np.full(4, f), np.full(4, k), EFFECTS)  # (actions, moves)
                q = np.zeros(4)
                for move in range(3):
                    k2 = k - 1 + move
                    ends = k2 in (0, K_DEAD) or last
                    q += probs[:, move] * (((-r if k2 == K_DEAD else r) if ends else 0.0) + (0 if ends else v[f, k2]))
                new[f, k] = q.max()
                greedy[f, k] = int(q.argmax())
        v = new
    w = np.array([1 - P_FRAIL, P_FRAIL])[:, None] * START[None, :]
    return greedy, {"return": float((w * v).sum())}


def policy_value(cfg: MDPConfig, policy: Any, draws: int = 4000, seed: int = 0) -> dict[str, float]:
    """Exact return, cost return and mortality on the MDP of a saved policy (anything with ``act(obs (B, 3), rng)``
    on the ``STATE`` columns: a trained, guarded or served policy). Its actions are drawn ``draws`` times per latent
    state with a seeded generator (:func:`latent_policy`; discrete: id frequencies, continuous: mean effect), then
    evaluated by backward induction."""
    names = tuple(getattr(policy, "feature_names", STATE))
    missing = [n for n in names if n not in STATE]
    if missing:
        raise ValueError(f"the policy reads column(s) {missing}; the MDP observes {list(STATE)}")
    cols = [STATE.index(n) for n in names]
    rng = np.random.default_rng(seed)

    def act(obs: FloatArray) -> FloatArray:
        a = np.asarray(policy.act(obs[:, cols], rng), dtype=np.float64)
        return a.reshape(-1) if cfg.actions == "discrete" else a.reshape(-1, 2)

    return evaluate(latent_policy(act, cfg.actions, draws, seed), cfg)
