"""The trajectory-table contract (docs/data-contract.md §3): column list, dtypes and row invariants.

:func:`check_trajectories` is what a bring-your-own parquet (``data.source: trajectories``) must pass before the
pipeline uses it; the extraction writes tables built from :func:`contract_columns`, so its output passes too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ogsrl import features as F
from ogsrl.data.schema import Schema, canonical, check_table
from ogsrl.errors import DataError

CONTRACT_VERSION = "1"
SPLITS: tuple[str, ...] = ("train", "val", "test")


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


def check_trajectories(df: pd.DataFrame, *, require_split: bool = True, table: str = "trajectories",
                       schema: Schema | None = None) -> None:
    """Raise :class:`DataError` (naming column and offending rows) unless ``df`` follows the contract.

    ``schema`` None: contract v1, i.e. :func:`ogsrl.data.schema.canonical` of the table's ``cost_*`` columns (the
    v1 table must also hold ``cost_total``); otherwise the declared v2 schema (:func:`ogsrl.data.schema.check_table`).
    """
    if schema is None:
        costs = cost_columns_of(df)
        if not costs:
            raise DataError("no cost_<rule> column", table=table, column="cost_total")
        if "cost_total" not in df.columns:
            raise DataError("missing column(s) ['cost_total']", table=table, column="cost_total")
        schema = canonical(costs)
    check_table(df, schema, require_split=require_split, table=table)


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
