"""A small contract-shaped trajectory table (docs/data-contract.md §3) from a known toy system.

Used by the world-model tests and benchmarks until (and besides) the real extraction: the columns, dtypes and parquet
metadata follow the trajectory contract, and the dynamics are a fixed, mildly non-linear system of the canonical
features (``ogsrl.features``) driven by the two actions, so a model fitted on it can be checked against known truth.
It is a test/benchmark fixture, not a patient simulator (that is ``ogsrl.synth``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ogsrl import features as F
from ogsrl.io import write_parquet

COST_RULES: tuple[tuple[str, str, float], ...] = (("spo2_low", "spo2", 92.0), ("urine_low", "urine_rate", 0.5))
"""(rule name, feature, threshold) of the toy costs; a cost is 1 when the feature is below the threshold."""
STEP_H = 4.0


def _sofa_proxy(s: dict[str, np.ndarray]) -> np.ndarray:
    """A SOFA-like score (0–24) from the toy state; only its monotone shape matters here."""
    resp = np.clip((400.0 - s["pf_ratio"]) / 80.0, 0, 4)
    cardio = np.clip((70.0 - s["map"]) / 5.0, 0, 4)
    cns = np.clip((15.0 - s["gcs"]) / 3.0, 0, 4)
    liver = np.clip(np.log(s["bilirubin"] / 1.2 + 1e-3) * 2.0, 0, 4)
    renal = np.clip((s["creatinine"] - 1.2) * 1.5, 0, 4)
    coag = np.clip((150.0 - s["platelets"]) / 30.0, 0, 4)
    return resp + cardio + cns + liver + renal + coag


def _clip_and_derive(s: dict[str, np.ndarray], sev: np.ndarray) -> None:
    """Clip every feature of ``s`` to its plausible range, then set the derived ones (P/F, HR, SBP, SOFA) in place."""
    for f in F.FEATURES:
        s[f.name] = np.clip(s[f.name], f.low, f.high)
    s["pf_ratio"] = np.clip(s["pao2"] / s["fio2"], 20, 3000)
    s["hr"] = np.clip(120 - 0.5 * s["map"] + 8 * sev, 20, 250)
    s["sbp"] = np.clip(1.45 * s["map"] + 5, 40, 300)
    s["sofa"] = np.clip(_sofa_proxy(s), 0, 24)


def toy_trajectories(
    n_stays: int,
    rng: np.random.Generator,
    n_steps: int = 20,
    discharge_hazard: float = 0.03,
) -> pd.DataFrame:
    """Simulate ``n_stays`` stays of the toy system; one row per (stay, step), all columns of the contract.

    Args:
        n_stays: number of stays.
        rng: the only source of randomness.
        n_steps: horizon; a stay also ends on death or (hazard ``discharge_hazard`` per step) discharge.
        discharge_hazard: per-step probability of leaving the ICU alive.

    Returns:
        DataFrame with ``stay_key, step, hours_since_onset``, every feature in ``features.ALL`` and its ``next_``
        column, ``fluid_ml, nee_max, action_bin, reward, cost_<rule>, cost_total, done, death_in_step,
        died_in_hosp, died_90d, split`` (split is left ``"train"``; see :func:`write_toy_splits`).
    """
    if n_stays < 1:
        raise ValueError(f"n_stays must be >= 1, got {n_stays}")
    n = n_stays
    s: dict[str, np.ndarray] = {}
    for f in F.FEATURES:
        s[f.name] = np.full(n, f.normal, dtype=np.float64)
    s["gender"] = (rng.random(n) < 0.45).astype(float)
    s["readmission"] = (rng.random(n) < 0.15).astype(float)
    s["age"] = np.clip(rng.normal(66, 14, n), 18, 91)
    s["weight"] = np.clip(rng.normal(80, 18, n), 40, 200)
    s["mechvent"] = (rng.random(n) < 0.3).astype(float)
    sev = rng.gamma(2.0, 0.5, n)  # latent severity
    s["map"] = 78 - 6 * sev + rng.normal(0, 6, n)
    s["lactate"] = 1.0 + 1.2 * sev + rng.gamma(1.0, 0.3, n)
    s["fio2"] = np.where(s["mechvent"] > 0, 0.4 + 0.1 * sev, 0.21)
    s["pao2"] = 95 - 8 * sev + rng.normal(0, 10, n)
    s["spo2"] = 97 - 1.5 * sev + rng.normal(0, 1.2, n)
    s["gcs"] = 15 - 1.5 * sev
    s["bilirubin"] = 0.6 + 0.5 * sev
    s["creatinine"] = 0.9 + 0.4 * sev
    s["platelets"] = 250 - 40 * sev
    s["urine_step"] = np.clip(s["weight"] * STEP_H * (1.2 - 0.3 * sev), 0, None)
    alive = np.ones(n, dtype=bool)
    died = np.zeros(n, dtype=bool)
    rows: list[dict[str, np.ndarray]] = []
    for k in range(n_steps):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        _clip_and_derive(s, sev)
        cur = {name: v[idx].copy() for name, v in s.items()}
        # behaviour policy: more fluid and pressor when MAP is low, with noise
        m = idx.size
        hypo = np.clip((70.0 - cur["map"]) / 10.0, 0, None)
        fluid = np.clip(rng.gamma(1.5, 200.0, m) * (1 + hypo), 0, 10000)
        nee = np.where(rng.random(m) < 0.15 + 0.5 * np.minimum(hypo, 1), rng.gamma(2.0, 0.05, m) * (1 + hypo), 0.0)
        nee = np.clip(nee, 0, 5)
        # dynamics (mildly non-linear in MAP → urine and in pressor response)
        sv = sev[idx]
        nxt = {name: v.copy() for name, v in cur.items()}
        nxt["map"] = (cur["map"] + 0.3 * (80 - cur["map"]) + 0.004 * fluid + 25 * np.tanh(2 * nee)
                      - 2.0 * sv + rng.normal(0, 3, m))
        perf = 1 / (1 + np.exp(-(nxt["map"] - 62) / 4))  # renal perfusion
        nxt["urine_step"] = np.clip(cur["weight"] * STEP_H * (1.6 * perf - 0.2 * sv) + 0.1 * fluid
                                    + rng.normal(0, 20, m), 0, None)
        nxt["lactate"] = np.clip(cur["lactate"] + 0.25 * (1.0 + sv - cur["lactate"]) + 0.8 * (1 - perf)
                                 + rng.normal(0, 0.2, m), 0.1, 30)
        nxt["spo2"] = np.clip(cur["spo2"] + 0.4 * (96 - cur["spo2"]) + 2.5 * cur["mechvent"] - 1.0 * sv
                              + rng.normal(0, 1.0, m), 50, 100)
        nxt["pao2"] = np.clip(cur["pao2"] + 0.3 * (95 - cur["pao2"]) + 20 * cur["mechvent"] - 4 * sv
                              + rng.normal(0, 6, m), 20, 700)
        nxt["mechvent"] = np.where(rng.random(m) < 0.08 + 0.1 * (nxt["spo2"] < 92), 1.0 - cur["mechvent"],
                                   cur["mechvent"])
        nxt["fio2"] = np.clip(np.where(nxt["mechvent"] > 0, 0.35 + 0.05 * sv, 0.21), 0.21, 1.0)
        nxt["gcs"] = np.clip(cur["gcs"] + 0.2 * (15 - 1.5 * sv - cur["gcs"]) + rng.normal(0, 0.3, m), 3, 15)
        nxt["bilirubin"] = np.clip(cur["bilirubin"] * np.exp(rng.normal(0.01 * sv, 0.05, m)), 0.1, 70)
        nxt["creatinine"] = np.clip(cur["creatinine"] + 0.05 * (1 - perf) + rng.normal(0, 0.03, m), 0.1, 20)
        nxt["platelets"] = np.clip(cur["platelets"] + rng.normal(-2 * sv, 5, m), 1, 2000)
        nxt["temp_c"] = np.clip(cur["temp_c"] + 0.3 * (37.5 - cur["temp_c"]) + rng.normal(0, 0.2, m), 25, 45)
        nxt["rr"] = np.clip(cur["rr"] + 0.3 * (18 + 2 * sv - cur["rr"]) + rng.normal(0, 1, m), 3, 70)
        nxt["urine_cum"] = cur["urine_cum"] + nxt["urine_step"]
        nxt["fluid_cum"] = cur["fluid_cum"] + fluid
        _clip_and_derive(nxt, sv)
        hazard = 1 / (1 + np.exp(-(nxt["sofa"] - 16) / 1.5)) * 0.5
        death = rng.random(m) < hazard
        discharge = rng.random(m) < discharge_hazard
        done = death | discharge | (k == n_steps - 1)
        reward = np.where(death, -12.5, -np.clip(nxt["sofa"], 2.5, 12.5))
        urine_rate = nxt["urine_step"] / cur["weight"] / STEP_H
        costs = {"spo2_low": (nxt["spo2"] < 92.0).astype(float), "urine_low": (urine_rate < 0.5).astype(float)}
        row = {"_stay": idx, "step": np.full(m, k), "fluid_ml": fluid, "nee_max": nee, "reward": reward,
               "done": done, "death_in_step": death}
        row.update({name: cur[name] for name in F.ALL})
        row.update({f"next_{name}": nxt[name] for name in F.ALL})
        row.update({f"cost_{r}": c for r, c in costs.items()})
        rows.append(row)
        for name in F.ALL:
            s[name][idx] = nxt[name]
        died[idx[death]] = True
        alive[idx[done]] = False
    frame = pd.DataFrame({key: np.concatenate([r[key] for r in rows]) for key in rows[0]})
    frame = frame.sort_values(["_stay", "step"], kind="stable").reset_index(drop=True)
    out = pd.DataFrame({
        "stay_key": [f"toy{i:08d}" for i in frame["_stay"]],
        "step": frame["step"].astype(np.int16),
        "hours_since_onset": (-24.0 + STEP_H * frame["step"]).astype(np.float32),
    })
    for name in F.ALL:
        out[name] = frame[name].astype(np.float32)
    for name in F.ALL:
        out[f"next_{name}"] = frame[f"next_{name}"].astype(np.float32)
    out["fluid_ml"] = frame["fluid_ml"].astype(np.float32)
    out["nee_max"] = frame["nee_max"].astype(np.float32)
    out["action_bin"] = np.full(len(frame), -1, dtype=np.int16)
    out["reward"] = frame["reward"].astype(np.float32)
    for rule, _, _ in COST_RULES:
        out[f"cost_{rule}"] = frame[f"cost_{rule}"].astype(np.float32)
    out["cost_total"] = sum(out[f"cost_{r}"] for r, _, _ in COST_RULES).astype(np.float32)
    out["done"] = frame["done"].astype(bool)
    out["death_in_step"] = frame["death_in_step"].astype(bool)
    out["died_in_hosp"] = died[frame["_stay"].to_numpy()]
    out["died_90d"] = out["died_in_hosp"]
    out["split"] = "train"
    return out


def write_toy_splits(
    root: Path,
    n_stays: int,
    seed: int,
    state_features: tuple[str, ...] = F.PAPER_STATE,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    n_steps: int = 20,
) -> dict[str, Path]:
    """Write ``root/data/trajectories/{train,val,test}.parquet`` of the toy system with contract metadata."""
    rng = np.random.default_rng(seed)
    frame = toy_trajectories(n_stays, rng, n_steps=n_steps)
    keys = np.array(sorted(frame["stay_key"].unique()))
    order = rng.permutation(len(keys))
    n_train = int(round(fractions[0] * len(keys)))
    n_val = int(round(fractions[1] * len(keys)))
    split_of = {}
    for pos, i in enumerate(order):
        split_of[keys[i]] = "train" if pos < n_train else ("val" if pos < n_train + n_val else "test")
    frame["split"] = frame["stay_key"].map(split_of)
    meta = {
        b"ogsrl.state_features": json.dumps(list(state_features)).encode(),
        b"ogsrl.action_columns": json.dumps(list(F.ACTIONS)).encode(),
        b"ogsrl.cost_columns": json.dumps([f"cost_{r}" for r, _, _ in COST_RULES]).encode(),
        b"ogsrl.contract_version": b"1",
        b"ogsrl.n_steps": json.dumps(n_steps).encode(),
        b"ogsrl.step_h": json.dumps(STEP_H).encode(),
    }
    out = {}
    for split in ("train", "val", "test"):
        part = frame[frame["split"] == split].reset_index(drop=True)
        table = pa.Table.from_pandas(part, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        path = Path(root) / "data" / "trajectories" / f"{split}.parquet"
        write_parquet(path, table)
        out[split] = path
    return out
