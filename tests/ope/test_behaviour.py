"""The behaviour-density estimate conditions on every extracted feature, not only the state subset."""

from __future__ import annotations

import numpy as np
import pytest

from ogsrl import features
from ogsrl.agents import bc, common
from ogsrl.agents.bc import batch_of
from ogsrl.ope import behaviour
from tests.agents.trajectory_fakes import STATE, make_split, true_behaviour

CFG = bc.Config(hidden=(16, 16), batch_size=64, max_epochs=30, patience=5, lr=3e-3)


def test_behaviour_features_in_canonical_order() -> None:
    assert behaviour.behaviour_features(["spo2", "stay_key", "age", "map", "next_map"]) == ("age", "spo2", "map")
    with pytest.raises(ValueError, match="none of the canonical"):
        behaviour.behaviour_features(["stay_key", "reward"])


def test_fit_behaviour_uses_all_features_and_beats_a_state_only_density() -> None:
    rng = np.random.default_rng(5)
    train, val, test = (make_split(n, 5, rng, s) for s, n in (("train", 300), ("val", 60), ("test", 100)))
    model, metrics = behaviour.fit_behaviour(CFG, train, val, 0)
    assert model.feature_names == features.ALL and metrics["features"] == len(features.ALL)
    # fluids follow MAP, which is not a state column: the state-only clone cannot explain them
    state_only, _, _ = bc.fit_actor(CFG, STATE, batch_of(train, STATE), batch_of(val, STATE), 0)
    acts = test[list(features.ACTIONS)].to_numpy()
    ll_b = model.log_prob(test[list(model.feature_names)].to_numpy(), acts).mean()
    ll_s = state_only.log_prob(test[list(STATE)].to_numpy(), acts).mean()
    ll_true = common.hurdle_log_prob(*true_behaviour(test), acts).mean()
    assert ll_b > ll_s + 0.3
    assert ll_b > ll_true - 0.3  # close to the true clinicians' log-likelihood


def test_fit_behaviour_needs_the_same_columns_in_val() -> None:
    rng = np.random.default_rng(6)
    train, val = make_split(10, 2, rng, "train"), make_split(5, 2, rng, "val")
    with pytest.raises(ValueError, match="val lacks feature columns \\['lactate'\\]"):
        behaviour.fit_behaviour(CFG, train, val.drop(columns="lactate"), 0)


def test_logistic_behaviour_recovers_known_propensities_and_round_trips(tmp_path) -> None:
    """Discrete actions: the calibrated classifier's π̂_b(a|x) matches the MDP clinicians' softmax."""
    import numpy as np
    import pandas as pd

    from ogsrl.agents.common import DiscreteSpace
    from ogsrl.ope.behaviour import LogisticBehaviour
    from ogsrl.synth import tabular as T

    space = DiscreteSpace("treatment", 4, T.LABELS)
    rng = np.random.default_rng(0)

    def logged(n: int) -> pd.DataFrame:
        obs = T.observe(rng.integers(0, 2, n), rng.integers(1, 5, n), rng.standard_normal((n, 2)))
        return pd.DataFrame({**dict(zip(T.STATE, obs.T)), "treatment": T.rng_choice(T.clinician_probs(obs), rng)})

    train, val = logged(6000), logged(2000)
    model, metrics = LogisticBehaviour.fit(T.STATE, space, train, val, seed=0)
    probe = val[list(T.STATE)].to_numpy()[:500]
    assert np.abs(model.probs(probe) - T.clinician_probs(probe)).max() < 0.06
    assert 0.7 < metrics["calibration/temperature"] < 1.4  # a well-specified model needs little rescaling
    assert metrics["loss/val_nll"] <= metrics["loss/val_nll_uncalibrated"] + 1e-9
    model.save(tmp_path / "b")
    back = LogisticBehaviour.load(tmp_path / "b")
    ids = val[["treatment"]].to_numpy()[:500]
    assert np.allclose(back.log_prob(probe, ids), model.log_prob(probe, ids))
    assert back.action_columns == ("treatment",)
