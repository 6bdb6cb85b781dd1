"""Continuous CQL / CCQL / GCQL on the toy CMDP's logged data: improvement over the random behaviour, the cost
constraint, the guardian penalty, the hurdle sampler, determinism and config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ogsrl.agents import common, cql, onpolicy as op, toy_cmdp
from ogsrl.config import ConfigError, build

NAMES, COSTS = toy_cmdp.FEATURES, toy_cmdp.COSTS
LIMITS = np.array([0.8, 0.5])


@pytest.fixture(scope="module")
def logged() -> tuple:
    frame = toy_cmdp.logged_frame(300, 0)
    mean, std = common.fit_normaliser(frame[list(NAMES)].to_numpy(np.float64))
    return frame, cql.transitions(frame, NAMES, COSTS, mean, std)


def _fit(logged: tuple, seed: int = 0, steps: int = 400, **kw):  # noqa: ANN202
    frame, data = logged
    torch.set_num_threads(1)
    fields = {"batch_size": 64, "critic_hidden": (32, 32), "hidden": (32, 32), "warm_start": False, "actor_lr": 1e-3,
              "critic_lr": 1e-3, "temperature_lr": 1e-3, "multiplier_lr": 0.05, "alpha": 1.0, "tau": 0.05,
              "n_action_samples": 4, "log_every": 100}
    cfg = cql.Config(steps=steps, **{**fields, **{k: v for k, v in kw.items()
                                                  if k not in ("guard", "serving", "cost_reading")}})
    actor = op.fresh_actor(NAMES, (32, 32), 1, frame[list(NAMES)].to_numpy(np.float64), seed)
    actor, metrics, history = cql.train(cfg, data, actor, COSTS, LIMITS, seed, guard=kw.get("guard"),
                                        ood_penalty=cfg.ood_penalty, serving=kw.get("serving"),
                                        cost_reading=kw.get("cost_reading"))
    ev = op.evaluate(toy_cmdp.DoseCMDP(2000, seed=9), actor, np.random.default_rng(9), 5, 9, COSTS)
    return actor, metrics, history, ev


def test_cql_and_ccql_improve_on_the_random_behaviour(logged: tuple) -> None:
    frame, _ = logged
    behaviour = frame.groupby("stay_key")["reward"].sum().mean()
    behaviour_cost = frame.groupby("stay_key")[list(COSTS)].sum().mean().to_numpy()
    assert (behaviour_cost > LIMITS).all()  # the random behaviour violates both limits
    _, metrics, history, ev = _fit(logged)
    assert ev["return"] > behaviour + 0.3
    assert len(history) == 4 and metrics["train/updates"] == 400 and np.isfinite(metrics["loss/td"])
    _, cmetrics, _, cev = _fit(logged, steps=500, constrained=True)
    assert cmetrics["train/multiplier/fluid_load"] > 0 and cmetrics["train/multiplier/pressor_load"] > 0
    total, ctotal = (sum(e[f"cost_return/{c}"] for c in COSTS) for e in (ev, cev))
    assert ctotal < min(total, behaviour_cost.sum()) - 0.2  # the multipliers pull the costs down


def test_the_guardian_penalty_lowers_the_values_where_the_policy_leaves_the_set(logged: tuple) -> None:
    def guard(obs: np.ndarray, act: np.ndarray) -> np.ndarray:  # high fluid doses are "out of support"
        return common.scale_actions(act)[:, 0] < 0.5

    _, free, _, _ = _fit(logged, steps=200)
    _, guarded, _, _ = _fit(logged, steps=200, guard=guard, ood_penalty=-5.0)
    assert free["train/rejected"] == 0.0 and 0.05 < guarded["train/rejected"] < 1.0
    # the penalty P·ρ(s) enters every TD target: Q on the data drops by about P·ρ per remaining step
    assert guarded["train/q_data"] < free["train/q_data"] - 5.0 * guarded["train/rejected"]


class _FullDoses(nn.Module):
    """A fallback actor that gives both drugs at the top of their range (scaled 1.0): the costly clinician."""

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = obs.shape[0]
        return (torch.zeros(b, 1), torch.full((b, 1, 2), -30.0), torch.ones(b, 1, 2), torch.full((b, 1, 2), -6.0))


def _low_fluid(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    return common.scale_actions(act)[:, 0] < 0.5


def test_as_served_swaps_only_the_rejected_draws_for_the_fallbacks() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([[[0.2, 0.3], [0.9, 0.1]], [[0.6, 0.0], [0.1, 0.8]]], dtype=torch.float64, requires_grad=True)
    obs = torch.zeros(2, len(NAMES))
    served, inside = cql.as_served(y, obs, (_low_fluid, _FullDoses()), gen)
    assert inside.tolist() == [[True, False], [False, True]]
    np.testing.assert_allclose(served[inside].detach().numpy(), y[inside].detach().numpy())
    np.testing.assert_allclose(served[~inside].detach().numpy(), 1.0, atol=0.01)  # the fallback's full doses
    served.sum().backward()  # the gradient reaches the accepted draws only
    np.testing.assert_array_equal(y.grad.numpy(), inside[..., None].expand(2, 2, 2).double().numpy())
    same, all_in = cql.as_served(y, obs, None, gen)
    assert same is y and bool(all_in.all())


def test_trained_as_served_the_multipliers_bound_the_served_policys_cost(logged: tuple) -> None:
    """Where the guardian rejects every action the served policy is the costly fallback, whatever the actor does:
    as served, the cost reading and the multipliers see that cost; trained on the actor alone, they do not."""
    def reject_all(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        return np.zeros(len(act), bool)

    _, plain, _, _ = _fit(logged, steps=300, constrained=True)
    _, served, _, _ = _fit(logged, steps=300, constrained=True, serving=(reject_all, _FullDoses()))
    assert served["train/fallback_share"] == 1.0 and "train/fallback_share" not in plain
    # full doses every step cost ≈ 1 per step in both columns; the multipliers grow three times as fast
    # (measured 20.4 / 21.4 against 6.9 / 6.5) and the fluid reading is higher (1.76 against 1.39)
    for c in COSTS:
        assert served[f"train/multiplier/{c}"] > 2.0 * plain[f"train/multiplier/{c}"] > 0
    assert served["train/cost_value/fluid_load"] > plain["train/cost_value/fluid_load"] + 0.2


def test_a_cost_margin_makes_the_multipliers_aim_below_the_limits(logged: tuple) -> None:
    """With m = 0.5 the multipliers aim at half of each limit, so they grow faster (measured 19.8 / 17.4 against
    12.2 / 11.4 after 500 updates, both readings still above the limits)."""
    _, plain, _, _ = _fit(logged, steps=500, constrained=True)
    _, held, _, _ = _fit(logged, steps=500, constrained=True, cost_margin=0.5)
    for i, c in enumerate(COSTS):
        assert held[f"train/cost_target/{c}"] == pytest.approx(0.5 * LIMITS[i])
        assert plain[f"train/cost_target/{c}"] == pytest.approx(LIMITS[i])
        assert held[f"train/multiplier/{c}"] > 1.3 * plain[f"train/multiplier/{c}"] > 0


def test_a_cost_check_moves_the_multipliers_to_the_checked_cost_not_the_critics(logged: tuple) -> None:
    """The critics' reading is shifted by the gap to the check: a check reading 0 keeps every multiplier at 0, one
    reading 3 per stay (over both limits) drives them four times as high as the critics alone (measured 27.4 / 30.8
    against 6.9 / 6.5 after 300 updates); the check runs every 100 updates and once on the trained actor."""
    frame, _ = logged
    states = frame[list(NAMES)].to_numpy(np.float64)[:50]
    calls: list[np.ndarray] = []

    def checked(level: float) -> cql.CostReading:
        def reading(act: object, rng: np.random.Generator) -> np.ndarray:
            calls.append(act(states, rng))  # type: ignore[operator]
            return np.full(len(COSTS), level)
        return reading

    _, plain, _, _ = _fit(logged, steps=300, constrained=True)
    _, low, history, _ = _fit(logged, steps=300, constrained=True, cost_check_every=100, cost_reading=checked(0.0))
    assert len(calls) == 4 and all(a.shape == (50, 2) and (a >= 0).all() for a in calls)
    _, high, _, _ = _fit(logged, steps=300, constrained=True, cost_check_every=100, cost_reading=checked(3.0))
    for c in COSTS:
        assert low[f"train/multiplier/{c}"] == 0.0 and low[f"train/cost_checked/{c}"] == 0.0
        assert high[f"train/multiplier/{c}"] > 2.5 * plain[f"train/multiplier/{c}"] > 0
        assert high[f"train/cost_value/{c}"] == pytest.approx(3.0, abs=0.1)  # the reading the multipliers saw
        assert high[f"train/cost_checked/{c}"] == 3.0 and "train/cost_checked/" + c not in plain
        assert all(row[f"train/cost_checked/{c}"] == 0.0 for row in history)
    with pytest.raises(ValueError, match="cost_check_every needs a cost_reading"):
        _fit(logged, steps=10, constrained=True, cost_check_every=5)


def test_a_cost_reading_maps_the_simulators_columns_to_the_runs() -> None:
    pool = type("Pool", (), {"cost_names": ("b", "a"), "value": lambda self, act, rng: np.array([9.0, 1.0, 2.0])})()
    assert cql.neighbour_cost_reading(pool, ("a", "b"))(None, None).tolist() == [2.0, 1.0]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"simulates \['b', 'a'\], not \['c'\]"):
        cql.neighbour_cost_reading(pool, ("a", "c"))


def test_training_as_served_needs_a_run_served_with_the_fallback(logged: tuple) -> None:
    from ogsrl.agents.inputs import TrainInputs

    frame, _ = logged
    inputs = TrainInputs(train=frame, val=frame, state_features=NAMES, action_names=("fluid_ml", "nee_max"),
                         cost_columns=COSTS, cost_limits=LIMITS, step_h=4.0, discount=1.0, guarded=False,
                         make_env=None, behaviour_clone=None, run="ccql", make_guard=lambda: _low_fluid,
                         serves_fallback=False)
    with pytest.raises(ValueError, match="run 'ccql': train_as_served needs the run served with the guardian "
                                         "fallback") as err:
        cql.fit(cql.Config(train_as_served=True, warm_start=False), inputs, 0)
    assert "\n" not in str(err.value)


def test_hurdle_draws_follow_the_density() -> None:
    actor = op.fresh_actor(NAMES, (8,), 2, np.random.default_rng(0).random((50, 2)), 3)
    obs = torch.as_tensor(np.random.default_rng(1).random((3, 2)))
    with torch.no_grad():
        params = actor(obs)
        y = common.hurdle_rsample(*params, 40_000, torch.Generator().manual_seed(0))  # (3, n, 2)
    ref = common.hurdle_sample(*(np.repeat(t.double().numpy(), 40_000, axis=0) for t in params),
                               np.random.default_rng(0)).reshape(3, 40_000, 2)
    ref_y = common.scale_actions(ref.reshape(-1, 2)).reshape(ref.shape)
    np.testing.assert_allclose((y.numpy() == 0).mean(1), (ref_y == 0).mean(1), atol=0.015)
    np.testing.assert_allclose(y.numpy().mean(1), ref_y.mean(1), atol=0.01)
    # the actor loss's enumeration: configuration probabilities sum to one per state
    y_enum, log_p = cql.enumerate_actions(actor(obs), torch.Generator().manual_seed(1))
    assert y_enum.shape == (3, 8, 2)
    np.testing.assert_allclose(log_p.exp().sum(1).detach().numpy(), 1.0, rtol=1e-9)


def test_truncated_normal_draws_are_exact_and_differentiable_over_the_actors_whole_range() -> None:
    """The reparameterised draw equals scipy's inverse CDF wherever the actor's clamps let μ and σ go — μ many σ
    outside [0, 1] included, where torch's Φ underflows (Φ(−8.3) → 0 through 1 + erf) and a naive inverse CDF put
    the draw at the far end of the interval — and its gradient matches finite differences."""
    from scipy import stats

    mu, log_std, u = (a.ravel() for a in np.meshgrid(np.linspace(common.MU_MIN, common.MU_MAX, 41),
                                                     np.linspace(common.LOG_STD_MIN, common.LOG_STD_MAX, 29),
                                                     [1e-6, 0.01, 0.3, 0.5, 0.7, 0.99, 1 - 1e-6], indexing="ij"))
    std = np.exp(log_std)
    ref = np.clip(stats.truncnorm.ppf(u, -mu / std, (1 - mu) / std, loc=mu, scale=std), 1e-9, 1.0)
    mu_t, ls_t = torch.tensor(mu, requires_grad=True), torch.tensor(log_std, requires_grad=True)
    y = common.truncnorm_rsample(mu_t, ls_t.exp(), torch.tensor(u))
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=0, atol=1e-9)
    # e.g. μ = −0.27, σ = 0.031 (8.7 σ below the zero bound): draws sit near it (mean ≈ σ²/|μ| = 0.0036), not at 0.89
    far = common.truncnorm_rsample(torch.tensor(-0.27), torch.tensor(0.031), torch.tensor([0.01, 0.5, 0.99]))
    assert float(far.max()) < 0.02

    y.sum().backward()
    h = 1e-6

    def draw(m: np.ndarray, ls: np.ndarray) -> np.ndarray:
        return common.truncnorm_rsample(torch.tensor(m), torch.tensor(np.exp(ls)), torch.tensor(u)).numpy()

    inside = (ref > 1e-8) & (ref < 1 - 1e-8)  # the clamp has no derivative
    np.testing.assert_allclose(mu_t.grad.numpy()[inside], ((draw(mu + h, log_std) - draw(mu - h, log_std))
                                                           / (2 * h))[inside], atol=1e-6)
    np.testing.assert_allclose(ls_t.grad.numpy()[inside], ((draw(mu, log_std + h) - draw(mu, log_std - h))
                                                           / (2 * h))[inside], atol=1e-6)


def test_the_actor_losss_entropy_estimate_respects_the_bound_of_a_hurdle_on_the_unit_square() -> None:
    """On [0, 1]² a hurdle density's entropy is at most 2·ln 2 (the zero/non-zero choices; a density on the unit
    interval has differential entropy ≤ 0). The actor loss's one-draw-per-configuration estimate, averaged over many
    states anywhere in the actor's range, must respect it (with wrong far-tail draws it averaged ~17 nats)."""
    g = torch.Generator().manual_seed(0)
    n = 20_000

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, 1, 2, generator=g, dtype=torch.float64)

    params = (torch.zeros(n, 1, dtype=torch.float64), uniform(-20.0, 20.0), uniform(common.MU_MIN, common.MU_MAX),
              uniform(common.LOG_STD_MIN, common.LOG_STD_MAX))
    y, log_p = cql.enumerate_actions(params, g)
    entropy = -(log_p.exp() * cql.log_prob_rows(params, y)).sum(-1)
    assert float(entropy.mean()) <= 2 * math.log(2.0)
    assert torch.isfinite(entropy).all()


