"""Progress lines of long DuckDB queries: percent and ETA logged while the query runs, the result unchanged."""

from __future__ import annotations

import logging
import re

import duckdb
import pytest

from ogsrl import progress


def test_progress_lines_while_a_query_runs(caplog: pytest.LogCaptureFixture) -> None:
    con = duckdb.connect(config={"threads": 1})
    progress.enable(con)
    caplog.set_level(logging.INFO, logger="ogsrl.progress")
    n = 60_000_000
    got = progress.execute(con, f"SELECT count(*), sum(i % 7) FROM range({n}) t(i)", "demo scan",
                           interval=0.02).fetchone()
    assert got == (n, sum(i % 7 for i in range(7)) * (n // 7) + sum(range(n % 7)))
    lines = [r.getMessage() for r in caplog.records]
    assert lines, "a query of this size runs for more than one poll interval"
    pat = re.compile(r"demo scan: (\d+)% after \d+(m\d\ds|s), ~\d+(m\d\ds|s) left")
    pct = [int(pat.fullmatch(x).group(1)) for x in lines]  # every line has the format
    assert all(0 <= p <= 100 for p in pct) and pct == sorted(pct)


def test_errors_propagate_and_the_poller_stops() -> None:
    con = duckdb.connect()
    progress.enable(con)
    with pytest.raises(duckdb.Error):
        progress.execute(con, "SELECT * FROM no_such_table", "bad", interval=0.01)
    assert con.execute("SELECT 1").fetchone() == (1,)


def test_format_of_durations() -> None:
    assert progress._fmt(5.4) == "5s" and progress._fmt(65) == "1m05s" and progress._fmt(3600) == "60m00s"
