"""ogsrl.registry.tracking: what a stage run puts into MLflow (and what it must never put there)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ogsrl import privacy
from ogsrl.config import ConfigError
from ogsrl.registry import tracking

PARAMS: dict[str, Any] = {
    "data": {"source": "demo", "raw_dir": "data/raw"},
    "synth": {"stays": 40, "seed": 7},
    "cohort": {"split": [0.6, 0.2, 0.2], "stay_id_column": "stay_id", "salt": "very-secret-salt"},
    "mlflow": {"tracking_uri": "", "experiment": "ogsrl-test"},
}

DVC_LOCK = """schema: '2.0'
stages:
  generate:
    cmd: ogsrl generate
    deps:
    - path: ogsrl/synth
      hash: md5
      md5: 0123456789abcdef0123456789abcdef.dir
      size: 100
      nfiles: 3
    outs:
    - path: data/raw
      hash: md5
      md5: fedcba9876543210fedcba9876543210.dir
      size: 2000
      nfiles: 12
"""


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tmp git project, two stage runs (ok + failed) logged to its own sqlite db."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("tracked")
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@ogsrl.invalid")
    _git(root, "config", "user.name", "t")
    (root / "tracked.txt").write_text("v1\n")
    (root / "dvc.lock").write_text(DVC_LOCK)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")
    (root / "tracked.txt").write_text("v2\n")  # dirty work tree

    uri = tracking.resolve_tracking_uri(tracking.tracking_config(PARAMS), root)
    result = {
        "cohort_size": 31,
        "mortality": 0.25,
        "passed": True,
        "source": "demo",
        "missing": {"spo2": 0.1, "gcs": 0.4},
        "n_stay_id": 31,
        "note": None,
    }
    ok_id = tracking.log_stage_run("extract", PARAMS, result, root, uri, "ogsrl-test")
    err = ValueError("table 'icustays': bad rows [offending rows: stay_id=30000123]")
    fail_id = tracking.log_stage_run("validate-raw", PARAMS, None, root, uri, "ogsrl-test", error=err)
    client = MlflowClient(tracking_uri=uri)
    return {"root": root, "uri": uri, "ok": client.get_run(ok_id), "fail": client.get_run(fail_id), "client": client}


def test_default_uri_is_sqlite_under_the_project(logged: dict[str, Any]) -> None:
    root = logged["root"]
    assert logged["uri"] == f"sqlite:///{root.resolve().as_posix()}/mlflow.db"
    assert (root / "mlflow.db").is_file()
    exp = logged["client"].get_experiment_by_name("ogsrl-test")
    assert exp.artifact_location == (root.resolve() / "mlartifacts").as_uri()


def test_run_has_flattened_params_metrics_and_git_tags(logged: dict[str, Any]) -> None:
    run = logged["ok"]
    root = logged["root"]
    assert run.info.run_name == "extract"
    assert run.info.status == "FINISHED"
    assert run.data.params["synth.stays"] == "40"
    assert run.data.params["cohort.split"] == "[0.6, 0.2, 0.2]"
    assert run.data.params["mlflow.experiment"] == "ogsrl-test"
    assert run.data.metrics == {
        "cohort_size": 31.0,
        "mortality": 0.25,
        "passed": 1.0,
        "missing/spo2": 0.1,
        "missing/gcs": 0.4,
    }
    tags = run.data.tags
    assert tags["git.commit"] == _git(root, "rev-parse", "HEAD")
    assert tags["git.dirty"] == "true"
    assert tags["ogsrl.stage"] == "extract" and tags["ogsrl.status"] == "ok"
    assert tags["result.source"] == "demo"
    assert tags["dvc.generate.outs.data/raw"] == "fedcba9876543210fedcba9876543210.dir"
    assert tags["dvc.generate.deps.ogsrl/synth"] == "0123456789abcdef0123456789abcdef.dir"
    assert len(tags["dvc.lock.sha256"]) == 64


def test_no_raw_identifiers_reach_mlflow(logged: dict[str, Any]) -> None:
    for run in (logged["ok"], logged["fail"]):
        everything = [*run.data.params, *run.data.metrics, *run.data.tags, *run.data.params.values(),
                      *run.data.tags.values()]
        assert not [x for x in everything if "stay_id" in x or "30000123" in x]


def test_failed_run_records_only_the_error_class(logged: dict[str, Any]) -> None:
    run = logged["fail"]
    assert run.info.status == "FAILED"
    assert run.data.tags["ogsrl.error"] == "ValueError"
    assert run.data.tags["ogsrl.status"] == "failed"
    assert run.data.metrics == {}


def test_uri_precedence_params_then_env_then_default(tmp_path: Path) -> None:
    cfg = tracking.tracking_config({"mlflow": {"tracking_uri": "http://mlflow:5000"}})
    assert tracking.resolve_tracking_uri(cfg, tmp_path, "sqlite:///env.db") == "http://mlflow:5000"
    cfg = tracking.tracking_config({})
    assert cfg.experiment == "ogsrl"
    assert tracking.resolve_tracking_uri(cfg, tmp_path, "sqlite:///env.db") == "sqlite:///env.db"
    assert tracking.resolve_tracking_uri(cfg, tmp_path, None).endswith(f"{tmp_path.as_posix()}/mlflow.db")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"tracking_uri": 3}, "mlflow.tracking_uri must be a string, got 3"),
        ({"experiment": " "}, "experiment must be a non-empty string"),
        ("sqlite:///x.db", "mlflow must be a mapping, got str"),
    ],
)
def test_bad_tracking_params_raise_config_error(section: Any, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        tracking.tracking_config({"mlflow": section})


def test_split_result_and_identifier_keys() -> None:
    metrics, tags = tracking.split_result(
        {"a": 1, "ok": False, "nested": {"b": 2.5}, "stay_id": 5, "hadm_id_count": 2, "list": [1, 2], "none": None}
    )
    assert metrics == {"a": 1.0, "ok": 0.0, "nested/b": 2.5}
    assert tags == {"result.list": "[1, 2]"}
    assert tracking.is_identifier_key("cohort.subject_id") and not tracking.is_identifier_key("stay_key")


def test_outside_git_and_without_dvc_lock(tmp_path: Path) -> None:
    assert tracking.git_info(tmp_path / "nowhere") == {"git.commit": "unknown", "git.dirty": "unknown"}
    assert tracking.dvc_lock_tags(tmp_path) == {}


def test_salt_is_logged_only_as_a_fingerprint(logged: dict[str, Any]) -> None:
    params = logged["ok"].data.params
    assert params["cohort.salt"] == privacy.fingerprint("very-secret-salt")
    assert params["cohort.salt"].startswith("hmac-sha256:")
    assert all("very-secret-salt" not in v for v in params.values())


def test_plot_tables_become_artifacts_and_metric_histories(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    plots = tmp_path / "data/reports/world_plots"
    plots.mkdir(parents=True)
    (plots / "learning_curve.csv").write_text("step,train_loss,val_loss\n1,0.9,1.1\n2,0.5,0.8\n3,0.4,nan\n")
    (plots / "calibration.csv").write_text("nominal,ensemble\n0.5,0.49\n0.9,0.88\n")
    curves = tmp_path / "train_curves.csv"
    curves.write_text("run,seed,step,loss/train_nll\nsoc,42,1,0.8\nsoc,42,2,0.6\nbc2,42,1,0.7\nsoc,7,1,0.9\n")
    uri = tracking.resolve_tracking_uri(tracking.tracking_config(PARAMS), tmp_path)
    run_id = tracking.log_stage_run("fit-world-model", PARAMS, {"fit_seconds": 1.0}, tmp_path, uri, "ogsrl-test",
                                    plots=[plots, curves, tmp_path / "absent.csv"])
    client = MlflowClient(tracking_uri=uri)
    names = sorted(a.path for a in client.list_artifacts(run_id, "plots"))
    assert names == ["plots/calibration.csv", "plots/learning_curve.csv", "plots/train_curves.csv"]
    val = client.get_metric_history(run_id, "curve/learning_curve/val_loss")
    assert [(m.step, m.value) for m in sorted(val, key=lambda m: m.step)] == [(1, 1.1), (2, 0.8)]  # NaN dropped
    soc = client.get_metric_history(run_id, "curve/train_curves/soc/seed42/loss/train_nll")
    assert sorted((m.step, m.value) for m in soc) == [(1, 0.8), (2, 0.6)]
    assert not any(k.startswith("curve/calibration") for k in client.get_run(run_id).data.metrics)  # no step column


def test_figures_become_artifacts(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    figs = tmp_path / "data/reports/figures"
    figs.mkdir(parents=True)
    (figs / "ope_vs_truth_return.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    (figs / "notes.txt").write_text("not a figure")
    page = tmp_path / "data/reports/index.html"
    page.write_text("<!doctype html><title>r</title>")
    uri = tracking.resolve_tracking_uri(tracking.tracking_config(PARAMS), tmp_path)
    run_id = tracking.log_stage_run("report", PARAMS, {"report/figures": 1}, tmp_path, uri, "ogsrl-test",
                                    figures=[figs, page, tmp_path / "absent.svg"])
    names = sorted(a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id, "figures"))
    assert names == ["figures/index.html", "figures/ope_vs_truth_return.svg"]
