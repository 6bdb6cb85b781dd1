"""``kill -9`` during each long stage, then ``dvc repro`` (docs/reliability.md, "Crash safety").

One tiny DVC project is reproduced once uninterrupted (the reference). Then, for each long stage in turn, the stage is
forced to rerun and its process group is killed with SIGKILL the moment it starts writing (the first temporary
``.<name>.*.tmp`` of :func:`ogsrl.io.atomic_path` under ``data/``; the killed run holds each complete temporary a
second before renaming it, so even a stage that writes in a millisecond is caught, at the most dangerous instant).
At that instant every output path of the stage must be absent or hold the reference content, never a partial file;
``dvc repro`` must then complete with every output identical to the reference (metric reports: identical once
wall-clock timings are dropped) and the whole pipeline up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ogsrl.io import HOLD_BEFORE_RENAME_ENV
from tests.conftest import dvc_env
from tests.test_determinism import _tree, _untimed

LONG_STAGES = ("extract", "fit_world_model", "calibrate_guardian", "train_policies", "fit_behaviour",
               "simulate_truth", "evaluate", "clinical", "report")
"""the stages that run for more than a moment at full size (``generate``: tests/test_determinism.py)"""
UNSTABLE = ("validation_raw/", "validation_trajectories/", "index.html")
"""outputs that legitimately differ between two runs: GE Data Docs (run ids, times) and the report (its timings)"""


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=root, env=dvc_env(root),
                          capture_output=True, text=True, timeout=600)


def _stage_outputs(root: Path, stage: str) -> tuple[list[str], list[str]]:
    """(every output path of ``stage``, those DVC keeps between runs: ``persist: true``)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]
    out: list[str] = []
    persist: list[str] = []
    for kind in ("outs", "metrics", "plots"):
        for item in spec.get(kind, []):
            path = next(iter(item)) if isinstance(item, dict) else item
            out.append(path)
            if isinstance(item, dict) and (item[path] or {}).get("persist"):
                persist.append(path)
    return out, persist


def _same(a: Path, b_hash: str, ref_root: Path, rel: str) -> bool:
    if rel.endswith(".json"):
        return _untimed(json.loads(a.read_text())) == _untimed(json.loads((ref_root / rel).read_text()))
    if rel.endswith(".csv"):  # curves carry wall-clock columns (seconds, seconds_rollout)
        import pandas as pd

        frames = [pd.read_csv(p) for p in (a, ref_root / rel)]
        frames = [f.drop(columns=[c for c in f.columns if "seconds" in c or c.endswith(("_s", "per_s"))])
                  for f in frames]
        return frames[0].equals(frames[1])
    return hashlib.sha256(a.read_bytes()).hexdigest() == b_hash


def _check_outputs(root: Path, reference: dict[str, str], ref_copy: Path, paths: list[str],
                   temporaries_allowed: bool = False) -> list[str]:
    """Files under ``paths`` that differ from the reference (absent paths are allowed; so are a killed writer's
    hidden ``.<name>.*.tmp`` leftovers inside an output directory when ``temporaries_allowed``)."""
    bad = []
    for rel in paths:
        p = root / rel
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.exists() else []
        for f in files:
            key = f.relative_to(root / "data").as_posix()
            if temporaries_allowed and any(part.startswith(".") and part.endswith(".tmp")
                                           for part in f.relative_to(p).parts):
                continue
            if any(u in key for u in UNSTABLE) or key.endswith(".unit.json"):
                continue
            if key not in reference or not _same(f, reference[key], ref_copy / "data", key):
                bad.append(key)
    return bad


def _temporaries(dirs: list[Path]) -> set[Path]:
    found = set()
    for d in dirs:
        try:
            found.update(Path(e.path) for e in os.scandir(d) if e.name.endswith(".tmp"))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return found


def _kill_while_writing(root: Path, stage: str, paths: list[str]) -> bool:
    """Force-rerun ``stage`` and SIGKILL its process group at its first atomic write next to or inside one of its
    output ``paths``; True if it was killed before finishing."""
    watched = sorted({(root / rel).parent for rel in paths} | {root / rel for rel in paths})
    before = _temporaries(watched)
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dvc")), "repro", "--force", "-s", stage], cwd=root,
                            env={**dvc_env(root), HOLD_BEFORE_RENAME_ENV: "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if _temporaries(watched) - before:
                os.killpg(proc.pid, signal.SIGKILL)
                return True
            time.sleep(0.001)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_kill_9_during_each_long_stage_then_repro_recovers(reproduced_dvc_project: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    import shutil

    root, _ = reproduced_dvc_project
    ref_copy = tmp_path / "reference"
    shutil.copytree(root / "data", ref_copy / "data")
    reference = _tree(root / "data")
    killed = []
    for stage in LONG_STAGES:
        paths, persisted = _stage_outputs(root, stage)
        for rel in persisted:  # its per-unit caches would let the rerun skip the work (and the writes) to kill
            shutil.rmtree(root / rel)
        if _kill_while_writing(root, stage, paths):
            killed.append(stage)
        assert _check_outputs(root, reference, ref_copy, paths, temporaries_allowed=True) == [], \
            f"{stage}: partial or different output"
        again = _dvc(root, "repro")
        assert again.returncode == 0, f"{stage}: {again.stderr[-3000:]}"
        assert _check_outputs(root, reference, ref_copy, paths) == [], f"{stage}: recovered output differs"
        for rel in paths:
            assert (root / rel).exists(), f"{stage}: {rel} missing after recovery"
    status = _dvc(root, "status")
    assert status.stdout.strip().endswith("up to date."), status.stdout[-2000:]
    assert killed == list(LONG_STAGES), f"killed while writing only during {killed}"
