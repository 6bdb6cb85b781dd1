"""The train_policies grid (run × seed [× cost limit]) as Prefect tasks on a Dask cluster.

    python -m flows.sweep                                   # a local cluster: one worker process per core
    python -m flows.sweep --address tcp://10.0.0.5:8786     # an existing scheduler (or params sweep.address,
                                                            # or env OGSRL_DASK_ADDRESS)
    python -m flows.sweep --workers 2                       # local cluster size

One task per unit (:func:`ogsrl.agents.units.train_unit`); tasks get paths (params file, project root) and names,
never data. The fallback run's units go first and the other runs of a seed wait for theirs. A unit that fails is
retried (params ``sweep.retries``; bad input, a ValueError, is not), then recorded as failed while the others go
on; a unit whose worker dies is rerun by Dask on another worker. Units whose outputs are current are skipped, so
rerunning after a crash resumes. Each unit becomes an MLflow run (``train-policies/<run>/seed<seed>``), logged from
this process. When every unit is current the outputs are gathered into ``data/reports/train.json`` and
``train_curves.csv`` (:func:`ogsrl.agents.units.gather`); otherwise the command exits 1 naming the failed units.
``ogsrl train-policies`` (and so ``dvc repro``) runs this module when params ``sweep.enabled`` is true.

Prefect: without ``PREFECT_API_URL`` the flow starts a temporary local API server and hands its address to the
workers (else every worker process would start its own); a cluster on other machines needs a Prefect server they
can reach (docs/sweeps.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]

from ogsrl import env  # noqa: E402

env.setdefaults(PROJECT_ROOT)
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # Dask's per-connection INFO lines drown the sweep's

import cloudpickle  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect_dask import DaskTaskRunner  # noqa: E402

from ogsrl import config  # noqa: E402
from ogsrl.agents import units  # noqa: E402
from ogsrl.agents.stage import policies_config  # noqa: E402

import tasks.common  # noqa: E402
from tasks.common import should_retry  # noqa: E402

# the scheduler and workers need the ogsrl package only: this module and the retry rule travel inside the pickles
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(tasks.common)

ADDRESS_ENV = "OGSRL_DASK_ADDRESS"
"""environment variable naming an existing Dask scheduler (used when params sweep.address is empty)"""


@task(name="train-unit")
def train_unit(params_path: str, root: str, run: str, seed: int, threads: int) -> dict[str, Any]:
    """Train (or skip) one unit on whichever worker runs the task; returns its small summary and the worker."""
    from ogsrl.agents import units as units_mod

    try:
        from distributed import get_worker

        worker = get_worker().address
    except ValueError:  # not on a Dask worker (a local thread pool)
        worker = "local"
    out = units_mod.train_unit(config.load_params(params_path), Path(root), run, seed, threads=threads)
    return {**out, "worker": worker}


def resolve_address(cfg: units.SweepConfig, cli_address: str | None = None) -> str:
    """The scheduler to use: ``--address``, else params ``sweep.address``, else env OGSRL_DASK_ADDRESS, else ""
    (a local cluster)."""
    return cli_address or cfg.address or os.environ.get(ADDRESS_ENV, "")


def task_runner(cfg: units.SweepConfig, address: str, workers: int | None = None) -> DaskTaskRunner:
    """A DaskTaskRunner on ``address``, or on a new local cluster of ``workers`` (default params ``sweep.workers``,
    0 → one per core) single-threaded worker processes."""
    if address:
        return DaskTaskRunner(address=address)
    n = workers or cfg.workers or os.cpu_count() or 1
    threads = str(cfg.threads_per_worker)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": n, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
        "dashboard_address": None,
        "env": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads},
    })


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Use the configured Prefect API, or start a temporary local one the workers are told about (Prefect hands
    the settings of the flow run to its tasks), and yield its URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):  # send what is queued while the server still listens
            worker.drain_all(timeout=10)
        server.stop()


def _attempts(task_run_id: Any, wait_s: float = 15.0) -> int | None:
    """How many times the task ran, read from the API once it records the run's final state (the API learns task
    states from events, a moment after the future resolves; before that ``run_count`` may still be the first try's)."""
    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + wait_s
            while True:
                run = client.read_task_run(task_run_id)
                if (run.state is not None and run.state.is_final()) or time.monotonic() > deadline:
                    return int(run.run_count)
                time.sleep(0.2)
    except Exception:  # noqa: BLE001 - the count is informative only
        return None


