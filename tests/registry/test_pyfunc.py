"""The bundle as an MLflow pyfunc: its signature and the logged model's round trip (nothing pickled)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl.registry import bundle as bundle_mod  # noqa: E402
from ogsrl.registry import pyfunc, recommender  # noqa: E402
from tests.registry.bundles import states as _states  # noqa: E402


def test_signature_columns() -> None:
    sig = pyfunc.signature(fakes.STATE)
    inputs = {c.name: c.required for c in sig.inputs.inputs}
    assert [n for n, req in inputs.items() if req] == list(fakes.STATE)
    assert inputs["weight"] is False
    assert [c.name for c in sig.outputs.inputs] == list(recommender.OUTPUT_COLUMNS)


def test_pyfunc_round_trip(tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = pyfunc.log_bundle(bundle)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    states = _states(spo2=[97.0, 140.0], weight=[70.0, 80.0])
    got = loaded.predict(states)
    want = bundle_mod.load_bundle(bundle).recommend(states)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want)
    assert got.loc[1, "defer_to_clinician"] and "spo2=140" in got.loc[1, "reason"]
    # nothing pickled: the model directory holds the generated code file, not a python_model.pkl
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    assert not list(local.rglob("*.pkl")) and list(local.rglob("ogsrl_pyfunc.py"))
