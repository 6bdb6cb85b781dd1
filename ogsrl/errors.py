"""Errors raised on bad input. Messages name the table, column and offending rows or value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DataError(ValueError):
    """Input data breaks a contract (missing table/column, wrong dtype, impossible values, ...)."""

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        column: str | None = None,
        rows: Sequence[Any] | None = None,
        max_rows: int = 5,
    ) -> None:
        parts = []
        if table:
            parts.append(f"table {table!r}")
        if column:
            parts.append(f"column {column!r}")
        where = ", ".join(parts)
        text = f"{where}: {message}" if where else message
        if rows is not None and len(rows):
            shown = ", ".join(str(r) for r in list(rows)[:max_rows])
            more = f" (and {len(rows) - max_rows} more)" if len(rows) > max_rows else ""
            text += f" [offending rows: {shown}{more}]"
        super().__init__(text)
        self.table = table
        self.column = column
        self.rows = list(rows) if rows is not None else []
