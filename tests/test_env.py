"""ogsrl.env: offline defaults, never overriding what the user set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ogsrl import env


def test_defaults_keep_all_state_under_the_project(tmp_path: Path) -> None:
    values = env.defaults(tmp_path)
    assert values["PREFECT_HOME"] == str(tmp_path.resolve() / ".prefect")
    assert values["DVC_SITE_CACHE_DIR"] == str(tmp_path.resolve() / ".dvc" / "site-cache")
    assert values["MLFLOW_DISABLE_TELEMETRY"] == "true"  # MLflow accepts only "true"
    assert values["DVC_NO_ANALYTICS"] == "1"
    assert values["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert values["DO_NOT_TRACK"] == "true"
    assert int(values["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) > 20


def test_setdefaults_never_overrides_existing_values(tmp_path: Path) -> None:
    environ = {"PREFECT_HOME": "/elsewhere", "DO_NOT_TRACK": "false"}
    applied = env.setdefaults(tmp_path, environ)
    assert environ["PREFECT_HOME"] == "/elsewhere"
    assert environ["DO_NOT_TRACK"] == "false"
    assert "PREFECT_HOME" not in applied
    assert set(applied) == set(env.defaults(tmp_path)) - {"PREFECT_HOME", "DO_NOT_TRACK"}
    assert all(environ[k] == v for k, v in applied.items())


def _threads_after_pin(pin: int, import_torch_first: bool) -> dict[str, int]:
    code = (
        "import json, sys\n"
        + ("import torch\n" if import_torch_first else "")
        + "import numpy\n"
        "from ogsrl import env\n"
        f"env.pin_threads({pin})\n"
        "import torch\n"
        "from threadpoolctl import threadpool_info\n"
        "blas = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "print(json.dumps({'torch': torch.get_num_threads(), 'blas': max(blas)}))\n"
    )
    env_vars = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env_vars)
    return json.loads(out.stdout)


@pytest.mark.parametrize("import_torch_first", [False, True])
def test_pin_threads_fixes_torch_and_blas_whatever_was_imported_first(import_torch_first: bool) -> None:
    assert _threads_after_pin(1, import_torch_first) == {"torch": 1, "blas": 1}
    assert _threads_after_pin(2, import_torch_first) == {"torch": 2, "blas": 2}


def test_pin_threads_refuses_zero() -> None:
    from ogsrl import env

    with pytest.raises(ValueError, match="threads must be >= 1"):
        env.pin_threads(0, environ={})


def test_keep_freed_memory_applies_on_glibc_only() -> None:
    import platform

    applied = env.keep_freed_memory()
    assert applied is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert env.keep_freed_memory() is applied  # idempotent
