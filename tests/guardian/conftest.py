"""Fixtures for the guardian tests."""

from __future__ import annotations

import numpy as np
import pytest
from tests.guardian.guardian_fakes import contract_matrix


@pytest.fixture(scope="session")
def splits() -> dict[str, np.ndarray]:
    """Fit / calibration / test matrices (3000 / 2000 / 2000 rows)."""
    return {"fit": contract_matrix(3000, 1), "cal": contract_matrix(2000, 2), "test": contract_matrix(2000, 3)}
