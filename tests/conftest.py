"""Shared test set-up: offline/quiet tool defaults and tiny temporary projects.

Only environment defaults and project fixtures live here; area-specific fixtures go in tests/<area>/conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

if str(REPO_ROOT) not in sys.path:  # flows/ and tasks/ are importable from the project root
    sys.path.insert(0, str(REPO_ROOT))

from ogsrl import env  # noqa: E402

env.setdefaults(REPO_ROOT)

TEST_SALT = "test-secret-salt-0123456789abcdef"
"""The secret salt every test runs with (env OGSRL_SALT): real-data (mimic-iv) stages refuse to run without one."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the end-to-end tests (marked ``slow``, minutes each) first: pytest-xdist hands out tests in collection
    order, so a long test collected last would keep one worker busy after the other has run out of work."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order kept otherwise


@pytest.fixture(autouse=True)
def _secret_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OGSRL_SALT", TEST_SALT)


@pytest.fixture(autouse=True)
def _mlflow_uris_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what ``mlflow.set_tracking_uri``/``set_registry_uri`` leave behind (a process global and an env var
    each), so a test never reads the registry of an earlier test's deleted project."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # recorded, so teardown restores the prior state
        if not os.environ[name]:
            monkeypatch.delenv(name)
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


TINY_STAYS = 40
"""synth.stays in the tiny test projects."""
TINY_ONPOLICY = {"iterations": 2, "num_envs": 64, "critic_epochs": 1}
"""the on-policy learners' sizes in the tiny test projects (over params.yaml's policies.algorithms.<name>)"""


def _tiny_params(**overrides: Any) -> dict[str, Any]:
    """The repository's params.yaml with a tiny demo (``synth.stays`` = 40, a guardian certificate those few stays
    can support) and dotted-key overrides applied."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params.setdefault("synth", {})["stays"] = TINY_STAYS
    params["compute"] = {"threads": 1}  # pytest runs two workers on two cores
    # ~7 validation stays: a 0.95 / δ 0.05 stay-level PAC certificate needs 59 (docs/guardian.md); 0.7 / 0.2 needs 5
    params["guardian"]["calibration"] = {**params["guardian"]["calibration"], "alpha_c": 0.7, "delta": 0.2}
    # ~290 fit rows: fewer than the 351 monomials of degree 2 in the 25 guardian inputs
    params["guardian"]["christoffel"] = {**params["guardian"]["christoffel"], "degree": 1}
    # 40 stays chart ~30 °F temperatures: one simulated charting error (documented rate 0.3 %) is already 3.3 %,
    # over the 3 % the raw gate tolerates on full-size data; the tiny demo tests the pipeline, not that threshold
    params.setdefault("validation", {})["range_mostly"] = 0.9
    policies = params.setdefault("policies", {})
    policies["model_eval_episodes"] = 64
    for name in ("trpo", "cpo", "ppo_lag"):
        policies.setdefault("algorithms", {})[name] = {**(policies["algorithms"].get(name) or {}), **TINY_ONPOLICY}
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return params


def _write_params(root: Path, params: dict[str, Any]) -> Path:
    """Write ``params`` as ``<root>/params.yaml`` and return the path."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def make_params() -> Callable[..., dict[str, Any]]:
    """``make_params(**{"dotted.key": value})`` → the repo's params with a tiny demo and the overrides applied."""
    return _tiny_params


@pytest.fixture
def write_params() -> Callable[[Path, dict[str, Any]], Path]:
    """``write_params(root, params)`` writes ``<root>/params.yaml`` and returns its path."""
    return _write_params


@pytest.fixture
def repo_root() -> Path:
    """The ogsrl checkout under test."""
    return REPO_ROOT


@pytest.fixture
def tmp_project(tmp_path: Path) -> Path:
    """A temporary project root holding a tiny params.yaml (no data yet)."""
    root = tmp_path / "project"
    _write_params(root, _tiny_params())
    return root


def _new_dvc_project(root: Path) -> Path:
    """Make ``root``: a git + DVC repository with this checkout's dvc.yaml, code and a tiny params.yaml."""
    import subprocess

    root.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "ogsrl", root / "ogsrl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "data").mkdir()
    shutil.copy2(REPO_ROOT / "data" / "salt-fingerprint.json", root / "data" / "salt-fingerprint.json")  # a dvc.yaml dep
    _write_params(root, _tiny_params())
    (root / ".gitignore").write_text((REPO_ROOT / ".gitignore").read_text(encoding="utf-8"), encoding="utf-8")

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True)

    run("git", "init", "-q")
    run("git", "config", "user.email", "tests@ogsrl.invalid")
    run("git", "config", "user.name", "ogsrl tests")
    run(str(Path(sys.executable).with_name("dvc")), "init", "-q")
    shutil.copy2(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")  # analytics off, local remote
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "tiny project")
    return root


def dvc_env(root: Path) -> dict[str, str]:
    """The environment the tests run ``dvc`` in: this venv's tools, ``root``'s code, no tracking, one thread."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(root), "OGSRL_NO_TRACK": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def tmp_dvc_project(tmp_path: Path) -> Path:
    """A temporary git + DVC repository with this checkout's dvc.yaml, code and a tiny params.yaml."""
    return _new_dvc_project(tmp_path / "dvcproject")


@pytest.fixture(scope="session")
def _reproduced_dvc_master(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One tiny DVC project after its first ``dvc repro`` and that run's stdout, made once per test session: the
    pytest-xdist workers share it through a file lock in their common temporary directory."""
    import fcntl
    import subprocess

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    home = shared / "reproduced-dvc-project"
    with open(shared / "reproduced-dvc-project.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "outcome.json").exists():
            root = _new_dvc_project(home / "dvcproject")
            first = subprocess.run([str(Path(sys.executable).with_name("dvc")), "repro"], cwd=root,
                                   env=dvc_env(root), capture_output=True, text=True, timeout=900)
            (home / "outcome.json").write_text(json.dumps(
                {"returncode": first.returncode, "stdout": first.stdout, "stderr": first.stderr[-3000:]}))
    outcome = json.loads((home / "outcome.json").read_text())
    assert outcome["returncode"] == 0, outcome["stdout"] + outcome["stderr"]
    return home / "dvcproject", outcome["stdout"]


@pytest.fixture
def reproduced_dvc_project(tmp_path: Path, _reproduced_dvc_master: tuple[Path, str]) -> tuple[Path, str]:
    """(a private copy of the tiny DVC project after its first ``dvc repro`` — workspace, dvc.lock, cache and git
    history —, that ``dvc repro``'s stdout)."""
    master, stdout = _reproduced_dvc_master
    root = tmp_path / "dvcproject"
    shutil.copytree(master, root, symlinks=True)
    return root, stdout
