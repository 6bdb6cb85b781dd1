"""The trajectory contract check: a valid hand-made table passes; each breakage names its column and rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ogsrl import features as F
from ogsrl.data.contract import check_trajectories, contract_columns
from ogsrl.errors import DataError

COSTS = ["cost_spo2_low"]


def valid() -> pd.DataFrame:
    n = 4
    cols: dict[str, object] = {}
    for col, dtype in contract_columns(COSTS):
        base = col.removeprefix("next_")
        if base in F.BY_NAME:
            cols[col] = np.full(n, F.BY_NAME[base].normal, dtype=np.float32)
        elif dtype == "float32":
            cols[col] = np.zeros(n, dtype=np.float32)
        elif dtype == "bool":
            cols[col] = np.zeros(n, dtype=bool)
        elif dtype == "int16":
            cols[col] = np.zeros(n, dtype=np.int16)
    df = pd.DataFrame(cols)
    df["stay_key"] = ["a", "a", "b", "b"]
    df["step"] = np.array([0, 1, 0, 1], dtype=np.int16)
    df["done"] = [False, True, False, True]
    df["split"] = ["train", "train", "test", "test"]
    df["age"] = df["next_age"] = np.float32(70)
    return df[[c for c, _ in contract_columns(COSTS)]]


def test_valid_table_passes() -> None:
    check_trajectories(valid())
    check_trajectories(valid().drop(columns="split"), require_split=False)


def _set(df: pd.DataFrame, col: str, row: int, value: object) -> pd.DataFrame:
    df = df.copy()
    df[col] = df[col].astype(object) if isinstance(value, str) and df[col].dtype != object else df[col]
    df.loc[row, col] = value
    return df


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda d: d.drop(columns="next_spo2"), r"missing column\(s\) \['next_spo2'\]"),
    (lambda d: d.drop(columns="cost_spo2_low"), "no cost_"),
    (lambda d: _set(d, "spo2", 2, np.nan), r"'spo2': null values \[offending rows: 2\]"),
    (lambda d: _set(d, "spo2", 1, 120.0), r"'spo2': values outside \[50, 100\] %.*rows: 1"),
    (lambda d: _set(d, "fio2", 0, 40.0), r"'fio2': values outside"),
    (lambda d: _set(d, "fluid_ml", 3, -1.0), "'fluid_ml': negative action"),
    (lambda d: _set(d, "cost_spo2_low", 0, 0.5), "cost must be 0 or 1"),
    (lambda d: _set(d, "cost_total", 0, 1.0), "cost_total is not the sum"),
    (lambda d: _set(d, "step", 3, 2), "consecutive from 0"),
    (lambda d: _set(d, "done", 0, True), "done must be true exactly"),
    (lambda d: _set(d, "died_90d", 0, True), "'died_90d': must be constant within a stay"),
    (lambda d: _set(d, "split", 0, "holdout"), "split must be one of"),
    (lambda d: _set(d, "split", 0, "val"), "'split': must be constant"),
    (lambda d: d.assign(done=d["done"].astype(int)), "'done': wrong dtype"),
    (lambda d: pd.concat([d, d.iloc[[0]]], ignore_index=True), r"duplicate \(stay_key, step\)"),
    (lambda d: _set(d, "reward", 1, np.inf), "'reward': non-finite"),
])
def test_breakages_are_named(breakage, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_trajectories(breakage(valid()))
