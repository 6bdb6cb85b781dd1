"""Prefect task for the `extract` stage (see tasks/common.py for what it runs and when it retries)."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import RETRIES, RETRY_DELAY_S, execute, should_retry


@task(name="extract", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=should_retry)
def extract(params_path: str, root: str, use_dvc: bool = False) -> dict[str, Any]:
    """Run `ogsrl extract` (or `dvc repro --single-item extract`)."""
    return execute("extract", params_path, root, use_dvc)
