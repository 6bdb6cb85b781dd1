"""Components of a bundle loaded by name: ``"package.module:function"`` specs, the guardian and the cost model.

Policies, guardians and cost models are loaded by the functions ``bundle.json`` names, never unpickled; this module
holds the resolver and the default guardian and cost-model loaders.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np


def resolve_loader(spec: str) -> Any:
    """Import ``"package.module:function"`` and return the function."""
    if ":" not in spec:
        raise ValueError(f"loader {spec!r} must look like 'package.module:function'")
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {spec!r}: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"loader {spec!r} is not callable")
    return fn


def load_guardian(path: Path) -> Any:
    """Load a saved guardian directory by the ``kind`` in its guardian.json (christoffel | kde).

    Also accepts the ``calibrate_guardian`` stage's directory (``christoffel/``, ``kde/`` and a top-level
    ``certificate.json``): the guardian whose ``method`` the top-level certificate names is loaded.
    """
    from ogsrl.guardian.christoffel import ChristoffelGuardian
    from ogsrl.guardian.kde import KDEGuardian

    loaders = {"christoffel": ChristoffelGuardian.load, "kde": KDEGuardian.load}
    path = Path(path)
    cert_path = path / "certificate.json"
    if not (path / "guardian.json").is_file() and cert_path.is_file():
        # the calibrate_guardian layout: christoffel/ and kde/ side by side, certificate.json names the one in use
        method = json.loads(cert_path.read_text(encoding="utf-8")).get("method")
        if isinstance(method, str) and (path / method / "guardian.json").is_file():
            path = path / method
    meta_path = path / "guardian.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no guardian at {path} (missing guardian.json)")
    kind = json.loads(meta_path.read_text(encoding="utf-8")).get("kind")
    if kind not in loaders:
        raise ValueError(f"{meta_path}: unknown guardian kind {kind!r}; known: {sorted(loaders)}")
    return loaders[kind](path)


def certified_guardian_dir(path: Path) -> Path:
    """The directory of the guardian the certificate is about: ``path`` itself when it holds guardian.json, else
    (the calibrate_guardian layout) the sub-directory named by the top-level certificate's ``method``."""
    path = Path(path)
    if (path / "guardian.json").is_file():
        return path
    method = json.loads((path / "certificate.json").read_text(encoding="utf-8")).get("method")
    if not isinstance(method, str) or not (path / method / "guardian.json").is_file():
        raise FileNotFoundError(f"{path}: certificate.json names method {method!r}, but {path}/{method}/guardian.json "
                                "does not exist")
    return path / method


class WorldCostModel:
    """Predicted costs from the world model: P(cost = 1 in the next step | s, a), averaged over elite members."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.feature_names: tuple[str, ...] = tuple(world.layout.state_features)
        self.cost_names: tuple[str, ...] = tuple(world.layout.cost_names)

    def predict_costs(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """``(B, C)`` probabilities for states ``obs (B, S)`` and actions ``act (B, A)``."""
        pred = self.world.predict(obs, act)
        return np.asarray(pred.cost_prob[self.world.elites], dtype=np.float64).mean(axis=0)  # (E', B, C) → (B, C)


def load_cost_model(path: Path) -> WorldCostModel:
    """Load a saved world model directory as a cost model."""
    from ogsrl.world.ensemble import WorldModel

    return WorldCostModel(WorldModel.load(Path(path)))
