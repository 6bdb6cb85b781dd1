"""OOD guardians: support sets in (state, action) space with a coverage certificate.

``ChristoffelGuardian`` (SOS / empirical Christoffel function, conformal threshold) is the pipeline's guardian;
``KDEGuardian`` is the OGSRL authors' baseline. Both follow :class:`ogsrl.guardian.base.Guardian`; :func:`load`
reads either from a saved directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ogsrl.guardian.base import Guardian, GuardianCertificate
from ogsrl.guardian.christoffel import ChristoffelConfig, ChristoffelGuardian
from ogsrl.guardian.conformal import CalibrationConfig
from ogsrl.guardian.kde import KDEConfig, KDEGuardian
from ogsrl.guardian.scaling import ScalingConfig

KINDS: dict[str, type[ChristoffelGuardian] | type[KDEGuardian]] = {
    ChristoffelGuardian.kind: ChristoffelGuardian,
    KDEGuardian.kind: KDEGuardian,
}
"""guardian.json ``kind`` → class."""


def load(path: str | Path, feature_names: tuple[str, ...] | list[str] | None = None) -> Guardian:
    """Load a saved guardian of either kind; ``feature_names``, when given, must match the fitted columns."""
    meta_path = Path(path) / "guardian.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no guardian at {path} (missing guardian.json)")
    kind = json.loads(meta_path.read_text(encoding="utf-8")).get("kind")
    if kind not in KINDS:
        raise ValueError(f"{meta_path}: unknown guardian kind {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind].load(path, feature_names)


def as_guard(
    guardian: Guardian, state_features: Sequence[str], action_names: Sequence[str] = ("fluid_ml", "nee_max")
) -> Callable[[npt.ArrayLike, npt.ArrayLike], npt.NDArray[np.bool_]]:
    """``guard(obs (B, S), act (B, A)) -> inside (B,)`` for the world-model env, reordering columns by name.

    ``state_features`` / ``action_names`` name the caller's obs / act columns; every guardian input must be among
    them (ValueError otherwise), extra caller columns are ignored.
    """
    have = [*state_features, *action_names]
    missing = [n for n in guardian.feature_names if n not in have]
    if missing:
        raise ValueError(f"guardian inputs {missing} are not among the caller's columns {have}")
    order = np.array([have.index(n) for n in guardian.feature_names], dtype=np.intp)

    def guard(obs: npt.ArrayLike, act: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        x = np.concatenate([np.asarray(obs, dtype=np.float64), np.asarray(act, dtype=np.float64)], axis=1)
        return guardian.contains(x[:, order])  # (B, S + A) → (B, D) in the guardian's column order

    return guard


__all__ = [
    "as_guard",
    "CalibrationConfig",
    "ChristoffelConfig",
    "ChristoffelGuardian",
    "Guardian",
    "GuardianCertificate",
    "KDEConfig",
    "KDEGuardian",
    "ScalingConfig",
    "load",
]
