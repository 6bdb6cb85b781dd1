"""Progress lines for long DuckDB queries: percent done and an ETA, logged while the query runs.

DuckDB estimates a query's progress (for a file scan: the share of the file read); a daemon thread polls
``con.query_progress()`` every ``interval`` seconds and logs ``<label>: 42% after 1m05s, ~1m30s left``, where the
time left is the linear extrapolation ``elapsed · (100 − p) / p``. The caller logs the row count when it is known.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import duckdb

log = logging.getLogger(__name__)


def _fmt(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def enable(con: duckdb.DuckDBPyConnection) -> None:
    """Let DuckDB track query progress without printing its own bar."""
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")


def execute(con: duckdb.DuckDBPyConnection, sql: str, label: str, params: list | None = None,
            interval: float = 15.0) -> Any:
    """``con.execute(sql, params)`` with progress lines every ``interval`` s (from the first poll on); returns the
    connection (as ``execute`` does). The connection must have had :func:`enable` called."""
    done = threading.Event()
    t0 = time.perf_counter()

    def poll() -> None:
        while not done.wait(interval):
            try:
                p = float(con.query_progress())
            except duckdb.Error:
                return
            elapsed = time.perf_counter() - t0
            if 0 < p < 100:
                log.info("%s: %.0f%% after %s, ~%s left", label, p, _fmt(elapsed), _fmt(elapsed * (100 - p) / p))

    thread = threading.Thread(target=poll, name=f"progress-{label}", daemon=True)
    thread.start()
    try:
        return con.execute(sql, params or [])
    finally:
        done.set()
        thread.join()
