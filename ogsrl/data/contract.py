"""The trajectory-table contract (docs/data-contract.md §3): column list, dtypes and row invariants.

:func:`check_trajectories` is what a bring-your-own parquet (``data.source: trajectories``) must pass before the
pipeline uses it; the extraction writes tables built from :func:`contract_columns`, so its output passes too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ogsrl import features as F
from ogsrl.errors import DataError

CONTRACT_VERSION = "1"
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SUMS = {"urine_step", "urine_cum", "fluid_cum"}
"""Summed features: only non-negativity is checked (their upper bounds are exclusion rules, not ranges)."""


def contract_columns(cost_columns: Sequence[str]) -> list[tuple[str, str]]:
    """(column, dtype) of the trajectory table in order; ``cost_columns`` excludes ``cost_total``."""
    cols = [("stay_key", "string"), ("step", "int16"), ("hours_since_onset", "float32")]
    cols += [(f, "float32") for f in F.ALL] + [(f"next_{f}", "float32") for f in F.ALL]
    cols += [("fluid_ml", "float32"), ("nee_max", "float32"), ("action_bin", "int16"), ("reward", "float32")]
    cols += [(c, "float32") for c in (*cost_columns, "cost_total")]
    cols += [("done", "bool"), ("death_in_step", "bool"), ("died_in_hosp", "bool"), ("died_90d", "bool"),
             ("split", "string")]
    return cols


def cost_columns_of(df: pd.DataFrame) -> list[str]:
    """The rule cost columns present in a table (``cost_*`` except ``cost_total``)."""
    return [c for c in df.columns if c.startswith("cost_") and c != "cost_total"]


def _rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def check_trajectories(df: pd.DataFrame, *, require_split: bool = True, table: str = "trajectories") -> None:
    """Raise :class:`DataError` (naming column and offending rows) unless ``df`` follows the contract."""
    costs = cost_columns_of(df)
    if not costs:
        raise DataError("no cost_<rule> column", table=table, column="cost_total")
    expected = contract_columns(costs)
    if not require_split:
        expected = [c for c in expected if c[0] != "split"]
    missing = [c for c, _ in expected if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", table=table, column=missing[0])
    for col, dtype in expected:
        s = df[col]
        if dtype == "string":
            ok = pd.api.types.is_string_dtype(s) or s.dtype == object
        elif dtype == "bool":
            ok = pd.api.types.is_bool_dtype(s)
        elif dtype == "int16":
            ok = pd.api.types.is_integer_dtype(s)
        else:
            ok = pd.api.types.is_float_dtype(s) or pd.api.types.is_integer_dtype(s)
        if not ok:
            raise DataError(f"wrong dtype {s.dtype}, expected {dtype}", table=table, column=col)
        nulls = s.isna().to_numpy()
        if nulls.any():
            raise DataError("null values", table=table, column=col, rows=_rows(nulls))
        if dtype == "float32":
            bad = ~np.isfinite(s.to_numpy(np.float64))
            if bad.any():
                raise DataError("non-finite values", table=table, column=col, rows=_rows(bad))
    for f in F.ALL:
        feat = F.BY_NAME[f]
        for col in (f, f"next_{f}"):
            v = df[col].to_numpy(np.float64)
            lo, hi = (0.0, np.inf) if f in _SUMS else (feat.low, feat.high)
            if f == "age":
                lo = 0.0
            bad = (v < lo - 1e-4) | (v > hi + 1e-4)
            if bad.any():
                raise DataError(f"values outside [{lo}, {hi}] {feat.unit}", table=table, column=col, rows=_rows(bad))
    for col in F.ACTIONS:
        bad = df[col].to_numpy(np.float64) < 0
        if bad.any():
            raise DataError("negative action", table=table, column=col, rows=_rows(bad))
    ab = df["action_bin"].to_numpy()
    bad = (ab < -1) | (ab > 24)
    if bad.any():
        raise DataError("action_bin outside [-1, 24]", table=table, column="action_bin", rows=_rows(bad))
    total = np.zeros(len(df))
    for c in costs:
        v = df[c].to_numpy(np.float64)
        bad = (v != 0) & (v != 1)
        if bad.any():
            raise DataError("cost must be 0 or 1", table=table, column=c, rows=_rows(bad))
        total += v
    bad = np.abs(total - df["cost_total"].to_numpy(np.float64)) > 1e-6
    if bad.any():
        raise DataError("cost_total is not the sum of the rule costs", table=table, column="cost_total",
                        rows=_rows(bad))
    if require_split:
        bad = ~df["split"].isin(SPLITS).to_numpy()
        if bad.any():
            raise DataError(f"split must be one of {list(SPLITS)}", table=table, column="split", rows=_rows(bad))
    dup = df.duplicated(["stay_key", "step"]).to_numpy()
    if dup.any():
        raise DataError("duplicate (stay_key, step) rows", table=table, column="step", rows=_rows(dup))
    order = df.sort_values(["stay_key", "step"], kind="stable")
    g = order.groupby("stay_key", sort=False)
    expect_step = g.cumcount().to_numpy()
    bad = order["step"].to_numpy() != expect_step
    if bad.any():
        raise DataError("steps of a stay must be consecutive from 0", table=table, column="step",
                        rows=order.index[bad].tolist())
    is_last = (g["step"].transform("max") == order["step"]).to_numpy()
    bad = order["done"].to_numpy() != is_last
    if bad.any():
        raise DataError("done must be true exactly on the last step of each stay", table=table, column="done",
                        rows=order.index[bad].tolist())
    for col in ("died_in_hosp", "died_90d") + (("split",) if "split" in df.columns and require_split else ()):
        n = g[col].nunique()
        if (n > 1).any():
            raise DataError("must be constant within a stay", table=table, column=col,
                            rows=n[n > 1].index.tolist())


def read_metadata(path: str | Path) -> dict[str, object]:
    """The ``ogsrl.*`` key-value metadata of a trajectory parquet, JSON-decoded where possible."""
    meta = pq.read_schema(path).metadata or {}
    out: dict[str, object] = {}
    for k, v in meta.items():
        key = k.decode()
        if key.startswith("ogsrl."):
            try:
                out[key] = json.loads(v.decode())
            except json.JSONDecodeError:
                out[key] = v.decode()
    return out
