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


def test_rare_actions_take_ids_clinicians_rarely_choose_in_the_region() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, size=(4000, 1))
    a = np.where(s[:, 0] > 0, rng.choice([0, 1], size=4000), rng.choice([1, 2], size=4000))  # id 3 never
    x = np.column_stack([s, a.astype(float)])
    out, why = ood.rare_actions(x, x, ("s", "a"), np.random.default_rng(1), 500, "a", 4)
    assert why is None and out.shape == (500, 2)
    ids, hi = out[:, 1].astype(int), out[:, 0] > 0.05
    assert set(ids) <= {0, 1, 2, 3} and np.all(ids != 1)  # id 1 is common everywhere
    assert np.all(ids[hi] != 0) and np.all(ids[out[:, 0] < -0.05] != 2)  # never the region's common ids
    assert {0, 2, 3} <= set(ids)  # every rare id drawn somewhere
    flat = np.column_stack([s, rng.integers(0, 2, size=4000).astype(float)])  # both ids ~50 % everywhere
    out, why = ood.rare_actions(flat, flat, ("s", "a"), np.random.default_rng(1), 100, "a", 2)
    assert out.shape == (0, 2) and "no rarely chosen action" in why
    few = flat.copy()
    few[np.argsort(few[:, 0])[:300], 1] = 0.0  # id 1 is rare only for the lowest s (~7 % of probe states)
    out, why = ood.rare_actions(few, few, ("s", "a"), np.random.default_rng(1), 1000, "a", 2)
    assert out.shape == (0, 2) and why.startswith("only ")
