"""`ogsrl extract` stage: outputs, metrics, determinism, sources and bad inputs leaving previous outputs intact."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ogsrl.cohort import stage
from ogsrl.cohort.extract import EXCLUSIONS
from ogsrl.config import ConfigError
from ogsrl.data.contract import check_trajectories, read_metadata
from ogsrl.errors import DataError
from ogsrl.io import file_sha256

SPLITS = ("train", "val", "test")


@pytest.fixture
def params(make_params, tiny_mimic: Path) -> dict:
    return make_params(**{"data.source": "mimic-iv", "data.mimic_path": str(tiny_mimic),
                          "cohort.window_start_h": -4, "cohort.n_steps": 3, "cohort.duckdb_memory_limit": "1GB",
                          "cohort.duckdb_threads": 1,
                          "cohort.exclusions": list(EXCLUSIONS)})  # all five rules, as in test_extract


def passed_raw_validation(root: Path, source: str) -> None:
    """The report a passing `ogsrl validate-raw` leaves (the stage refuses to run without it)."""
    path = root / stage.RAW_VALIDATION
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"success": True, "source": source, "n_failed": 0}))


def run(params: dict, root: Path) -> dict:
    """stage.run after a passing raw validation of the configured source."""
    if not (root / stage.RAW_VALIDATION).is_file():
        passed_raw_validation(root, params["data"]["source"])
    return stage.run(params, root)


def hashes(root: Path) -> dict[str, str]:
    files = [root / "data" / "trajectories" / f"{s}.parquet" for s in SPLITS] + [root / stage.METRICS]
    return {f.name: file_sha256(f) for f in files}


def test_outputs_metrics_and_determinism(tmp_path: Path, params: dict) -> None:
    root = tmp_path / "p"
    m = run(params, root)
    assert m["cohort_stays"] == 2 and m["rows"] == 5 and m["source"] == "mimic-iv"
    saved = json.loads((root / stage.METRICS).read_text())
    assert saved == json.loads(json.dumps(m))
    df = pd.concat([pd.read_parquet(root / "data" / "trajectories" / f"{s}.parquet") for s in SPLITS])
    check_trajectories(df)
    assert len(df) == 5 and set(df["split"]) <= set(SPLITS)
    meta = read_metadata(root / "data" / "trajectories" / "train.parquet")
    assert meta["ogsrl.state_features"][:3] == ["gender", "readmission", "age"]
    assert meta["ogsrl.cost_columns"] == ["cost_spo2_low", "cost_urine_low", "cost_total"]
    assert meta["ogsrl.contract_version"] == 1  # stored as the text "1"
    schema = pq.read_schema(root / "data" / "trajectories" / "train.parquet")
    assert str(schema.field("step").type) == "int16" and str(schema.field("spo2").type) == "float"
    first = hashes(root)
    run(params, root)
    assert hashes(root) == first  # same seed → byte-identical trajectories and metrics


@pytest.mark.parametrize("breakage", ["corrupt", "empty", "bad_param"])
def test_errors_leave_previous_outputs_intact(tmp_path: Path, params: dict, tiny_mimic: Path,
                                              breakage: str) -> None:
    root = tmp_path / "p"
    run(params, root)
    before = hashes(root)
    if breakage == "corrupt":
        (tiny_mimic / "icu" / "chartevents.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
        with pytest.raises(DataError, match="chartevents.csv.gz"):
            run(params, root)
    elif breakage == "empty":
        params["cohort"]["min_age"] = 95
        with pytest.raises(DataError, match="empty cohort.*excluded_under_min_age"):
            run(params, root)
    else:
        params["cohort"]["n_steps"] = "twenty"
        with pytest.raises(ConfigError, match="cohort.n_steps"):
            run(params, root)
    assert hashes(root) == before


def test_missing_table_names_it(tmp_path: Path, params: dict, tiny_mimic: Path) -> None:
    (tiny_mimic / "hosp" / "prescriptions.csv.gz").unlink()
    with pytest.raises(DataError, match="prescriptions"):
        run(params, tmp_path / "p")


def test_demo_source_reads_raw_dir(tmp_path: Path, params: dict, tiny_mimic: Path) -> None:
    params["data"] = {**params["data"], "source": "demo", "raw_dir": str(tiny_mimic)}
    assert run(params, tmp_path / "p")["cohort_stays"] == 2


def test_trajectories_source(tmp_path: Path, params: dict) -> None:
    first = tmp_path / "first"
    run(params, first)
    df = pd.concat([pd.read_parquet(first / "data" / "trajectories" / f"{s}.parquet") for s in SPLITS])
    user = tmp_path / "mine.parquet"
    df.drop(columns="split").to_parquet(user, index=False)
    params["data"] = {**params["data"], "source": "trajectories", "trajectories_path": str(user)}
    m = run(params, tmp_path / "p")
    assert (m["source"], m["cohort_stays"], m["rows"]) == ("trajectories", 2, 5)
    out = pd.concat([pd.read_parquet(tmp_path / "p" / "data" / "trajectories" / f"{s}.parquet") for s in SPLITS])
    check_trajectories(out)
    before = hashes(tmp_path / "p")
    broken = df.drop(columns=["split", "next_spo2"])
    broken.to_parquet(user, index=False)
    with pytest.raises(DataError, match="next_spo2"):
        run(params, tmp_path / "p")
    pd.concat([df, df.iloc[[0]]]).drop(columns="split").to_parquet(user, index=False)
    with pytest.raises(DataError, match=r"duplicate \(stay_key, step\)"):
        run(params, tmp_path / "p")
    assert hashes(tmp_path / "p") == before


@pytest.mark.parametrize("report", ["missing", "failed", "other_source", "garbage"])
def test_refuses_without_a_passing_raw_validation(tmp_path: Path, params: dict, report: str) -> None:
    root = tmp_path / "p"
    run(params, root)
    before = hashes(root)
    path = root / stage.RAW_VALIDATION
    if report == "missing":
        path.unlink()
        match = "no raw-validation report.*validate-raw"
    elif report == "failed":
        path.write_text(json.dumps({"success": False, "source": "mimic-iv", "n_failed": 3}))
        match = r"raw tables failed validation \(3 failed"
    elif report == "other_source":
        path.write_text(json.dumps({"success": True, "source": "demo", "n_failed": 0}))
        match = "is for data.source 'demo', not 'mimic-iv'"
    else:
        path.write_text("{not json")
        match = "unreadable raw-validation report"
    with pytest.raises(DataError, match=match):
        stage.run(params, root)
    assert hashes(root) == before


def test_corrupt_csv_gz_mid_file_is_one_line_naming_it(tmp_path: Path, params: dict, tiny_mimic: Path,
                                                      mimic_tables, write_mimic) -> None:
    # a gzip stream cut after the header and the sampled rows passes registration; reading it all then fails
    ce = mimic_tables["chartevents"]
    big = pd.concat([ce] * 8000, ignore_index=True)  # 32 000 rows: beyond the 20 480 sniffed
    write_mimic(tiny_mimic, {"chartevents": big})
    path = tiny_mimic / "icu" / "chartevents.csv.gz"
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.8)])
    with pytest.raises(DataError) as err:
        run(params, tmp_path / "p")
    msg = str(err.value)
    assert "chartevents.csv.gz" in msg and "\n" not in msg
    assert "SELECT" not in msg and "LINE 1" not in msg and "read_csv" not in msg


def test_real_data_keys_use_the_secret_salt_and_errors_name_stays_by_key(
    tmp_path: Path, params: dict, mimic_tables: dict, write_mimic, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ogsrl import privacy
    from ogsrl.io import salted_hash

    secret = "cohort-stage-secret-salt-42"
    monkeypatch.setenv("OGSRL_SALT", secret)
    root = tmp_path / "p"
    run(params, root)
    keys = set(pd.concat([pd.read_parquet(root / "data/trajectories" / f"{s}.parquet") for s in SPLITS])["stay_key"])
    assert keys == set(salted_hash([101, 601], secret))  # not the params salt
    # a stale fingerprint file (recorded for another salt) stops the stage: DVC's record would be wrong
    privacy.write_fingerprint(params, root)
    monkeypatch.setenv("OGSRL_SALT", secret[::-1])
    with pytest.raises(ConfigError, match="salt-fingerprint.json does not match"):
        run(params, root)
    monkeypatch.setenv("OGSRL_SALT", secret)
    # the cohort SQL reports duplicate stays by id: they reach the user as salted keys
    icu = mimic_tables["icustays"]
    mimic_tables["icustays"] = pd.concat([icu, icu[icu["stay_id"] == 601]], ignore_index=True)
    raw = write_mimic(tmp_path / "dup", mimic_tables)
    params["data"] = {**params["data"], "mimic_path": str(raw)}
    with pytest.raises(DataError) as info:
        stage.run(params, root)
    msg = str(info.value)
    assert f"[offending rows: key:{salted_hash([601], secret)[0]}]" in msg and "601" not in msg.split("[")[1]


@pytest.mark.parametrize("actions", ["discrete", "continuous"])
def test_foreign_v2_table_with_its_own_schema(tmp_path: Path, params: dict, actions: str) -> None:
    from ogsrl.data.schema import load_table_schema
    from ogsrl.synth import tabular

    user = tmp_path / "foreign.parquet"
    tabular.write(tabular.MDPConfig(actions=actions, stays=60, horizon=6, seed=3), user)
    params["data"] = {**params["data"], "source": "trajectories", "trajectories_path": str(user)}
    m = run(params, tmp_path / "p")
    assert (m["cohort_stays"], m["stays_train"] + m["stays_val"] + m["stays_test"]) == (60, 60)
    assert 0 < m["outcome_rate"] < 1 and "mortality_in_hosp" not in m
    out = {s: pd.read_parquet(tmp_path / "p" / "data" / "trajectories" / f"{s}.parquet") for s in SPLITS}
    train = tmp_path / "p" / "data" / "trajectories" / "train.parquet"
    schema = load_table_schema(train)
    assert schema == tabular.schema(actions)
    assert read_metadata(train)["ogsrl.state_features"] == list(tabular.STATE)
    for s, df in out.items():
        check_trajectories(df, schema=schema)
        assert (df["split"] == s).all()
        cost = df["cost_low_perfusion"].to_numpy()
        assert (df["cost_total"].to_numpy() == cost).all()
        grid = params["cohort"]["window_start_h"] + params["cohort"]["step_h"] * df["step"].to_numpy()
        assert (df["hours_since_onset"].to_numpy() == grid).all()
        assert (df["death_in_step"] == (df["done"] & df["died"])).all()
    # a sidecar schema that contradicts the table's metadata is refused; nothing written is lost
    before = hashes(tmp_path / "p")
    other = tmp_path / "other.json"
    other.write_text(tabular.schema("continuous" if actions == "discrete" else "discrete").to_json())
    params["data"]["schema_path"] = str(other)
    with pytest.raises(DataError, match="differs from the one in foreign.parquet's metadata"):
        run(params, tmp_path / "p")
    # a declared range the data breaks names the column and rows
    bad = tabular.schema(actions).to_dict()
    bad["state"][0]["high"] = 5.0
    other.write_text(json.dumps(bad))
    pq.write_table(pq.read_table(user).replace_schema_metadata({}), user)
    with pytest.raises(DataError, match=r"column 'perfusion_index': values outside \[0, 5\] %.*offending rows"):
        run(params, tmp_path / "p")
    assert hashes(tmp_path / "p") == before


def test_attendings_travel_as_salted_pseudonyms(tmp_path: Path, params: dict, mimic_tables: dict,
                                                write_mimic) -> None:
    from ogsrl import privacy
    from ogsrl.io import salted_hash

    adm = mimic_tables["admissions"]
    mimic_tables["admissions"] = adm.assign(admit_provider_id=["P482ZX" if i != 1 else None for i in range(len(adm))])
    params["data"]["mimic_path"] = str(write_mimic(tmp_path / "mimic2", mimic_tables))
    root = tmp_path / "p"
    m = run(params, root)
    who = pd.read_parquet(root / "data/trajectories/providers.parquet")
    stays = pd.concat([pd.read_parquet(root / f"data/trajectories/{s}.parquet") for s in SPLITS])
    expected = adm.assign(p=["P482ZX" if i != 1 else None for i in range(len(adm))]).set_index("hadm_id")["p"]
    salt = privacy.resolve_salt(params, root)
    hadm = mimic_tables["icustays"].set_index("stay_id")["hadm_id"]
    by_key = {salted_hash([s], salt)[0]: expected[h] for s, h in hadm.items()}
    want = sorted(k for k in stays["stay_key"].unique() if by_key[k] is not None)
    assert who["stay_key"].tolist() == want and m["stays_with_attending"] == len(want)
    assert set(who["provider_key"]) <= {salted_hash(["provider:P482ZX"], salt)[0]}
    assert "P482ZX" not in (root / "data/trajectories/providers.parquet").read_bytes().decode("latin-1")


def test_trajectories_source_may_name_each_stays_attending(tmp_path: Path, params: dict) -> None:
    first = tmp_path / "first"
    run(params, first)
    df = pd.concat([pd.read_parquet(first / "data" / "trajectories" / f"{s}.parquet") for s in SPLITS])
    keys = sorted(df["stay_key"].unique())
    user = tmp_path / "mine.parquet"
    df.assign(provider_key=df["stay_key"].map({keys[0]: "doc-a", keys[1]: "doc-b"})).to_parquet(user, index=False)
    params["data"] = {**params["data"], "source": "trajectories", "trajectories_path": str(user)}
    m = run(params, tmp_path / "p")
    who = pd.read_parquet(tmp_path / "p" / "data/trajectories/providers.parquet")
    assert who.to_dict("list") == {"stay_key": keys, "provider_key": ["doc-a", "doc-b"]} and m["attendings"] == 2
    before = hashes(tmp_path / "p")
    flip = df.assign(provider_key=["doc-a"] + ["doc-b"] * (len(df) - 1))
    flip.to_parquet(user, index=False)
    with pytest.raises(DataError, match="provider_key changes within a stay"):
        run(params, tmp_path / "p")
    assert hashes(tmp_path / "p") == before
