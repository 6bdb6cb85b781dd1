"""Trajectory contract v2: the schema a table declares about itself (docs/data-contract.md §4).

A bring-your-own table names its state features (unit, plausible range, kind), its action space (continuous columns
with bounds and units, or one integer column with ``n`` labelled choices), its reward column, its 0/1 cost columns
and optional stay-level outcome columns. The schema travels as JSON in the parquet key-value metadata under
``ogsrl.schema`` (or in a sidecar file, params ``data.schema_path``); :func:`canonical` is the schema of the MIMIC-IV
/ demo extraction's own table (contract v1 is this one instance of v2).

Unbounded ranges are ``null`` in JSON and ±inf here. :func:`check_table` checks a table against a schema and raises
a one-line :class:`~ogsrl.errors.DataError` naming the column and the offending rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ogsrl.errors import DataError

SCHEMA_VERSION = "2"
METADATA_KEY = "ogsrl.schema"
KINDS: tuple[str, ...] = ("continuous", "binary", "static")
SPLITS: tuple[str, ...] = ("train", "val", "test")
DTYPES: tuple[str, ...] = ("string", "int16", "float32", "bool")


def _bound(v: Any, where: str) -> float:
    if v is None:
        return math.nan  # placeholder: the caller maps None to ±inf
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(f"schema: {where} must be a number or null, got {v!r}")
    return float(v)


def _json_bound(v: float) -> float | None:
    return None if math.isinf(v) else v


@dataclass(frozen=True, slots=True)
class StateFeature:
    """One state column (and its ``next_<name>`` twin)."""

    name: str
    """column name"""
    unit: str
    """unit string; a served request must use the same one"""
    low: float = -math.inf
    """lowest valid value (−inf: unbounded)"""
    high: float = math.inf
    """highest valid value (+inf: unbounded)"""
    kind: str = "continuous"
    """continuous | binary (0/1) | static (constant within a stay)"""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise DataError(f"schema: state feature name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise DataError(f"schema: state feature {self.name!r}: kind must be one of {list(KINDS)}, got "
                            f"{self.kind!r}")
        if not self.low <= self.high:
            raise DataError(f"schema: state feature {self.name!r}: low {self.low} > high {self.high}")


@dataclass(frozen=True, slots=True)
class ContinuousAction:
    """A continuous action: one float column per dimension."""

    columns: tuple[str, ...]
    """action columns, in order (A dimensions)"""
    low: tuple[float, ...]
    """per-dimension lower bound"""
    high: tuple[float, ...]
    """per-dimension upper bound (+inf: unbounded)"""
    units: tuple[str, ...]
    """per-dimension unit"""
    type: Literal["continuous"] = "continuous"

    def __post_init__(self) -> None:
        a = len(self.columns)
        if a == 0:
            raise DataError("schema: action.columns is empty")
        for key in ("low", "high", "units"):
            if len(getattr(self, key)) != a:
                raise DataError(f"schema: action.{key} has {len(getattr(self, key))} entries for {a} columns")
        for c, lo, hi in zip(self.columns, self.low, self.high):
            if not lo <= hi or math.isinf(lo):
                raise DataError(f"schema: action {c!r}: bounds [{lo}, {hi}] must be finite low <= high")


@dataclass(frozen=True, slots=True)
class DiscreteAction:
    """A discrete action: one integer column holding ids 0 … n−1."""

    column: str
    """the action-id column"""
    n: int
    """number of actions"""
    labels: tuple[str, ...]
    """one label per id (served next to the id)"""
    type: Literal["discrete"] = "discrete"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise DataError(f"schema: action.n must be an integer >= 2, got {self.n!r}")
        if len(self.labels) != self.n:
            raise DataError(f"schema: action.labels has {len(self.labels)} entries for n = {self.n}")
        if len(set(self.labels)) != self.n:
            raise DataError("schema: action.labels must be distinct")

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)


Action = ContinuousAction | DiscreteAction


@dataclass(frozen=True, slots=True)
class Schema:
    """What a trajectory table declares about itself."""

    state: tuple[StateFeature, ...]
    """state features in order (S)"""
    action: Action
    """the action space"""
    reward: str = "reward"
    """the per-step reward column"""
    costs: tuple[str, ...] = ()
    """the 0/1 per-step cost columns (``cost_total`` is their sum, derived when absent)"""
    outcome: tuple[str, ...] = ()
    """stay-level boolean outcome columns (e.g. death); the first is the mortality outcome"""
    extra: tuple[tuple[str, str], ...] = field(default=())
    """further required (column, dtype) pairs (the canonical table's ``hours_since_onset``, ``action_bin``, ...)"""

    def __post_init__(self) -> None:
        if not self.state:
            raise DataError("schema: state is empty")
        names = [f.name for f in self.state]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"schema: duplicate state feature(s) {dup}")
        bad = [c for c, d in self.extra if d not in DTYPES]
        if bad:
            raise DataError(f"schema: extra column(s) {bad}: dtype must be one of {list(DTYPES)}")
        used = [*names, *(f"next_{n}" for n in names), *self.action.columns, self.reward, *self.costs,
                *self.outcome]
        clash = sorted({c for c in used if used.count(c) > 1} | (set(used) & set(RESERVED)))
        if clash:
            raise DataError(f"schema: column(s) {clash} declared twice or reserved ({list(RESERVED)})")

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.state)

    @property
    def action_type(self) -> str:
        return self.action.type

    @property
    def action_columns(self) -> tuple[str, ...]:
        return self.action.columns

    def feature(self, name: str) -> StateFeature:
        for f in self.state:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def is_canonical(self) -> bool:
        """True for the MIMIC-IV / demo extraction's own table (contract v1)."""
        return self == canonical(self.costs)

    # ---- JSON -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        act: dict[str, Any]
        if isinstance(self.action, DiscreteAction):
            act = {"type": "discrete", "column": self.action.column, "n": self.action.n,
                   "labels": list(self.action.labels)}
        else:
            act = {"type": "continuous", "columns": list(self.action.columns),
                   "low": [_json_bound(v) for v in self.action.low],
                   "high": [_json_bound(v) for v in self.action.high], "units": list(self.action.units)}
        out: dict[str, Any] = {
            "version": SCHEMA_VERSION,
            "state": [{"name": f.name, "unit": f.unit, "low": _json_bound(f.low), "high": _json_bound(f.high),
                       "kind": f.kind} for f in self.state],
            "action": act, "reward": self.reward, "costs": list(self.costs), "outcome": list(self.outcome),
        }
        if self.extra:
            out["extra"] = [[c, d] for c, d in self.extra]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Schema:
        """Build from the JSON form; unknown keys and missing required keys are one-line errors."""
        if not isinstance(d, Mapping):
            raise DataError(f"schema: must be a JSON object, got {type(d).__name__}")
        _keys(d, {"version", "state", "action", "reward", "costs", "outcome", "extra"}, {"state", "action"}, "")
        version = str(d.get("version", SCHEMA_VERSION))
        if version != SCHEMA_VERSION:
            raise DataError(f"schema: version {version!r} is not supported (expected {SCHEMA_VERSION!r})")
        if not isinstance(d["state"], list):
            raise DataError("schema: state must be a list of {name, unit, low, high, kind}")
        state = []
        for i, f in enumerate(d["state"]):
            if not isinstance(f, Mapping):
                raise DataError(f"schema: state[{i}] must be an object")
            _keys(f, {"name", "unit", "low", "high", "kind"}, {"name", "unit"}, f"state[{i}].")
            lo, hi = _bound(f.get("low"), f"state[{i}].low"), _bound(f.get("high"), f"state[{i}].high")
            state.append(StateFeature(str(f["name"]), str(f["unit"]), -math.inf if math.isnan(lo) else lo,
                                      math.inf if math.isnan(hi) else hi, str(f.get("kind", "continuous"))))
        a = d["action"]
        if not isinstance(a, Mapping):
            raise DataError("schema: action must be an object")
        action: Action
        if a.get("type") == "discrete":
            _keys(a, {"type", "column", "n", "labels"}, {"column", "n"}, "action.")
            n = a["n"]
            labels = a.get("labels") or [str(i) for i in range(n if isinstance(n, int) else 0)]
            action = DiscreteAction(str(a["column"]), n, tuple(str(x) for x in labels))
        elif a.get("type") == "continuous":
            _keys(a, {"type", "columns", "low", "high", "units"}, {"columns", "low", "high", "units"}, "action.")
            lows = [_bound(v, "action.low") for v in a["low"]]
            highs = [_bound(v, "action.high") for v in a["high"]]
            action = ContinuousAction(tuple(str(c) for c in a["columns"]),
                                      tuple(-math.inf if math.isnan(v) else v for v in lows),
                                      tuple(math.inf if math.isnan(v) else v for v in highs),
                                      tuple(str(u) for u in a["units"]))
        else:
            raise DataError(f"schema: action.type must be 'continuous' or 'discrete', got {a.get('type')!r}")
        if not d.get("costs"):
            raise DataError("schema: costs is empty (at least one 0/1 cost column is needed by the constrained "
                            "learners)")
        extra = d.get("extra") or []
        if not isinstance(extra, list) or not all(isinstance(e, list) and len(e) == 2 for e in extra):
            raise DataError("schema: extra must be a list of [column, dtype] pairs")
        return cls(tuple(state), action, str(d.get("reward", "reward")), tuple(str(c) for c in d.get("costs", ())),
                   tuple(str(c) for c in d.get("outcome", ())), tuple((str(c), str(t)) for c, t in extra))

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "schema") -> Schema:
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{where}: not valid JSON ({exc})") from None
        return cls.from_dict(d)


