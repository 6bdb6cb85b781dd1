"""World model: a probabilistic ensemble of (state, action) → next state, reward, costs, death and discharge, and the
batched gymnasium environment the policy trainers roll out in. See docs/world-model.md."""

from ogsrl.world.data import Layout, Transitions
from ogsrl.world.ensemble import EnsembleConfig, Prediction, StepSample, WorldModel
from ogsrl.world.env import EnvConfig, Rollout, WorldModelEnv, rollout, start_states, steps_left

__all__ = [
    "EnsembleConfig", "EnvConfig", "Layout", "Prediction", "Rollout", "StepSample", "Transitions", "WorldModel",
    "WorldModelEnv", "rollout", "start_states", "steps_left",
]
