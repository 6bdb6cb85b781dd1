"""Scheduled retraining flow: its cron deployment, and two programmatically triggered runs on a tiny DVC project
(one that creates the champion and pushes, one whose `dvc repro` fails and leaves the champion untouched), in a
subprocess with its own Prefect home so that no Prefect server outlives the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FAKES = REPO / "tests" / "serve"
sys.path.insert(0, str(FAKES))
import ogsrl_fakes as fakes  # noqa: E402

MAKE_METRICS = """\
import json, sys
from pathlib import Path
cand = json.loads(Path("candidate.json").read_text())
if cand.get("fail"):
    sys.exit("simulated stage failure")
m = {}
for est in ("wdr", "hull_fqe_wdr"):  # the gate's return and cost estimators
    for target, (v, lo, hi) in {"return": cand["ret"], "cost_total": cand["cost"]}.items():
        k = f"soc/seed42/{est}/{target}"
        m.update({f"{k}/value": v, f"{k}/ci_low": lo, f"{k}/ci_high": hi, f"{k}/ess": 100.0})
m.update({"behaviour/onpolicy/return/value": -52.0, "behaviour/onpolicy/return/ci_low": -56.0,
          "behaviour/onpolicy/return/ci_high": -48.0, "behaviour/onpolicy/return/ess": 1000.0})
Path("data/reports/evaluate").mkdir(parents=True, exist_ok=True)
Path("data/reports/evaluate/metrics.json").write_text(json.dumps(m))
Path("data/models/candidate.txt").write_text(json.dumps(cand))
"""

DRIVER = """\
import json, sys
from pathlib import Path
from flows.retrain import retrain
root = Path(sys.argv[1])
out = []
first = retrain("params.yaml", str(root), return_state=True)
out.append({"completed": first.is_completed(), "result": first.result() if first.is_completed() else None})
(root / "candidate.json").write_text(json.dumps({"fail": True}))
second = retrain("params.yaml", str(root), return_state=True)
out.append({"completed": second.is_completed(), "failed": second.is_failed(), "message": str(second.message)})
print("RESULT " + json.dumps(out, default=str))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    environ = dict(os.environ)
    environ.update({
        "PYTHONPATH": os.pathsep.join([str(REPO), str(FAKES)]),
        "PREFECT_HOME": str(tmp_path / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
    })
    environ.pop("PREFECT_API_URL", None)
    environ.pop("MLFLOW_TRACKING_URI", None)
    return environ


def _prefect_processes(home: Path) -> list[int]:
    """Processes (other than finished ones) whose environment points at this test's Prefect home."""
    pids = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("PREFECT_HOME") == str(home):
                pids.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    params = fakes.make_project(root)  # the gate needs a certified guardian
    (root / "dvc.lock").unlink()
    params["registry"]["gate"] = {"cost_limits": {"cost_total": 1.0}}
    params["schedule"] = {"cron": "*/30 * * * *", "deployment": "test-retrain"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "make_metrics.py").write_text(MAKE_METRICS)
    (root / "candidate.json").write_text(json.dumps({"ret": [-50, -55, -45], "cost": [0.4, 0.3, 0.5]}))
    (root / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          evaluate:
            cmd: {sys.executable} make_metrics.py
            deps: [candidate.json, make_metrics.py]
            outs: [data/models/candidate.txt]
            metrics:
              - data/reports/evaluate/metrics.json:
                  cache: false
        """))
    (root / ".dvcignore").write_text("mlflow.db\nmlartifacts/\n")
    return root


def test_deployment_uses_the_cron_from_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    sys.path.insert(0, str(REPO))
    from flows import retrain

    root = _project(tmp_path)
    dep = retrain.deployment("params.yaml", str(root))
    assert dep.name == "test-retrain"
    assert dep.schedules[0].schedule.cron == "*/30 * * * *"
    assert dep.parameters == {"params": str(root / "params.yaml"), "root": str(root)}
    with pytest.raises(ValueError, match="5 \\(or 6\\) fields"):
        retrain.ScheduleConfig(cron="daily")


@pytest.mark.slow
def test_triggered_runs_promote_then_fail_without_touching_the_champion(tmp_path: Path) -> None:
    root = _project(tmp_path)
    environ = _env(tmp_path)
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=root, env=environ, check=True)
    subprocess.run([dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], cwd=root, env=environ, check=True)

    done = subprocess.run([sys.executable, "-c", DRIVER, str(root)], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=400)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert done.returncode == 0 and line, done.stdout[-3000:] + done.stderr[-3000:]
    first, second = json.loads(line[len("RESULT "):])

    assert first["completed"] is True
    assert first["result"]["registered"]["version"] == "1"
    assert first["result"]["gate"]["promote"] is True
    assert first["result"]["push"].strip() and any((tmp_path / "remote").rglob("*"))
    assert (root / "dvc.lock").is_file()

    assert second["completed"] is False and second["failed"] is True
    assert "dvc repro failed" in second["message"] or "simulated stage failure" in second["message"]

    import mlflow

    db = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    client = mlflow.MlflowClient(tracking_uri=db, registry_uri=db)
    versions = client.search_model_versions("name='ogsrl-policy'")
    assert [str(v.version) for v in versions] == ["1"]  # the failed run registered nothing
    assert str(client.get_model_version_by_alias("ogsrl-policy", "champion").version) == "1"
    assert _prefect_processes(tmp_path / ".prefect") == []  # no Prefect server left running


TRIGGER = """\
import asyncio, json, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

async def deployment():
    async with get_client() as client:
        for _ in range(240):
            try:
                return await client.read_deployment_by_name("ogsrl-retrain/test-retrain")
            except Exception:
                time.sleep(0.5)
    raise SystemExit("deployment never appeared")

dep = asyncio.run(deployment())
run = run_deployment("ogsrl-retrain/test-retrain", timeout=300)
print("RESULT " + json.dumps({"state": run.state.type.value, "cron": dep.schedules[0].schedule.cron}))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_cron_deployment_served_on_a_local_prefect_server_runs_once(tmp_path: Path) -> None:
    """`python -m flows.retrain --serve` against `prefect server start` on 127.0.0.1; one run is triggered
    through the API (as the scheduler would), then runner and server are stopped and nothing is left running."""
    root = _project(tmp_path)
    environ = _env(tmp_path)
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=root, env=environ, check=True)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    with (tmp_path / "server.log").open("w") as server_log, (tmp_path / "runner.log").open("w") as runner_log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=environ, stdout=server_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        runner = None
        try:
            for _ in range(360):
                try:
                    with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.5)
            client_env = {**environ, "PREFECT_API_URL": api}
            runner = subprocess.Popen([sys.executable, "-m", "flows.retrain", "--serve", "--root", str(root)],
                                      cwd=REPO, env=client_env, stdout=runner_log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            done = subprocess.run([sys.executable, "-c", TRIGGER], cwd=REPO, env=client_env, capture_output=True,
                                  text=True, timeout=400)
        finally:
            if runner is not None:
                _stop(runner, 20)
            _stop(server, 30)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-2000:] + (tmp_path / "runner.log").read_text()[-2000:]
    result = json.loads(line[len("RESULT "):])
    assert result == {"state": "COMPLETED", "cron": "*/30 * * * *"}

    import mlflow

    db = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    client = mlflow.MlflowClient(tracking_uri=db, registry_uri=db)
    assert str(client.get_model_version_by_alias("ogsrl-policy", "champion").version) == "1"
    assert _prefect_processes(tmp_path / ".prefect") == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{api}/health", timeout=2)
