"""Raw-table gate on tiny hand-written MIMIC-IV-layout directories.

Each directory is validated once per module (GE costs ~1 s per run): one valid set, one set with one defect per
table (so every defect is detected in a single run and nothing else fails), and one with the demo's documented mess.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogsrl.validate.config import ValidationConfig
from ogsrl.validate.raw import RawResult, raw_ranges, validate_raw, value_rules

from .conftest import T0, make_tables, write_tables

SALT = "test-salt"


def broken_tables() -> dict[str, pd.DataFrame]:
    """One defect per table (see EXPECTED_FAILURES)."""
    t = make_tables()
    del t["prescriptions"]  # missing table
    t["microbiologyevents"] = t["microbiologyevents"].drop(columns=["spec_type_desc"])  # missing column
    lab = t["labevents"].astype({"valuenum": object})
    lab.loc[4, "valuenum"] = "abc"  # wrong dtype
    t["labevents"] = lab
    t["inputevents"].loc[1, "amount"] = -500.0  # negative amount
    ic = t["icustays"]
    ic.loc[1, "outtime"] = ic.loc[1, "intime"] - pd.Timedelta(hours=1)  # outtime < intime
    ic.loc[2, "stay_id"] = ic.loc[0, "stay_id"]  # duplicated stay_id
    t["outputevents"]["itemid"] = 40055  # a foreign (MIMIC-III) itemid set, unknown to d_items
    ce = t["chartevents"]
    ce.loc[ce["itemid"] == 220045, "valuenum"] = 999.0  # every HR is a charting error: beyond `mostly`
    t["d_items"] = t["d_items"][t["d_items"]["itemid"] != 225792]  # d_items lacks the ventilation item
    return t


EXPECTED_FAILURES = {
    ("tables", "tables", "status"),
    ("microbiologyevents_schema", "microbiologyevents", "spec_type_desc"),
    ("labevents_schema", "labevents", "valuenum"),
    ("inputevents", "inputevents", "amount"),
    ("icustays", "icustays", "los_h"),
    ("icustays", "icustays", "stay_id"),
    ("outputevents", "outputevents", "itemid"),
    ("chartevents", "chartevents", "valuenum"),
    ("procedureevents", "procedureevents", "itemid"),
}


def failures(res: RawResult) -> set[tuple[str, str, str]]:
    return {(o.suite, o.table, o.column) for o in res.outcomes if o.gating and not o.success}


def by_key(res: RawResult, suite: str, column: str, what: str = "") -> list:
    """Failed outcomes of one suite/column (optionally only rules whose text contains ``what``)."""
    return [o for o in res.outcomes if o.suite == suite and o.column == column and not o.success and what in o.what]


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> RawResult:
    root = write_tables(tmp_path_factory.mktemp("valid"), make_tables())
    return validate_raw(root, ValidationConfig(), SALT)


@pytest.fixture(scope="module")
def broken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_tables(tmp_path_factory.mktemp("broken"), broken_tables())
    (root / "hosp" / "admissions.csv.gz").write_bytes(gzip.compress(b"subject_id,hadm_id\n1,2\n")[:25])  # corrupt
    return root


@pytest.fixture(scope="module")
def broken(broken_dir: Path) -> RawResult:
    return validate_raw(broken_dir, ValidationConfig(), SALT)


def test_valid_directory_passes(valid: RawResult) -> None:
    assert valid.success
    assert failures(valid) == set()
    assert valid.rows["chartevents"] == 48 and valid.rows["icustays"] == 3 and len(valid.rows) == 12
    assert all(not o.error for o in valid.outcomes)
    suites = {o.suite for o in valid.outcomes}
    assert {"tables", "chartevents_schema", "chartevents", "icustays", "d_items"} <= suites
    # one range rule per distinct raw range; °F and lb items get converted bounds
    ranges = {name: (lo, hi) for _, lo, hi, name in raw_ranges()["chartevents"]}
    assert ranges["temp_f"] == pytest.approx((77.0, 113.0))
    assert ranges["weight_lb"][1] == pytest.approx(300 / 0.453592, rel=1e-4)
    assert ranges["fio2"] == (0.21, 100.0)


def test_parquet_layout_passes(tmp_path: Path) -> None:
    root = write_tables(tmp_path, make_tables(), fmt="parquet")
    res = validate_raw(root, ValidationConfig(), SALT)
    assert res.success, [o.line() for o in res.outcomes if not o.success]
    assert res.rows["chartevents"] == 48


def test_each_defect_fails_and_nothing_else(broken: RawResult) -> None:
    assert not broken.success
    assert failures(broken) == EXPECTED_FAILURES


def test_missing_and_corrupt_tables_named(broken: RawResult) -> None:
    (o,) = by_key(broken, "tables", "status")
    assert o.unexpected_count == 2 and o.element_count == 12
    text = o.line()
    assert "prescriptions" in text and "'missing'" in text
    assert "admissions" in text and "'unreadable'" in text


@pytest.mark.parametrize(
    ("suite", "column", "needles"),
    [
        ("microbiologyevents_schema", "spec_type_desc", ["microbiologyevents", "column present", "absent"]),
        ("labevents_schema", "valuenum", ["labevents", "'abc'", "dtype", "float"]),
        ("inputevents", "amount", ["inputevents", "amount >= 0", "-500"]),
        ("icustays", "los_h", ["icustays", "intime < outtime", "-1"]),
        ("icustays", "stay_id", ["icustays", "one row per stay_id"]),
        ("outputevents", "itemid", ["outputevents", "d_items", "40055", "6 of 6"]),
        ("outputevents", "itemid", ["outputevents", "MIMIC-IV itemids present", "missing: ['226559']"]),
        ("chartevents", "valuenum", ["chartevents", "hr (itemid 220045)", "999"]),
        ("procedureevents", "itemid", ["procedureevents", "225792"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_failure_message_names_table_column_and_values(
    broken: RawResult, suite: str, column: str, needles: list[str]
) -> None:
    what = {"amount": ">= 0", "itemid": "MIMIC-IV" if "MIMIC-IV itemids present" in needles else "defined"}
    (o,) = by_key(broken, suite, column, what.get(column, ""))
    text = o.line()
    for needle in needles:
        assert needle in text, (needle, text)


def test_counts_are_exact(broken: RawResult) -> None:
    (neg,) = by_key(broken, "inputevents", "amount", ">= 0")
    assert (neg.unexpected_count, neg.element_count) == (1, 6)
    (fluid,) = by_key(broken, "inputevents", "amount", "IV fluid")  # the same row among the 3 fluid rows
    assert (fluid.unexpected_count, fluid.element_count) == (1, 3)
    (hr,) = by_key(broken, "chartevents", "valuenum")
    assert (hr.unexpected_count, hr.element_count, hr.unexpected_percent) == (3, 3, 100.0)
    (dup,) = by_key(broken, "icustays", "stay_id")
    assert dup.unexpected_count == 2  # both rows sharing the id
    (sch,) = by_key(broken, "labevents_schema", "valuenum")
    assert sch.unexpected_count == 1 and "n_uncastable=1" in sch.examples[0]


def test_raw_ids_and_timestamps_never_quoted(broken: RawResult) -> None:
    text = " ".join(o.line() for o in broken.outcomes)
    for ident in ("10000001", "20000001", "30000001"):
        assert ident not in text
    assert "2150-" not in text


def test_exact_duckdb_path_agrees_with_ge(broken_dir: Path, broken: RawResult) -> None:
    """full_max_rows=0 sends every event table through exact DuckDB counts (GE then runs on a sample only)."""
    exact = validate_raw(broken_dir, ValidationConfig(full_max_rows=0, sample_rows=7), SALT)
    assert failures(exact) == {
        (s if s in ("tables",) or s.endswith("_schema") or s in ("icustays", "d_items") else f"{s}_exact", t, c)
        for s, t, c in failures(broken)
    }
    full = {(o.table, o.column, o.what): o for o in broken.outcomes if o.suite in
            {"chartevents", "inputevents", "outputevents", "procedureevents", "labevents"}}
    ex = {(o.table, o.column, o.what): o for o in exact.outcomes if o.suite.endswith("_exact")}
    assert set(full) == set(ex) and len(ex) > 20
    for key, o in full.items():
        assert (ex[key].success, ex[key].unexpected_count, ex[key].element_count) == (
            o.success, o.unexpected_count, o.element_count), key
    sample = [o for o in exact.outcomes if o.suite.endswith("_sample")]
    assert sample and not any(o.gating for o in sample)
    assert {n for n, _ in exact.runs} >= {"chartevents_exact", "chartevents_sample"}


def test_large_table_sample_is_seeded_pseudonymised_and_thread_invariant(
        broken_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Data Docs sample of the single pass: the sample_rows rows of smallest seeded hash, the same with 1 or 2
    DuckDB threads, ids as 16-hex salted hashes (never raw), and read in one pass per event table."""
    import ogsrl.validate.raw as raw

    frames: dict[tuple[int, str], pd.DataFrame] = {}
    real = raw.run_suite

    def spy(ctx, name, frame, rules, index):  # noqa: ANN001, ANN202 - test double of run_suite
        frames[(threads, name)] = frame.copy()
        return real(ctx, name, frame, rules, index)

    monkeypatch.setattr(raw, "run_suite", spy)
    reads: list[str] = []
    real_exec = raw.progress.execute
    monkeypatch.setattr(raw.progress, "execute",
                        lambda con, sql, label, *a, **k: (reads.append(label), real_exec(con, sql, label, *a, **k))[1])
    for threads in (1, 2):
        validate_raw(broken_dir, ValidationConfig(full_max_rows=0, sample_rows=4, duckdb_threads=threads), SALT)
    a, b = frames[(1, "chartevents_sample")], frames[(2, "chartevents_sample")]
    assert len(a) == 4
    key = sorted(a.columns)
    pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True)[key],
                                  b.sort_values(key).reset_index(drop=True)[key])
    for col in ("subject_id", "hadm_id", "stay_id"):
        assert a[col].str.fullmatch(r"[0-9a-f]{16}").all(), col
    # one read per readable table and run (labevents and chartevents included), none per rule
    per_run = [r for r in reads[: len(reads) // 2]]
    assert len(per_run) == len(set(per_run)) and "validate-raw chartevents" in per_run


def test_demo_mess_is_tolerated(tmp_path: Path) -> None:
    """The documented demo mess — a small rate of charting errors, °F temperatures and FiO2 charted as a fraction —
    passes (the extraction cleans it); the same errors at a high rate fail (see the broken set's HR column)."""
    t = make_tables()
    rng = np.random.default_rng(0)
    base = t["chartevents"].iloc[0].to_dict()
    rows = []
    for k in range(300):
        item, val = [(220045, rng.normal(90, 10)), (223761, rng.normal(99.5, 1.0)),
                     (223835, rng.choice([0.4, 0.5, 40.0, 50.0])), (223762, rng.normal(37.2, 0.5))][k % 4]
        rows.append(base | {"itemid": item, "valuenum": float(val), "value": str(val),
                            "charttime": T0 + pd.Timedelta(minutes=k)})
    mess = pd.DataFrame(rows)
    hr = mess.index[mess["itemid"] == 220045]
    mess.loc[hr[:2], "valuenum"] = 999.0  # 2 of 75 HR values (2.7 %) are charting errors
    tc = mess.index[mess["itemid"] == 223762]
    mess.loc[tc[:2], "valuenum"] = 99.0  # °F charted under the °C item
    t["chartevents"] = pd.concat([t["chartevents"], mess], ignore_index=True)
    res = validate_raw(write_tables(tmp_path, t), ValidationConfig(), SALT)
    assert res.success, [o.line() for o in res.outcomes if not o.success]
    hr_rule = [o for o in res.outcomes if o.suite == "chartevents" and "itemid 220045" in o.what]
    assert hr_rule[0].unexpected_count == 2 and hr_rule[0].element_count == 78


def test_value_rules_cover_contract() -> None:
    cfg = ValidationConfig()
    rules = value_rules("chartevents", cfg, d_items=[1], d_labitems=None)
    ranged = {i for r in rules if r.kind == "between" for i in r.where_itemids}
    from ogsrl import features as F

    assert ranged == set(F.CHART_ITEMS)
    assert all(r.mostly == cfg.range_mostly for r in rules if r.where_itemids)
    nonneg = value_rules("inputevents", cfg, d_items=[1], d_labitems=None)
    assert {r.column for r in nonneg if ">= 0 for" in r.what} == {"amount", "rate", "duration_h"}
    assert all(r.mostly == cfg.nonneg_mostly for r in nonneg if ">= 0 for" in r.what)


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="raw data directory"):
        validate_raw(tmp_path / "nope", ValidationConfig(), SALT)


def test_rule_and_config_validation() -> None:
    from ogsrl.validate.gx import Rule

    with pytest.raises(ValueError, match="unknown rule kind"):
        Rule("t", "c", "between_ish", "x")
    with pytest.raises(ValueError, match="mostly"):
        Rule("t", "c", "between", "x", mostly=0.0)
    with pytest.raises(ValueError, match="no row-wise SQL form"):
        Rule("t", "c", "unique", "x").sql_counts()
    rows, denom, bad = Rule("t", "v", "between", "x", min_value=0, strict_min=True, where_itemids=(1, 2)).sql_counts()
    assert rows == "itemid IN (1, 2)" and '"v" <= 0' in bad and "IS NOT NULL" in denom
    with pytest.raises(ValueError, match="range_mostly"):
        ValidationConfig(range_mostly=1.2)
    with pytest.raises(ValueError, match="sample_rows"):
        ValidationConfig(sample_rows=0)
