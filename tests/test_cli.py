"""The `ogsrl` console script: dispatch, readable errors (exit 2), source pointers, MLflow failure isolation."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from ogsrl import cli

CALLS: list[str] = []


def fake_stage(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """A stand-in stage: writes an output and returns metrics (incl. a bool and a string)."""
    CALLS.append("fake")
    out = root / "data" / "reports" / "fake.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": 3}), encoding="utf-8")
    return {"rows": 3, "passed": True, "source": params["data"]["source"]}


def failing_stage(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    from ogsrl.errors import DataError

    raise DataError("intime after outtime", table="icustays", column="outtime", rows=[7, 9])


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.STAGES, "fake", (__name__, "fake_stage"))
    monkeypatch.setitem(cli.STAGES, "failing", (__name__, "failing_stage"))
    CALLS.clear()


def test_help_lists_every_stage_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in [*cli.STAGES, "synth", "truth"]:
        assert name in out


def test_unknown_subcommand_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_bad_cli_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["synth", "--stays", "-5", "--seed", "1", "--out", "x"])
    assert exc.value.code == 2
    assert "expected a positive integer, got -5" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"data.source": "bogus"}, "data.source must be one of ['demo', 'mimic-iv', 'trajectories'], got 'bogus'"),
        ({"data.sorce": "demo"}, "unknown key(s) data.sorce"),
        ({"data.raw_dir": 5}, "data.raw_dir must be a string, got 5"),
        ({"data.source": "mimic-iv"}, "mimic_path must be set when source is 'mimic-iv'"),
    ],
    ids=["bad-choice", "unknown-key", "wrong-type", "missing-path"],
)
def test_invalid_params_value_names_the_key_and_exits_2(
    make_params: Any,
    write_params: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, Any],
    expected: str,
) -> None:
    write_params(tmp_path, make_params(**overrides))
    rc = cli.main(["generate", "--root", str(tmp_path), "--no-track"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_BAD_INPUT
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "data").exists()  # nothing written


def test_duplicate_key_and_missing_params_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "params.yaml").write_text("data:\n  source: demo\n  source: mimic-iv\n", encoding="utf-8")
    assert cli.main(["extract", "--root", str(tmp_path), "--no-track"]) == 2
    assert "duplicate key 'source' at line 3" in capsys.readouterr().err
    assert cli.main(["extract", "--root", str(tmp_path), "--params", str(tmp_path / "nope.yaml")]) == 2
    assert "params file not found" in capsys.readouterr().err


def test_console_script_error_is_one_line_without_traceback(
    make_params: Any, write_params: Any, tmp_path: Path
) -> None:
    write_params(tmp_path, make_params(**{"data.source": "bogus"}))
    exe = Path(sys.executable).with_name("ogsrl")
    done = subprocess.run(
        [str(exe), "generate", "--no-track"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ogsrl generate: error: params: data.source must be one of ['demo', 'mimic-iv', 'trajectories'], "
        "got 'bogus'"
    ]


def test_stage_data_error_exits_2_and_names_table_and_rows(
    tmp_project: Path, fake_stages: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["failing", "--root", str(tmp_project), "--no-track"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "table 'icustays', column 'outtime': intime after outtime [offending rows: 7, 9]" in err


def test_stage_dispatch_prints_metrics(
    tmp_project: Path, fake_stages: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # global options accepted before and after the subcommand
    assert cli.main(["--root", str(tmp_project), "fake", "--no-track"]) == 0
    assert json.loads(capsys.readouterr().out) == {"passed": True, "rows": 3, "source": "demo"}
    assert CALLS == ["fake"]


def test_missing_stage_module_is_a_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.STAGES, "ghost", ("ogsrl.no_such_area.stage", "run"))
    with pytest.raises(ValueError, match=r"stage 'ghost' is not available .*ogsrl.no_such_area.stage missing"):
        cli.stage_function("ghost")
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        cli.stage_function("nope")


def test_failing_mlflow_keeps_outputs_and_exit_zero(
    make_params: Any,
    write_params: Any,
    tmp_project: Path, fake_stages: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OGSRL_NO_TRACK", raising=False)
    params = make_params(**{"mlflow.tracking_uri": "nosuchscheme://nowhere"})
    write_params(tmp_project, params)
    result = cli.run_stage("fake", root=tmp_project)
    assert result["rows"] == 3
    assert json.loads((tmp_project / "data" / "reports" / "fake.json").read_text()) == {"rows": 3}
    assert any("MLflow logging failed for stage fake" in r.getMessage() for r in caplog.records)


MIMIC_TABLES = {"hosp": ("patients", "admissions", "labevents", "prescriptions", "microbiologyevents", "d_labitems"),
                "icu": ("icustays", "chartevents", "inputevents", "outputevents", "procedureevents", "d_items")}


def _write_mimic_layout(base: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Every table the extraction reads (placeholder bytes: generate only lists them); returns the listing."""
    listing = {}
    for module, names in MIMIC_TABLES.items():
        (base / module).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(n for n in names if n not in skip):
            ext = "parquet" if name == "icustays" else "csv.gz"
            (base / module / f"{name}.{ext}").write_bytes(b"x" * (10 + i))
            listing[f"{module}/{name}.{ext}"] = 10 + i
    (base / "README.txt").write_text("not a table", encoding="utf-8")
    return listing