def test_same_seed_same_weights(logged: tuple) -> None:
    a, ma, _, _ = _fit(logged, seed=4, steps=20)
    b, mb, _, _ = _fit(logged, seed=4, steps=20)
    for (k, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), k
    assert ma["loss/td"] == mb["loss/td"]


@pytest.mark.parametrize("hidden", [(64, 32), (48,), (16, 24, 32)])
@pytest.mark.parametrize(("precision", "tolerance"), [("float32", 1e-5), ("bfloat16", 0.02)])
def test_the_fused_critic_matches_autograd_over_the_same_layers(precision: str, tolerance: float,
                                                                hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    dtype = getattr(torch, precision)
    low = cql.CriticEnsemble(6, hidden, 3, torch.Generator().manual_seed(1), precision)
    x = torch.randn(1100, 6, requires_grad=True)  # the float32 head reads low precision in chunks: 2 and a remainder
    weight = torch.rand(3, 1100)

    def reference(x: torch.Tensor) -> torch.Tensor:  # the same layers through plain autograd
        out = []
        for e in range(3):
            h = x.to(dtype)
            for w, b in zip(low.weights[:-1], low.biases[:-1]):
                h = torch.relu(nn.functional.linear(h, w[e].to(dtype), b[e].to(dtype)))
            out.append(nn.functional.linear(h.float(), low.weights[-1][e], low.biases[-1][e]).squeeze(-1))
        return torch.stack(out)

    grads = []
    for fn in (low, reference):
        low.zero_grad()
        x.grad = None
        q = fn(x)
        (q * weight).sum().backward()
        grads.append((q.detach(), x.grad.clone(), [p.grad.clone() for p in low.parameters()]))
    (q_new, gx_new, gp_new), (q_ref, gx_ref, gp_ref) = grads
    torch.testing.assert_close(q_new, q_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip([gx_new, *gp_new], [gx_ref, *gp_ref]):
        assert float((a - b).norm() / b.norm()) < tolerance  # rounding of the gradients, nothing more
    # frozen: gradients reach the input only
    low.zero_grad(set_to_none=True)
    x.grad = None
    low(x, frozen=True).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in low.parameters())


def test_returns_to_go_restart_at_each_stay() -> None:
    rew = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0])
    done = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(cql.returns_to_go(rew, done, 0.5).numpy(), [1 + 0.5 * (2 + 0.5 * 3), 2 + 0.5 * 3, 3,
                                                                          10 + 0.5 * 20, 20])
    costs = torch.stack([rew, -rew], dim=1)
    np.testing.assert_allclose(cql.returns_to_go(costs, done, 1.0).numpy()[:, 1], [-6, -5, -3, -30, -20])


