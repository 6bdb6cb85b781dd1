"""Agents: one file per algorithm, all sharing the :class:`ogsrl.policy.Policy` interface.

``POLICY_LOADERS`` is the one explicit registry: a checkpoint's ``config.json`` names its ``kind``, and
:func:`load_policy` dispatches on it. A new agent adds one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ogsrl.agents import bc, common
from ogsrl.policy import StochasticPolicy

POLICY_LOADERS: dict[str, Callable[[str | Path], StochasticPolicy]] = {
    bc.KIND: bc.BCPolicy.load,
}
"""checkpoint kind → loader"""


def load_policy(path: str | Path) -> StochasticPolicy:
    """Load any saved policy directory by the ``kind`` in its config.json."""
    kind = common.read_checkpoint_config(path)["kind"]
    if kind not in POLICY_LOADERS:
        raise ValueError(f"{path}: unknown policy kind {kind!r}; known: {sorted(POLICY_LOADERS)}")
    return POLICY_LOADERS[kind](path)


__all__ = ["POLICY_LOADERS", "load_policy"]
