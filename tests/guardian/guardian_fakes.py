"""Small synthetic contract-shaped guardian inputs (docs/data-contract.md §3) shared by the guardian tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ogsrl.features import ACTIONS, PAPER_STATE

NAMES: tuple[str, ...] = PAPER_STATE + ACTIONS


def contract_rows(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` (state, action) rows shaped like the trajectory table: binary flags, integer GCS, heavy-tailed
    volumes and zero-inflated actions that depend on the state."""
    mechvent = (rng.random(n) < 0.4).astype(np.float64)
    fio2 = np.clip(0.21 + 0.5 * mechvent * rng.random(n) + 0.05 * rng.random(n), 0.21, 1.0)
    pao2 = np.clip(rng.lognormal(np.log(95), 0.3, n), 20, 700)
    urine_step = np.where(rng.random(n) < 0.1, 0.0, rng.lognormal(np.log(250), 0.7, n))
    gcs = np.clip(np.round(15 - 8 * mechvent * rng.random(n) - 2 * rng.random(n)), 3, 15)
    nee = np.where(rng.random(n) < 0.3 + 0.3 * mechvent, rng.lognormal(np.log(0.1), 0.8, n), 0.0)
    fluid = np.where(rng.random(n) < 0.6, rng.lognormal(np.log(500), 0.6, n) * (1 + 0.5 * (nee > 0)), 0.0)
    cols = {
        "gender": (rng.random(n) < 0.45).astype(np.float64),
        "readmission": (rng.random(n) < 0.1).astype(np.float64),
        "age": np.clip(rng.normal(65, 14, n), 18, 91),
        "mechvent": mechvent,
        "gcs": gcs,
        "fio2": fio2,
        "pao2": pao2,
        "pf_ratio": pao2 / fio2,
        "bilirubin": rng.lognormal(np.log(0.8), 0.8, n),
        "urine_step": urine_step,
        "urine_cum": urine_step * rng.uniform(1, 20, n),
        "fluid_cum": rng.lognormal(np.log(3000), 0.8, n),
        "spo2": np.clip(rng.normal(96, 2.5, n), 70, 100),
        "fluid_ml": fluid,
        "nee_max": nee,
    }
    return pd.DataFrame({k: cols[k] for k in NAMES})


def contract_matrix(n: int, seed: int) -> np.ndarray:
    """``(n, 15)`` matrix with columns :data:`NAMES`."""
    return contract_rows(n, np.random.default_rng(seed)).to_numpy()


def stays(n: int, size: int = 10) -> np.ndarray:
    """Stay labels of ``n`` consecutive rows, ``size`` rows per stay."""
    return np.array([f"k{i // size:06d}" for i in range(n)])


def write_trajectories(root: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """Write train/val/test parquets with the contract's guardian columns and metadata under ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = root / "data" / "trajectories"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in sizes.items():
        df = contract_rows(n, rng).astype(np.float32)
        df.insert(0, "stay_key", [f"k{i // 10:06d}" for i in range(n)])
        df["split"] = split
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"ogsrl.state_features"] = json.dumps(list(PAPER_STATE)).encode()
        meta[b"ogsrl.action_columns"] = json.dumps(list(ACTIONS)).encode()
        pq.write_table(table.replace_schema_metadata(meta), out / f"{split}.parquet")


def write_mdp_trajectories(root: Path, actions: str, stays: int = 600, seed: int = 0) -> None:
    """Write train/val/test parquets of the bring-your-own MDP (``ogsrl.synth.tabular``; v2 schema in the metadata,
    discrete or continuous actions) under ``root``, split 50/25/25 by stay."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ogsrl.data.schema import METADATA_KEY
    from ogsrl.synth import tabular

    df = tabular.simulate(tabular.MDPConfig(actions=actions, stays=stays, horizon=8, seed=seed))
    sch = tabular.schema(actions)
    stay_no = df["stay_key"].str[3:].astype(int).to_numpy()
    out = root / "data" / "trajectories"
    out.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", stay_no % 4 < 2), ("val", stay_no % 4 == 2), ("test", stay_no % 4 == 3)):
        table = pa.Table.from_pandas(df[part].assign(split=split), preserve_index=False)
        meta = {METADATA_KEY.encode(): sch.to_json().encode(),
                b"ogsrl.state_features": json.dumps(list(sch.state_names)).encode()}
        pq.write_table(table.replace_schema_metadata(meta), out / f"{split}.parquet")
