"""Loading bundle components by name, the default guardian loader, and the names earlier model versions use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ogsrl.registry import loaders


def test_load_guardian_dispatches_on_kind(tmp_path: Path) -> None:
    from ogsrl.guardian.christoffel import ChristoffelConfig, ChristoffelGuardian
    from ogsrl.guardian.conformal import CalibrationConfig

    rng = np.random.default_rng(0)
    g = ChristoffelGuardian(("a", "b"), ChristoffelConfig(degree=2), CalibrationConfig(rule="conformal", unit="row"))
    g.fit(rng.normal(size=(400, 2))).calibrate(rng.normal(size=(200, 2)))
    g.save(tmp_path / "g")
    loaded = loaders.load_guardian(tmp_path / "g")
    x = rng.normal(size=(50, 2)) * 3
    assert isinstance(loaded, ChristoffelGuardian)
    np.testing.assert_array_equal(loaded.contains(x), g.contains(x))
    (tmp_path / "g/guardian.json").write_text(json.dumps({"kind": "box"}))
    with pytest.raises(ValueError, match="unknown guardian kind 'box'"):
        loaders.load_guardian(tmp_path / "g")


def test_names_of_models_registered_before_the_split_still_resolve() -> None:
    """A bundle.json of an earlier version names ``ogsrl.registry.model:load_guardian``; an MLflow entry script of
    one imports ``OgsrlPolicyModel`` from ``ogsrl.registry.model``."""
    from ogsrl.registry import model as legacy
    from ogsrl.registry import pyfunc

    assert loaders.resolve_loader("ogsrl.registry.model:load_guardian") is loaders.load_guardian
    assert loaders.resolve_loader("ogsrl.registry.model:load_cost_model") is loaders.load_cost_model
    assert legacy.OgsrlPolicyModel is pyfunc.OgsrlPolicyModel
    assert "from ogsrl.registry.pyfunc import OgsrlPolicyModel" in pyfunc.MODEL_CODE