def test_warm_started_critics_read_the_logged_returns_at_the_start_states(logged: tuple) -> None:
    frame, data = logged
    critic = cql.CriticEnsemble(4, (32, 32), 4, torch.Generator().manual_seed(0))
    mse = cql.warm_start_critics(critic, data, 2, 600, 64, 3e-3, 1.0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        q0 = critic(torch.cat([data.obs_n[data.starts], data.y[data.starts]], dim=1)).mean(dim=1).numpy()
    per_stay = frame.groupby("stay_key", sort=False)[["reward", *COSTS]].sum().mean().to_numpy()
    np.testing.assert_allclose(q0, per_stay[[0, 0, 1, 2]], atol=0.15 * np.abs(per_stay).max())
    assert np.isfinite(mse)
    _, metrics, _, _ = _fit(logged, steps=20, constrained=True, critic_warm_start=50)
    assert np.isfinite(metrics["train/critic_warm_start_mse"])


def test_auto_precision_picks_bfloat16_only_with_amx(logged: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cql.resolve_precision("float32") == "float32" and cql.resolve_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cql.resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cql.resolve_precision("auto") == "float32"
    _, metrics, _, _ = _fit(logged, steps=100, precision="auto")  # the choice the run made is in its metrics
    assert metrics["train/bfloat16_critics"] == 0.0


@pytest.mark.parametrize(("key", "value", "match"), [
    ("critic_warm_start", -1, "critic_warm_start must be ≥ 0"), ("alpha", -1.0, "alpha must be ≥ 0"), ("tau", 0.0, "tau must lie in"), ("n_action_samples", 0, "n_action_samples"),
    ("precision", "float16", "precision"), ("cost_margin", 1.0, r"cost_margin must lie in \[0, 1\)"),
    ("cost_check_every", -1, "cost_check_every must be ≥ 0"), ("cost_check_every", 5, "needs constrained: true"), ("cost_check_stays", 0, "cost_check_stays"), ("nonsense", 1, r"unknown key\(s\) policies.algorithms.cql.nonsense"),
])
def test_bad_params_are_one_line_errors(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        build(cql.Config, {key: value}, "policies.algorithms.cql")
    assert "\n" not in str(err.value)
