"""Lineage: DVC-compatible hashes, the record collected at registration, resolution from the registry, --verify."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl import privacy  # noqa: E402
from ogsrl.registry import lineage, stage  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def test_dvc_md5_matches_dvc_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "x.txt").write_text("a\n")
    (data / "sub/y.csv").write_bytes(b"b\r\n")  # CRLF: DVC 3 hashes raw bytes
    (data / "z.bin").write_bytes(bytes(range(256)))
    (data / "sub/scratch.tmp").write_text("ignored")
    (data / "__pycache__").mkdir()
    (data / "__pycache__/m.pyc").write_bytes(b"ignored")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / ".site")}
    dvc = str(VENV_BIN / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    (tmp_path / ".dvcignore").write_text("# comment\n*.tmp\n__pycache__/\n")
    (tmp_path / "data2.bin").write_bytes(b"\x00\x01hello")
    subprocess.run([dvc, "add", "-q", "data", "data2.bin"], cwd=tmp_path, env=env, check=True)
    for name in ("data", "data2.bin"):
        recorded = yaml.safe_load((tmp_path / f"{name}.dvc").read_text())["outs"][0]["md5"]
        assert lineage.dvc_md5(tmp_path / name, lineage.DvcIgnore(tmp_path)) == recorded
    assert lineage.dvc_md5(tmp_path / "data") != lineage.dvc_md5(tmp_path / "data", lineage.DvcIgnore(tmp_path))


@pytest.mark.parametrize(
    ("uri", "want"),
    [("models:/ogsrl-policy@champion", ("ogsrl-policy", "champion", None)),
     ("models:/ogsrl-policy/12", ("ogsrl-policy", None, "12"))],
)
def test_parse_model_uri(uri: str, want: tuple) -> None:
    assert lineage.parse_model_uri(uri) == want


def test_parse_model_uri_rejects_others() -> None:
    with pytest.raises(ValueError, match="must look like"):
        lineage.parse_model_uri("runs:/abc/model")


def test_manifest_names_changed_added_and_missing_files(tmp_path: Path) -> None:
    fakes.make_project(tmp_path)
    record = lineage.collect(tmp_path, {"data": {"source": "demo"}}, inputs=["data/models/policies/soc"],
                             validation_reports=[], certificate=None, ope_metrics="data/reports/evaluate/metrics.json")
    assert set(record["manifest"]) == {"data/raw", "data/trajectories", "data/models/policies",
                                       "data/models/policies/soc"}
    assert record["manifest"]["data/raw"]["files"].keys() == {"hosp/patients.csv", "icu/icustays.csv"}
    assert lineage.verify(record, tmp_path) == []

    (tmp_path / "data/raw/icu/icustays.csv").write_text("stay_id\n8\n")
    (tmp_path / "data/raw/hosp/extra.csv").write_text("x\n")
    (tmp_path / "data/trajectories/test.parquet").unlink()
    got = {(d.path, d.kind) for d in lineage.verify(record, tmp_path)}
    assert got == {
        ("data/raw", "dvc-md5"), ("data/raw/icu/icustays.csv", "changed"), ("data/raw/hosp/extra.csv", "added"),
        ("data/trajectories", "dvc-md5"), ("data/trajectories/test.parquet", "missing"),
    }


def test_salt_never_recorded(tmp_path: Path) -> None:
    params = {"cohort": {"salt": "s3cret", "step_h": 4}, "costs": {"rules": [{"name": "a"}]}}
    # dvc.lock records params values: both the dotted key and a whole section holding the salt
    lock = {"schema": "2.0", "stages": {
        "validate_raw": {"cmd": "ogsrl validate-raw", "params": {"params.yaml": {"cohort.salt": "s3cret"}}},
        "extract": {"cmd": "ogsrl extract", "params": {"params.yaml": {"cohort": {"salt": "s3cret", "seed": 1}}}},
    }}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/salt-fingerprint.json").write_text(json.dumps({"fingerprint": privacy.fingerprint("s3cret")}))
    record = lineage.collect(tmp_path, params, inputs=[], validation_reports=[], certificate=None,
                             ope_metrics="none.json")
    assert "s3cret" not in json.dumps(record)
    want = "hmac-sha256:" + hmac.new(b"s3cret", b"ogsrl salt fingerprint v1", hashlib.sha256).hexdigest()[:32]
    assert record["params"]["cohort"] == {"salt": want, "step_h": 4}
    stages = record["dvc_lock"]["stages"]
    assert stages["validate_raw"]["params"]["params.yaml"]["cohort.salt"] == want
    assert stages["extract"]["params"]["params.yaml"]["cohort"] == {"salt": want, "seed": 1}
    assert record["salt_fingerprint"] == want
    assert record["params"]["costs"] == params["costs"] and params["cohort"]["salt"] == "s3cret"


def test_data_source_kinds(tmp_path: Path) -> None:
    mimic = tmp_path / "physionet.org/files/mimiciv/3.1"
    (mimic / "hosp").mkdir(parents=True)
    (mimic / "hosp/patients.csv.gz").write_bytes(b"gz")
    src = lineage.data_source({"data": {"source": "mimic-iv", "mimic_path": str(mimic)}}, tmp_path)
    assert src["kind"] == "mimic-iv" and src["version"] == "3.1"
    assert list(src["files_sha256"]) == ["hosp/patients.csv.gz"]
    assert len(src["files_sha256"]["hosp/patients.csv.gz"]) == 64
    traj = tmp_path / "t.parquet"
    traj.write_bytes(b"p")
    src = lineage.data_source({"data": {"source": "trajectories", "trajectories_path": str(traj)}}, tmp_path)
    assert src["kind"] == "trajectories" and len(src["sha256"]) == 64
    src = lineage.data_source({"data": {"source": "demo"}, "synth": {"seed": 3, "stays": 9}}, tmp_path)
    assert src["kind"] == "demo" and src["seed"] == 3 and src["generator_version"]


def test_lineage_resolves_every_link_and_verify_catches_an_altered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = tmp_path / "proj"
    params = fakes.make_project(root)
    (root / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=root, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()

    assert stage.run(params, root)["registry/promoted"] is True
    out = stage.lineage(params, root, "models:/ogsrl-policy@champion", verify=True)
    links = out["links"]
    assert all(link["resolved"] for link in links.values()), {k: v["resolved"] for k, v in links.items()}
    assert links["git"]["commit"] == commit and links["git"]["dirty"] is False
    assert set(links["dvc_lock"]["stages"]) == {"extract", "train_policies"}
    assert links["validation"]["reports"] == {"data/reports/validation_raw.json": True,
                                              "data/reports/validation_trajectories.json": True}
    assert links["certificate"]["certificate"]["alpha_c"] == 0.95
    assert links["ope"]["metrics"]["soc/seed42/wdr/return/value"] == -50.0
    assert links["data_source"] == {"resolved": True, "kind": "demo", "seed": 7, "stays": 20,
                                    "generator_version": links["data_source"]["generator_version"]}
    assert "gate=promoted" in out["text"] and commit in out["text"]
    assert out["verified"] is True and out["differences"] == []

    with pytest.raises(ValueError, match=r"cannot resolve models:/ogsrl-policy@nope: .* model 'ogsrl-policy' has "
                                         r"@champion \(version 1\)"):
        stage.lineage(params, root, "models:/ogsrl-policy@nope")
    with pytest.raises(ValueError, match="no registered model 'other-model' here"):
        stage.lineage(params, root, "models:/other-model@champion")

    (root / "data/trajectories/test.parquet").write_text("tampered")
    out = stage.lineage(params, root, "models:/ogsrl-policy/1", verify=True)
    assert out["verified"] is False
    named = {(d["path"], d["kind"]) for d in out["differences"]}
    assert ("data/trajectories/test.parquet", "changed") in named
    assert ("data/trajectories", "dvc-md5") in named
