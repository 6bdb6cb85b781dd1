"""Attending-anchored model-based OPE (ogsrl.ope.anchored): the pieces on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ogsrl.ope import anchored


def test_logged_doses_lay_each_stay_out_from_its_first_step() -> None:
    stay = np.array(["b", "b", "a", "a", "a"])
    step = np.array([3, 4, 7, 5, 6])  # rows need not be in step order; a stay need not start at step 0
    acts = np.array([[1.0, 0.1], [2.0, 0.2], [12.0, 0.3], [10.0, 0.0], [11.0, 0.0]])
    doses, lengths = anchored.logged_doses(stay, step, acts)
    assert lengths.tolist() == [3, 2]  # "a" then "b"
    np.testing.assert_array_equal(doses[0], [[10.0, 0.0], [11.0, 0.0], [12.0, 0.3]])
    np.testing.assert_array_equal(doses[1], [[1.0, 0.1], [2.0, 0.2], [0.0, 0.0]])


@pytest.mark.parametrize("step", [[0, 2, 3], [0, 1, 1]], ids=["gap", "repeat"])
def test_logged_doses_refuse_a_gap_or_a_repeated_step(step: list[int]) -> None:
    with pytest.raises(ValueError, match="not consecutive"):
        anchored.logged_doses(np.array(["a", "a", "a"]), np.array(step), np.zeros((3, 2)))


def test_replay_gives_the_logged_dose_then_hands_over() -> None:
    doses = np.array([[[1.0], [2.0], [3.0]], [[5.0], [0.0], [0.0]]])
    calls = []

    def after(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        calls.append(len(obs))
        return np.full((len(obs), 1), -1.0)

    act = anchored.replayed(doses, np.array([3, 1]), rollouts=2, after=after)
    got = [act(np.zeros((4, 2)), np.random.default_rng(0))[:, 0].tolist() for _ in range(4)]
    # episodes 0, 2 start from stay 0 (three logged steps); 1, 3 from stay 1 (one)
    assert got == [[1, 5, 1, 5], [2, -1, 2, -1], [3, -1, 3, -1], [-1, -1, -1, -1]]
    assert calls == [4, 4, 4, 4]  # asked every step: its draws never depend on where stays end


def _anchors(rng: np.random.Generator, k: int, line: tuple[float, float], tau: float, n: int = 200,
             fits: int = 3, noise: float = 0.05) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Per attending: (F, n, 2) model values (column 1 anchored), (n, 2) logged values; and each attending's true
    offset from the line."""
    c, d = line
    m_true = np.linspace(0.2, 2.0, k)
    off = rng.normal(0.0, tau, k)
    m_stays, y_stays = [], []
    for mk, ok in zip(m_true, off):
        m = mk + rng.normal(0, noise, (fits, n, 2))
        y = c + d * m.mean(0) + ok + rng.normal(0, noise, (n, 2))
        m_stays.append(m)
        y_stays.append(y)
    return m_stays, y_stays, off


def test_an_exact_line_is_recovered_and_its_interval_collapses() -> None:
    m_stays = [np.full((2, 10, 2), m) for m in (0.5, 1.0, 1.5, 2.0)]
    y_stays = [np.full((10, 2), 0.1 + 1.5 * m) for m in (0.5, 1.0, 1.5, 2.0)]
    a = anchored.fit_anchors(m_stays, y_stays, [1], np.random.default_rng(0), 200)
    np.testing.assert_allclose(a.line, [[0.1, 1.5]])
    assert a.tau[0] == pytest.approx(0.0, abs=1e-9)
    value, lo, hi = anchored.read(a, np.full((2, 7, 2), 0.8), np.random.default_rng(1), 0.95)
    assert value[0] == pytest.approx(0.1 + 1.5 * 0.8)
    assert lo[0] == pytest.approx(value[0]) and hi[0] == pytest.approx(value[0])


