"""`ogsrl synth` / generate stage: byte reproducibility, formats, metrics and argument errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ogsrl.synth import engine as E
from ogsrl.synth import stage
from ogsrl.synth import tables as T


SHORT = E.WorldConfig(n_steps=6)
"""a short decision window keeps these tests fast (fewer observer calls)"""


def _digest(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    m1 = stage.generate(30, 5, tmp_path / "a", chunk_stays=15, world=SHORT)
    stage.generate(30, 5, tmp_path / "b", chunk_stays=15, world=SHORT)
    stage.generate(30, 6, tmp_path / "c", chunk_stays=15, world=SHORT)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(a) == len(T.SCHEMAS) and a == b
    assert a["icu/chartevents.csv.gz"] != c["icu/chartevents.csv.gz"]
    assert m1["synth/stays"] == 30 and m1["synth/rows_patients"] == 30
    assert m1["synth/rows_chartevents"] > 30 * 50
    assert set(a) == {f"{T.MODULE[n]}/{n}.csv.gz" for n in T.SCHEMAS}


def test_parquet_format_keeps_schema(tmp_path: Path) -> None:
    stage.generate(12, 1, tmp_path / "p", fmt="parquet", chunk_stays=5, world=SHORT)
    for name, schema in T.SCHEMAS.items():
        t = pq.read_table(tmp_path / "p" / T.MODULE[name] / f"{name}.parquet")
        assert t.schema.names == schema.names, name
        for got, want in zip(t.schema, schema):  # parquet has no second-resolution timestamps: ms is allowed
            assert got.type == want.type or (pa.types.is_timestamp(want.type) and pa.types.is_timestamp(got.type)), (
                name, got)


def test_bad_arguments_leave_existing_files_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="not empty"):
        stage.generate(5, 1, out)
    with pytest.raises(ValueError, match="stays"):
        stage.generate(0, 1, tmp_path / "zero")
    with pytest.raises(ValueError, match="format"):
        stage.generate(5, 1, tmp_path / "fmt", fmt="xlsx")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not a directory|cannot write"):
        stage.generate(5, 1, blocker)
    with pytest.raises(ValueError, match="cannot write|not writable"):
        stage.generate(5, 1, blocker / "sub")
    assert (out / "keep.txt").read_text() == "precious" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not (tmp_path / "zero").exists() and blocker.read_text() == "x"
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_overwrite_replaces_atomically_and_stage_run(tmp_path: Path) -> None:
    out = tmp_path / "data" / "raw"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("old")
    params = {"data": {"raw_dir": "data/raw"}, "synth": {"stays": 8, "seed": 3, "chunk_stays": 4},
              "cohort": {"window_start_h": -24, "step_h": 4, "n_steps": 6}}
    m = stage.run(params, tmp_path)
    assert not (out / "old.txt").exists() and (out / "icu" / "chartevents.csv.gz").is_file()
    assert m["synth/stays"] == 8 and 0.0 <= m["synth/behaviour_mortality_hosp"] <= 1.0
    with pytest.raises(ValueError, match="unknown key"):
        stage.run({"synth": {"stayz": 3}}, tmp_path)
    with pytest.raises(ValueError, match="whole number"):
        stage.world_from_params({"cohort": {"step_h": 2.5}})


def test_the_clinicians_come_from_params() -> None:
    from ogsrl.synth import clinician as C

    assert stage.world_from_params({}).clinicians == C.DEMO
    world = stage.world_from_params({"synth": {"clinicians": {"fluid_scale": 0.5, "style_spread": 2}}})
    assert world.clinicians == C.Practice(fluid_scale=0.5, style_spread=2.0)
    assert stage.build(stage.SynthConfig, {"clinicians": {"dose_spread": 1.5}}).clinicians.dose_spread == 1.5
    with pytest.raises(ValueError, match=r"synth\.clinicians.*fluid_scale must be a finite number > 0"):
        stage.world_from_params({"synth": {"clinicians": {"fluid_scale": -1.0}}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) synth\.clinicians\.scale"):
        stage.world_from_params({"synth": {"clinicians": {"scale": 0.5}}})
