"""Small contract-shaped trajectory parquets with a known hurdle-Gaussian behaviour policy (shared by
tests/agents and tests/ope; the fixtures are re-exported by their conftest.py files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ogsrl import features
from ogsrl.agents import common

STATE = ("age", "mechvent", "gcs", "fio2", "spo2", "urine_step")
COSTS = ("cost_spo2_low", "cost_urine_low")


def true_behaviour(df: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """One-component hurdle parameters: mixture logits (B, 1) and (logit P(a=0), μ, log σ) of the scaled action, each
    (B, 1, 2). Fluids follow MAP (not a state column), NE follows SpO2."""
    m, s = df["map"].to_numpy(np.float64), df["spo2"].to_numpy(np.float64)
    logit0 = np.stack([-0.5 + 0.15 * (m - 80.0), 0.5 + 0.3 * (s - 97.0)], axis=1)
    mu = np.stack([0.55 + 0.006 * (80.0 - m), 0.5 + 0.01 * (97.0 - s)], axis=1)
    log_std = np.log(np.tile([0.08, 0.06], (len(df), 1)))
    return np.zeros((len(df), 1)), logit0[:, None, :], mu[:, None, :], log_std[:, None, :]


def make_split(n_stays: int, n_steps: int, rng: np.random.Generator, split: str) -> pd.DataFrame:
    """One split: every feature drawn around its normal value, actions from :func:`true_behaviour`."""
    n = n_stays * n_steps
    df = pd.DataFrame(
        {
            "stay_key": np.repeat([f"{split}{i:05d}" for i in range(n_stays)], n_steps),
            "step": np.tile(np.arange(n_steps, dtype=np.int16), n_stays),
        }
    )
    df["hours_since_onset"] = (-24.0 + 4.0 * df["step"]).astype("float32")
    for f in features.FEATURES:
        spread = 0.1 * (f.high - f.low) if f.kind != "binary" else 0.0
        vals = rng.normal(f.normal, spread, n) if f.kind != "binary" else rng.integers(0, 2, n)
        df[f.name] = np.clip(vals, f.low, f.high).astype("float32")
        df[f"next_{f.name}"] = df[f.name]
    acts = common.hurdle_sample(*true_behaviour(df), rng)
    df["fluid_ml"] = acts[:, 0].astype("float32")
    df["nee_max"] = acts[:, 1].astype("float32")
    df["action_bin"] = np.int16(-1)
    df["reward"] = (-5.0 + 0.002 * acts[:, 0] + rng.normal(0, 1, n)).astype("float32")
    df["cost_spo2_low"] = (df["spo2"] < 92).astype("float32")
    df["cost_urine_low"] = (rng.uniform(size=n) < 0.2).astype("float32")
    df["cost_total"] = df["cost_spo2_low"] + df["cost_urine_low"]
    df["done"] = df["step"] == n_steps - 1
    df["death_in_step"] = False
    df["died_in_hosp"] = False
    df["died_90d"] = False
    df["split"] = split
    return df


def write_split(df: pd.DataFrame, path: Path, state: tuple[str, ...] = STATE) -> Path:
    """Write with the contract's key-value metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {
        b"ogsrl.state_features": json.dumps(list(state)).encode(),
        b"ogsrl.action_columns": json.dumps(list(features.ACTIONS)).encode(),
        b"ogsrl.cost_columns": json.dumps([*COSTS, "cost_total"]).encode(),
        b"ogsrl.contract_version": b"1",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}), path)
    return path


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def traj_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root with data/trajectories/{train,val,test}.parquet (120/40/40 stays × 5 steps)."""
    root = tmp_path_factory.mktemp("proj")
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("val", 40), ("test", 40)):
        write_split(make_split(n, 5, rng, split), root / "data" / "trajectories" / f"{split}.parquet")
    return root
