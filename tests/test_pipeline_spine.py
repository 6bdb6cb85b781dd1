"""The pipeline spine: the Prefect flow (ephemeral API) and `dvc repro` on a tiny project."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ogsrl import cli
from tests.conftest import dvc_env

ATTEMPTS: dict[str, int] = {}


def _record(name: str, root: Path) -> dict[str, Any]:
    ATTEMPTS[name] = ATTEMPTS.get(name, 0) + 1
    out = root / "data" / "reports" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"order": len(ATTEMPTS)}), encoding="utf-8")
    return {"attempt": ATTEMPTS[name]}


def stage_ok(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    return _record("generate", root)


def stage_flaky(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Fails with an I/O error on the first attempt only (a transient failure Prefect should retry)."""
    if ATTEMPTS.get("validate-raw", 0) == 0:
        ATTEMPTS["validate-raw"] = 1
        raise OSError("disk hiccup")
    return _record("validate-raw", root)


def stage_bad_input(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    ATTEMPTS["extract"] = ATTEMPTS.get("extract", 0) + 1
    raise ValueError("table 'icustays', column 'outtime': outtime < intime")


def test_task_body_runs_the_stage_in_process(tmp_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.common import execute

    monkeypatch.setitem(cli.STAGES, "generate", (__name__, "stage_ok"))
    monkeypatch.setenv("OGSRL_NO_TRACK", "1")
    ATTEMPTS.clear()
    assert execute("generate", "params.yaml", str(tmp_project)) == {"attempt": 1}
    assert json.loads((tmp_project / "data" / "reports" / "generate.json").read_text()) == {"order": 1}
    with pytest.raises(ValueError, match="always read <root>/params.yaml"):
        execute("generate", "other.yaml", str(tmp_project), use_dvc=True)


def test_flow_tasks_cli_stages_and_dvc_stages_agree(repo_root: Path) -> None:
    from flows import pipeline as flow_module

    dvc_stages = [s.replace("_", "-") for s in yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]]
    assert list(flow_module.TASKS) == dvc_stages
    assert set(dvc_stages) <= set(cli.STAGES)
    for name in dvc_stages:  # each module exists and defines the function (checked without importing torch & co)
        module, fn = cli.STAGES[name]
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"{name}: {module} missing"
        assert re.search(rf"^def {fn}\(", Path(spec.origin).read_text(encoding="utf-8"), re.M), f"{name}: {fn}"


def test_every_report_file_a_stage_reads_is_a_dvc_dependency_of_it(repo_root: Path) -> None:
    from ogsrl.report import inputs

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    readers = {"clinical": "ogsrl/ope/clinical_stage.py", "report": "ogsrl/report/stage.py"}
    for stage, source in readers.items():
        text = (repo_root / source).read_text(encoding="utf-8")
        names = re.findall(r"inputs\.read_(json|csv)\(root, \"(\w+)\"", text)
        for kind, group in re.findall(r"inputs\.read_(json|csv)\(root, n\) for n in \(([^)]*)\)", text):
            names += [(kind, n) for n in re.findall(r"\"(\w+)\"", group)]
        assert names, source
        read = {(inputs.FILES if kind == "json" else inputs.TABLES)[name][0] for kind, name in names}
        missing = sorted(read - set(stages[stage]["deps"]))
        assert missing == [], f"{stage} reads {missing} without declaring them in dvc.yaml"


def test_retry_condition_skips_bad_input() -> None:
    from types import SimpleNamespace

    from ogsrl.errors import DataError
    from tasks.common import should_retry

    assert should_retry(None, None, SimpleNamespace(data=OSError("disk hiccup")))
    assert should_retry(None, None, SimpleNamespace(data=RuntimeError("worker killed")))
    assert not should_retry(None, None, SimpleNamespace(data=DataError("bad", table="icustays")))
    assert not should_retry(None, None, SimpleNamespace(data=ValueError("params: data.source ...")))


@pytest.mark.slow
def test_prefect_flow_runs_stages_in_order_with_retries(
    tmp_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import pipeline as flow_module

    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "PREFECT_API_URL" not in os.environ  # ephemeral API
    monkeypatch.setitem(cli.STAGES, "generate", (__name__, "stage_ok"))
    monkeypatch.setitem(cli.STAGES, "validate-raw", (__name__, "stage_flaky"))
    monkeypatch.setitem(cli.STAGES, "extract", (__name__, "stage_bad_input"))
    for name, task in list(flow_module.TASKS.items()):
        monkeypatch.setitem(flow_module.TASKS, name, task.with_options(retry_delay_seconds=0))
    ATTEMPTS.clear()
    monkeypatch.setenv("OGSRL_NO_TRACK", "1")

    try:
        _check_flow_runs(flow_module, tmp_project)
    finally:
        from prefect.logging.handlers import APILogHandler
        from prefect.server.api.server import SubprocessASGIServer

        APILogHandler().flush()  # send the queued flow/task logs before the server goes away
        SubprocessASGIServer().stop()  # the ephemeral server; stop it while pytest still captures its logs


def _check_flow_runs(flow_module: Any, tmp_project: Path) -> None:
    results = flow_module.pipeline("params.yaml", str(tmp_project), stages=["generate", "validate_raw"])

    assert results == {"generate": {"attempt": 1}, "validate-raw": {"attempt": 2}}
    assert ATTEMPTS == {"generate": 1, "validate-raw": 2}  # the transient failure was retried once

    # bad input is not retried and fails the flow run; later stages do not run
    with pytest.raises(ValueError, match="outtime < intime"):
        flow_module.pipeline("params.yaml", str(tmp_project), stages=["extract", "validate-trajectories"])
    assert ATTEMPTS["extract"] == 1
    assert "validate-trajectories" not in ATTEMPTS

    with pytest.raises(ValueError, match="unknown stage"):
        flow_module.pipeline("params.yaml", str(tmp_project), stages=["nope"])


def _dvc(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), *args],
        cwd=root, capture_output=True, text=True, env=env, timeout=600,
    )


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def _lock(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


@pytest.mark.slow
def test_dvc_repro_twice_is_a_noop_and_a_param_reruns_only_dependants(
        reproduced_dvc_project: tuple[Path, str]) -> None:
    root, first_stdout = reproduced_dvc_project
    env = dvc_env(root)
    stages = set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    assert _ran(first_stdout) == stages
    hashes = _lock(root)

    second = _dvc(root, "repro", env=env)  # in a copy: DVC rehashes the workspace, finds it unchanged
    assert second.returncode == 0 and _ran(second.stdout) == set()
    assert "Data and pipelines are up to date" in second.stdout

    # same seed → same trajectory bytes (recomputed, not restored from DVC's run cache)
    again = _dvc(root, "repro", "--force", "--no-run-cache", "--single-item", "extract", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _lock(root)["extract"]["outs"] == hashes["extract"]["outs"]

    # ope.behaviour is read by fit_behaviour only: it and the stages reading its model (or their reports) rerun,
    # nothing else does
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ope"]["behaviour"]["weight_decay"] = params["ope"]["behaviour"]["weight_decay"] + 1e-4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _dvc(root, "repro", env=env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert _ran(third.stdout) == {"fit_behaviour", "evaluate", "clinical", "report"}
    after = _lock(root)
    assert all(after[s] == hashes[s] for s in stages - _ran(third.stdout))
    assert after["fit_behaviour"]["outs"] != hashes["fit_behaviour"]["outs"]

    shown = _dvc(root, "metrics", "show", "--json", env=env)
    assert shown.returncode == 0 and "cohort.json" in shown.stdout

    # the local default remote: push, lose the workspace copy and the cache, pull it back
    traj = {p.name: p.read_bytes() for p in (root / "data" / "trajectories").iterdir()}
    assert _dvc(root, "push", env=env).returncode == 0
    shutil.rmtree(root / "data" / "trajectories")
    shutil.rmtree(root / ".dvc" / "cache")
    pulled = _dvc(root, "pull", "extract", env=env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert {p.name: p.read_bytes() for p in (root / "data" / "trajectories").iterdir()} == traj

    # the flow's --dvc mode goes through the same lock file: an up-to-date stage is skipped
    from tasks.common import execute

    assert execute("extract", str(root / "params.yaml"), str(root), use_dvc=True) == {
        "stage": "extract", "dvc": "up to date"
    }


def test_concurrent_repro_fails_cleanly_while_the_workspace_is_locked(tmp_dvc_project: Path) -> None:
    from dvc.repo import Repo

    root = tmp_dvc_project
    with Repo(str(root)) as repo, repo.lock:  # what a running `dvc repro` holds
        blocked = _dvc(root, "repro", env=dvc_env(root))
    assert blocked.returncode != 0
    assert "Unable to acquire lock" in blocked.stderr + blocked.stdout
    assert not (root / "data" / "raw").exists()  # nothing ran
    assert not (root / "dvc.lock").exists()
