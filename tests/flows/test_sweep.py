"""The sweep flow on a real multi-process Dask cluster on loopback: a scheduler and two workers started with the
`dask` CLI as separate processes, reached through the address path. Tiny bc runs on fake trajectories."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from tests.agents.trajectory_fakes import one_thread, traj_root  # noqa: F401

from ogsrl.agents import load_policy, stage, units

REPO = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))
TINY = {"hidden": [8, 8], "batch_size": 32, "max_epochs": 3}
POLICIES = {"seeds": [1, 2], "serve_guardian_fallback": False, "algorithms": {"bc": TINY},
            "runs": {"soc": {"algorithm": "bc"}, "wide": {"algorithm": "bc", "overrides": {"hidden": [12, 12]}}}}
FAST_RETRY = {"retries": 1, "retry_delay_s": 0.2}



def test_the_scheduler_comes_from_the_flag_then_params_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.sweep import ADDRESS_ENV, resolve_address, task_runner

    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    cfg = units.SweepConfig(address="tcp://params:1")
    assert resolve_address(cfg, "tcp://flag:1") == "tcp://flag:1"
    assert resolve_address(cfg) == "tcp://params:1"
    monkeypatch.setenv(ADDRESS_ENV, "tcp://env:1")
    assert resolve_address(units.SweepConfig()) == "tcp://env:1"
    monkeypatch.delenv(ADDRESS_ENV)
    assert resolve_address(units.SweepConfig()) == ""
    assert task_runner(cfg, "tcp://params:1").address == "tcp://params:1"
    local = task_runner(units.SweepConfig(workers=3, threads_per_worker=2), "")
    assert local.address is None and local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["threads_per_worker"] == 1 and local.cluster_kwargs["processes"] is True
    assert local.cluster_kwargs["env"]["OMP_NUM_THREADS"] == "2"
    assert task_runner(units.SweepConfig(), "").cluster_kwargs["n_workers"] == os.cpu_count()


@dataclass
class Cluster:
    address: str
    procs: dict[str, subprocess.Popen]
    """worker name → its `dask worker` process (own process group: nanny + worker process)"""

    def worker_names(self) -> dict[str, str]:
        """worker address → name, as the scheduler sees them."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            return {addr: str(w["name"]) for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()}

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(timeout=30)


def _start_cluster(tmp: Path, n_workers: int) -> Cluster:
    from distributed import Client

    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sched_file = tmp / "scheduler.json"
    procs = {"scheduler": subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
         str(sched_file)], env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "scheduler.log").open("w"),
        start_new_session=True)}
    deadline = time.monotonic() + 60
    while not sched_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(sched_file.read_text())["address"]
    for i in range(n_workers):
        procs[f"w{i}"] = subprocess.Popen(
            [DASK, "worker", address, "--name", f"w{i}", "--nthreads", "1", "--host", "127.0.0.1",
             "--no-dashboard", "--death-timeout", "30"], env=env, stdout=subprocess.DEVNULL,
            stderr=(tmp / f"w{i}.log").open("w"), start_new_session=True)
    with Client(address, timeout=60) as client:
        client.wait_for_workers(n_workers, timeout=120)
    return Cluster(address, procs)


def _stop(cluster: Cluster) -> None:
    for proc in reversed(list(cluster.procs.values())):  # workers first, then the scheduler
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in cluster.procs.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[str]:
    """One temporary Prefect API for the module; its URL reaches the workers through the flow's settings."""
    import logging

    from flows.sweep import prefect_api

    api = prefect_api()
    yield api.__enter__()
    prefect_log = logging.getLogger("prefect")
    level = prefect_log.level
    prefect_log.setLevel(logging.WARNING)  # its "stopping" line would go to a test's closed capture stream
    try:
        api.__exit__(None, None, None)
    finally:
        prefect_log.setLevel(level)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Iterator[Cluster]:
    c = _start_cluster(tmp_path_factory.mktemp("cluster"), 2)
    yield c
    _stop(c)


def _project(traj_root: Path, tmp_path: Path, name: str, policies: dict, sweep: dict) -> tuple[Path, Path]:
    root = tmp_path / name
    shutil.copytree(traj_root, root)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"policies": policies, "sweep": sweep}), encoding="utf-8")
    return root, params