RESERVED: tuple[str, ...] = ("stay_key", "step", "done", "split", "cost_total", "hours_since_onset",
                             "death_in_step")
"""columns the pipeline defines itself (a schema may not reuse them for state, action, reward, cost or outcome)"""


def _keys(d: Mapping[str, Any], allowed: set[str], required: set[str], prefix: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise DataError(f"schema: unknown key(s) {[prefix + k for k in unknown]}")
    missing = sorted(required - set(d))
    if missing:
        raise DataError(f"schema: missing key(s) {[prefix + k for k in missing]}")


# ---- the canonical (MIMIC-IV / demo) table --------------------------------------------------------------------
_SUMS = {"urine_step", "urine_cum", "fluid_cum"}
"""summed features: only non-negativity is checked (their upper bounds are exclusion rules, not ranges)"""


def canonical(cost_columns: Sequence[str]) -> Schema:
    """The schema of the canonical extraction's table (contract v1): every feature of ``ogsrl.features``.

    Ranges are those the v1 check enforced: summed features only ``>= 0``, age from 0 (a bring-your-own v1 table may
    hold children), actions only ``>= 0`` (their upper bounds are exclusion rules of the cohort).
    """
    from ogsrl import features as F

    costs = tuple(c for c in cost_columns if c != "cost_total")
    state = []
    for f in F.FEATURES:
        lo, hi = (0.0, math.inf) if f.name in _SUMS else (float(f.low), float(f.high))
        if f.name == "age":
            lo = 0.0
        state.append(StateFeature(f.name, f.unit, lo, hi, f.kind))
    action = ContinuousAction(tuple(F.ACTIONS), (0.0,) * len(F.ACTIONS), (math.inf,) * len(F.ACTIONS),
                              tuple(F.ACTION_UNITS[a] for a in F.ACTIONS))
    extra = (("hours_since_onset", "float32"), ("action_bin", "int16"), ("death_in_step", "bool"))
    return Schema(tuple(state), action, "reward", costs, ("died_in_hosp", "died_90d"), extra)


# ---- the pipeline's table -------------------------------------------------------------------------------------
def table_columns(schema: Schema, require_split: bool = True) -> list[tuple[str, str]]:
    """(column, dtype) of the trajectory table the extraction writes for ``schema``, in order.

    The canonical schema gives contract v1's order; any other adds ``hours_since_onset`` (from the step grid) and
    ``death_in_step`` (the first outcome on the last step) so the world model reads every table alike.
    """
    cols = [("stay_key", "string"), ("step", "int16"), ("hours_since_onset", "float32")]
    cols += [(f.name, "float32") for f in schema.state] + [(f"next_{f.name}", "float32") for f in schema.state]
    if isinstance(schema.action, DiscreteAction):
        cols += [(schema.action.column, "int16")]
    else:
        cols += [(c, "float32") for c in schema.action.columns]
    extra = [(c, d) for c, d in schema.extra if c not in {"hours_since_onset", "death_in_step"}]
    if schema.is_canonical:
        cols += extra
        extra = []
    cols += [(schema.reward, "float32")] + [(c, "float32") for c in (*schema.costs, "cost_total")]
    cols += [("done", "bool"), ("death_in_step", "bool")] + [(c, "bool") for c in schema.outcome] + extra
    if require_split:
        cols += [("split", "string")]
    return cols


def input_columns(schema: Schema, require_split: bool) -> list[tuple[str, str]]:
    """(column, dtype) a table following ``schema`` must hold (``cost_total`` optional, derived when absent)."""
    cols = [("stay_key", "string"), ("step", "int16")]
    cols += [(f.name, "float32") for f in schema.state] + [(f"next_{f.name}", "float32") for f in schema.state]
    if isinstance(schema.action, DiscreteAction):
        cols += [(schema.action.column, "action_id")]
    else:
        cols += [(c, "float32") for c in schema.action.columns]
    cols += [(schema.reward, "float32")] + [(c, "float32") for c in schema.costs]
    cols += [("done", "bool")] + [(c, "bool") for c in schema.outcome] + list(schema.extra)
    if require_split:
        cols += [("split", "string")]
    return cols


def _rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def check_table(df: pd.DataFrame, schema: Schema, *, require_split: bool = True, table: str = "trajectories") -> None:
    """Raise :class:`DataError` (naming column and offending rows) unless ``df`` follows ``schema``.

    Checks: every declared column present with its dtype family and no nulls or non-finite floats; state values
    within the declared ranges (``next_`` too); continuous actions within their bounds; a discrete action integral
    with ids in 0 … n−1; costs in {0, 1} and ``cost_total`` (when present) their sum; one row per (stay, step),
    steps consecutive from 0, ``done`` exactly on each stay's last step; outcomes, static features and ``split``
    constant within a stay.
    """
    if not schema.costs:
        raise DataError("the schema declares no cost column (at least one 0/1 cost is needed)", table=table,
                        column="costs")
    expected = input_columns(schema, require_split)
    missing = [c for c, _ in expected if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", table=table, column=missing[0])
    for col, dtype in expected:
        s = df[col]
        if dtype == "string":
            ok = pd.api.types.is_string_dtype(s) or s.dtype == object
        elif dtype == "bool":
            ok = pd.api.types.is_bool_dtype(s)
        elif dtype in ("int16", "action_id"):
            ok = pd.api.types.is_integer_dtype(s) or (dtype == "action_id" and pd.api.types.is_float_dtype(s))
        else:
            ok = (pd.api.types.is_float_dtype(s) or pd.api.types.is_integer_dtype(s)) and not \
                pd.api.types.is_bool_dtype(s)
        if not ok:
            want = "integer action id" if dtype == "action_id" else dtype
            raise DataError(f"wrong dtype {s.dtype}, expected {want}", table=table, column=col)
        nulls = s.isna().to_numpy()
        if nulls.any():
            raise DataError("null values", table=table, column=col, rows=_rows(nulls))
        if dtype in ("float32", "action_id"):
            bad = ~np.isfinite(s.to_numpy(np.float64))
            if bad.any():
                raise DataError("non-finite values", table=table, column=col, rows=_rows(bad))
    canon = schema.is_canonical  # v1 semantics: ranges only (its binary features may be step averages)
    for f in schema.state:
        for col in (f.name, f"next_{f.name}"):
            v = df[col].to_numpy(np.float64)
            bad = (v < f.low - 1e-4) | (v > f.high + 1e-4)
            binary = f.kind == "binary" and not canon
            if binary:
                bad |= (v != 0) & (v != 1)
            if bad.any():
                raise DataError(f"values outside [{f.low:g}, {f.high:g}] {f.unit}" +
                                (" or not 0/1" if binary else ""), table=table, column=col,
                                rows=_rows(bad))
    act = schema.action
    if isinstance(act, DiscreteAction):
        v = df[act.column].to_numpy(np.float64)
        bad = v != np.round(v)
        if bad.any():
            raise DataError("non-integer discrete action", table=table, column=act.column, rows=_rows(bad))
        bad = (v < 0) | (v >= act.n)
        if bad.any():
            raise DataError(f"action id outside 0 … {act.n - 1} (n = {act.n})", table=table, column=act.column,
                            rows=_rows(bad))
    else:
        for col, lo, hi, unit in zip(act.columns, act.low, act.high, act.units):
            v = df[col].to_numpy(np.float64)
            if lo == 0 and (v < 0).any():
                raise DataError("negative action", table=table, column=col, rows=_rows(v < 0))
            bad = (v < lo - 1e-4) | (v > hi + 1e-4)
            if bad.any():
                raise DataError(f"action outside [{lo:g}, {hi:g}] {unit}", table=table, column=col, rows=_rows(bad))
    if "action_bin" in dict(schema.extra):
        ab = df["action_bin"].to_numpy()
        bad = (ab < -1) | (ab > 24)
        if bad.any():
            raise DataError("action_bin outside [-1, 24]", table=table, column="action_bin", rows=_rows(bad))
    total = np.zeros(len(df))
    for c in schema.costs:
        v = df[c].to_numpy(np.float64)
        bad = (v != 0) & (v != 1)
        if bad.any():
            raise DataError("cost must be 0 or 1", table=table, column=c, rows=_rows(bad))
        total += v
    if "cost_total" in df.columns:
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
    bad = order["step"].to_numpy() != g.cumcount().to_numpy()
    if bad.any():
        raise DataError("steps of a stay must be consecutive from 0", table=table, column="step",
                        rows=order.index[bad].tolist())
    is_last = (g["step"].transform("max") == order["step"]).to_numpy()
    bad = order["done"].to_numpy() != is_last
    if bad.any():
        raise DataError("done must be true exactly on the last step of each stay", table=table, column="done",
                        rows=order.index[bad].tolist())
    constant = [*schema.outcome, *(f.name for f in schema.state if f.kind == "static" and not canon)]
    for col in (*constant, *(("split",) if require_split else ())):
        n = g[col].nunique()
        if (n > 1).any():
            raise DataError("must be constant within a stay", table=table, column=col, rows=n[n > 1].index.tolist())


# ---- reading ---------------------------------------------------------------------------------------------------
def from_metadata(meta: Mapping[bytes, bytes] | None, where: str) -> Schema | None:
    """The schema stored under ``ogsrl.schema`` in parquet key-value metadata, or None."""
    raw = (meta or {}).get(METADATA_KEY.encode())
    return None if raw is None else Schema.from_json(raw, f"{where}: metadata {METADATA_KEY}")


def read_schema(path: str | Path, sidecar: str | Path | None = None) -> Schema | None:
    """The schema of a trajectory parquet: the sidecar file when given, else its metadata; None when neither.

    A sidecar and a metadata schema that disagree are an error (one of them describes another table).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    stored = from_metadata(pq.read_schema(path).metadata, str(path.name))
    if not sidecar:
        return stored
    side = Path(sidecar)
    if not side.is_file():
        raise DataError(f"data.schema_path {str(side)!r} is not a file")
    declared = Schema.from_json(side.read_bytes(), f"schema file {side.name}")
    if stored is not None and stored != declared:
        raise DataError(f"the schema in {side.name} differs from the one in {path.name}'s metadata "
                        f"({METADATA_KEY}); remove one of them")
    return declared


def load_table_schema(path: str | Path) -> Schema:
    """The schema of a pipeline trajectory file (``data/trajectories/<split>.parquet``).

    A file without ``ogsrl.schema`` (written before contract v2) is a canonical table: its schema is
    :func:`canonical` of its cost columns.
    """
    import pyarrow.parquet as pq

    sch = pq.read_schema(path)
    stored = from_metadata(sch.metadata, Path(path).name)
    if stored is not None:
        return stored
    return canonical([c for c in sch.names if c.startswith("cost_") and c != "cost_total"])
