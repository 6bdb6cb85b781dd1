"""Prefect task for the `calibrate-guardian` stage (see tasks/common.py for what it runs and when it retries)."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import RETRIES, RETRY_DELAY_S, execute, should_retry


@task(name="calibrate-guardian", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=should_retry)
def calibrate_guardian(params_path: str, root: str, use_dvc: bool = False) -> dict[str, Any]:
    """Run `ogsrl calibrate-guardian` (or `dvc repro --single-item calibrate_guardian`)."""
    return execute("calibrate-guardian", params_path, root, use_dvc)
