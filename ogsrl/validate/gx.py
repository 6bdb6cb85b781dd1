"""Thin Great Expectations 1.x layer: one rule type, an ephemeral context, and flattened results.

A :class:`Rule` is written once and used two ways: as a GE expectation run on a pandas frame (small tables in full,
large tables as a seeded sample, trajectory files, and DuckDB-built schema/summary frames), and — for the big event
tables — as an SQL predicate whose exact violation count DuckDB computes over the whole file. Keeping both renderings
next to each other is what makes the exact count and the GE result agree (tests check that they do).

Great Expectations is imported lazily (about 4 s) and its tqdm progress bars are switched off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Kind = str
"""between | not_null | in_set | unique | compound_unique | contains_set"""


@dataclass(frozen=True, slots=True)
class Rule:
    """One expectation about one column of one table."""

    table: str
    """table (or trajectory file / summary frame) the rule is about"""
    column: str
    """column the rule checks (first column for compound rules)"""
    kind: Kind
    """between | not_null | in_set | unique | compound_unique | contains_set"""
    what: str
    """plain-language statement of the rule, used in the failure summary"""
    min_value: float | None = None
    """between: lower bound (None = unbounded)"""
    max_value: float | None = None
    """between: upper bound (None = unbounded)"""
    strict_min: bool = False
    """between: lower bound excluded"""
    values: tuple[Any, ...] = ()
    """in_set / contains_set: the allowed or required values"""
    columns: tuple[str, ...] = ()
    """compound_unique: the key columns"""
    where_itemids: tuple[int, ...] = ()
    """only rows whose itemid is in this tuple are checked (empty = all rows)"""
    mostly: float = 1.0
    """share of checked (non-null) rows that must pass, as GE's `mostly`"""
    label_column: str = ""
    """summary frames: the frame column holding the real column name; failures are reported under those names"""
    unit: str = "rows"
    """what one element of the frame is, for the summary text (rows, columns, stays, tables, ...)"""

    def __post_init__(self) -> None:
        if self.kind not in ("between", "not_null", "in_set", "unique", "compound_unique", "contains_set"):
            raise ValueError(f"unknown rule kind {self.kind!r}")
        if not 0.0 < self.mostly <= 1.0:
            raise ValueError(f"mostly must be in (0, 1], got {self.mostly}")

    # ---- Great Expectations rendering ------------------------------------------------------------------------
    def expectation(self, index: int = 0) -> Any:
        """The GE expectation object for this rule; ``index`` is stored in its meta to match results back."""
        import great_expectations.expectations as gxe

        extra: dict[str, Any] = {"meta": {"table": self.table, "what": self.what, "ogsrl_rule": index}}
        if self.where_itemids:
            ids = sorted(self.where_itemids)
            cond = f"itemid=={ids[0]}" if len(ids) == 1 else f"itemid in {ids}"
            extra |= {"row_condition": cond, "condition_parser": "pandas"}
        if self.mostly < 1.0:
            extra["mostly"] = self.mostly
        if self.kind == "between":
            return gxe.ExpectColumnValuesToBeBetween(
                column=self.column, min_value=self.min_value, max_value=self.max_value, strict_min=self.strict_min,
                **extra,
            )
        if self.kind == "not_null":
            return gxe.ExpectColumnValuesToNotBeNull(column=self.column, **extra)
        if self.kind == "in_set":
            return gxe.ExpectColumnValuesToBeInSet(column=self.column, value_set=list(self.values), **extra)
        if self.kind == "unique":
            return gxe.ExpectColumnValuesToBeUnique(column=self.column, **extra)
        if self.kind == "compound_unique":
            extra.pop("mostly", None)
            return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(self.columns), **extra)
        extra.pop("mostly", None)
        extra.pop("row_condition", None)
        extra.pop("condition_parser", None)
        return gxe.ExpectColumnDistinctValuesToContainSet(column=self.column, value_set=list(self.values), **extra)

    # ---- SQL rendering (exact counts over a whole table) -----------------------------------------------------
    def sql_counts(self) -> tuple[str, str, str]:
        """``(rows, denominator, unexpected)`` SQL boolean expressions, counted the way GE counts them.

        ``rows`` are the rows the rule applies to (GE's element_count, after the itemid condition), ``denominator``
        the rows the ``mostly`` share is taken over (all of them for not_null, else the non-null ones), and
        ``unexpected`` the violating rows. Only the row-wise kinds have an SQL form.
        """
        col = _q(self.column)
        cond = f"itemid IN ({', '.join(str(i) for i in self.where_itemids)})" if self.where_itemids else "TRUE"
        if self.kind == "not_null":
            return cond, cond, f"({cond}) AND {col} IS NULL"
        checked = f"({cond}) AND {col} IS NOT NULL"
        if self.kind == "between":
            parts = []
            if self.min_value is not None:
                parts.append(f"{col} {'<=' if self.strict_min else '<'} {self.min_value!r}")
            if self.max_value is not None:
                parts.append(f"{col} > {self.max_value!r}")
            bad = " OR ".join(parts) or "FALSE"
            return cond, checked, f"{checked} AND ({bad})"
        if self.kind == "in_set":
            vals = ", ".join(_sql_literal(v) for v in self.values) or "NULL"
            return cond, checked, f"{checked} AND {col} NOT IN ({vals})"
        raise ValueError(f"rule kind {self.kind!r} has no row-wise SQL form")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One evaluated expectation, flattened for summaries, JSON and HTML."""

    suite: str
    """GE suite name"""
    table: str
    """table the rule is about"""
    column: str
    """checked column"""
    expectation: str
    """GE expectation type, e.g. expect_column_values_to_be_between"""
    what: str
    """plain-language rule"""
    success: bool
    """the expectation passed"""
    gating: bool
    """a failure stops the pipeline (False for informational sample runs)"""
    element_count: int | None = None
    """rows checked"""
    unexpected_count: int | None = None
    """rows violating the rule"""
    unexpected_percent: float | None = None
    """violating share of non-null checked rows, in %"""
    examples: tuple[str, ...] = ()
    """a few offending values or rows"""
    observed: str = ""
    """observed value for aggregate expectations"""
    error: str = ""
    """exception text if GE could not evaluate the expectation"""
    unit: str = "rows"
    """what the counts count (rows, columns, stays, required values, ...)"""
    extra: dict[str, Any] = field(default_factory=dict)
    """anything else worth keeping in the JSON summary"""

    def line(self) -> str:
        """One readable line for the failure summary."""
        where = f"table {self.table!r}, column {self.column!r}"
        text = f"{where}: {self.expectation} ({self.what})"
        if self.error:
            return f"{text} could not be evaluated: {self.error}"
        if self.unexpected_count is not None:
            n = "?" if self.element_count is None else str(self.element_count)
            pct = f", {self.unexpected_percent:.3g}%" if self.unexpected_percent is not None else ""
            text += f" — {self.unexpected_count} of {n} {self.unit} unexpected{pct}"
        if self.observed:
            text += f" — observed {self.observed}"
        if self.examples:
            text += f"; e.g. {', '.join(self.examples)}"
        return text


def _quiet() -> Any:
    """Import GE with progress bars and chatty loggers off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return gx


