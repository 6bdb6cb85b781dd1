"""ogsrl.privacy: where the salt comes from, its fingerprint file, redaction and scrubbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ogsrl import privacy
from ogsrl.config import ConfigError
from ogsrl.errors import DataError
from ogsrl.io import salted_hash

SECRET = "0f3a9c2e7b1d4e6f8a0b2c4d6e8f1a3b"
MIMIC = {"data": {"source": "mimic-iv", "mimic_path": "/x"}, "cohort": {"salt": privacy.PUBLIC_DEMO_SALT}}


def test_demo_uses_the_public_params_salt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OGSRL_SALT", raising=False)
    assert privacy.resolve_salt({"data": {"source": "demo"}, "cohort": {"salt": "abc"}}, tmp_path) == "abc"
    assert privacy.resolve_salt({"cohort": {"salt": "abc"}}, tmp_path) == "abc"


def test_real_data_needs_a_strong_secret_salt_from_outside_the_project(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OGSRL_SALT", raising=False)
    root = tmp_path / "proj"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"needs a secret salt: set env OGSRL_SALT") as info:
        privacy.resolve_salt(MIMIC, root)
    assert "\n" not in str(info.value)
    monkeypatch.setenv("OGSRL_SALT", "short")
    with pytest.raises(ConfigError, match="too weak: use at least 16"):
        privacy.resolve_salt(MIMIC, root)
    monkeypatch.setenv("OGSRL_SALT", SECRET)
    assert privacy.resolve_salt(MIMIC, root) == SECRET
    with pytest.raises(ConfigError, match="cohort.salt must stay the public demo salt"):
        privacy.resolve_salt({**MIMIC, "cohort": {"salt": SECRET}}, root)  # a secret in params.yaml is in git

    monkeypatch.delenv("OGSRL_SALT")
    inside = root / "salt.txt"
    inside.write_text(SECRET + "\n")
    with pytest.raises(ConfigError, match="lies inside the project"):
        privacy.resolve_salt({**MIMIC, "privacy": {"salt_file": "salt.txt"}}, root)
    outside = tmp_path / "secret" / "salt.txt"
    outside.parent.mkdir()
    outside.write_text(SECRET + "\n")
    assert privacy.resolve_salt({**MIMIC, "privacy": {"salt_file": str(outside)}}, root) == SECRET
    with pytest.raises(ConfigError, match="does not exist"):
        privacy.resolve_salt({**MIMIC, "privacy": {"salt_file": str(tmp_path / "nope")}}, root)
    monkeypatch.setenv("MY_SALT", SECRET[::-1])
    assert privacy.resolve_salt({**MIMIC, "privacy": {"salt_env": "MY_SALT"}}, root) == SECRET[::-1]
    with pytest.raises(ConfigError, match="unknown key"):
        privacy.privacy_config({"privacy": {"salt": SECRET}})


def test_fingerprint_file_follows_the_salt_and_guards_the_stages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OGSRL_SALT", SECRET)
    privacy.check_fingerprint(MIMIC, tmp_path, SECRET)  # no file yet: nothing recorded to contradict
    path, changed = privacy.write_fingerprint(MIMIC, tmp_path)
    assert changed and path == tmp_path / privacy.FINGERPRINT_FILE
    text = path.read_text()
    assert SECRET not in text and json.loads(text) == {"format": 1, "secret": True,
                                                       "fingerprint": privacy.fingerprint(SECRET)}
    assert privacy.write_fingerprint(MIMIC, tmp_path) == (path, False)  # same salt: same bytes, DVC reruns nothing
    privacy.check_fingerprint(MIMIC, tmp_path, SECRET)
    other = SECRET[::-1]
    with pytest.raises(ConfigError, match="does not match the secret salt in use: run `ogsrl salt-fingerprint`"):
        privacy.check_fingerprint(MIMIC, tmp_path, other)
    monkeypatch.setenv("OGSRL_SALT", other)
    assert privacy.write_fingerprint(MIMIC, tmp_path)[1]  # a new salt changes the file DVC hashes
    privacy.check_fingerprint(MIMIC, tmp_path, other)
    privacy.check_fingerprint({"data": {"source": "demo"}}, tmp_path, "anything")  # public salt: not checked
    assert privacy.fingerprint(SECRET) != privacy.fingerprint(other)
    assert privacy.fingerprint(SECRET).startswith("hmac-sha256:") and len(privacy.fingerprint(SECRET)) == 44


def test_redact_replaces_salt_values_at_any_depth() -> None:
    lock = {"stages": {"a": {"params": {"params.yaml": {"cohort.salt": SECRET, "cohort.seed": 1}}},
                       "b": {"params": {"params.yaml": {"cohort": {"salt": SECRET, "split": [0.6, 0.4]}}}}}}
    out = privacy.redact(lock)
    assert SECRET not in json.dumps(out)
    fp = privacy.fingerprint(SECRET)
    assert out["stages"]["a"]["params"]["params.yaml"] == {"cohort.salt": fp, "cohort.seed": 1}
    assert out["stages"]["b"]["params"]["params.yaml"]["cohort"] == {"salt": fp, "split": [0.6, 0.4]}
    assert lock["stages"]["a"]["params"]["params.yaml"]["cohort.salt"] == SECRET  # input untouched


def test_scrub_removes_ids_dates_and_the_salt() -> None:
    text = (f"Conversion Error: '2180-01-01 07:00:00' for stay_id 30000101 (hadm 20000011, subject 10000001) "
            f"in sha256('{SECRET}:' || x); row 12, 1234567 rows, 0.30000101, 2180-01-02")
    got = privacy.scrub(text, [SECRET])
    for leak in ("2180-01-01", "07:00", "30000101 ", "20000011", "10000001", SECRET, "2180-01-02"):
        assert leak not in got
    assert got == ("Conversion Error: '<datetime>' for stay_id <id> (hadm <id>, subject <id>) in sha256('<salt>:' "
                   "|| x); row 12, 1234567 rows, 0.30000101, <datetime>")


def test_extraction_errors_name_stays_by_salted_key() -> None:
    err = DataError("duplicate stay_id rows", table="icustays", column="stay_id", rows=[30000101, 30000102])
    out = privacy.pseudonymise_rows(err, SECRET)
    keys = salted_hash([30000101, 30000102], SECRET)
    assert str(out) == (f"table 'icustays', column 'stay_id': duplicate stay_id rows (ids shown as salted keys, as "
                        f"stay_key) [offending rows: key:{keys[0]}, key:{keys[1]}]")
    assert "30000101" not in str(out) and out.rows == [f"key:{k}" for k in keys]
    plain = DataError("no rows", table="icustays")
    assert privacy.pseudonymise_rows(plain, SECRET) is plain


# ---- end to end: nothing identifying anywhere after a real-data run --------------------------------------------

DRIVER = """\
import json, sys
from pathlib import Path
from flows.pipeline import pipeline
from ogsrl.config import load_params
from ogsrl.registry import stage
root = Path(sys.argv[1])
pipeline("params.yaml", str(root))
params = load_params(root / "params.yaml")
reg = stage.register(params, root)
stage.promote(params, root, version=reg["version"])
print("RESULT " + json.dumps(reg["row_check"]))
"""


def _needles(raw: Path) -> tuple[set[str], set[str]]:
    """(raw ids as text, every written timestamp as epoch s/ms/µs/ns text) of a MIMIC-IV-layout directory."""
    import pandas as pd

    ids: set[str] = set()
    epochs: set[str] = set()
    for f in raw.rglob("*.csv.gz"):
        frame = pd.read_csv(f)
        for col in frame.columns:
            if col in ("subject_id", "hadm_id", "stay_id"):
                ids |= {str(int(v)) for v in frame[col].dropna().unique()}
            elif col.endswith(("time", "date", "dod")):
                ts = pd.to_datetime(frame[col].dropna().unique())
                ns = ts.asi8
                for div in (10**9, 10**6, 10**3, 1):
                    epochs |= {str(int(v // div)) for v in ns}
    return ids, epochs


def _texts(path: Path) -> list[str]:
    """What a file says, decoded where it is compressed or structured (gzip, parquet, numpy, sqlite)."""
    import gzip
    import sqlite3

    data = path.read_bytes()
    out = [data.decode("latin-1")]
    name = path.name
    if name.endswith(".gz"):
        out.append(gzip.decompress(data).decode("latin-1"))
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        out += [table.to_pandas().to_csv(), str(table.schema.metadata)]
    elif name.endswith(".npz"):
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            out += [" ".join(f"{v:.0f}" for v in np.asarray(z[k], dtype=float).ravel()) for k in z.files]
    elif name.endswith(".db") and data[:16] == b"SQLite format 3\x00":
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            out.append("\n".join(con.iterdump()))
        finally:
            con.close()
    return out


@pytest.mark.slow
def test_real_data_run_leaves_no_ids_timestamps_or_salt(tmp_path: Path, make_params, write_params) -> None:
    """The pipeline (Prefect flow, every stage, MLflow tracking) + register + promote on a simulated MIMIC-IV-layout
    download with a secret salt: no raw id, written timestamp or the salt in data/, mlartifacts/, the MLflow
    database or the Prefect home."""
    import os
    import re
    import subprocess
    import sys

    from ogsrl.synth.stage import generate
    from tests.conftest import REPO_ROOT

    raw = tmp_path / "physionet" / "mimiciv"
    generate(60, 7, raw, "csv.gz", False)
    ids, epochs = _needles(raw)
    assert len(ids) >= 150 and all(len(i) == 8 for i in ids)
    root = tmp_path / "proj"
    params = make_params(**{
        "data.source": "mimic-iv", "data.mimic_path": str(raw),
        "guardian.christoffel.degree": 1, "guardian.calibration.alpha_c": 0.8,
        "guardian.calibration.rule": "conformal", "guardian.kde.max_eval": 200, "guardian.volume_samples": 1000,
        "guardian.ood_samples": 100, "guardian.extreme_policy_stays": 5,
        "world.model.n_members": 2, "world.model.n_elites": 2, "world.model.hidden": [16], "world.model.max_epochs": 2,
        "world.eval.n_samples": 10,
        "policies.algorithms.bc.max_epochs": 2, "policies.model_eval_episodes": 16, "ope.n_boot": 100,
        "ope.behaviour.max_epochs": 2, "registry.run": "soc",
        "mlflow.tracking_uri": "", "mlflow.experiment": "privacy",
    })
    params["policies"]["runs"] = {"soc": params["policies"]["runs"]["soc"]}  # the clinicians' clone only
    write_params(root, params)
    secret = "e2e-" + os.urandom(16).hex()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OGSRL_SALT=secret, PREFECT_HOME=str(tmp_path / ".prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true", PREFECT_LOGGING_LEVEL="WARNING",
               MLFLOW_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("OGSRL_NO_TRACK", None)
    done = subprocess.run([sys.executable, "-c", DRIVER, str(root)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check = json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert check["passed"] and check["reference_rows"] > 0

    files = [p for base in ("data", "mlartifacts", ".prefect") for p in (root / base).rglob("*") if p.is_file()]
    files += [p for p in (tmp_path / ".prefect").rglob("*") if p.is_file()] + [root / "mlflow.db"]
    assert (root / "mlflow.db").is_file() and list((tmp_path / ".prefect").rglob("*.db"))
    assert any(p.name == "trajectories" for p in (root / "data").iterdir())
    id_re = re.compile(r"(?<![0-9A-Za-z])(" + "|".join(sorted(ids)) + r")(?![0-9A-Za-z])")
    date_re = re.compile(r"\b2[12]\d\d-[01]\d-[0-3]\d")  # the simulator writes years 2100–2299
    int_re = re.compile(r"(?<!\d)\d{10,19}(?!\d)")
    leaks = []
    for f in files:
        for text in _texts(f):
            if secret in text:
                leaks.append((f, "salt"))
            if (m := id_re.search(text)) is not None:
                leaks.append((f, f"id {m.group(0)}"))
            if (m := date_re.search(text)) is not None:
                leaks.append((f, f"date {m.group(0)}"))
            if hits := set(int_re.findall(text)) & epochs:
                leaks.append((f, f"epoch {sorted(hits)[0]}"))
    assert not leaks, leaks[:10]
    assert len(files) > 30
