"""The policy interface every component shares: training stages save policies, `ogsrl truth` runs them in the
simulator, OPE scores them on logged data, and serving recommends with them.

A policy maps a batch of observed states (columns = ``feature_names``, in the units of ``ogsrl.features``) to a batch
of actions in physical units: ``[:, 0]`` IV fluid mL per step, ``[:, 1]`` max NE-equivalent dose µg/kg/min.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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


UNREADABLE = (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError, json.JSONDecodeError)
"""What a corrupt or inconsistent checkpoint raises inside a loader (torch, json, a state dict of the wrong shape)."""


def load_checked(loader: Callable[[Path], Any], path: str | Path, what: str = "policy") -> Any:
    """``loader(path)``, with a corrupt or inconsistent saved directory reported as one ValueError naming it (a
    missing file stays a FileNotFoundError, which names the file)."""
    try:
        return loader(Path(path))
    except FileNotFoundError:
        raise
    except UNREADABLE as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{what} at {path}: its config.json / weights cannot be loaded (corrupt, or the files "
                         f"disagree): {type(exc).__name__}: {first}") from exc
