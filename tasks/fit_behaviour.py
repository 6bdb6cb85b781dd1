"""Prefect task for the `fit-behaviour` stage (see tasks/common.py for what it runs and when it retries)."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import RETRIES, RETRY_DELAY_S, execute, should_retry


@task(name="fit-behaviour", retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=should_retry)
def fit_behaviour(params_path: str, root: str, use_dvc: bool = False) -> dict[str, Any]:
    """Run `ogsrl fit-behaviour` (or `dvc repro --single-item fit_behaviour`)."""
    return execute("fit-behaviour", params_path, root, use_dvc)
