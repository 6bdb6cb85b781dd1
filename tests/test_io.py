from __future__ import annotations

import pandas as pd
import pytest

from ogsrl.io import atomic_path, file_sha256, salted_hash, write_json, write_parquet


def test_atomic_write_keeps_previous_file_on_error(tmp_path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_directory_replace(tmp_path) -> None:
    target = tmp_path / "d"
    for content in ("one", "two"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text(content)
    assert (target / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_parquet_bytes_are_deterministic(tmp_path) -> None:
    df = pd.DataFrame({"x": [1.0, 2.0], "s": ["a", "b"]})
    write_parquet(tmp_path / "a.parquet", df)
    write_parquet(tmp_path / "b.parquet", df)
    assert file_sha256(tmp_path / "a.parquet") == file_sha256(tmp_path / "b.parquet")


def test_salted_hash_depends_on_salt_and_hides_value() -> None:
    a = salted_hash([30000001, 30000002], "s1")
    b = salted_hash([30000001], "s2")
    assert len(set(a)) == 2 and a[0] != b[0]
    assert all("30000001" not in h for h in a + b) and all(len(h) == 16 for h in a)
    with pytest.raises(ValueError, match="salt"):
        salted_hash([1], "")


def test_remove_temporaries_deletes_only_a_killed_writers_leftovers(tmp_path) -> None:
    from ogsrl.io import remove_temporaries

    (tmp_path / ".a.json.x1.tmp").mkdir()
    (tmp_path / ".a.json.x1.tmp" / "a.json").write_text("{")
    (tmp_path / ".b.old.123").mkdir()
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / ".keep").write_text("")
    assert remove_temporaries(tmp_path) == [".a.json.x1.tmp", ".b.old.123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "a.json"]
    assert remove_temporaries(tmp_path / "absent") == []