def test_mimic_source_writes_only_a_pointer_and_replaces_old_demo_tables(
    make_params: Any, write_params: Any, tmp_path: Path
) -> None:
    mimic = tmp_path / "mimic-iv-3.1"
    listing = _write_mimic_layout(mimic)
    root = tmp_path / "project"
    stale = root / "data" / "raw" / "hosp" / "patients.csv.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old demo table")
    write_params(root, make_params(**{"data.source": "mimic-iv", "data.mimic_path": str(mimic)}))

    result = cli.run_stage("generate", root=root, track=False)

    assert result == {"source": "mimic-iv", "generated": False, "input_files": 12}
    assert sorted(p.name for p in (root / "data" / "raw").iterdir()) == [cli.SOURCE_FILE]
    pointer = json.loads((root / "data" / "raw" / cli.SOURCE_FILE).read_text())
    assert pointer == {"source": "mimic-iv", "path": str(mimic), "files": listing}
    assert json.loads((root / "data" / "reports" / "generate.json").read_text()) == result


def test_mimic_source_missing_a_table_exits_2_naming_it(
    make_params: Any, write_params: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mimic = tmp_path / "mimic-iv-3.1"
    _write_mimic_layout(mimic, skip=("labevents",))
    root = tmp_path / "project"
    keep = root / "data" / "raw" / cli.SOURCE_FILE
    keep.parent.mkdir(parents=True)
    keep.write_text("previous", encoding="utf-8")
    write_params(root, make_params(**{"data.source": "mimic-iv", "data.mimic_path": str(mimic)}))
    assert cli.main(["generate", "--root", str(root), "--no-track"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "table 'labevents'" in err[0] and "hosp/labevents.csv.gz" in err[0]
    assert keep.read_text(encoding="utf-8") == "previous"


def test_missing_mimic_dir_exits_2_and_keeps_previous_raw_dir(
    make_params: Any, write_params: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "project"
    keep = root / "data" / "raw" / "hosp" / "patients.csv.gz"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"previous")
    write_params(root, make_params(**{"data.source": "mimic-iv", "data.mimic_path": str(tmp_path / "absent")}))
    assert cli.main(["generate", "--root", str(root), "--no-track"]) == 2
    assert f"data.mimic_path '{tmp_path / 'absent'}' is not a directory" in capsys.readouterr().err
    assert keep.read_bytes() == b"previous"


def test_trajectories_source_pointer_carries_the_file_hash(
    make_params: Any, write_params: Any, tmp_path: Path
) -> None:
    from ogsrl.io import file_sha256

    parquet = tmp_path / "mine.parquet"
    parquet.write_bytes(b"PAR1 not really")
    root = tmp_path / "project"
    write_params(root, make_params(**{"data.source": "trajectories", "data.trajectories_path": str(parquet)}))
    cli.run_stage("generate", root=root, track=False)
    pointer = json.loads((root / "data" / "raw" / cli.SOURCE_FILE).read_text())
    assert pointer["sha256"] == file_sha256(parquet)
    assert pointer["bytes"] == parquet.stat().st_size


def test_dvc_yaml_stages_are_ogsrl_commands_with_declared_params(repo_root: Path) -> None:
    spec = yaml.safe_load((repo_root / "dvc.yaml").read_text(encoding="utf-8"))
    params = yaml.safe_load((repo_root / "params.yaml").read_text(encoding="utf-8"))
    assert spec["stages"], "dvc.yaml has no stages"
    for name, stage in spec["stages"].items():
        command = stage["cmd"].split()
        assert command[:2] == ["ogsrl", name.replace("_", "-")], name
        assert command[1] in cli.STAGES, f"{name}: not a CLI stage"
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        assert "params.yaml" not in deps, f"{name}: params.yaml must be listed under params:, not deps:"
        for dep in deps:
            if dep.startswith("ogsrl"):
                assert (repo_root / dep).exists(), f"{name}: code dep {dep} does not exist"
        for key in stage.get("params", []):
            node: Any = params
            for part in str(key).split("."):
                assert isinstance(node, dict) and part in node, f"{name}: param {key} not in params.yaml"
                node = node[part]
        for metric in stage.get("metrics", []):
            path, opts = next(iter(metric.items()))
            assert path.endswith(".json") and opts == {"cache": False}, f"{name}: {path}"


def failing_gate(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """A validation gate that writes its report, then fails (what ogsrl.validate does)."""
    from ogsrl.errors import DataError
    from ogsrl.io import write_json

    write_json(root / cli.FAILURE_REPORTS["validate-raw"], {"success": False, "n_failed": 2, "n_expectations": 9})
    raise DataError("2 expectations failed [offending rows: stay_id=30000001]", table="chartevents")


def test_failed_gate_is_logged_with_its_report_but_not_its_message(
    tmp_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("OGSRL_NO_TRACK", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setitem(cli.STAGES, "validate-raw", (__name__, "failing_gate"))
    assert cli.main(["validate-raw", "--root", str(tmp_project)]) == 2
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_project.resolve().as_posix()}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ogsrl").experiment_id])
    assert run.info.run_name == "validate-raw" and run.info.status == "FAILED"
    assert run.data.metrics == {"success": 0.0, "n_failed": 2.0, "n_expectations": 9.0}
    assert run.data.tags["ogsrl.error"] == "DataError"
    assert not [v for v in run.data.tags.values() if "30000001" in v]


def test_synth_command_writes_the_layout_and_refuses_a_non_empty_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    argv = ["synth", "--stays", "6", "--seed", "3", "--out", str(out), "--format", "parquet", "--no-track"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["synth/stays"] == 6
    assert (out / "hosp" / "patients.parquet").is_file() and (out / "icu" / "icustays.parquet").is_file()
    before = (out / "hosp" / "patients.parquet").read_bytes()
    assert cli.main(argv) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "hosp" / "patients.parquet").read_bytes() == before


def test_truth_command_prints_json_and_rejects_unknown_policies(
    tmp_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["truth", "--root", str(tmp_project), "--policy", "heuristic", "--episodes", "8", "--seed", "1"]
    assert cli.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["truth/policy"] == "heuristic" and result["truth/seed"] == 1
    assert cli.main(["truth", "--root", str(tmp_project), "--policy", "no-such-policy", "--episodes", "2"]) == 2
    assert "unknown policy" in capsys.readouterr().err


def test_truth_command_pairs_two_policies_on_the_same_patients(
    tmp_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_project / "per_patient.parquet"
    argv = ["truth", "--root", str(tmp_project), "--policy", "heuristic", "--episodes", "40", "--seed", "2",
            "--against", "no-treatment", "--per-patient", str(out), "--json"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    per = pd.read_parquet(out).set_index("patient")
    assert len(per) == result["truth/stays"] and per["return"].mean() == pytest.approx(result["truth/return"])
    assert result["truth/against"] == "no-treatment" and 2 <= result["truth/paired/patients"] <= len(per)
    lo, mid, hi = (result[f"truth/paired/return{s}"] for s in ("_ci_lo", "", "_ci_hi"))
    assert lo < mid < hi
    assert {"truth/paired/died_in_hosp", "truth/paired/cost_return_cost_total"} <= set(result)
    # the same seed pairs a policy with itself exactly: every patient's difference is 0
    assert cli.main([*argv[:-5], "--against", "heuristic", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["truth/paired/return"] == 0.0 == same["truth/paired/return_ci_hi"]
    assert same["truth/paired/patients"] == same["truth/stays"]


def test_stage_summaries_keep_the_headline_and_drop_the_detail() -> None:
    import importlib

    def short(command: str, metrics: dict) -> dict:
        module, fn = cli.STAGE_SUMMARIES[command]
        return getattr(importlib.import_module(module), fn)(metrics)

    world = short("fit-world-model", {"world/nll/ensemble": 1.5, "world/nll/ensemble/spo2": 2.0, "world/elites": 5})
    assert world == {"world/nll/ensemble": 1.5, "world/elites": 5, "metrics_file": "data/reports/world.json"}
    guardian = short("calibrate-guardian", {"alpha_c": 0.95, "kde/test_coverage_stay": 0.96, "kde/fit_s": 3.0,
                                            "christoffel/level": 2.0})
    assert set(guardian) == {"alpha_c", "kde/test_coverage_stay", "metrics_file"}
    truth = short("simulate-truth", {"truth/available": True, "truth/soc/seed42/return": -80.0,
                                     "truth/soc/seed42/return_ci_lo": -82.0, "truth/cached_policies": 1,
                                     "truth/soc/seed42/vs_behaviour_return": 2.0,
                                     "truth/soc/seed42/vs_behaviour_return_ci_lo": 1.0})
    assert set(truth) == {"truth/available", "truth/soc/seed42/return", "truth/cached_policies", "metrics_file",
                          "truth/soc/seed42/vs_behaviour_return"}
    clinical = short("clinical", {"clinicians/me": 0.2, "soc/mean/mcr": 0.5, "soc/seed42/mcr": 0.5,
                                  "soc/mean/acp/fluid_ml": 1.0, "me_relation/spearman": -0.3})
    assert set(clinical) == {"clinicians/me", "soc/mean/mcr", "me_relation/spearman", "metrics_file"}


def test_synth_mdp_and_mdp_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ogsrl synth-mdp` writes a v2 table (and a sidecar schema); `ogsrl mdp-value` gives the logging policy's exact
    values, which the logged returns estimate."""
    out, side = tmp_path / "mdp.parquet", tmp_path / "schema.json"
    assert cli.main(["synth-mdp", "--out", str(out), "--actions", "continuous", "--stays", "400", "--seed", "3",
                     "--schema-out", str(side)]) == 0
    summary = json.loads(capsys.readouterr().out)
    from ogsrl.data.schema import Schema, read_schema

    assert read_schema(out) == Schema.from_json(side.read_text()) and summary["stays"] == 400
    assert cli.main(["mdp-value", "--table", str(out), "--policy", "behaviour"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert exact["return"] == pytest.approx(summary["behaviour_true"]["return"], abs=1e-5)
    assert abs(summary["logged_return_mean"] - exact["return"]) < 4 * 10 / 400 ** 0.5  # ±R returns: sd ≤ R
    assert cli.main(["mdp-value", "--table", str(out), "--policy", str(tmp_path / "none")]) == 2
