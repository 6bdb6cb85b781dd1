"""What every stage task does: run one stage, either directly or through `dvc repro`.

* ``use_dvc=False`` (default): call :func:`ogsrl.cli.run_stage` in-process — the same function `ogsrl <stage>`
  runs (stage function + MLflow logging). Fast and needs no git/DVC repository, but it does not update
  ``dvc.lock``, so a later `dvc repro` reruns the stages.
* ``use_dvc=True``: run ``dvc repro --single-item <stage>`` in the project root. DVC skips an up-to-date stage,
  records hashes in ``dvc.lock`` and holds its workspace lock (a concurrent `dvc repro` fails fast instead of
  corrupting outputs). Use this when the flow is the production entry point.

Retries: bad input (ValueError, i.e. ConfigError / DataError / a failed validation gate) is never retried —
rerunning cannot fix it; anything else (an I/O hiccup, a killed worker) is retried ``RETRIES`` times.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

RETRIES = 2
"""Extra attempts for a failed stage task (not for bad input)."""
RETRY_DELAY_S = 5
"""Seconds between attempts."""

_CLI_ERROR = re.compile(r"^ogsrl [\w-]+: error: .*$", re.MULTILINE)


def should_retry(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the stage failed on bad input."""
    exc = getattr(state, "data", None)
    return not isinstance(exc, ValueError)


def _dvc_executable() -> str:
    candidate = Path(sys.executable).with_name("dvc")
    return str(candidate) if candidate.exists() else "dvc"


def execute(stage: str, params_path: str, root: str, use_dvc: bool = False) -> dict[str, Any]:
    """Run stage ``stage`` (CLI name, e.g. ``validate-raw``) for the project at ``root``; return its metrics."""
    root_path = Path(root).resolve()
    if not use_dvc:
        from ogsrl.cli import run_stage

        params = Path(params_path)
        return run_stage(stage, params if params.is_absolute() else root_path / params, root_path)
    if Path(params_path).name != "params.yaml" or Path(params_path).parent.resolve() != root_path:
        raise ValueError("use_dvc=True runs dvc.yaml's stages, which always read <root>/params.yaml")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `ogsrl` for dvc's cmd
    done = subprocess.run(
        [_dvc_executable(), "repro", "--single-item", stage.replace("-", "_")],
        cwd=root_path, env=env, capture_output=True, text=True,
    )
    if done.returncode != 0:
        from ogsrl import privacy

        # what reaches Prefect's run state is scrubbed: no raw ids, dates or the salt from a traceback or DuckDB
        output = privacy.scrub(done.stdout + done.stderr, privacy.secrets_from_env())
        bad_input = _CLI_ERROR.search(output)
        if bad_input:
            raise ValueError(bad_input.group(0))
        raise RuntimeError(f"dvc repro {stage} failed (exit {done.returncode}):\n{output[-4000:]}")
    return {"stage": stage, "dvc": "up to date" if "didn't change" in done.stdout else "reproduced"}
