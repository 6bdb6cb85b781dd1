"""Streaming, atomic, byte-reproducible writer of the MIMIC-IV directory layout (``hosp/``, ``icu/``).

Each table is one file, ``<module>/<table>.csv.gz`` (gzip with mtime 0 and no file name in the header, header row
unquoted, NULL as an empty field, text quoted only where needed, floats in shortest round-trip form) or
``<module>/<table>.parquet`` (zstd, one row group per chunk). Chunks are appended as they are simulated, so memory
is bounded by one chunk. Everything is written into a temporary sibling directory and renamed at the end.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ogsrl.synth import tables as T

Format = Literal["csv.gz", "parquet"]
FORMATS: tuple[str, ...] = ("csv.gz", "parquet")
GZIP_LEVEL = 4
"""gzip compression level (speed/size trade-off; the bytes do not depend on anything but the data)"""


class TableWriter:
    """Append-only writers for every table under ``root`` (a fresh directory)."""

    def __init__(self, root: Path, fmt: Format) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
        self.root, self.fmt = Path(root), fmt
        self._raw: dict[str, IO[bytes]] = {}
        self._gz: dict[str, gzip.GzipFile] = {}
        self._pq: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}
        for name, schema in T.SCHEMAS.items():
            folder = self.root / T.MODULE[name]
            folder.mkdir(parents=True, exist_ok=True)
            self.rows[name] = 0
            if fmt == "csv.gz":
                raw = (folder / f"{name}.csv.gz").open("wb")
                gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0)
                gz.write((",".join(schema.names) + "\n").encode())
                self._raw[name], self._gz[name] = raw, gz
            else:
                self._pq[name] = pq.ParquetWriter(folder / f"{name}.parquet", schema, compression="zstd")

    def write(self, name: str, table: pa.Table) -> None:
        """Append rows of ``name`` (must carry exactly the table's MIMIC-IV schema)."""
        if not table.schema.equals(T.SCHEMAS[name]):
            raise ValueError(f"{name}: schema mismatch:\n{table.schema}\nexpected\n{T.SCHEMAS[name]}")
        if table.num_rows == 0:
            return
        self.rows[name] += table.num_rows
        if self.fmt == "csv.gz":
            buf = io.BytesIO()
            pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            self._gz[name].write(buf.getvalue())
        else:
            self._pq[name].write_table(table)

    def close(self) -> None:
        for gz in self._gz.values():
            gz.close()
        for raw in self._raw.values():
            raw.close()
        for w in self._pq.values():
            w.close()
        self._gz, self._raw, self._pq = {}, {}, {}

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