def _track(params: dict[str, Any], root: Path, run: str, seed: int, error: str | None) -> None:
    from ogsrl.registry import tracking

    if os.environ.get("OGSRL_NO_TRACK", "").lower() in ("1", "true", "yes"):
        return
    try:
        cfg = tracking.tracking_config(params)
        uri = tracking.resolve_tracking_uri(cfg, root, os.environ.get("MLFLOW_TRACKING_URI"))
        units.track_unit(params, root, run, seed, uri, cfg.experiment, error=error)
    except Exception as exc:  # noqa: BLE001 - tracking never fails a unit
        get_run_logger().warning("MLflow logging of %s/seed%s failed: %s: %s", run, seed, type(exc).__name__, exc)


@flow(name="ogsrl-sweep")
def sweep(params_path: str, root: str) -> dict[str, Any]:
    """Fan the grid out over the flow's task runner; record failures; gather when every unit is current.

    Returns:
        ``{"units": {unit: {"status", "worker", "attempts", "seconds"[, "error"]}}, "trained", "skipped",
        "failed", "gathered"}``; ``failed`` lists the units recorded as failed (then nothing is gathered).
    """
    logger = get_run_logger()
    params = config.load_params(params_path)
    root_path = Path(root).resolve()
    cfg = units.sweep_config(params)
    pcfg = policies_config(params)
    grid = units.preflight(params, root_path)
    unit_task = train_unit.with_options(retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_s,
                                        retry_condition_fn=should_retry)
    futures: dict[units.Unit, Any] = {}
    for unit in grid:
        dep = units.depends_on(pcfg, unit)
        futures[unit] = unit_task.submit(params_path, str(root_path), unit.run, unit.seed, cfg.threads_per_worker,
                                         wait_for=[futures[dep]] if dep is not None else [])
    report: dict[str, dict[str, Any]] = {}
    for unit, fut in futures.items():
        try:
            out = fut.result()
            entry = {"status": out["status"], "worker": out["worker"], "seconds": out["seconds"]}
            error = None
        except Exception as exc:  # noqa: BLE001 - a failed unit is recorded, the others go on
            dep = units.depends_on(pcfg, unit)
            upstream_failed = dep is not None and report[dep.name]["status"] == "failed"
            error = "UpstreamFailed" if upstream_failed else type(exc).__name__
            entry = {"status": "failed", "error": error}
            units.record_failure(root_path, unit.run, unit.seed, error)
            logger.error("unit %s failed: %s", unit.name, error)
        entry["attempts"] = _attempts(fut.task_run_id)
        report[unit.name] = entry
        if entry["status"] != "skipped":
            _track(params, root_path, unit.run, unit.seed, error)
    failed = [name for name, e in report.items() if e["status"] == "failed"]
    gathered = False
    if not failed:
        units.gather(params, root_path)
        gathered = True
    return {"units": report, "failed": failed, "gathered": gathered,
            "trained": sum(e["status"] == "trained" for e in report.values()),
            "skipped": sum(e["status"] == "skipped" for e in report.values())}


def run_sweep(params: str = "params.yaml", root: str = ".", address: str | None = None,
              workers: int | None = None) -> dict[str, Any]:
    """Run :func:`sweep` on the resolved cluster (see :func:`resolve_address`); adds ``address`` and ``seconds``.

    Args:
        params: params file, relative to ``root`` unless absolute (workers read it: a shared filesystem path).
        root: project root (shared by the workers).
        address: Dask scheduler; None → params ``sweep.address`` → env OGSRL_DASK_ADDRESS → a local cluster.
        workers: local cluster size (None: params ``sweep.workers``).
    """
    root_path = Path(root).resolve()
    params_path = Path(params) if Path(params).is_absolute() else root_path / params
    cfg = units.sweep_config(config.load_params(params_path))
    where = resolve_address(cfg, address)
    started = time.perf_counter()
    with prefect_api():
        result = sweep.with_options(task_runner=task_runner(cfg, where, workers))(str(params_path), str(root_path))
    return {**result, "address": where or "local", "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (relative to --root)")
    parser.add_argument("--root", default=".", help="project root (shared with the workers)")
    parser.add_argument("--address", default=None, help=f"Dask scheduler (default: sweep.address, ${ADDRESS_ENV})")
    parser.add_argument("--workers", type=int, default=None, help="local cluster size (default: sweep.workers)")
    args = parser.parse_args(argv)
    result = run_sweep(args.params, args.root, args.address, args.workers)
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    if result["failed"]:
        print(f"sweep: {len(result['failed'])} unit(s) failed: {', '.join(result['failed'])}; rerun to retry them "
              "(current units are skipped)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
