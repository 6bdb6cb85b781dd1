"""Scheduled retraining: `dvc repro` → `ogsrl release` (register + gate; the baseline first while there is no
champion) → `dvc push`, as a Prefect flow.

    python -m flows.retrain                 # one run now (Prefect's ephemeral API; no server needed)
    python -m flows.retrain --serve         # a deployment on the cron in params `schedule.cron` (blocks;
                                            # needs a Prefect server: `prefect server start --host 127.0.0.1`
                                            # and `export PREFECT_API_URL=http://127.0.0.1:4200/api`)

A failing step raises, so the flow run ends *Failed* (and the command exits non-zero); the champion alias is only
ever moved by a passing gate, so a failed `dvc repro`, registration or gate leaves the champion untouched. A
rejected candidate is *not* a failure: it stays `challenger` with the gate's reasons as tags. MLflow goes wherever
params `mlflow.tracking_uri` (or MLFLOW_TRACKING_URI) points, e.g. a remote tracking server.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]

from ogsrl import env  # noqa: E402

env.setdefaults(PROJECT_ROOT)

from prefect import flow, get_run_logger, task  # noqa: E402

from ogsrl import config, privacy  # noqa: E402


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """Scheduled retraining (params section `schedule`)."""

    cron: str = "0 3 * * 1"
    """cron expression of the deployment (default: Mondays 03:00)"""
    timezone: str = "UTC"
    """time zone the cron is read in"""
    deployment: str = "ogsrl-retrain"
    """Prefect deployment name"""
    repro_args: tuple[str, ...] = ()
    """extra arguments for `dvc repro` (e.g. ["--pull"])"""
    push: bool = True
    """`dvc push` after the gate (skipped with a warning when no DVC remote is configured)"""

    def __post_init__(self) -> None:
        fields = self.cron.split()
        if len(fields) not in (5, 6):
            raise ValueError(f"cron must have 5 (or 6) fields, got {self.cron!r}")
        if not self.deployment.strip():
            raise ValueError("deployment must be a non-empty name")


def schedule_config(params: dict[str, Any]) -> ScheduleConfig:
    """Build :class:`ScheduleConfig` from ``params["schedule"]`` (defaults when absent)."""
    return config.build(ScheduleConfig, params.get("schedule") or {}, "schedule")


def _dvc() -> str:
    candidate = Path(sys.executable).with_name("dvc")
    return str(candidate) if candidate.exists() else "dvc"


def _run(cmd: list[str], root: Path, what: str) -> str:
    import os

    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    done = subprocess.run(cmd, cwd=root, env=environment, capture_output=True, text=True)
    # returned, logged and raised into Prefect's state: scrubbed of raw ids, dates and the salt
    output = privacy.scrub((done.stdout + done.stderr).strip(), privacy.secrets_from_env())
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-20:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return output


@task(name="dvc-repro")
def dvc_repro(root: str, extra: tuple[str, ...] = ()) -> str:
    """Bring every pipeline stage up to date (`dvc repro`); raises when a stage fails."""
    out = _run([_dvc(), "repro", *extra], Path(root), "dvc repro")
    get_run_logger().info("dvc repro: %s", out.splitlines()[-1] if out else "done")
    return out


@task(name="register-and-gate")
def register_and_gate(params_path: str, root: str) -> dict[str, Any]:
    """`ogsrl release`: register and gate the baseline while there is no champion, then the candidate; a rejection
    is recorded, not raised."""
    from ogsrl.registry import stage

    params = config.load_params(params_path)
    out = stage.release(params, Path(root))
    stage.write_report(params, Path(root), out)
    logger = get_run_logger()
    for step in out["steps"]:
        for line in step["lines"]:
            logger.info("gate v%s (%s) %s", step["version"], step["run"], line)
    logger.info("%s", out["conclusion"])
    return out


@task(name="dvc-push")
def dvc_push(root: str) -> str:
    """Upload the new artefacts to the DVC remote (skipped when none is configured)."""
    remotes = _run([_dvc(), "remote", "list"], Path(root), "dvc remote list")
    if not remotes.strip():
        get_run_logger().warning("no DVC remote configured; dvc push skipped")
        return "skipped: no remote"
    return _run([_dvc(), "push"], Path(root), "dvc push")


@flow(name="ogsrl-retrain")
def retrain(params: str = "params.yaml", root: str = str(PROJECT_ROOT)) -> dict[str, Any]:
    """Retrain, register, gate and push; any failing step fails the flow run.

    Args:
        params: params file, relative to ``root`` unless absolute.
        root: project root (a DVC repository).

    Returns:
        ``{"registered": {...}, "gate": {...}, "push": str}``.
    """
    root_path = Path(root).resolve()
    params_path = Path(params) if Path(params).is_absolute() else root_path / params
    params_map = config.load_params(params_path)
    cfg = schedule_config(params_map)
    privacy.write_fingerprint(params_map, root_path)  # a changed secret salt must rerun the id-hashing stages
    dvc_repro(str(root_path), cfg.repro_args)
    released = register_and_gate(str(params_path), str(root_path))
    last = released["steps"][-1]
    pushed = dvc_push(str(root_path)) if cfg.push else "skipped: schedule.push is false"
    return {"registered": last["registered"], "gate": {k: v for k, v in last.items() if k != "registered"},
            "champion": released["champion"], "challenger": released["challenger"],
            "conclusion": released["conclusion"], "push": pushed}


def deployment_kwargs(params: str = "params.yaml", root: str = str(PROJECT_ROOT)) -> dict[str, Any]:
    """Keyword arguments of ``retrain.serve`` / ``retrain.to_deployment`` from params `schedule`."""
    from prefect.schedules import Cron

    root_path = Path(root).resolve()
    params_path = Path(params) if Path(params).is_absolute() else root_path / params
    cfg = schedule_config(config.load_params(params_path))
    return {"name": cfg.deployment, "schedule": Cron(cfg.cron, timezone=cfg.timezone),
            "parameters": {"params": str(params_path), "root": str(root_path)}}


def deployment(params: str = "params.yaml", root: str = str(PROJECT_ROOT)) -> Any:
    """The cron deployment described by params `schedule`, built but not served."""
    return retrain.to_deployment(**deployment_kwargs(params, root))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (relative to --root)")
    parser.add_argument("--root", default=str(PROJECT_ROOT), help="project root")
    parser.add_argument("--serve", action="store_true", help="serve the cron deployment (needs a Prefect server)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.serve:
        retrain.serve(**deployment_kwargs(args.params, args.root))  # blocks; Ctrl-C stops it
        return 0
    state = retrain(args.params, args.root, return_state=True)
    if not state.is_completed():
        print(f"retrain flow run {state.name}: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result(), indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
