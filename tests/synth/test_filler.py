"""The full-size stand-in maker on the 120-stay chunk: itemids disjoint from ours, exact row counts, per-stay
counts proportional to stay length, the MIMIC-IV layout unchanged, same rows in csv.gz and parquet, reproducible,
and the same cohort extracted with and without filler."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from ogsrl import features as F
from ogsrl.cohort import views
from ogsrl.cohort.extract import CohortConfig, extract
from ogsrl.costs import CostsConfig
from ogsrl.errors import DataError
from ogsrl.synth import filler
from ogsrl.synth import tables as T

EXTRA = {"chartevents": 6000, "labevents": 3000, "inputevents": 700, "outputevents": 500, "procedureevents": 300,
         "prescriptions": 800}


def _rows(path: Path) -> int:
    return duckdb.execute(f"SELECT count(*) FROM '{path}'").fetchone()[0]


def _file(root: Path, table: str, fmt: str) -> Path:
    return root / T.MODULE[table] / f"{table}.{fmt}"


@pytest.fixture(scope="module")
def base_rows(small_dir: Path) -> dict[str, int]:
    return {t: _rows(_file(small_dir, t, "csv.gz")) for t in T.SCHEMAS}


@pytest.fixture(scope="module")
def filled(small_dir: Path, base_rows: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The chunk padded by EXTRA rows per table, as csv.gz and as parquet."""
    targets = filler.targets_for(rows={t: base_rows[t] + n for t, n in EXTRA.items()})
    out = {"targets": targets}
    for fmt in ("csv.gz", "parquet"):
        d = tmp_path_factory.mktemp("filled") / fmt
        out[fmt] = d
        out[f"report_{fmt}"] = filler.add_filler(small_dir, d, targets, seed=5, fmt=fmt, threads=1,
                                                 memory_limit="1GB")
    return out


def test_filler_itemids_never_ours() -> None:
    items = filler.filler_items()
    ours = filler.read_items()
    flat = [i for v in items.values() for i in v]
    assert len(flat) == len(set(flat)) == sum(filler._N_FILLER.values())  # pairwise disjoint, as many as asked
    assert not set(flat) & ours
    assert not set(flat) & {int(i) for i in T.d_items()["itemid"].to_pylist()}
    assert not set(flat) & {int(i) for i in T.d_labitems()["itemid"].to_pylist()}
    # spread over our itemids' range: parquet min/max statistics cannot skip a row group of filler
    chart_ours = [i for i in ours if i >= 220000]
    assert min(items["chartevents"]) < min(chart_ours) and max(items["chartevents"]) > max(chart_ours)
    assert min(items["labevents"]) < min(i for i in ours if i < 60000) < max(items["labevents"])


def test_row_counts_and_dictionaries(filled: dict, base_rows: dict[str, int]) -> None:
    items = filler.filler_items()
    for fmt in ("csv.gz", "parquet"):
        d, report = filled[fmt], filled[f"report_{fmt}"]
        for t in T.SCHEMAS:
            want = filled["targets"][t] if t in filler.PADDED else base_rows[t]
            if t == "d_items":
                want += sum(len(items[x]) for x in filler.ICU_ITEM_TABLES)
            if t == "d_labitems":
                want += len(items["labevents"])
            assert _rows(_file(d, t, fmt)) == want, (fmt, t)
        for t, n in EXTRA.items():
            assert report[f"rows_filler.{t}"] == n
            if t not in items:
                continue
            n_filler = duckdb.execute(f"SELECT count(*) FROM '{_file(d, t, fmt)}' WHERE itemid IN "
                                  f"({', '.join(map(str, items[t]))})").fetchone()[0]
            assert n_filler == n  # every added row carries a filler itemid
        # every itemid used is defined in its dictionary (validate-raw's in_set rule)
        undefined = duckdb.execute(f"""SELECT count(*) FROM '{_file(d, "chartevents", fmt)}'
            WHERE itemid NOT IN (SELECT itemid FROM '{_file(d, "d_items", fmt)}')""").fetchone()[0]
        assert undefined == 0


def test_layout_identical(filled: dict, small_dir: Path) -> None:
    for t in T.SCHEMAS:
        with gzip.open(_file(small_dir, t, "csv.gz"), "rt") as a, gzip.open(_file(filled["csv.gz"], t, "csv.gz"),
                                                                           "rt") as b:
            assert a.readline() == b.readline(), t  # same header: column names and order
        types = duckdb.execute(f"DESCRIBE SELECT * FROM '{_file(filled['parquet'], t, 'parquet')}'").fetchall()
        assert [(r[0], r[1]) for r in types] == [(f.name, filler._DUCK_TYPE[f.type]) for f in T.SCHEMAS[t]], t


