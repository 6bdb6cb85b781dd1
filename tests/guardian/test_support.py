"""The support share: a policy's own (state, action) pairs a guardian rejects, and the logged pairs' reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl.errors import DataError  # noqa: E402
from ogsrl.guardian import support  # noqa: E402

BOX = fakes.BoxGuardian(("gcs", "fluid_ml", "nee_max"), np.array([3, 0, 0]), np.array([15, 1000, 5]))
INSIDE = fakes.LinearPolicy(("gcs",), np.zeros((2, 1)), np.array([500.0, 0.0]))
OUTSIDE = fakes.LinearPolicy(("gcs",), np.zeros((2, 1)), np.array([5000.0, 0.0]))  # fluid over the box


class Guarded:
    """The GuardedPolicy shape: own policy + fallback, serving the fallback's actions."""

    def __init__(self) -> None:
        self.policy, self.fallback, self.feature_names = OUTSIDE, INSIDE, ("gcs",)

    def act(self, obs: np.ndarray, rng: object = None) -> np.ndarray:
        return INSIDE.act(obs)


STATES = pd.DataFrame({"gcs": [3.0, 8.0, 15.0, 16.0],  # gcs 16 lies outside the box whatever the dose
                       "fluid_ml": [0.0, 2000.0, 10.0, 10.0], "nee_max": [0.0, 0.1, 0.2, 0.0]})


def test_own_actions_not_the_fallbacks_are_checked() -> None:
    assert support.own_policy(Guarded()) is OUTSIDE and support.own_policy(INSIDE) is INSIDE
    assert support.reject_share(INSIDE, BOX, STATES, 0) == 0.25
    assert support.reject_share(Guarded(), BOX, STATES, 0) == 1.0  # its served actions would all pass


def test_logged_share_reads_the_logged_actions() -> None:
    assert support.logged_reject_share(BOX, STATES) == 0.5  # fluid 2000 over the box; gcs 16 outside


def test_bad_input_names_the_table_and_columns() -> None:
    with pytest.raises(DataError, match=r"val\.parquet.*lacks column\(s\) \['gcs'\]"):
        support.reject_share(INSIDE, BOX, STATES.drop(columns="gcs"), 0, table="val.parquet")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['nee_max'\]"):
        support.logged_reject_share(BOX, STATES.drop(columns="nee_max"))
    with pytest.raises(DataError, match="no rows"):
        support.reject_share(INSIDE, BOX, STATES.iloc[:0], 0)
