"""Trajectory gate: ``data/trajectories/{train,val,test}.parquet`` against docs/data-contract.md §3.

Suites (all evaluated by Great Expectations; trajectory files are small enough to load whole):

* ``files``: the three split files exist and can be read.
* ``<split>_schema``: every contract column present with its dtype family (string / integer / float / bool).
* ``<split>``: ``split`` equal to the file's split, one row per (stay_key, step).
* ``<split>_columns``: a per-column summary frame (exact counts from pandas, offending rows quoted) on which GE
  checks: no nulls in any contract column (after imputation nothing may be missing), feature and ``next_``
  feature values within ``ogsrl.features`` low/high, actions within ``ACTION_BOUNDS``, ``action_bin`` in −1…24,
  each cost in {0, 1}, ``cost_total`` in 0…#rules. (One GE expectation per rule rather than per column keeps the
  gate at a few seconds: GE spends ~10 ms of bookkeeping per expectation.)
* ``stays``: per stay over all files — steps start at 0 and are consecutive, at most ``n_steps`` of them, exactly
  one ``done`` row and it is the last step, and the stay appears in one split only (disjoint splits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ogsrl import features as F
from ogsrl.data.schema import DiscreteAction, Schema, table_columns
from ogsrl.validate.config import ValidationConfig
from ogsrl.validate.gx import Outcome, Rule, new_context, outcomes, run_suite

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
BOOL_COLUMNS: tuple[str, ...] = ("done", "death_in_step", "died_in_hosp", "died_90d")


def contract_columns(cost_columns: Sequence[str], schema: Schema | None = None) -> dict[str, str]:
    """Required column → dtype family (string | integer | float | bool), per docs/data-contract.md §3 (canonical
    table, ``schema`` None) or §4 (the table's declared v2 schema)."""
    if schema is not None and not schema.is_canonical:
        fam = {"string": "string", "int16": "integer", "float32": "float", "bool": "bool"}
        return {c: fam[d] for c, d in table_columns(schema)}
    cols = {"stay_key": "string", "step": "integer", "hours_since_onset": "float"}
    cols |= {f: "float" for f in F.ALL}
    cols |= {f"next_{f}": "float" for f in F.ALL}
    cols |= {"fluid_ml": "float", "nee_max": "float", "action_bin": "integer", "reward": "float"}
    cols |= {c: "float" for c in cost_columns}
    cols |= {"cost_total": "float"}
    cols |= {c: "bool" for c in BOOL_COLUMNS}
    cols |= {"split": "string"}
    return cols


def _family(tp: Any) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(tp):
        tp = tp.value_type
    if pa.types.is_string(tp) or pa.types.is_large_string(tp) or pa.types.is_string_view(tp):
        return "string"
    if pa.types.is_boolean(tp):
        return "bool"
    if pa.types.is_integer(tp):
        return "integer"
    if pa.types.is_floating(tp):
        return "float"
    return str(tp)


FLOAT32_SLACK = 1e-6
"""Relative slack on range bounds: float32 columns store 0.21 as 0.20999999."""


def value_checks(cost_columns: Sequence[str], schema: Schema | None = None
                 ) -> dict[str, tuple[str, tuple[float, ...]]]:
    """Per-column value rule: column → ("range", (low, high)) or ("set", allowed values).

    Canonical table (``schema`` None): ``ogsrl.features`` ranges and ``ACTION_BOUNDS``; a v2 table: its declared
    state ranges (binary features in {0, 1}), action bounds or ids 0 … n−1."""
    checks: dict[str, tuple[str, tuple[float, ...]]] = {}
    if schema is not None and not schema.is_canonical:
        for sf in schema.state:
            rule = ("set", (0, 1)) if sf.kind == "binary" else ("range", (sf.low, sf.high))
            checks[sf.name] = checks[f"next_{sf.name}"] = rule
        if isinstance(schema.action, DiscreteAction):
            checks[schema.action.column] = ("set", tuple(range(schema.action.n)))
        else:
            for c, lo, hi in zip(schema.action.columns, schema.action.low, schema.action.high):
                checks[c] = ("range", (lo, hi))
    else:
        for f in F.FEATURES:
            checks[f.name] = checks[f"next_{f.name}"] = ("range", (f.low, f.high))
        for a, bounds in F.ACTION_BOUNDS.items():
            checks[a] = ("range", bounds)
        checks["action_bin"] = ("range", (-1, 24))
    checks["step"] = ("range", (0, float("inf")))
    for c in cost_columns:
        checks[c] = ("set", (0, 1))
    checks["cost_total"] = ("range", (0, len(cost_columns)))
    return checks


def column_summary(df: Any, cost_columns: Sequence[str], max_examples: int, schema: Schema | None = None) -> Any:
    """One row per contract column: nulls and out-of-range values counted exactly, with a few offending rows
    quoted as ``stay_key:step=value`` (GE then checks the counts; one expectation per rule instead of per column)."""
    import numpy as np
    import pandas as pd

    checks = value_checks(cost_columns, schema)
    key = df["stay_key"].astype(str).str.slice(0, 8) + ":" + df["step"].astype(str)
    rows = []
    for col in contract_columns(cost_columns, schema):
        s = df[col]
        null = s.isna().to_numpy()
        bad = np.zeros(len(s), dtype=bool)
        rule = ""
        if col in checks:
            kind, vals = checks[col]
            num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                if kind == "range":  # float32 storage: allow a relative rounding slack at the bounds
                    lo = vals[0] - FLOAT32_SLACK * max(1.0, abs(vals[0]))
                    hi = vals[1] + FLOAT32_SLACK * max(1.0, abs(vals[1]))
                    bad = ~null & ((num < lo) | (num > hi))
                else:
                    bad = ~null & ~np.isin(num, vals)
            rule = f"{vals[0]:g}–{vals[1]:g}" if kind == "range" else (
                "in {" + ", ".join(f"{v:g}" for v in vals) + "}" if len(vals) <= 5 else f"ids {vals[0]}–{vals[-1]}")

        def quote(mask: Any) -> str:
            idx = np.flatnonzero(mask)[:max_examples]
            return ", ".join(f"{key.iat[i]}={s.iat[i]}" for i in idx)

        rows.append({"column": col, "rule": rule, "n_rows": len(s), "n_null": int(null.sum()),
                     "n_out_of_range": int(bad.sum()), "null_rows": quote(null), "out_of_range_rows": quote(bad)})
    return pd.DataFrame(rows)


def summary_rules(split: str) -> list[Rule]:
    """Rules on a split's column summary frame."""
    return [
        Rule(split, "n_null", "in_set", "no nulls after imputation", values=(0,), label_column="column",
             unit="columns"),
        Rule(split, "n_out_of_range", "in_set", "values within the contract range (features.py low/high, "
             "ACTION_BOUNDS, costs in {0, 1})", values=(0,), label_column="column",
             unit="columns"),
    ]


def file_rules(split: str) -> list[Rule]:
    """Row-level rules on a split file."""
    return [
        Rule(split, "stay_key", "compound_unique", "one row per (stay_key, step)", columns=("stay_key", "step")),
        Rule(split, "split", "in_set", f"split column matches the file ({split})", values=(split,)),
    ]


def stay_rules(n_steps: int) -> list[Rule]:
    """Rules on the per-stay frame built across all split files."""
    return [
        Rule("stays", "min_step", "in_set", "steps start at 0", values=(0,), unit="stays"),
        Rule("stays", "step_gaps", "in_set", "steps are consecutive", values=(0,), unit="stays"),
        Rule("stays", "n_rows", "between", f"steps per stay within the horizon 1–{n_steps}", min_value=1,
             max_value=n_steps, unit="stays"),
        Rule("stays", "n_splits", "in_set", "stay in exactly one split (disjoint splits)", values=(1,), unit="stays"),
        Rule("stays", "done_last", "in_set", "exactly one done row, on the last step", values=(True,), unit="stays"),
    ]


@dataclass(frozen=True, slots=True)
class TrajectoryResult:
    """Everything the trajectory gate found."""

    outcomes: list[Outcome]
    """every evaluated expectation"""
    runs: list[tuple[str, Any]]
    """(suite name, GE validation result) for the Data Docs"""
    rows: dict[str, int]
    """rows per split file"""
    n_stays: int
    """distinct stays over all files"""

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes if o.gating)