def test_csv_and_parquet_hold_the_same_rows(filled: dict) -> None:
    for t in ("chartevents", "labevents", "inputevents", "outputevents"):
        col = {"chartevents": "valuenum", "labevents": "valuenum", "inputevents": "amount",
               "outputevents": "value"}[t]
        sql = "SELECT itemid, count(*) AS n, round(sum({c}), 6) AS s, min({ts}) AS t FROM '{f}' GROUP BY 1 ORDER BY 1"
        ts = "starttime" if t == "inputevents" else "charttime"
        a = duckdb.execute(sql.format(c=col, ts=ts, f=_file(filled["csv.gz"], t, "csv.gz"))).df()
        b = duckdb.execute(sql.format(c=col, ts=ts, f=_file(filled["parquet"], t, "parquet"))).df()
        pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_per_stay_counts_follow_stay_length(filled: dict) -> None:
    """Stay s gets floor(n·W_s/W) − floor(n·W_{s−1}/W) filler rows: within one row of n·los_s/Σlos."""
    d = filled["parquet"]
    items = ", ".join(map(str, filler.filler_items()["chartevents"]))
    got = duckdb.execute(f"""
        SELECT i.stay_id, greatest(date_diff('second', i.intime, i.outtime), 3600) AS w,
               count(c.itemid) AS n
        FROM '{_file(d, "icustays", "parquet")}' i
        LEFT JOIN (SELECT * FROM '{_file(d, "chartevents", "parquet")}' WHERE itemid IN ({items})) c
               ON c.stay_id = i.stay_id
        GROUP BY ALL""").df()
    expected = EXTRA["chartevents"] * got["w"] / got["w"].sum()
    assert np.all(np.abs(got["n"] - expected) < 1.0 + 1e-9)
    # filler rows lie inside their stay and are in time order
    bad = duckdb.execute(f"""SELECT count(*) FROM '{_file(d, "chartevents", "parquet")}' c
        JOIN '{_file(d, "icustays", "parquet")}' i USING (stay_id)
        WHERE c.itemid IN ({items}) AND (c.charttime < i.intime OR c.charttime > i.outtime)""").fetchone()[0]
    assert bad == 0


def test_seeded_and_reproducible(small_dir: Path, filled: dict, tmp_path: Path) -> None:
    again = filler.add_filler(small_dir, tmp_path / "again", filled["targets"], seed=5, threads=2)
    other = filler.add_filler(small_dir, tmp_path / "other", filled["targets"], seed=6, threads=1)
    assert again["rows_filler.chartevents"] == other["rows_filler.chartevents"] == EXTRA["chartevents"]

    def digest(root: Path) -> tuple:
        """Order-free fingerprint of the rows (the row order in the file depends on the threads)."""
        return duckdb.execute(f"""SELECT count(*), sum(CAST(hash(subject_id, stay_id, caregiver_id, charttime,
            storetime, itemid, value, valuenum, valueuom, warning) AS HUGEINT))
            FROM read_csv('{_file(root, "chartevents", "csv.gz")}', all_varchar = true)""").fetchone()

    assert digest(tmp_path / "again") == digest(filled["csv.gz"])
    assert digest(tmp_path / "other") != digest(filled["csv.gz"])


def test_extraction_unchanged_by_filler(small_dir: Path, filled: dict) -> None:
    def run(root: Path) -> tuple[dict[str, pd.DataFrame], dict, dict[str, int]]:
        con = views.connect("1GB", 1)
        views.register_directory(con, root)
        ex = extract(con, CohortConfig(), CostsConfig())
        kept = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in filler.filler_items()}
        con.close()
        return ex.tables, ex.metrics, kept

    ref_tables, ref_metrics, ref_kept = run(small_dir)
    assert sum(len(t) for t in ref_tables.values()) > 0
    for fmt in ("csv.gz", "parquet"):
        tables, metrics, kept = run(filled[fmt])
        assert kept == ref_kept  # the itemid filter leaves exactly the base rows to the feature queries
        assert metrics == ref_metrics
        for split, frame in ref_tables.items():
            pd.testing.assert_frame_equal(tables[split], frame)


def test_errors(small_dir: Path, base_rows: dict[str, int], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="outputevents.*more than the target"):
        filler.add_filler(small_dir, tmp_path / "a", filler.targets_for(rows={"outputevents": 1}), seed=1)
    assert not (tmp_path / "a").exists()  # nothing half-written
    with pytest.raises(ValueError, match="unknown padded table"):
        filler.targets_for(rows={"microbiologyevents": 10})
    with pytest.raises(ValueError, match="scale"):
        filler.targets_for(scale=0)
    with pytest.raises(ValueError, match="format"):
        filler.add_filler(small_dir, tmp_path / "b", filler.targets_for(), seed=1, fmt="csv")
    with pytest.raises(DataError, match="base directory not found"):
        filler.add_filler(tmp_path / "nope", tmp_path / "c", filler.targets_for(), seed=1)


def _filler_rows(filled: dict, table: str) -> pd.DataFrame:
    items = ", ".join(map(str, filler.filler_items()[table]))
    return duckdb.execute(f"SELECT * FROM '{_file(filled['parquet'], table, 'parquet')}' "
                          f"WHERE itemid IN ({items})").df()


