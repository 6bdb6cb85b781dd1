"""The non-MIMIC tabular MDP: valid dynamics, a table that follows its own schema, and exact values that the
simulator's own rollouts reproduce."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ogsrl.data.schema import check_table, read_schema
from ogsrl.synth import tabular as T


def test_transition_probabilities_are_valid_and_affine() -> None:
    grid = np.array(list(itertools.product(np.linspace(0, 1, 5), repeat=2)))
    for f, k in itertools.product((0, 1), T.LIVE):
        p = T.transition(np.full(len(grid), f), np.full(len(grid), k), grid)
        assert np.allclose(p.sum(axis=1), 1) and p.min() >= 0.1 - 1e-12 and p.max() <= 0.76 + 1e-12
        # affine in the effect: the mean of P over effects equals P at the mean effect
        assert np.allclose(p.mean(axis=0), T.transition([f], [k], grid.mean(axis=0, keepdims=True))[0])


@pytest.mark.parametrize("actions", ["discrete", "continuous"])
def test_logged_returns_match_exact_behaviour_value(tmp_path, actions: str) -> None:
    cfg = T.MDPConfig(actions=actions, stays=3000, horizon=8, seed=11)
    path = tmp_path / "mdp.parquet"
    summary = T.write(cfg, path)
    df = pd.read_parquet(path)
    schema = read_schema(path)
    assert schema == T.schema(actions) and T.read_config(path) == cfg
    check_table(df, schema, require_split=False)
    per = df.groupby("stay_key").agg(ret=("reward", "sum"), cost=(T.COST, "sum"), died=("died", "first"))
    truth = summary["behaviour_true"]
    n = len(per)
    for col, key in (("ret", "return"), ("cost", "cost"), ("died", "mortality")):
        se = per[col].astype(float).std() / np.sqrt(n)
        assert abs(per[col].mean() - truth[key]) < 3.5 * se, (col, per[col].mean(), truth[key], se)
    assert per["ret"].isin([-cfg.reward, cfg.reward]).all()  # terminal reward only
    assert df.groupby("stay_key")["step"].max().max() <= cfg.horizon - 1


def test_exact_values_order_policies() -> None:
    cfg = T.MDPConfig(horizon=10)
    const = []
    for a in range(4):
        pi = np.zeros((2, T.K_DEAD + 1, 4))
        pi[:, :, a] = 1.0
        v = T.evaluate(pi, cfg)
        assert v["return"] == pytest.approx(cfg.reward * (1 - 2 * v["mortality"]))  # terminal ±R only
        const.append(v["return"])
    greedy, best = T.optimal(cfg)
    assert best["return"] >= max(const) + 0.3  # state-dependent control beats every constant treatment
    none_first = np.zeros((2, T.K_DEAD + 1, 4))
    none_first[np.arange(2)[:, None], np.arange(T.K_DEAD + 1)[None, :], greedy] = 1.0
    assert T.evaluate(none_first, cfg)["return"] <= best["return"] + 1e-9
    # a sampled-id policy is averaged to its frequencies: the clinicians' probabilities, sampled, agree with them
    rng = np.random.default_rng(0)
    exact = T.evaluate(T.latent_policy(T.clinician_probs, "discrete"), cfg)["return"]
    sampled = T.evaluate(T.latent_policy(lambda o: T.rng_choice(T.clinician_probs(o), rng), "discrete"), cfg)
    assert sampled["return"] == pytest.approx(exact, abs=0.05)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="actions must be"):
        T.MDPConfig(actions="ordinal")
    with pytest.raises(ValueError, match="positive"):
        T.MDPConfig(stays=0)