def new_context() -> Any:
    """An ephemeral GE data context (nothing written to disk) with progress bars disabled."""
    gx = _quiet()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def run_suite(
    ctx: Any,
    name: str,
    frame: Any,
    rules: Sequence[Rule],
    index_columns: Sequence[str] = (),
) -> Any:
    """Validate a pandas frame against ``rules`` with GE; returns the ExpectationSuiteValidationResult.

    The suite is validated on a whole-dataframe batch of one pandas asset per context (``batch.validate``), so
    nothing is written to the context's stores between suites.
    """
    gx = _quiet()
    batch_def = _batch_definition(ctx)
    suite = gx.ExpectationSuite(name=name, expectations=[r.expectation(i) for i, r in enumerate(rules)])
    fmt: dict[str, Any] = {"result_format": "COMPLETE", "partial_unexpected_count": 5}
    idx = [c for c in index_columns if c in frame.columns]
    if idx:
        fmt["unexpected_index_column_names"] = idx
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format=fmt)
    result.meta["ogsrl_suite"] = name
    return result


def _batch_definition(ctx: Any) -> Any:
    """The context's single whole-dataframe batch definition, created on first use."""
    if "ogsrl" not in ctx.data_sources.all():
        asset = ctx.data_sources.add_pandas("ogsrl").add_dataframe_asset("frames")
        return asset.add_batch_definition_whole_dataframe("whole")
    return ctx.data_sources.get("ogsrl").get_asset("frames").get_batch_definition("whole")


def _short(v: Any) -> str:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_short(x) for x in v) + ")"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}={_short(x)}" for k, x in v.items()) + "}"
    return repr(v) if isinstance(v, str) else str(v)


def outcomes(
    result: Any, rules: Sequence[Rule], suite: str, *, gating: bool, max_examples: int = 5
) -> list[Outcome]:
    """Flatten a GE validation result into :class:`Outcome` rows (same order as ``rules``)."""
    out = []
    by_index = {int((res.expectation_config.meta or {})["ogsrl_rule"]): res for res in result.results}
    if sorted(by_index) != list(range(len(rules))):
        raise RuntimeError(f"GE returned results for rules {sorted(by_index)}, expected 0..{len(rules) - 1}")
    for i, rule in enumerate(rules):
        res = by_index[i]
        r = res.result or {}
        err = ""
        if res.exception_info and res.exception_info.get("raised_exception"):
            err = str(res.exception_info.get("exception_message"))[:300]
        examples: list[str] = []
        idx = r.get("unexpected_index_list")
        if isinstance(idx, list) and idx and isinstance(idx[0], Mapping):
            examples = [_short(x) for x in idx[:max_examples]]
        elif r.get("partial_unexpected_list"):
            examples = [_short(x) for x in r["partial_unexpected_list"][:max_examples]]
        observed = ""
        if rule.kind == "contains_set" and "missing_count" in r:
            missing = list(r.get("partial_missing_list") or [])
            more = " …" if r["missing_count"] > max_examples else ""
            observed = f"{r['missing_count']} missing: {[_short(m) for m in missing[:max_examples]]}{more}"
        elif "observed_value" in r:
            details = r.get("details") or {}
            observed = _short(r["observed_value"] if not details else details)
        pct = r.get("unexpected_percent_nonmissing", r.get("unexpected_percent"))
        column = rule.column if rule.kind != "compound_unique" else "+".join(rule.columns)
        if rule.label_column and isinstance(idx, list) and idx and isinstance(idx[0], Mapping):
            column = ", ".join(str(x.get(rule.label_column)) for x in idx)
        out.append(
            Outcome(
                suite=suite,
                table=rule.table,
                column=column,
                unit="required values" if rule.kind == "contains_set" else rule.unit,
                expectation=res.expectation_config.type,
                what=rule.what,
                success=bool(res.success),
                gating=gating,
                element_count=len(rule.values) if rule.kind == "contains_set" else r.get("element_count"),
                unexpected_count=r.get("missing_count") if rule.kind == "contains_set" else r.get("unexpected_count"),
                unexpected_percent=None if pct is None else float(pct),
                examples=tuple(examples),
                observed=observed,
                error=err,
            )
        )
    return out
