"""FQE on a tiny tabular MDP with exact values (tests/ope/tabular.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ogsrl.ope import fqe
from tests.ope import tabular as tab

FAST = {"hidden": (32, 32), "iterations": 12, "epochs": 20, "batch_size": 256, "lr": 1e-3, "mc_actions": 16,
        "refits": 0}


def _data(action: str, n: int = 600, seed: int = 0) -> tuple[fqe.Transitions, object, dict]:
    d = tab.logged(n, seed)
    obs = d["x"][:, None].astype(float)
    acts = d["actions"] if action == "continuous" else (5 * d["g"]).astype(np.int64)  # fluid bin 1 or 0
    tr = fqe.transitions(d["stay"], obs, acts, np.column_stack([d["r"], d["c"]]))
    rng = np.random.default_rng(1)
    draws = np.stack([tab.TabularPolicy().act(obs, rng) for _ in range(FAST["mc_actions"])])
    if action == "binned":
        draws = fqe.bin_probs((5 * (draws[..., 0] > 0)).astype(np.int64))
    return tr, draws, d


@pytest.mark.parametrize("action", ["continuous", "binned"])
def test_fqe_converges_to_the_exact_values(action: str) -> None:
    cfg = fqe.Config(**FAST, action=action)
    tr, draws, d = _data(action)
    critic = fqe.fit(cfg, tr, draws, 1.0, seed=3)
    q_true, v_true = tab.exact_q()
    first = np.nonzero(tr.step == 0)[0]
    v0 = fqe.initial_values(critic, tr.obs, tr.step, draws, first)  # (N, 2)
    exact = v_true[0, d["x"][first]]  # (N, 2) true V(s_0) of the same stays
    np.testing.assert_allclose(v0.mean(axis=0), exact.mean(axis=0), atol=0.06)
    # Q at every (t, x, g) too, not only the average
    for t in range(tab.H):
        for x in (0, 1):
            for g in (0, 1):
                a = np.array([[g * tab.DOSE, 0.0]]) if action == "continuous" else np.array([5 * g])
                got = critic.q(np.array([[float(x)]]), np.array([t]), a)[0]
                np.testing.assert_allclose(got, q_true[t, x, g], atol=0.12)  # values span −1.5 … 3


def test_bad_config_and_inputs_fail_with_one_line() -> None:
    with pytest.raises(ValueError, match="refits"):
        fqe.Config(refits=1)
    with pytest.raises(ValueError, match="action"):
        fqe.Config(action="grid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        fqe.transitions(np.array([0, 0]), np.array([[np.nan], [1.0]]), np.zeros((2, 2)), np.zeros((2, 1)))
    tr = fqe.transitions(np.array([0, 0, 1]), np.zeros((3, 1)), np.zeros((3, 2)), np.ones((3, 1)))
    assert tr.next_row.tolist() == [1, -1, -1] and tr.step.tolist() == [0, 1, 0]
    np.testing.assert_allclose(fqe.returns_to_go(tr.targets, tr.next_row, 0.5), [[1.5], [1.0], [1.0]])


def test_previous_actions_are_the_stays_last_encoded_dose() -> None:
    stay = np.array([4, 4, 4, 9, 9])
    acts = np.array([[500.0, 0.0], [0.0, 0.1], [0.0, 0.0], [1000.0, 0.2], [0.0, 0.0]])
    prev = fqe.previous_actions(stay, acts)
    enc = fqe.encode_actions(acts)
    np.testing.assert_array_equal(prev[[0, 3]], 0.0)  # a stay's first row has no previous action
    np.testing.assert_array_equal(prev[[1, 2, 4]], enc[[0, 1, 3]])
    assert prev[1, 2] == 1.0 and prev[1, 3] == 0.0  # fluid given, no vasopressor, before row 1
    vaso = fqe.previous_actions(stay, acts, dims=[1])  # the vasopressor's two codes only
    assert vaso.shape == (5, 2)
    np.testing.assert_array_equal(vaso, prev[:, [1, 3]])
    with pytest.raises(ValueError, match="distinct action columns"):
        fqe.Config(previous_action=("nee_max", "nee_max"))


def test_previous_observations_are_the_stays_last_rows_nearest_first() -> None:
    stay = np.array([4, 4, 4, 9, 9])
    obs = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [7.0, 70.0], [8.0, 80.0]])
    hist = fqe.previous_observations(stay, obs, 2)
    assert hist.shape == (5, 4)
    np.testing.assert_array_equal(hist[:, :2], obs[[0, 0, 1, 3, 3]])  # one step back; a first row repeats itself
    np.testing.assert_array_equal(hist[:, 2:], obs[[0, 0, 0, 3, 3]])  # two steps back, never into another stay
    assert fqe.previous_observations(stay, obs, 0).shape == (5, 0)
    with pytest.raises(ValueError, match="history must be ≥ 0"):
        fqe.Config(history=-1)
    with pytest.raises(ValueError, match="must share R"):
        fqe.previous_observations(stay[:4], obs, 1)


def test_history_lets_the_critic_see_a_trait_the_clinicians_see() -> None:
    """A hidden trait z (half the stays) decides whether fluid pays: r_t = z · g_t for t ≥ 1. The clinicians see z
    from step 1 on (fluid with probability 0.8 if z, else 0.2); x_t alone is a fair coin either way, but z = 1 makes
    x alternate and z = 0 keeps it. π_e = "always fluid" is worth 2 · ½ = 1; a critic of x alone reads the treated
    rows' share of z (0.8) for every patient (1.6), one that sees x_{t−1} too reads z."""
    n, h = 800, 3
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, n)
    x0 = rng.integers(0, 2, n)
    x = np.where(z[:, None] == 1, (x0[:, None] + np.arange(h)) % 2, x0[:, None]).astype(float)
    g = np.column_stack([rng.integers(0, 2, n), rng.random((n, h - 1)) < np.where(z == 1, 0.8, 0.2)[:, None]])
    stay = np.repeat(np.arange(n), h)
    acts = np.column_stack([g.reshape(-1) * tab.DOSE, np.zeros(n * h)])
    r = (z[:, None] * g * (np.arange(h) >= 1)).reshape(-1, 1).astype(float)
    draws = np.tile([tab.DOSE, 0.0], (FAST["mc_actions"], n * h, 1))
    obs = x.reshape(-1, 1)
    for k, exact in ((0, 1.6), (1, 1.0)):
        tr = fqe.transitions(stay, np.column_stack([obs, fqe.previous_observations(stay, obs, k)]), acts, r)
        critic = fqe.fit(fqe.Config(**FAST, history=k), tr, draws, 1.0, seed=3)
        v0 = fqe.initial_values(critic, tr.obs, tr.step, draws, np.nonzero(tr.step == 0)[0])
        assert abs(v0.mean() - exact) < 0.1, (k, v0.mean())


