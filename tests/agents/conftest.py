"""Fixtures for the agent tests (the trajectory generator lives in trajectory_fakes.py, shared with tests/ope)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.agents.trajectory_fakes import STATE, make_split, one_thread, traj_root  # noqa: F401

from ogsrl import features


@pytest.fixture(scope="session")
def guardian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Christoffel guardian (degree 2) fitted on fake (STATE, actions) rows, saved like calibrate_guardian's."""
    from ogsrl.guardian import CalibrationConfig, ChristoffelConfig, ChristoffelGuardian, ScalingConfig

    rng = np.random.default_rng(7)
    names = (*STATE, *features.ACTIONS)
    fit, cal = (make_split(n, 5, rng, s)[list(names)].to_numpy(np.float64) for n, s in ((200, "f"), (100, "c")))
    g = ChristoffelGuardian(names, ChristoffelConfig(degree=2), CalibrationConfig(rule="conformal", alpha_c=0.9, unit="row"),
                            ScalingConfig()).fit(fit).calibrate(cal)
    path = tmp_path_factory.mktemp("guardian") / "christoffel"
    g.save(path)
    return path
