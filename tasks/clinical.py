"""Prefect task for the `clinical` stage (see tasks/common.py for what it runs and when it retries)."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import RETRIES, RETRY_DELAY_S, execute, should_retry


@task(name="clinical", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=should_retry)
def clinical(params_path: str, root: str, use_dvc: bool = False) -> dict[str, Any]:
    """Run `ogsrl clinical` (or `dvc repro --single-item clinical`)."""
    return execute("clinical", params_path, root, use_dvc)
