"""The registry stage points MLflow at its project only while a call runs (``stage.mlflow_uris_restored``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl.registry import stage  # noqa: E402


def test_register_leaves_the_callers_mlflow_uris_as_they_were(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    other = f"sqlite:///{(tmp_path / 'other.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    root = tmp_path / "proj"
    params = fakes.make_project(root)
    reg = stage.register(params, root)
    own = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    assert reg["tracking_uri"] == own and reg["version"] == "1"
    assert os.environ["MLFLOW_TRACKING_URI"] == other and "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() == other and mlflow.get_registry_uri() == other
    assert str(mlflow.MlflowClient(own, own).get_model_version_by_alias("ogsrl-policy", "challenger").version) == "1"


def test_the_uris_come_back_after_an_error_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///registry-of-the-caller.db")
    before = mlflow.get_tracking_uri()
    with pytest.raises(RuntimeError, match="boom"), stage.mlflow_uris_restored():
        mlflow.set_tracking_uri("sqlite:///inside.db")
        mlflow.set_registry_uri("sqlite:///inside.db")
        raise RuntimeError("boom")
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() == before
    assert os.environ["MLFLOW_REGISTRY_URI"] == "sqlite:///registry-of-the-caller.db"
    assert mlflow.get_registry_uri() == "sqlite:///registry-of-the-caller.db"
