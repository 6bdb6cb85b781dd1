"""`ogsrl extract`: raw tables (or a bring-your-own trajectory parquet) → data/trajectories/{train,val,test}.parquet.

Outputs are built completely in memory / DuckDB first and then swapped in atomically (the whole
``data/trajectories`` folder, then ``data/reports/cohort.json``), so any error leaves the previous outputs intact.
The stage refuses to run unless ``ogsrl validate-raw`` passed on the same source (its report is a DVC dependency;
the check also guards a hand-run ``ogsrl extract``).

Stay keys are salted with :func:`ogsrl.privacy.resolve_salt` (the secret salt for real data, never ``cohort.salt``
from params.yaml), and an extraction error that quotes rows names them by salted key, not raw id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ogsrl.cohort import views
from ogsrl.cohort.extract import CohortConfig, extract, split_stays
from ogsrl.config import build
from ogsrl.costs import build_costs
from ogsrl.data.contract import CONTRACT_VERSION, SPLITS, check_trajectories, cost_columns_of, read_metadata
from ogsrl.data.schema import METADATA_KEY, SCHEMA_VERSION, Schema, canonical, read_schema, table_columns
from ogsrl.data.sources import resolve
from ogsrl import privacy
from ogsrl.errors import DataError
from ogsrl.io import atomic_path, write_json

log = logging.getLogger(__name__)

OUT_DIR = Path("data") / "trajectories"
METRICS = Path("data") / "reports" / "cohort.json"
RAW_VALIDATION = Path("data") / "reports" / "validation_raw.json"
"""the report `ogsrl validate-raw` writes (ogsrl.validate.stage.RAW_METRICS)"""


def check_raw_validation(root: Path, source: str) -> None:
    """DataError unless the raw-validation report exists, says success and was written for ``source``."""
    path = Path(root) / RAW_VALIDATION
    rerun = "run `ogsrl validate-raw` first"
    if not path.is_file():
        raise DataError(f"no raw-validation report at {RAW_VALIDATION}: {rerun}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable raw-validation report {RAW_VALIDATION} ({type(exc).__name__}): {rerun}") from None
    if not isinstance(report, dict) or report.get("success") is not True:
        failed = report.get("n_failed", "?") if isinstance(report, dict) else "?"
        raise DataError(f"the raw tables failed validation ({failed} failed expectation(s) in {RAW_VALIDATION}); "
                        "fix the raw data and rerun `ogsrl validate-raw` (report: data/reports/validation/raw)")
    if report.get("source") != source:
        raise DataError(f"the raw-validation report {RAW_VALIDATION} is for data.source {report.get('source')!r}, "
                        f"not {source!r}: {rerun}")


def _table(df: pd.DataFrame, metadata: Mapping[str, str], columns: list[tuple[str, str]]) -> pa.Table:
    fields = []
    for col, dtype in columns:
        typ = {"string": pa.string(), "int16": pa.int16(), "float32": pa.float32(), "bool": pa.bool_()}[dtype]
        fields.append(pa.field(col, typ, nullable=False))
    schema = pa.schema(fields, metadata={k.encode(): v.encode() for k, v in metadata.items()})
    arrays = [pa.array(df[f.name].to_numpy().tolist() if f.type == pa.string() else df[f.name].to_numpy(),
                       type=f.type) for f in fields]
    return pa.Table.from_arrays(arrays, schema=schema)


PROVIDERS = "providers.parquet"
"""stay_key → provider_key (the pseudonymous attending; absent when the source records none)"""


def _write(root: Path, tables: Mapping[str, pd.DataFrame], metadata: Mapping[str, str],
           columns: list[tuple[str, str]], providers: pd.DataFrame | None = None) -> None:
    with atomic_path(root / OUT_DIR) as tmp:
        tmp.mkdir(parents=True)
        for split in SPLITS:
            pq.write_table(_table(tables[split], metadata, columns), tmp / f"{split}.parquet",
                           compression="zstd")
        if providers is not None and len(providers):
            pq.write_table(_table(providers, {}, [("stay_key", "string"), ("provider_key", "string")]),
                           tmp / PROVIDERS, compression="zstd")


def _providers_of(df: pd.DataFrame, table: str) -> pd.DataFrame | None:
    """A bring-your-own table's optional ``provider_key`` column (the attending's pseudonym, one per stay)."""
    if "provider_key" not in df.columns:
        return None
    per = df.groupby("stay_key")["provider_key"].nunique(dropna=False)
    if (per > 1).any():
        raise DataError(f"provider_key changes within a stay ({int((per > 1).sum())} stays)", table=table,
                        column="provider_key", rows=per.index[per > 1][:5].tolist())
    first = df.drop_duplicates("stay_key")
    first = first[first["provider_key"].notna()]
    return pd.DataFrame({"stay_key": first["stay_key"].astype(str).to_numpy(),
                         "provider_key": first["provider_key"].astype(str).to_numpy()}).sort_values(
        "stay_key", ignore_index=True)


def _from_trajectories(path: Path, cfg: CohortConfig, schema_path: Path | None = None
                       ) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, str], Schema,
                                  pd.DataFrame | None]:
    """A bring-your-own table → the pipeline's split tables (docs/data-contract.md §3–4).

    Without a declared schema (parquet metadata ``ogsrl.schema`` or ``schema_path``) the table must follow contract v1
    (every canonical feature). A v2 table gets ``cost_total`` (sum of its costs) when absent, ``hours_since_onset``
    from the step grid (``cohort.window_start_h + step · cohort.step_h``) and ``death_in_step`` (its first outcome
    on the last step; False without outcomes). Without a ``split`` column stays are split with ``cohort.split`` /
    ``cohort.seed``.
    """
    try:
        df = pd.read_parquet(path)
        declared = read_schema(path, schema_path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise DataError(f"cannot read trajectory parquet {path}: {exc}") from exc
    has_split = "split" in df.columns
    check_trajectories(df, require_split=has_split, table=str(path), schema=declared)
    schema = declared if declared is not None else canonical(cost_columns_of(df))
    if not has_split:
        assign = split_stays(df["stay_key"].astype(str).to_numpy(), cfg.split, cfg.seed)
        df["split"] = df["stay_key"].astype(str).map(assign)
    if "cost_total" not in df.columns:
        df["cost_total"] = df[list(schema.costs)].to_numpy(np.float64).sum(axis=1)
    if not schema.is_canonical:
        df["hours_since_onset"] = cfg.window_start_h + cfg.step_h * df["step"].to_numpy(np.float64)
        died = df[schema.outcome[0]].to_numpy(bool) if schema.outcome else np.zeros(len(df), dtype=bool)
        df["death_in_step"] = died & df["done"].to_numpy(bool)
    cols = table_columns(schema)
    out = pd.DataFrame({c: df[c].to_numpy().astype(d) if d not in ("string",) else df[c].astype(str).to_numpy()
                        for c, d in cols})
    out = out.sort_values(["stay_key", "step"], kind="stable").reset_index(drop=True)
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in read_metadata(path).items()}
    if schema.is_canonical:
        meta.setdefault("ogsrl.state_features", json.dumps(list(cfg.state_features)))
    else:  # the configured (canonical) subset when the table has it, else every declared feature
        have = set(schema.state_names)
        subset = [f for f in cfg.state_features if f in have]
        meta.setdefault("ogsrl.state_features", json.dumps(subset if len(subset) == len(cfg.state_features)
                                                           else list(schema.state_names)))
    meta["ogsrl.action_columns"] = json.dumps(list(schema.action_columns))
    meta["ogsrl.cost_columns"] = json.dumps([*schema.costs, "cost_total"])
    meta["ogsrl.contract_version"] = CONTRACT_VERSION if schema.is_canonical else SCHEMA_VERSION
    meta[METADATA_KEY] = schema.to_json()
    if not schema.is_canonical:  # the step grid: a stay as long as the longest one was cut by the window
        meta.setdefault("ogsrl.step_h", json.dumps(cfg.step_h))
        meta.setdefault("ogsrl.n_steps", json.dumps(int(out["step"].max()) + 1))
    per = out.groupby("stay_key").agg(n=("step", "size"), s=("split", "first"))
    metrics: dict[str, Any] = {"source": "trajectories", "cohort_stays": int(len(per)), "rows": int(len(out))}
    for name, col in (("mortality_in_hosp", "died_in_hosp"), ("mortality_90d", "died_90d")):
        if col in out.columns:
            metrics[name] = round(float(out.groupby("stay_key")[col].first().mean()), 6)
    if not schema.is_canonical and schema.outcome:
        metrics["outcome_rate"] = round(float(out.groupby("stay_key")[schema.outcome[0]].first().mean()), 6)
    metrics.update({
        "steps_per_stay_mean": round(float(per["n"].mean()), 4), "steps_per_stay_min": int(per["n"].min()),
        "steps_per_stay_max": int(per["n"].max()),
    })
    for s in SPLITS:
        metrics[f"stays_{s}"] = int((per["s"] == s).sum())
    tables = {s: out[out["split"] == s].reset_index(drop=True) for s in SPLITS}
    providers = _providers_of(df, str(path))
    if providers is not None:
        metrics["stays_with_attending"] = int(len(providers))
        metrics["attendings"] = int(providers["provider_key"].nunique())
    return tables, metrics, meta, schema, providers


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The `extract` stage. Returns (and writes to data/reports/cohort.json) the flat cohort metrics."""
    root = Path(root)
    cfg = build(CohortConfig, params.get("cohort"), "cohort")
    costs = build_costs(params)
    source = resolve(params, root)
    check_raw_validation(root, source.kind)
    if source.kind == "trajectories":
        tables, metrics, meta, schema, providers = _from_trajectories(source.path, cfg, source.schema_path)
    else:
        salt = privacy.resolve_salt(params, root)
        privacy.check_fingerprint(params, root, salt)
        cfg = dataclasses.replace(cfg, salt=salt)
        with views.spill_directory("ogsrl-duckdb-") as tmp:
            con = views.connect(cfg.duckdb_memory_limit, cfg.duckdb_threads, temp_directory=tmp)
            try:
                views.register_directory(con, source.path)
                result = extract(con, cfg, costs)
            except DataError as exc:  # the cohort SQL quotes offending stays by raw id
                raise privacy.pseudonymise_rows(exc, salt) from None
            finally:
                con.close()
        tables, metrics, meta, providers = result.tables, dict(result.metrics), result.metadata, result.providers
        schema = canonical(costs.columns)
        metrics["source"] = source.kind
    _write(root, tables, meta, table_columns(schema), providers)
    write_json(root / METRICS, metrics)
    log.info("extract: %d stays, %d rows", metrics["cohort_stays"], metrics["rows"])
    return metrics
