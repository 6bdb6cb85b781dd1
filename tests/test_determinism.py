"""Determinism and crash safety on one machine (docs/reliability.md).

* Two fresh runs of the cheap stages with the same params give byte-identical data outputs (raw tables,
  trajectories, π̂_b, guardian, world model, a trained clone); their metric reports differ only in wall-clock timings.
* ``kill -9`` of ``dvc repro`` while ``generate`` is writing leaves no partial file at the output path, and the next
  ``dvc repro`` completes with outputs identical to the uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import _tiny_params, _write_params

REPO = Path(__file__).resolve().parents[1]
STAGES = ("generate", "validate-raw", "extract", "validate-trajectories", "fit-behaviour", "calibrate-guardian",
          "fit-world-model", "train-policies")
TIMING = ("seconds", "_s", "per_s", "speedup")
"""metric keys that hold wall-clock timings or ratios of them (the only things allowed to differ between two runs)"""


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _untimed(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items()
                if not (str(k).endswith(TIMING) or any(t in str(k) for t in ("seconds", "speedup")))}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _run_stages(root: Path) -> None:
    from ogsrl import cli

    params = _tiny_params(**{"policies.runs": {"soc": {"algorithm": "bc"}}, "policies.algorithms.bc.max_epochs": 3,
                             "ope.behaviour.max_epochs": 3, "world.model.max_epochs": 3})
    _write_params(root, params)
    (root / "data").mkdir()
    shutil.copy2(REPO / "data" / "salt-fingerprint.json", root / "data" / "salt-fingerprint.json")
    for stage in STAGES:
        assert cli.main(["--root", str(root), "--no-track", stage]) == 0, stage


def test_two_runs_give_identical_outputs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _run_stages(a)
    _run_stages(b)
    ta, tb = _tree(a / "data"), _tree(b / "data")
    assert ta.keys() == tb.keys()
    data = [k for k in ta if k.startswith(("raw/", "trajectories/", "models/")) and not k.endswith(".unit.json")]
    assert len(data) > 20 and any(k.startswith("models/policies/soc/") for k in data)
    assert [k for k in data if ta[k] != tb[k]] == []  # every data output byte-identical
    records = [k for k in ta if k.endswith(".unit.json")]  # training records: checkpoint hash, metrics, timings
    assert records
    reports = [k for k in ta if k.startswith("reports/") and k.endswith(".json") and k.count("/") == 1] + records
    assert len(reports) >= 7
    for k in reports:  # stage metrics: equal once wall-clock timings are dropped (GE's Data Docs carry run ids)
        ja, jb = (json.loads((r / "data" / k).read_text()) for r in (a, b))
        assert _untimed(ja) == _untimed(jb), k


def _dvc(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_kill_9_mid_write_leaves_no_partial_output_and_repro_recovers(tmp_dvc_project: Path) -> None:
    root = tmp_dvc_project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["synth"].update({"stays": 60, "chunk_stays": 5})  # 12 chunks: a few seconds of writing
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(root), "OGSRL_NO_TRACK": "1"}
    first = _dvc(root, env, "repro", "generate")
    assert first.returncode == 0, first.stderr[-2000:]
    done = _tree(root / "data" / "raw")
    lock = (root / "dvc.lock").read_text()

    proc = subprocess.Popen([str(Path(sys.executable).with_name("dvc")), "repro", "--force", "generate"], cwd=root,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    writing: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:  # wait until a chunk file exists in the temp dir
        writing = [p for p in (root / "data").glob(".raw.*.tmp/raw/*/*") if p.is_file()]
        if writing:
            break
        time.sleep(0.05)
    assert writing and proc.poll() is None, "generate finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    raw = root / "data" / "raw"
    if raw.exists():  # the old output may survive; a partial one never appears at the output path
        assert _tree(raw) == done
    assert not list((root / "data").glob("raw/**/*.tmp"))

    again = _dvc(root, env, "repro", "generate")
    assert again.returncode == 0, again.stderr[-2000:]
    assert _tree(raw) == done  # identical to the uninterrupted run
    assert _dvc(root, env, "status", "generate").stdout.strip().endswith("up to date.")
    gen = lambda text: yaml.safe_load(text)["stages"]["generate"]["outs"]  # noqa: E731
    assert gen((root / "dvc.lock").read_text()) == gen(lock)
