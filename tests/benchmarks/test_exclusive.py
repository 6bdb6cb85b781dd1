"""benchmarks/exclusive.py: a second benchmark on the machine exits, naming the first; a child inherits the hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
HOLD = "import sys, exclusive; exclusive.hold(sys.argv[1]); "


def python(code: str, name: str, lock: Path, **env: str) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OGSRL_BENCH")}
    return subprocess.Popen([sys.executable, "-c", HOLD + code, name], cwd=BENCH, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**clean, "OGSRL_BENCH_LOCK": str(lock), **env})


def test_a_second_benchmark_exits_naming_the_first_and_a_child_or_a_later_one_runs(tmp_path: Path) -> None:
    lock = tmp_path / "bench.lock"
    first = python("print('held', flush=True); sys.stdin.readline()", "bench_first", lock)
    assert first.stdout.readline().strip() == "held"
    second = python("print('ran')", "bench_second", lock)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 1 and out == ""
    assert "bench_second: another benchmark holds" in err and "bench_first, pid" in err and "OGSRL_BENCH_WAIT=1" in err
    # a process the holder starts (bench_extract's --child) inherits the hold
    child = python("print('ran')", "bench_child", lock, OGSRL_BENCH_HELD=str(first.pid))
    assert child.communicate(timeout=60)[0].strip() == "ran" and child.returncode == 0
    # a queued one waits, then runs once the first is done
    queued = python("print('ran')", "bench_queued", lock, OGSRL_BENCH_WAIT="1")
    first.communicate("\n", timeout=60)
    assert queued.communicate(timeout=60)[0].strip() == "ran" and queued.returncode == 0
    later = python("print('ran')", "bench_later", lock)
    assert later.communicate(timeout=60)[0].strip() == "ran"
