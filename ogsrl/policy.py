"""The policy interface every component shares: training stages save policies, `ogsrl truth` runs them in the
simulator, OPE scores them on logged data, and serving recommends with them.

A policy maps a batch of observed states (columns = ``feature_names``, in the units of ``ogsrl.features``) to a batch
of actions in physical units: ``[:, 0]`` IV fluid mL per step, ``[:, 1]`` max NE-equivalent dose µg/kg/min.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


@runtime_checkable
class Policy(Protocol):
    """Observed-state batch ``(B, S)`` → action batch ``(B, 2)``."""

    feature_names: tuple[str, ...]
    """state columns the policy reads, in order"""

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        """Actions ``(B, 2)`` for states ``obs (B, S)``; a stochastic policy samples with ``rng``. With ``rng`` None a
        simple policy acts deterministically (its mode/mean); a trained, served policy
        (:class:`ogsrl.agents.actor.SavedPolicy`) follows its ``act_mode`` and samples from its own seeded generator."""
        ...


@runtime_checkable
class StochasticPolicy(Policy, Protocol):
    """A policy with a tractable density, as off-policy evaluation needs."""

    def log_prob(self, obs: FloatArray, actions: FloatArray) -> FloatArray:
        """``log π(a | s)`` per row, shape ``(B,)``, for actions in physical units."""
        ...
