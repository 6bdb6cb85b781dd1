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


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed blocks for reuse (``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` 1 GiB).

    Torch on the CPU frees and re-allocates the same multi-megabyte activations every update; by default glibc
    hands blocks above its mmap threshold back to the kernel and page-faults them in again, which took 15–20 % of
    a CQL update on this machine (``benchmarks/bench_cql.py``). The price is that the process keeps its peak heap
    until it exits. Returns False (and changes nothing) where the C library is not glibc.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
