"""Shared small simulated chunk for the synth tests (module-scoped: simulated once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ogsrl.synth import engine as E
from ogsrl.synth import tables as T
from ogsrl.synth.writer import TableWriter


@pytest.fixture(scope="session")
def small_sim() -> E.SimResult:
    """120 stays simulated with the clinicians and the production observer."""
    return E.simulate(120, np.random.default_rng(11), first_index=0, world=E.WorldConfig(),
                      observer=E.cohort_observer())


@pytest.fixture(scope="session")
def small_dir(small_sim: E.SimResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small chunk written as a csv.gz MIMIC-IV directory."""
    d = tmp_path_factory.mktemp("raw") / "raw"
    d.mkdir()
    with TableWriter(d, "csv.gz") as w:
        w.write("d_items", T.d_items())
        w.write("d_labitems", T.d_labitems())
        for name, table in small_sim.tables.items():
            w.write(name, table)
    return d
