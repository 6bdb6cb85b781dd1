"""Offline, quiet defaults for the tools the pipeline drives (DVC, MLflow, Prefect, Great Expectations).

The console script calls :func:`setdefaults` once at start-up, and so do ``tests/conftest.py`` and the Makefile
(which exports the same variables). Values already present in the environment win, so a user can still point
Prefect at a server or MLflow at a remote tracking URI. This is the one module of the package that touches
``os.environ``; everything else receives configuration as arguments.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

PREFECT_STARTUP_TIMEOUT_S = 120
"""Ephemeral Prefect server start-up limit (Prefect's own default of 20 s is too tight on a cold 2-core runner)."""


def defaults(root: str | Path) -> dict[str, str]:
    """The environment defaults for a project rooted at ``root`` (all state kept under the project)."""
    root = Path(root).resolve()
    return {
        # DVC: no usage analytics, site cache under the project instead of the system temp folder.
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(root / ".dvc" / "site-cache"),
        # MLflow: telemetry off (MLflow accepts only the string "true" here).
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # Prefect: ephemeral API, state under the project, no analytics, generous cold-start limit.
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(PREFECT_STARTUP_TIMEOUT_S),
        "DO_NOT_TRACK": "true",
        # Great Expectations: no usage statistics.
        "GX_ANALYTICS_ENABLED": "false",
    }


def setdefaults(root: str | Path, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set every default from :func:`defaults` that is not already set; returns the ones it set."""
    environ = os.environ if environ is None else environ
    applied = {}
    for key, value in defaults(root).items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied


def pin_threads(threads: int, environ: MutableMapping[str, str] | None = None) -> None:
    """Fix the thread count of torch and of the BLAS/OpenMP libraries for the rest of the process.

    The order of floating-point reductions in torch CPU kernels and BLAS follows the thread count, so a stage's
    numbers (FQE, DR, trained weights, guardian thresholds) change with the machine's core count unless it is fixed
    (docs/reliability.md). Libraries already loaded are limited through threadpoolctl; torch, usually imported later
    by the stage, reads ``OMP_NUM_THREADS`` when it starts (or is set directly if already imported).
    """
    import sys

    from threadpoolctl import threadpool_limits

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    environ = os.environ if environ is None else environ
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environ[key] = str(threads)
    threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
