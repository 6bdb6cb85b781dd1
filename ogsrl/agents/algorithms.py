"""``ALGORITHMS``: the one explicit table of trainable algorithms.

Each algorithm module exports a frozen ``Config`` dataclass (its hyper-parameters, params
``policies.algorithms.<name>``), ``fit(config, inputs: TrainInputs, seed) -> FitResult`` and ``load(path)``; a new
algorithm is one line here. ``needs_world_model`` says whether ``fit`` calls ``inputs.make_env`` (the train stage
then requires the run's state set to be the world model's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ogsrl.agents import bc, cpo, cql, cql_discrete, ppo_lag
from ogsrl.agents.inputs import FitResult, TrainInputs


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One trainable algorithm."""

    config: type
    """its frozen Config dataclass"""
    fit: Callable[[Any, TrainInputs, int], FitResult]
    """fit(config, inputs, seed) → FitResult"""
    load: Callable[[str | Path], Any]
    """reads a checkpoint it saved"""
    needs_world_model: bool
    """trains inside the world-model environment"""


ALGORITHMS: dict[str, Algorithm] = {
    "bc": Algorithm(bc.Config, bc.fit, bc.load, needs_world_model=False),
    "trpo": Algorithm(cpo.Config, cpo.fit_trpo, cpo.load, needs_world_model=True),
    "cpo": Algorithm(cpo.Config, cpo.fit, cpo.load, needs_world_model=True),
    "ppo_lag": Algorithm(ppo_lag.Config, ppo_lag.fit, ppo_lag.load, needs_world_model=True),
    "cql": Algorithm(cql.Config, cql.fit, cql.load, needs_world_model=False),
    "cql_discrete": Algorithm(cql_discrete.Config, cql_discrete.fit, cql_discrete.load, needs_world_model=False),
}
"""algorithm name → record"""
