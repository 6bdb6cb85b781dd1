"""How far a policy lives outside the logged data: the share of its own (state, action) pairs a guardian rejects.

The promotion gate refuses a candidate whose share exceeds ``registry.gate.max_support_reject_share``; the evaluate
stage measures the same share for every policy it scores, so the report can say which estimates describe a policy
inside the data's support. Off-policy estimates of policies outside it are extrapolations (on the demo benchmark
their intervals covered the truth far less often: docs/policies-and-ope.md, sessions 35 – 36).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ogsrl import features
from ogsrl.errors import DataError


def own_policy(policy: Any) -> Any:
    """The policy's own actor: a guarded policy (``policy`` + ``fallback``) without its guardian fallback."""
    inner = getattr(policy, "policy", None)
    return inner if inner is not None and hasattr(policy, "fallback") else policy


def reject_share(policy: Any, guardian: Any, states: pd.DataFrame, seed: int, table: str = "test.parquet") -> float:
    """Share of the policy's own (state, action) pairs on ``states`` that ``guardian`` rejects.

    One action per row of ``states`` (the policy's own actor, not its fallback: a guarded policy's served actions
    pass by construction), drawn with a generator seeded by ``seed``; the guardian reads its state columns from
    ``states`` and its action columns from the drawn actions. ``table`` names ``states`` in errors.
    """
    own = own_policy(policy)
    acts = tuple(getattr(own, "action_columns", features.ACTIONS))
    state_cols = [c for c in guardian.feature_names if c not in acts]
    missing = [c for c in (*own.feature_names, *state_cols) if c not in states.columns]
    if missing:
        raise DataError(f"support check: the table lacks column(s) {sorted(set(missing))} that the policy or "
                        "guardian reads", table=table)
    if states.empty:
        raise DataError("support check: the table has no rows", table=table)
    act = np.asarray(own.act(states[list(own.feature_names)].to_numpy(np.float64), np.random.default_rng(seed)),
                     dtype=np.float64).reshape(len(states), -1)
    return rejected_share(guardian, states, {a: act[:, j] for j, a in enumerate(acts)})


def logged_reject_share(guardian: Any, logged: pd.DataFrame, table: str = "test.parquet") -> float:
    """Share of the logged (state, action) pairs of ``logged`` that ``guardian`` rejects: the reference level of
    :func:`reject_share` (nominally 1 − α_c of the guardian's certificate, per row rather than per stay)."""
    missing = [c for c in guardian.feature_names if c not in logged.columns]
    if missing:
        raise DataError(f"support check: the table lacks column(s) {missing} that the guardian reads", table=table)
    if logged.empty:
        raise DataError("support check: the table has no rows", table=table)
    return rejected_share(guardian, logged, {})


def rejected_share(guardian: Any, states: pd.DataFrame, actions: dict[str, np.ndarray]) -> float:
    """1 − the share of rows whose (state, action) point the guardian contains; ``actions`` replace the columns
    of ``states`` of the same name."""
    point = np.column_stack([actions[c] if c in actions else states[c].to_numpy(np.float64)
                             for c in guardian.feature_names])
    return float(1.0 - np.asarray(guardian.contains(point), dtype=bool).mean())
