"""Tests for ogsrl/world/data.py: arrays from trajectory tables and the head layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ogsrl.errors import DataError
from ogsrl.world.data import Layout, Transitions, transitions_from_frame

from .conftest import COSTS, STATE, TINY


def test_layout_classifies_static_binary_and_continuous() -> None:
    lay = Layout.make(STATE, COSTS, TINY.copy_features, TINY.sum_features)
    names = lambda idx: [STATE[i] for i in idx]  # noqa: E731
    assert names(lay.copy_idx) == ["gender", "readmission", "age"]
    assert names(lay.binary_idx) == ["mechvent"]
    assert names(lay.sum_idx) == ["urine_cum", "fluid_cum"]
    assert lay.sum_src == (STATE.index("urine_step"), len(STATE))  # next urine_step; action 0 (fluid_ml)
    assert "spo2" in names(lay.gauss_idx) and len(lay.gauss_idx) == len(STATE) - 6
    assert lay.n_gauss == len(lay.gauss_idx) + 1 and lay.n_logit == 1 + len(COSTS) + 2  # mechvent, costs, death, discharge
    # without its source feature, urine_cum stays a Gaussian output
    no_step = tuple(f for f in STATE if f != "urine_step")
    assert "urine_cum" not in [no_step[i] for i in Layout.make(no_step, COSTS, (), ("urine_cum",)).sum_idx]


def test_sum_identity_holds_on_toy_data(toy_frame: pd.DataFrame) -> None:
    d = transitions_from_frame(toy_frame, STATE, COSTS)
    lay = Layout.make(STATE, COSTS, TINY.copy_features, TINY.sum_features)
    assert np.abs(lay.sum_residual(d.obs, d.act, d.next_obs)).max() < 0.05
    rebuilt = d.next_obs.copy()
    rebuilt[:, list(lay.sum_idx)] = 0.0
    np.testing.assert_allclose(lay.apply_sums(d.obs, d.act, rebuilt), d.next_obs, atol=0.05)


def test_transitions_from_frame_selects_columns(toy_frame: pd.DataFrame) -> None:
    d = transitions_from_frame(toy_frame, STATE, COSTS)
    assert len(d) == len(toy_frame) and d.obs.shape == (len(toy_frame), len(STATE)) and d.cost.shape[1] == 2
    np.testing.assert_array_equal(d.next_obs[:, STATE.index("spo2")], toy_frame["next_spo2"].to_numpy(np.float32))
    np.testing.assert_array_equal(d.death, toy_frame["death_in_step"].to_numpy(np.float32))
    assert d.obs.dtype == d.act.dtype == d.rew.dtype == np.float32


def test_discharge_is_an_alive_exit_before_the_window_end() -> None:
    # a: discharged after its second decision; b: dies; c: still in the ICU at the window's last decision (12 h),
    # although it entered the grid later (its step counter restarts at 0)
    rows = [("a", 0, 0.0, False, False), ("a", 1, 4.0, True, False), ("b", 0, 4.0, False, False),
            ("b", 1, 8.0, True, True), ("c", 0, 8.0, False, False), ("c", 1, 12.0, True, False)]
    frame = pd.DataFrame(rows, columns=["stay_key", "step", "hours_since_onset", "done", "death_in_step"])
    for col in [*STATE, *(f"next_{f}" for f in STATE), "fluid_ml", "nee_max", "reward", *COSTS]:
        frame[col] = 1.0
    d = transitions_from_frame(frame, STATE, COSTS, final_hour=12.0)
    np.testing.assert_array_equal(d.discharge, [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(d.death, [0, 0, 0, 1, 0, 0])
    # with a longer window, c's last row is a discharge too; the default window end is the latest decision
    np.testing.assert_array_equal(transitions_from_frame(frame, STATE, COSTS, final_hour=20.0).discharge,
                                  [0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(transitions_from_frame(frame, STATE, COSTS).discharge, d.discharge)
    with pytest.raises(DataError, match=r"column 'hours_since_onset'.*offending rows: 5"):
        transitions_from_frame(frame, STATE, COSTS, "train", final_hour=8.0)


def test_death_charge_leaves_the_death_rows_own_step_reward() -> None:
    # b dies at 4 h with the window's last decision at 12 h: two decision times (8 h, 12 h) left after its death
    rows = [("a", 0, 0.0, False, False, -3.0), ("a", 1, 4.0, True, False, -4.0),
            ("b", 0, 0.0, False, False, -5.0), ("b", 1, 4.0, True, True, -12.5 * 3)]
    frame = pd.DataFrame(rows, columns=["stay_key", "step", "hours_since_onset", "done", "death_in_step", "reward"])
    for col in [*STATE, *(f"next_{f}" for f in STATE), "fluid_ml", "nee_max", *COSTS]:
        frame[col] = 1.0
    d = transitions_from_frame(frame, STATE, COSTS, final_hour=12.0, death_charge=12.5, step_h=4.0)
    np.testing.assert_allclose(d.rew, [-3.0, -4.0, -5.0, -12.5])
    np.testing.assert_allclose(transitions_from_frame(frame, STATE, COSTS, final_hour=12.0).rew,
                               [-3.0, -4.0, -5.0, -37.5])  # no charge declared: the reward as logged
    with pytest.raises(ValueError, match="step_h"):
        transitions_from_frame(frame, STATE, COSTS, final_hour=12.0, death_charge=12.5)


def test_bad_tables_raise(toy_frame: pd.DataFrame) -> None:
    bad = toy_frame.copy()
    bad.loc[bad.index[5], "spo2"] = np.nan
    with pytest.raises(DataError, match=r"table 'train', column 'spo2'.*offending rows: 5"):
        transitions_from_frame(bad, STATE, COSTS, "train")
    bad = toy_frame.copy()
    bad.loc[bad.index[[2, 9]], "nee_max"] = np.inf
    with pytest.raises(DataError, match=r"column 'nee_max'.*offending rows: 2, 9"):
        transitions_from_frame(bad, STATE, COSTS)
    with pytest.raises(DataError, match="missing column"):
        transitions_from_frame(toy_frame.drop(columns=["next_gcs"]), STATE, COSTS)
    with pytest.raises(ValueError, match="unknown state feature"):
        Layout.make(("spo2", "nonsense"), (), ())
    z = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="act must be"):
        Transitions(z, np.zeros((3, 2), np.float32), z, np.zeros(4, np.float32), z, np.zeros(4, np.float32))