def test_a_cost_is_read_no_lower_than_zero() -> None:
    m_stays = [np.full((1, 5, 2), m) for m in (1.0, 2.0, 3.0)]
    y_stays = [np.full((5, 2), -1.0 + m) for m in (1.0, 2.0, 3.0)]
    a = anchored.fit_anchors(m_stays, y_stays, [1], np.random.default_rng(0), 100)
    value, lo, hi = anchored.read(a, np.full((1, 4, 2), 0.2), np.random.default_rng(1), 0.9)
    assert (value[0], lo[0], hi[0]) == (0.0, 0.0, 0.0)


def test_scatter_beyond_sampling_noise_is_estimated() -> None:
    m_stays, y_stays, off = _anchors(np.random.default_rng(3), k=60, line=(0.3, 1.2), tau=0.25)
    a = anchored.fit_anchors(m_stays, y_stays, [1], np.random.default_rng(0), 200)
    assert a.line[0] == pytest.approx([0.3, 1.2], abs=0.12)
    assert a.tau[0] == pytest.approx(0.25, abs=0.06)
    none = anchored.fit_anchors(*_anchors(np.random.default_rng(4), k=60, line=(0.3, 1.2), tau=0.0)[:2], [1],
                                np.random.default_rng(0), 200)
    assert none.tau[0] < 0.02  # pure sampling noise is not scatter


def test_interval_covers_a_new_practice_at_about_its_level() -> None:
    """Ten anchors off a line by τ; a new practice (the policy) lies off it by a fresh draw: the 90 % interval of
    its anchored reading covers its true value in most of 150 worlds (random-effects coverage)."""
    rng = np.random.default_rng(11)
    hits = []
    for _ in range(150):
        m_stays, y_stays, _ = _anchors(rng, k=10, line=(0.2, 1.3), tau=0.15, n=60, fits=2)
        a = anchored.fit_anchors(m_stays, y_stays, [1], rng, 300)
        m_pol = rng.uniform(0.2, 2.0)
        truth = 0.2 + 1.3 * m_pol + rng.normal(0, 0.15)
        _, lo, hi = anchored.read(a, m_pol + rng.normal(0, 0.05, (2, 80, 2)), rng, 0.9)
        hits.append(lo[0] <= truth <= hi[0])
    assert 0.8 <= np.mean(hits) <= 0.99


def test_balance_passes_random_assignment_and_names_a_skewed_feature() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 3))
    who = rng.integers(0, 6, 600)
    ok = anchored.balance(x, who, ["map", "sofa", "lactate"], 0.01)
    assert ok.passed and ok.p_min >= 0.01
    x[who == 2, 1] += 0.8  # one attending's patients start sicker
    bad = anchored.balance(x, who, ["map", "sofa", "lactate"], 0.01)
    assert not bad.passed and bad.feature == "sofa" and bad.p_min < 1e-4


def test_too_few_attendings_with_enough_stays_is_insufficient_evidence() -> None:
    cfg = anchored.Config(min_providers=3, min_stays=10)
    ok, why = anchored.usable([12, 30, 9, 10], cfg)
    assert ok.tolist() == [True, True, False, True] and why is None
    ok, why = anchored.usable([12, 3, 9, 4], cfg)
    assert why == "1 attendings have >= 10 stays; an anchor line needs 3"


def test_reads_refuse_fits_that_differ_from_the_anchors() -> None:
    a = anchored.fit_anchors([np.full((2, 3, 2), m) for m in (1.0, 2.0, 3.0)],
                             [np.full((3, 2), m) for m in (1.0, 2.0, 3.0)], [1], np.random.default_rng(0), 100)
    with pytest.raises(ValueError, match="3 fits, the anchors with 2"):
        anchored.read(a, np.zeros((3, 4, 2)), np.random.default_rng(0), 0.9)


@pytest.mark.parametrize("kw, msg", [({"targets": ()}, "at least one"), ({"min_providers": 2}, "min_providers"),
                                     ({"min_stays": 1}, "min_stays"), ({"balance_alpha": 0.0}, "balance_alpha")])
def test_bad_config_is_refused(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        anchored.Config(**kw)
