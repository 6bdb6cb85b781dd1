"""OOD guardians: support sets in (state, action) space with a coverage certificate.

``ChristoffelGuardian`` (SOS / empirical Christoffel function, conformal threshold) is the pipeline's guardian;
``KDEGuardian`` is the OGSRL authors' baseline. Both follow :class:`ogsrl.guardian.base.Guardian`; :func:`load`
reads either from a saved directory.
"""

from __future__ import annotations

import json
from pathlib import Path

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


__all__ = [
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
