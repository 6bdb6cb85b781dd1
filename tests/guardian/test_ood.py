"""OOD probes: by construction outside the fit data's range."""

from __future__ import annotations

import numpy as np
import pytest
from tests.guardian.guardian_fakes import NAMES

from ogsrl.errors import DataError
from ogsrl.guardian import ood


def test_extreme_actions_exceed_clinical_practice(splits) -> None:
    fit, test = splits["fit"], splits["test"]
    x = ood.extreme_actions(test, fit, NAMES, np.random.default_rng(0), 101)
    jf, jn = NAMES.index("fluid_ml"), NAMES.index("nee_max")
    assert x.shape == (101, 15)
    assert np.all(x[:50, jf] >= 1.5 * np.quantile(fit[:, jf], 0.999))
    assert np.all(x[50:, jn] >= 2.0 * fit[:, jn].max())
    with pytest.raises(DataError, match="fluid_ml"):
        ood.extreme_actions(test[:, :13], fit[:, :13], NAMES[:13], np.random.default_rng(0), 10)


def test_shifted_states_leave_the_range_in_one_non_binary_feature(splits) -> None:
    fit, test = splits["fit"], splits["test"]
    x = ood.shifted_states(test, fit, NAMES, np.random.default_rng(0), 300)
    lo, hi = fit.min(axis=0), fit.max(axis=0)
    beyond = x >= hi + 0.5 * (hi - lo)
    assert np.all(beyond.sum(axis=1) == 1)
    cols = set(np.flatnonzero(beyond.any(axis=0)))
    assert cols.isdisjoint({NAMES.index(c) for c in ("gender", "readmission", "mechvent", "fluid_ml", "nee_max")})
    assert len(cols) >= 8


def test_extreme_policy_rows_come_from_the_simulator() -> None:
    from ogsrl.synth.engine import WorldConfig

    x = ood.extreme_policy_rows(NAMES, WorldConfig(), 4, 4000.0, 1.5, seed=0)
    assert x.ndim == 2 and x.shape[1] == 15 and 1 <= x.shape[0] <= 80
    np.testing.assert_array_equal(x[:, -2:], np.tile([4000.0, 1.5], (len(x), 1)))
    assert np.isfinite(x).all()