@pytest.mark.slow
def test_a_sweep_on_the_cluster_trains_every_unit_once_and_a_rerun_skips_them(
        cluster: Cluster, traj_root: Path, tmp_path: Path) -> None:
    from flows.sweep import run_sweep

    root, params = _project(traj_root, tmp_path, "p", POLICIES, {"address": cluster.address, **FAST_RETRY})
    result = run_sweep(str(params), str(root))
    assert result["address"] == cluster.address and result["failed"] == [] and result["gathered"]
    assert result["trained"] == 4 and set(result["units"]) == {"soc/seed1", "soc/seed2", "wide/seed1", "wide/seed2"}
    names = cluster.worker_names()
    assert {names[u["worker"]] for u in result["units"].values()} == {"w0", "w1"}  # both worker processes trained
    assert all(u["attempts"] == 1 for u in result["units"].values())
    # the same outputs as the in-process stage
    seq = tmp_path / "seq"
    shutil.copytree(traj_root, seq)
    expected = stage.run({"policies": POLICIES}, seq)
    assert json.loads((root / "data/reports/train.json").read_text()) == pytest.approx(expected, rel=1e-6)
    for unit in ("soc/seed2", "wide/seed1"):
        a = torch.load(root / f"data/models/policies/{unit}/weights.pt", weights_only=True)
        b = torch.load(seq / f"data/models/policies/{unit}/weights.pt", weights_only=True)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # each unit is an MLflow run with its final metrics and learning curve
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').as_posix()}")
    runs = client.search_runs([client.get_experiment_by_name("ogsrl").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {f"train-policies/{u}" for u in result["units"]}
    soc1 = by_name["train-policies/soc/seed1"]
    assert soc1.data.metrics["loss/val_nll"] == pytest.approx(expected["soc/seed1/loss/val_nll"])
    assert soc1.data.params["unit.run"] == "soc" and soc1.info.status == "FINISHED"
    history = client.get_metric_history(soc1.info.run_id, "curve/train_curves/soc/seed1/loss/val_nll")
    assert [m.step for m in history] == [1, 2, 3]
    # resume: everything current is skipped, nothing is retrained or logged again
    again = run_sweep(str(params), str(root))
    assert again["trained"] == 0 and again["skipped"] == 4 and again["failed"] == []
    assert len(client.search_runs([runs[0].info.experiment_id])) == 4


@pytest.mark.slow
def test_the_train_policies_stage_runs_the_sweep_when_enabled(
        cluster: Cluster, prefect_server: str, traj_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OGSRL_NO_TRACK", "1")
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # the child process uses the module's Prefect API
    monkeypatch.setenv("OGSRL_DASK_ADDRESS", cluster.address)  # the address from the environment
    root, _ = _project(traj_root, tmp_path, "p", POLICIES, {})
    params = {"policies": {**POLICIES, "seeds": [3]}, "sweep": {"enabled": True, **FAST_RETRY}}
    metrics = stage.run(params, root)  # what `ogsrl train-policies` (and so `dvc repro`) calls
    assert json.loads((root / "data/reports/train.json").read_text()) == metrics
    assert {"soc/seed3/loss/val_nll", "wide/mean/loss/val_nll"} <= set(metrics)
    assert sorted(p.name for p in (root / "data/models/policies/wide").iterdir()) == ["seed3", "seed3.unit.json"]
    assert list((root / ".sweep").glob("params-*.yaml"))  # the params file the workers read
    with pytest.raises(RuntimeError, match=r"the sweep \(python -m flows.sweep\) failed with exit 1; rerun"):
        bad = {**params, "policies": {**params["policies"], "runs": {**POLICIES["runs"], "mb": {"algorithm": "cpo"}}}}
        stage.run(bad, root)


@pytest.mark.slow
def test_a_failing_unit_is_retried_then_recorded_failed_while_the_others_finish(
        cluster: Cluster, traj_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.sweep import main, run_sweep

    monkeypatch.setenv("OGSRL_NO_TRACK", "1")
    # a model-based run in a project without a world model: its fit raises FileNotFoundError (retried) on every try
    policies = {**POLICIES, "runs": {**POLICIES["runs"], "mb": {"algorithm": "trpo", "overrides": {
        "iterations": 1, "num_envs": 8, "critic_epochs": 1, "warm_start": False}}}}
    root, params = _project(traj_root, tmp_path, "p", policies, {"address": cluster.address, **FAST_RETRY})
    result = run_sweep(str(params), str(root))
    assert result["failed"] == ["mb/seed1", "mb/seed2"] and not result["gathered"]
    for unit in ("mb/seed1", "mb/seed2"):
        assert result["units"][unit] == {"status": "failed", "error": "FileNotFoundError", "attempts": 2}
        run, seed = unit.split("/seed")
        rec = units.read_record(root, units.Unit(run, int(seed)))
        assert rec == {"format": 1, "unit": unit, "status": "failed", "error": "FileNotFoundError"}
        assert not (root / "data/models/policies" / unit).exists()
    for unit in ("soc/seed1", "soc/seed2", "wide/seed1", "wide/seed2"):
        assert result["units"][unit]["status"] == "trained"
        assert load_policy(root / "data/models/policies" / unit).feature_names
    assert not (root / "data/reports/train.json").exists()
    assert main(["--params", str(params), "--root", str(root)]) == 1  # the command fails; the good units skip
    # when the fallback run fails, the runs that wait for it are recorded as failed upstream
    broken = {**policies, "seeds": [1], "fallback_run": "mb", "runs": {"mb": policies["runs"]["mb"],
                                                                       "wide": POLICIES["runs"]["wide"]}}
    root2, params2 = _project(traj_root, tmp_path, "p2", broken, {"address": cluster.address, **FAST_RETRY})
    result = run_sweep(str(params2), str(root2))
    assert result["failed"] == ["mb/seed1", "wide/seed1"]
    assert result["units"]["wide/seed1"]["error"] == "UpstreamFailed"


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_the_unit_reruns_elsewhere(
        traj_root: Path, tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from distributed import Client

    from flows.sweep import run_sweep

    monkeypatch.setenv("OGSRL_NO_TRACK", "1")
    cluster = _start_cluster(tmp_path / "cluster", 2)
    try:
        slow = {"algorithm": "bc", "overrides": {"batch_size": 8, "max_epochs": 60, "patience": 60}}
        policies = {**POLICIES, "seeds": [1], "runs": {"soc": {"algorithm": "bc"}, "slow": slow}}
        root, params = _project(traj_root, tmp_path, "p", policies, {"address": cluster.address, **FAST_RETRY})
        killed: list[str] = []

        def kill_the_slow_unit() -> None:  # once soc is done, the one task in flight is slow/seed1
            with Client(cluster.address, timeout=30) as client:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    if (root / "data/models/policies/soc/seed1.unit.json").is_file():
                        time.sleep(1.5)  # slow/seed1 is mid-training
                        busy = [a for a, keys in client.processing().items() if keys]
                        name = str(client.scheduler_info(n_workers=-1)["workers"][busy[0]]["name"])
                        killed.append(name)
                        cluster.kill(name)
                        return
                    time.sleep(0.1)

        killer = threading.Thread(target=kill_the_slow_unit)
        killer.start()
        result = run_sweep(str(params), str(root))
        killer.join(timeout=60)
        assert len(killed) == 1
        assert result["failed"] == [] and result["gathered"] and result["units"]["slow/seed1"]["status"] == "trained"
        survivor = {"w0": "w1", "w1": "w0"}[killed[0]]
        assert cluster.worker_names()[result["units"]["slow/seed1"]["worker"]] == survivor
        leftovers = [p for p in (root / "data/models/policies").rglob("*") if p.name.startswith(".")]
        assert leftovers == []
        assert units.is_current(root, units.Unit("slow", 1), units.unit_key(
            yaml.safe_load(params.read_text()), root, units.Unit("slow", 1))[0])
        assert load_policy(root / "data/models/policies/slow/seed1").feature_names
        metrics = json.loads((root / "data/reports/train.json").read_text())
        assert metrics["slow/seed1/train/epochs"] == 60
    finally:
        _stop(cluster)