def validate_trajectories(
    traj_dir: Path, *, n_steps: int, cost_columns: Sequence[str], cfg: ValidationConfig,
    schema: Schema | None = None,
) -> TrajectoryResult:
    """Validate ``traj_dir/{train,val,test}.parquet``; never raises on bad data (the caller decides).

    Args:
        traj_dir: folder of the three split files.
        n_steps: horizon (params ``cohort.n_steps``); a stay has at most this many steps.
        cost_columns: the ``cost_<rule>`` columns configured in params ``costs.rules``.
        cfg: validation settings (``max_examples``).
        schema: the tables' declared v2 schema (parquet metadata ``ogsrl.schema``); None or canonical: §3.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    ctx = new_context()
    outs: list[Outcome] = []
    runs: list[tuple[str, Any]] = []

    def suite(name: str, frame: Any, rules: list[Rule], index: Sequence[str]) -> None:
        result = run_suite(ctx, name, frame, rules, index)
        runs.append((name, result))
        outs.extend(outcomes(result, rules, name, gating=True, max_examples=cfg.max_examples))

    required = contract_columns(cost_columns, schema)
    frames: dict[str, pd.DataFrame] = {}
    status = []
    for split in SPLITS:
        path = traj_dir / f"{split}.parquet"
        state, detail = "missing", f"{path.name} not found"
        if path.is_file():
            try:
                arrow = pq.read_schema(path)
                frames[split] = pd.read_parquet(path)
                state, detail = "ok", path.name
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several error types for broken files
                state, detail = "unreadable", f"{path.name}: {str(exc).splitlines()[0][:200]}"
            if state == "ok":
                actual = {f.name: _family(f.type) for f in arrow}
                sch = pd.DataFrame([
                    {"column": c, "expected": fam, "actual": actual.get(c, "absent"), "present": c in actual,
                     "type_ok": actual.get(c) == fam} for c, fam in required.items()])
                suite(f"{split}_schema", sch, [
                    Rule(split, "present", "in_set", "contract column present", values=(True,), label_column="column",
                         unit="columns"),
                    Rule(split, "type_ok", "in_set", "contract dtype family", values=(True,), label_column="column",
                         unit="columns"),
                ], ["column", "expected", "actual"])
                if not sch["present"].all():
                    frames.pop(split)
        status.append({"file": split, "status": state, "detail": detail})
    suite("files", pd.DataFrame(status),
          [Rule("files", "status", "in_set", "train/val/test parquet exist and are readable", values=("ok",),
                unit="files")],
          ["file", "detail"])
    rows = {}
    for split, df in frames.items():
        rows[split] = len(df)
        df = df.reset_index(drop=True)
        df.insert(0, "_row", range(len(df)))
        suite(split, df, file_rules(split), ["_row", "stay_key", "step"])
        suite(f"{split}_columns", column_summary(df, cost_columns, cfg.max_examples, schema), summary_rules(split),
              ["column", "rule", "null_rows", "out_of_range_rows"])
    n_stays = 0
    if frames:
        both = pd.concat([df[["stay_key", "step", "done", "split"]].assign(_file=s) for s, df in frames.items()],
                         ignore_index=True)
        g = both.groupby("stay_key", sort=True)
        last = both.loc[g["step"].idxmax()].set_index("stay_key")["done"]
        stays = pd.DataFrame({
            "n_rows": g.size(), "min_step": g["step"].min(), "max_step": g["step"].max(),
            "n_splits": g["_file"].nunique(), "n_done": g["done"].sum(),
        })
        stays["step_gaps"] = stays["max_step"] - stays["n_rows"] + 1
        stays["done_last"] = (stays["n_done"] == 1) & last.reindex(stays.index).fillna(False).astype(bool)
        stays = stays.reset_index()
        n_stays = len(stays)
        suite("stays", stays, stay_rules(n_steps), ["stay_key", "n_rows", "min_step", "max_step", "n_splits"])
    return TrajectoryResult(outs, runs, rows, n_stays)