def test_item_profiles_seeded() -> None:
    a, b = filler.item_profiles("chartevents", 5), filler.item_profiles("chartevents", 6)
    assert a == filler.item_profiles("chartevents", 5) and a != b
    n = len(filler.filler_items()["chartevents"])
    assert all(len(v) == n for v in a.values())
    assert set(a["scale"]) == {1, 10} and min(a["center"]) >= 1 and min(a["width"]) >= 1
    assert 0.15 < np.mean(a["text"]) < 0.35  # 1 in 4 chartevents items hold text
    assert not any(filler.item_profiles("labevents", 5)["text"])  # lab values are all numeric


def test_chart_rows_come_in_rounds_with_item_values(filled: dict) -> None:
    """Rows of a charting round share time, storetime and caregiver; values follow the item's profile; the
    value text equals valuenum, as in MIMIC-IV."""
    df = _filler_rows(filled, "chartevents")
    rounds = df.groupby(["stay_id", "charttime"])
    assert (rounds[["storetime", "caregiver_id"]].nunique() == 1).all().all()
    assert rounds.size().max() <= filler._GROUP["chartevents"] and rounds.size().mean() > 6
    delay = (df["storetime"] - df["charttime"]).dt.total_seconds() / 60
    assert delay.between(1, 30).all() and (df["warning"] == 0).all()
    prof = filler.item_profiles("chartevents", 5)
    idx = {item: i for i, item in enumerate(filler.filler_items()["chartevents"])}
    i = df["itemid"].map(idx)
    text = np.array(prof["text"])[i]
    assert df.loc[text, "valuenum"].isna().all() and df.loc[text, "value"].isin(filler._TEXTS).all()
    num = df[~text]
    assert len(num) > 1000 and (num["value"].astype(float) == num["valuenum"]).all()
    scale = np.array(prof["scale"])[i[~text]]
    lo = np.maximum(0, np.array(prof["center"]) - np.array(prof["width"]))[i[~text]] / scale
    hi = (np.array(prof["center"]) + np.array(prof["width"]))[i[~text]] / scale
    assert ((num["valuenum"] >= lo - 1e-9) & (num["valuenum"] <= hi + 1e-9)).all()
    assert (num["valueuom"] == np.array(prof["uom"])[i[~text]]).all()  # one unit per item


def test_lab_rows_come_in_specimens(filled: dict, small_dir: Path) -> None:
    df = _filler_rows(filled, "labevents")
    panels = df.groupby("specimen_id")
    assert (panels[["charttime", "storetime", "priority", "subject_id"]].nunique() == 1).all().all()
    assert (panels["hadm_id"].apply(lambda s: s.isna().all() or s.notna().all())).all()  # outpatient: whole panel
    assert panels.size().max() <= filler._GROUP["labevents"]
    outside = (df["valuenum"] < df["ref_range_lower"]) | (df["valuenum"] > df["ref_range_upper"])
    assert ((df["flag"] == "abnormal") == outside).all() and 0.1 < outside.mean() < 0.6
    base = duckdb.execute(f"SELECT max(labevent_id), max(specimen_id) FROM '{_file(small_dir, 'labevents', 'csv.gz')}'"
                          ).fetchone()
    assert df["labevent_id"].is_unique and df["labevent_id"].min() > base[0] and df["specimen_id"].min() > base[1]


def test_outputevents_written_sorted(filled: dict) -> None:
    path = _file(filled["csv.gz"], "outputevents", "csv.gz")
    rows = duckdb.execute(f"SELECT subject_id, stay_id, charttime FROM read_csv('{path}')").fetchall()  # file order
    assert len(rows) > 500 and rows == sorted(rows)


def test_prescription_and_procedure_filler(filled: dict, small_dir: Path) -> None:
    """Filler prescriptions are never antibiotics (the suspicion-of-infection filter drops them all) and continue
    the base's pharmacy_id; filler procedures last `value` minutes."""
    path = _file(filled["parquet"], "prescriptions", "parquet")
    base_max = duckdb.execute(f"SELECT max(pharmacy_id) FROM '{_file(small_dir, 'prescriptions', 'csv.gz')}'"
                              ).fetchone()[0]
    df = duckdb.execute(f"SELECT * FROM '{path}' WHERE pharmacy_id > {base_max}").df()
    assert len(df) == EXTRA["prescriptions"] and df["pharmacy_id"].is_unique
    names = "|".join(F.ANTIBIOTIC_NAMES)
    assert not df["drug"].str.lower().str.contains(names).any()
    assert set(df["drug"]) <= {d["drug"] for d in filler._DRUGS} and df["drug"].nunique() > 10
    assert (df["stoptime"] > df["starttime"]).all()
    adm = duckdb.execute(f"SELECT hadm_id, admittime, dischtime FROM '{_file(small_dir, 'admissions', 'csv.gz')}'").df()
    m = df.merge(adm, on="hadm_id", how="left")
    assert m["admittime"].notna().all() and (m["starttime"] >= m["admittime"]).all()
    proc = _filler_rows(filled, "procedureevents")
    assert len(proc) == EXTRA["procedureevents"]
    minutes = (proc["endtime"] - proc["starttime"]).dt.total_seconds() / 60
    assert (minutes == proc["value"]).all() and (proc["storetime"] >= proc["endtime"]).all()
