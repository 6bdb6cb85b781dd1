"""Trajectory gate on tiny hand-written train/val/test parquet files (docs/data-contract.md §3)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ogsrl import features as F
from ogsrl.validate.config import ValidationConfig
from ogsrl.validate.trajectories import TrajectoryResult, contract_columns, validate_trajectories

from .conftest import COST_RULES, make_trajectories, write_trajectories

COSTS = [f"cost_{c}" for c in COST_RULES]
CFG = ValidationConfig()
RANGE = "values within the contract range (features.py low/high, ACTION_BOUNDS, costs in {0, 1})"


def run(root: Path, n_steps: int = 4) -> TrajectoryResult:
    return validate_trajectories(root / "data" / "trajectories", n_steps=n_steps, cost_columns=COSTS, cfg=CFG)


def failed(res: TrajectoryResult) -> dict[tuple[str, str, str], object]:
    return {(o.suite, o.column, o.what): o for o in res.outcomes if o.gating and not o.success}


@pytest.fixture(scope="module")
def valid_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_trajectories(tmp_path_factory.mktemp("traj_ok"), make_trajectories())


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> TrajectoryResult:
    """One contract break per file plus one across files."""
    fr = make_trajectories()
    tr, va, te = fr["train"], fr["val"], fr["test"]
    tr.loc[1, "gcs"] = float("nan")  # null after imputation
    tr.loc[2, "hr"] = 400.0  # out of range (hr high 250)
    va = pd.concat([va, va.iloc[[1]]], ignore_index=True)  # duplicated (stay_key, step)
    te.loc[0, "nee_max"] = 7.5  # action beyond ACTION_BOUNDS
    te.loc[1, "cost_spo2_low"] = 0.5  # cost not in {0, 1}
    leak = tr[tr["stay_key"] == tr["stay_key"].iloc[-1]].assign(split="test")
    te = pd.concat([te, leak], ignore_index=True)  # overlapping splits
    te["split"] = te["split"].astype("string")
    return run(write_trajectories(tmp_path_factory.mktemp("traj_bad"), {"train": tr, "val": va, "test": te}))


def test_valid_files_pass(valid_root: Path) -> None:
    res = run(valid_root)
    assert res.success, [o.line() for o in res.outcomes if not o.success]
    assert res.rows == {"train": 11, "val": 10, "test": 11} and res.n_stays == 9
    # every contract column of every file is counted for nulls
    nulls = [o for o in res.outcomes if o.what == "no nulls after imputation"]
    assert len(nulls) == 3 and all(o.element_count == len(contract_columns(COSTS)) for o in nulls)


def test_horizon_is_enforced(valid_root: Path) -> None:
    res = run(valid_root, n_steps=3)
    (o,) = failed(res).values()
    assert o.suite == "stays" and o.column == "n_rows"
    assert o.unexpected_count == 5  # stays 0, 2, 4, 6, 8 have 4 steps


def test_each_break_is_reported(broken: TrajectoryResult) -> None:
    got = failed(broken)
    expected = {
        ("train_columns", "gcs", "no nulls after imputation"),
        ("train_columns", "hr", RANGE),
        ("val", "stay_key+step", "one row per (stay_key, step)"),
        ("test_columns", "nee_max, cost_spo2_low", RANGE),
        ("stays", "n_splits", "stay in exactly one split (disjoint splits)"),
        ("stays", "step_gaps", "steps are consecutive"),
        ("stays", "n_rows", "steps per stay within the horizon 1–4"),
        ("stays", "done_last", "exactly one done row, on the last step"),
    }
    got = {(s, c.split(", ")[0] if s == "stays" else c, w): o for (s, c, w), o in got.items()}
    assert set(got) == expected
    hr = got[("train_columns", "hr", RANGE)].line()
    assert "table 'train', column 'hr'" in hr and "00000000:2=400.0" in hr and "20–250" in hr
    gcs = got[("train_columns", "gcs", "no nulls after imputation")].line()
    assert "00000000:1=nan" in gcs
    test = got[("test_columns", "nee_max, cost_spo2_low", RANGE)]
    assert test.unexpected_count == 2 and "=7.5" in test.line() and "=0.5" in test.line()
    o = got[("stays", "n_splits", "stay in exactly one split (disjoint splits)")]
    assert o.unexpected_count == 1 and "n_splits=2" in o.line()
    o = got[("val", "stay_key+step", "one row per (stay_key, step)")]
    assert o.unexpected_count == 2


def test_schema_breaks_and_missing_file(tmp_path: Path) -> None:
    fr = make_trajectories()
    fr["train"] = fr["train"].drop(columns=["reward"])
    fr["val"] = fr["val"].astype({"step": "float64"})
    del fr["test"]
    res = run(write_trajectories(tmp_path, fr))
    got = failed(res)
    assert set(got) == {
        ("train_schema", "reward", "contract column present"),
        ("train_schema", "reward", "contract dtype family"),  # an absent column has no dtype either
        ("val_schema", "step", "contract dtype family"),
        ("files", "status", "train/val/test parquet exist and are readable"),
    }
    assert "actual='absent'" in got[("train_schema", "reward", "contract column present")].line()
    assert "actual='float'" in got[("val_schema", "step", "contract dtype family")].line()
    files = got[("files", "status", "train/val/test parquet exist and are readable")].line()
    assert "test.parquet not found" in files and "1 of 3 files" in files
    assert res.rows == {"val": 10}  # the file missing a column is not value-checked


def test_contract_columns_follow_features() -> None:
    cols = contract_columns(COSTS)
    assert all(cols[f] == "float" and cols[f"next_{f}"] == "float" for f in F.ALL)
    assert cols["step"] == "integer" and cols["stay_key"] == "string" and cols["done"] == "bool"
    assert list(cols)[-1] == "split" and "cost_urine_low" in cols



def test_float32_rounding_at_a_bound_passes_but_a_real_breach_fails() -> None:
    import numpy as np

    from ogsrl.validate.trajectories import column_summary

    df = make_trajectories()["train"]
    df["fio2"] = df["fio2"].astype(np.float32)
    df.loc[0, "fio2"] = np.float32(0.21)   # stored as 0.2099999...
    df.loc[1, "fio2"] = np.float32(0.2)    # a real breach of the 0.21 lower bound
    summary = column_summary(df, COSTS, 5).set_index("column")
    assert summary.loc["fio2", "n_out_of_range"] == 1
