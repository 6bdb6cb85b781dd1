"""The categorical actor: sampling and densities agree, behaviour cloning recovers a known policy, the checkpoint
round trip reproduces it, the trust-region metric is the exact KL, and bad ids are one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ogsrl.agents import bc, common
from ogsrl.agents import onpolicy as op
from ogsrl.agents.actor import SavedPolicy, load_policy
from ogsrl.agents.categorical import CategoricalActor, categorical_kl, check_ids
from ogsrl.errors import DataError

SPACE = common.DiscreteSpace("drug", 3, ("none", "low", "high"))
NAMES = ("x", "flag")


def _data(n: int, seed: int) -> pd.DataFrame:
    """A logged policy: id 0 when x < -0.5, 2 when x > 0.5, else 1, with 10 % uniform noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, n)
    ids = np.where(x < -0.5, 0, np.where(x > 0.5, 2, 1))
    noise = rng.random(n) < 0.1
    ids[noise] = rng.integers(0, 3, noise.sum())
    return pd.DataFrame({"x": x, "flag": (rng.random(n) < 0.5).astype(float), "drug": ids})


def test_sampling_matches_probabilities_and_log_prob() -> None:
    actor = CategoricalActor(2, (8,), torch.Generator().manual_seed(0), SPACE)
    obs = np.tile([[0.3, 1.0]], (20000, 1))
    p = actor.probs(obs[:1])[0]
    draws = actor.sample(obs, np.random.default_rng(1))
    assert draws.shape == (20000, 1)
    freq = np.bincount(draws[:, 0].astype(int), minlength=3) / len(draws)
    assert np.abs(freq - p).max() < 0.015
    assert np.allclose(np.exp(actor.log_prob_np(obs[:3], np.array([[0], [1], [2]]))), p)
    lp = actor.log_prob(torch.tensor(obs[:3]), torch.tensor([0.0, 1.0, 2.0]))
    assert np.allclose(lp.detach().numpy(), np.log(p))


def test_behaviour_cloning_recovers_the_logged_policy_and_round_trips(tmp_path) -> None:
    cfg = bc.Config(hidden=(16, 16), max_epochs=60, patience=10, batch_size=128, lr=1e-2, components=1)
    train, val = _data(3000, 0), _data(600, 1)
    pol, metrics, _ = bc.fit_actor(cfg, NAMES, bc.batch_of(train, NAMES, SPACE.columns),
                                   bc.batch_of(val, NAMES, SPACE.columns), seed=3, space=SPACE)
    probs = pol.actor.probs(np.array([[-1.2, 0.0], [0.0, 0.0], [1.2, 1.0]]))
    assert (probs.argmax(axis=1) == [0, 1, 2]).all() and probs.max(axis=1).min() > 0.8
    assert metrics["loss/val_nll"] < np.log(3) - 0.5  # well below the uniform policy's cross-entropy
    pol.save(tmp_path / "p")
    back = load_policy(tmp_path / "p")
    assert isinstance(back, SavedPolicy) and back.action_columns == ("drug",)
    obs = val[list(NAMES)].to_numpy()[:50]
    assert np.array_equal(back.act(obs, np.random.default_rng(7)), pol.act(obs, np.random.default_rng(7)))
    assert np.allclose(back.log_prob(obs, val[["drug"]].to_numpy()[:50]), pol.log_prob(obs, val[["drug"]].to_numpy()[:50]))


def test_trust_region_metric_and_log_prob_dispatch() -> None:
    old = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    new = old + torch.tensor([[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    kl = op.hurdle_kl((old,), (new,))
    assert torch.allclose(kl, categorical_kl(old, new)) and kl[1] == 0 and kl[0] > 0
    po, pn = torch.softmax(old[0], -1), torch.softmax(new[0], -1)
    assert torch.isclose(kl[0], (po * (po / pn).log()).sum())
    ids = torch.tensor([2, 0])
    assert torch.allclose(op.log_prob_scaled((old,), ids), torch.log_softmax(old, -1)[[0, 1], [2, 0]])


def test_fresh_actor_for_a_discrete_space_is_categorical() -> None:
    starts = np.random.default_rng(0).normal(size=(10, 2))
    actor = op.fresh_actor(NAMES, (8,), 3, starts, seed=0, space=SPACE)
    assert isinstance(actor, CategoricalActor) and actor.encode(np.array([[2.0], [0.0]])).tolist() == [2, 0]


@pytest.mark.parametrize(("ids", "message"), [
    (np.array([0.0, 1.5, 2.0]), r"integers in 0 … 2.*offending rows: 1\]"),
    (np.array([0.0, 3.0, 2.0]), r"column 'drug'.*offending rows: 1\]"),
    (np.array([-1.0, 1.0, 2.0]), r"offending rows: 0\]"),
])
def test_bad_ids_are_named(ids: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_ids(ids, 3, SPACE, "policy")
