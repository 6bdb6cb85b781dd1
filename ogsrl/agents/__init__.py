"""Agents: the learner framework and one file per algorithm.

* :mod:`ogsrl.agents.algorithms` — ``ALGORITHMS``, algorithm name → (Config, fit, load, needs_world_model).
* :mod:`ogsrl.agents.inputs` — ``TrainInputs`` (what every ``fit`` receives) and ``FitResult``.
* :mod:`ogsrl.agents.actor` — the shared served actor (``HurdleActor``, ``SavedPolicy``), the guardian fallback
  (``GuardedPolicy``) and :func:`load_policy`, which reads any saved policy by the ``kind`` in its config.json.
* :mod:`ogsrl.agents.binned` — ``BinnedPolicy``, the served policy over the 5 × 5 action bins (discrete CQL).
* Algorithms, one file each: :mod:`~ogsrl.agents.bc`, :mod:`~ogsrl.agents.cpo`, :mod:`~ogsrl.agents.ppo_lag`,
  :mod:`~ogsrl.agents.cql`, :mod:`~ogsrl.agents.cql_discrete`.
* :mod:`ogsrl.agents.stage` — the ``train_policies`` stage: params ``policies`` (runs × seeds) → checkpoints.
"""

from __future__ import annotations

from ogsrl.agents.actor import POLICY_LOADERS, load_policy

__all__ = ["POLICY_LOADERS", "load_policy"]
