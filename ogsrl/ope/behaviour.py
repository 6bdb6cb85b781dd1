"""Behaviour-density estimate π̂_b(a | x) for importance sampling.

The clinicians' density is estimated with the same hurdle-Gaussian family as the SOC policy
(:mod:`ogsrl.agents.bc`), fitted by maximum likelihood on the train split with early stopping on val. Unlike a
policy, it conditions on *every* extracted feature present in the table (``features.ALL``), not only the configured
state subset:

* Importance weights π_e(a|s) / π_b(a|x) are unbiased only if the logged action is independent of everything else
  given x (no unmeasured confounding of the action). Clinicians act on MAP, lactate, heart rate, creatinine, … that
  the 13-feature paper state leaves out; a density conditioned on the state alone averages over them and mis-states
  how likely each logged action was, biasing every OPE number.
* The target policy still reads only its own state columns; conditioning π̂_b on a superset is always allowed
  because π_e(a|s) is also a function of x ⊇ s.

The price is variance: the richer π̂_b is sharper than any policy that does not see x, so per-step ratios spread
more and the effective sample size drops (reported with each estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ogsrl import features
from ogsrl.agents import bc, common
from ogsrl.agents.actor import SavedPolicy


def behaviour_features(columns: Sequence[str], schema: Any = None) -> tuple[str, ...]:
    """The canonical features (``features.ALL`` order) present among ``columns``; for a bring-your-own table
    (``schema`` not canonical) every feature its schema declares."""
    if schema is not None and not schema.is_canonical:
        return tuple(schema.state_names)
    present = set(columns)
    names = tuple(f for f in features.ALL if f in present)
    if not names:
        raise ValueError("behaviour_features: the table holds none of the canonical feature columns")
    return names


def fit_behaviour(
    cfg: bc.Config, train: pd.DataFrame, val: pd.DataFrame, seed: int, schema: Any = None
) -> tuple[SavedPolicy, dict[str, float]]:
    """Fit π̂_b on all canonical feature columns of ``train`` (early stopping on ``val``; ``seed`` drives init and
    shuffling).

    Returns:
        (the density model, its fit metrics ``loss/train_nll``, ``loss/val_nll``, …).
    """
    names = behaviour_features(train.columns, schema)
    missing = [n for n in names if n not in val.columns]
    if missing:
        raise ValueError(f"fit_behaviour: val lacks feature columns {missing}")
    space = common.action_space_of(schema, "behaviour model")
    pol, metrics, _ = bc.fit_actor(cfg, names, bc.batch_of(train, names, space.columns),
                                   bc.batch_of(val, names, space.columns), seed, space)
    return pol, {**metrics, "features": float(len(names))}