def test_previous_action_lets_the_critic_see_a_delayed_effect() -> None:
    """r_t = 1[fluid at t − 1], and x is i.i.d. noise: π_e = "always fluid" is worth H − 1 = 2, but a critic of x
    alone cannot tell a patient who had fluid from one who had none and reads the behaviour's ½ per step (1.0)."""
    n, h = 600, 3
    rng = np.random.default_rng(0)
    g = rng.integers(0, 2, (n, h))
    stay = np.repeat(np.arange(n), h)
    x = rng.integers(0, 2, n * h).astype(float)[:, None]
    acts = np.column_stack([g.reshape(-1) * tab.DOSE, np.zeros(n * h)])
    r = np.column_stack([np.zeros(n), g[:, :-1]]).reshape(-1, 1).astype(float)
    draws = np.tile([tab.DOSE, 0.0], (FAST["mc_actions"], n * h, 1))
    for previous, exact in ((False, 1.0), (True, 2.0)):
        obs = np.column_stack([x, fqe.previous_actions(stay, acts)]) if previous else x
        tr = fqe.transitions(stay, obs, acts, r)
        critic = fqe.fit(fqe.Config(**FAST, previous_action=previous), tr, draws, 1.0, seed=3)
        v0 = fqe.initial_values(critic, tr.obs, tr.step, draws, np.nonzero(tr.step == 0)[0])
        assert abs(v0.mean() - exact) < 0.08, (previous, v0.mean())
