"""Contract v2: schema JSON round trip, one-line schema errors, and a foreign table checked against its schema."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ogsrl.data.contract import contract_columns
from ogsrl.data.schema import (METADATA_KEY, ContinuousAction, DiscreteAction, Schema, StateFeature, canonical,
                               check_table, load_table_schema, read_schema, table_columns)
from ogsrl.errors import DataError


def foreign(discrete: bool) -> Schema:
    action = (DiscreteAction("drug", 3, ("none", "low", "high")) if discrete else
              ContinuousAction(("dose_a", "dose_b"), (0.0, 0.0), (10.0, 2.0), ("mg", "mL/h")))
    return Schema((StateFeature("heart_load", "a.u.", 0.0, 5.0), StateFeature("sex", "1=male", 0, 1, "binary"),
                   StateFeature("years", "y", 0.0, math.inf, "static")),
                  action, "gain", ("cost_tachy",), ("dead",))


def table(schema: Schema) -> pd.DataFrame:
    df = pd.DataFrame({"stay_key": ["a", "a", "b", "b", "b"], "step": np.array([0, 1, 0, 1, 2], dtype=np.int16)})
    for f, v in (("heart_load", [1.0, 2.0, 0.5, 4.0, 3.0]), ("sex", [1, 1, 0, 0, 0]), ("years", [50, 50, 70, 70, 70])):
        df[f] = np.asarray(v, dtype=np.float32)
        df[f"next_{f}"] = np.asarray(v, dtype=np.float32)
    if isinstance(schema.action, DiscreteAction):
        df["drug"] = np.array([0, 2, 1, 1, 0], dtype=np.int64)
    else:
        df["dose_a"] = np.array([0, 10, 3, 1, 0], dtype=np.float32)
        df["dose_b"] = np.array([0, 0, 2, 1, 0.5], dtype=np.float32)
    df["gain"] = np.float32(0)
    df["cost_tachy"] = np.array([0, 1, 0, 0, 1], dtype=np.float32)
    df["done"] = [False, True, False, False, True]
    df["dead"] = [True, True, False, False, False]
    return df


@pytest.mark.parametrize("discrete", [False, True], ids=["action(continuous)", "action(discrete)"])
def test_json_round_trip_and_valid_table(discrete: bool) -> None:
    s = foreign(discrete)
    back = Schema.from_json(s.to_json())
    assert back == s
    assert json.loads(s.to_json())["state"][2]["high"] is None  # unbounded → null, not Infinity
    check_table(table(s), s, require_split=False)
    cols = [c for c, _ in table_columns(s)]
    assert cols[:3] == ["stay_key", "step", "hours_since_onset"] and "death_in_step" in cols and "cost_total" in cols


def test_canonical_is_contract_v1() -> None:
    costs = ["cost_spo2_low", "cost_urine_low"]
    c = canonical(costs)
    assert c.is_canonical and not foreign(False).is_canonical
    assert table_columns(c) == contract_columns(costs)
    assert Schema.from_json(c.to_json()) == c


def _set(df: pd.DataFrame, col: str, row: int, value: object) -> pd.DataFrame:
    df = df.copy()
    if isinstance(value, float) and pd.api.types.is_integer_dtype(df[col]):
        df[col] = df[col].astype(np.float64)
    df.loc[row, col] = value
    return df


@pytest.mark.parametrize(("discrete", "breakage", "message"), [
    (False, lambda d: d.drop(columns="next_heart_load"), r"column 'next_heart_load': missing column\(s\)"),
    (False, lambda d: _set(d, "heart_load", 3, 7.0), r"'heart_load': values outside \[0, 5\] a\.u\..*rows: 3\]"),
    (False, lambda d: _set(d, "sex", 1, 0.5), r"'sex': values outside \[0, 1\] 1=male or not 0/1.*rows: 1\]"),
    (False, lambda d: _set(d, "dose_b", 2, 3.0), r"'dose_b': action outside \[0, 2\] mL/h.*rows: 2\]"),
    (False, lambda d: _set(d, "dose_a", 4, -1.0), r"'dose_a': negative action.*rows: 4\]"),
    (False, lambda d: _set(d, "years", 4, 71.0), r"'years': must be constant within a stay.*rows: b\]"),
    (False, lambda d: _set(d, "dead", 0, False), r"'dead': must be constant"),
    (False, lambda d: _set(d, "step", 4, 3), "consecutive from 0"),
    (False, lambda d: d.assign(dead=d["dead"].astype(str)), r"'dead': wrong dtype"),
    (True, lambda d: _set(d, "drug", 1, 3), r"'drug': action id outside 0 … 2 \(n = 3\).*rows: 1\]"),
    (True, lambda d: _set(d, "drug", 2, 1.5), r"'drug': non-integer discrete action.*rows: 2\]"),
    (True, lambda d: d.assign(drug=d["drug"].astype(str)), r"'drug': wrong dtype .* integer action id"),
])
def test_mismatch_is_one_line_naming_column_and_rows(discrete: bool, breakage, message: str) -> None:
    s = foreign(discrete)
    with pytest.raises(DataError, match=message) as exc:
        check_table(breakage(table(s)), s, require_split=False)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(colour=1), r"unknown key\(s\) \['colour'\]"),
    (lambda d: d["action"].update(n=1), "action.n must be an integer >= 2"),
    (lambda d: d["action"].update(labels=["a", "b"]), "labels has 2 entries for n = 3"),
    (lambda d: d["state"][0].update(kind="ordinal"), "kind must be one of"),
    (lambda d: d["state"][0].update(low=9), "low 9.0 > high 5.0"),
    (lambda d: d.update(costs=[]), "costs is empty"),
    (lambda d: d.update(reward="heart_load"), r"declared twice or reserved"),
    (lambda d: d.update(outcome=["done"]), r"declared twice or reserved"),
    (lambda d: d["action"].update(type="ordinal"), "action.type must be"),
    (lambda d: d.update(version="9"), "version '9' is not supported"),
])
def test_bad_schema_is_one_line(edit, message: str) -> None:
    d = foreign(True).to_dict()
    edit(d)
    with pytest.raises(DataError, match=message):
        Schema.from_dict(d)


def test_read_from_metadata_or_sidecar(tmp_path) -> None:
    s = foreign(True)
    t = pa.Table.from_pandas(table(s), preserve_index=False)
    plain, tagged = tmp_path / "plain.parquet", tmp_path / "tagged.parquet"
    pq.write_table(t, plain)
    pq.write_table(t.replace_schema_metadata({METADATA_KEY: s.to_json()}), tagged)
    assert read_schema(plain) is None and read_schema(tagged) == s
    side = tmp_path / "schema.json"
    side.write_text(s.to_json())
    assert read_schema(plain, side) == s and read_schema(tagged, side) == s
    other = tmp_path / "other.json"
    other.write_text(foreign(False).to_json())
    with pytest.raises(DataError, match="differs from the one in tagged.parquet's metadata"):
        read_schema(tagged, other)
    with pytest.raises(DataError, match="not valid JSON"):
        (tmp_path / "broken.json").write_text("{")
        read_schema(plain, tmp_path / "broken.json")
    assert load_table_schema(tagged) == s
    assert load_table_schema(plain) == canonical(["cost_tachy"])  # no schema: a pre-v2 canonical table
