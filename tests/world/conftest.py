"""World-model fixtures: tiny contract-shaped toy tables and a tiny fitted ensemble (shared per session)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ogsrl import features as F
from ogsrl.world.data import Layout, Transitions, transitions_from_frame
from ogsrl.world.ensemble import EnsembleConfig, WorldModel
from ogsrl.world.toy import COST_RULES, toy_trajectories

STATE = F.PAPER_STATE
COSTS = tuple(f"cost_{r}" for r, _, _ in COST_RULES)
TINY = EnsembleConfig(n_members=3, n_elites=2, hidden=(16, 16), batch_size=64, max_epochs=3, patience=2, seed=7)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_frame() -> pd.DataFrame:
    """~1.5k rows of the toy system (120 stays)."""
    return toy_trajectories(120, np.random.default_rng(11))


@pytest.fixture(scope="session")
def toy_data(toy_frame: pd.DataFrame) -> tuple[Transitions, Transitions]:
    """(train, val) transitions split by stay."""
    keys = toy_frame["stay_key"].unique()
    is_val = toy_frame["stay_key"].isin(set(keys[::4]))
    return (transitions_from_frame(toy_frame[~is_val], STATE, COSTS),
            transitions_from_frame(toy_frame[is_val], STATE, COSTS))


@pytest.fixture(scope="session")
def tiny_model(toy_data: tuple[Transitions, Transitions]) -> WorldModel:
    """A 3-member ensemble fitted for 3 epochs (do not mutate in tests)."""
    torch.set_num_threads(1)
    model = WorldModel(TINY, Layout.make(STATE, COSTS, TINY.copy_features, TINY.sum_features))
    model.fit(*toy_data)
    return model


