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
