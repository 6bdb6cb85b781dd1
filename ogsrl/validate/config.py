"""Typed settings of the validation gates (params.yaml `validation:`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """Tolerances and sizes for the raw-table and trajectory gates."""

    range_mostly: float = 0.97
    """share of a known itemid's values that must lie in its plausible raw-unit range (the rest are charting errors
    that the extraction drops; GE `mostly`)"""
    nonneg_mostly: float = 0.999
    """share of amounts, volumes, rates and durations that must be >= 0"""
    full_max_rows: int = 200_000
    """event tables up to this many rows are validated in full by GE; larger ones get exact DuckDB counts plus a
    GE run on a seeded sample"""
    sample_rows: int = 100_000
    """rows in the seeded sample of a large event table"""
    seed: int = 42
    """seed of the reservoir sample"""
    max_examples: int = 5
    """offending values/rows quoted per failed expectation"""
    duckdb_memory_limit: str = "4GB"
    """DuckDB memory_limit for the raw-table checks"""
    duckdb_threads: int = 2
    """DuckDB threads for the raw-table checks"""

    def __post_init__(self) -> None:
        for name in ("range_mostly", "nonneg_mostly"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v}")
        if self.full_max_rows < 0 or self.sample_rows < 1:
            raise ValueError("full_max_rows must be >= 0 and sample_rows >= 1")
        if self.max_examples < 1 or self.duckdb_threads < 1:
            raise ValueError("max_examples and duckdb_threads must be >= 1")
