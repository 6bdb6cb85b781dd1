"""One benchmark at a time on this machine.

Two torch jobs on a 2-core machine share its cores: each one's timings are wrong and both take twice as long. Every
computing benchmark calls :func:`hold` first; a second one exits at once, naming the first, unless
``OGSRL_BENCH_WAIT=1`` asks it to queue. Processes a benchmark starts inherit its hold (``OGSRL_BENCH_HELD``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK = Path(os.environ.get("OGSRL_BENCH_LOCK", "/tmp/ogsrl-benchmarks.lock"))
HELD_BY = "OGSRL_BENCH_HELD"
_open: list[int] = []
"""the lock's descriptor, kept open for the life of the process (closing it would release the lock)"""


def hold(name: str, lock: Path | None = None, wait: bool | None = None) -> None:
    """Take the machine-wide benchmark lock for the rest of this process, or exit naming the benchmark holding it.

    ``wait``: block until it is free (default: ``OGSRL_BENCH_WAIT=1``). A process started by a holder holds it too."""
    if os.environ.get(HELD_BY):
        return
    path = lock or LOCK
    wait = os.environ.get("OGSRL_BENCH_WAIT") == "1" if wait is None else wait
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "an unnamed process"
        os.close(fd)
        raise SystemExit(f"{name}: another benchmark holds {path} ({holder}); its timings and this one's would share "
                         "the CPU. Wait for it, or set OGSRL_BENCH_WAIT=1 to queue behind it.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{name}, pid {os.getpid()}".encode(), 0)
    os.environ[HELD_BY] = str(os.getpid())
    _open.append(fd)
