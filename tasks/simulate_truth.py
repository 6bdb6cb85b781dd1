"""Prefect task for the `simulate-truth` stage (see tasks/common.py for what it runs and when it retries)."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import RETRIES, RETRY_DELAY_S, execute, should_retry


@task(name="simulate-truth", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=should_retry)
def simulate_truth(params_path: str, root: str, use_dvc: bool = False) -> dict[str, Any]:
    """Run `ogsrl simulate-truth` (or `dvc repro --single-item simulate_truth`)."""
    return execute("simulate-truth", params_path, root, use_dvc)
