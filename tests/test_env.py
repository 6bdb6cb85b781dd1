"""ogsrl.env: offline defaults, never overriding what the user set."""

from __future__ import annotations

from pathlib import Path

from ogsrl import env


def test_defaults_keep_all_state_under_the_project(tmp_path: Path) -> None:
    values = env.defaults(tmp_path)
    assert values["PREFECT_HOME"] == str(tmp_path.resolve() / ".prefect")
    assert values["DVC_SITE_CACHE_DIR"] == str(tmp_path.resolve() / ".dvc" / "site-cache")
    assert values["MLFLOW_DISABLE_TELEMETRY"] == "true"  # MLflow accepts only "true"
    assert values["DVC_NO_ANALYTICS"] == "1"
    assert values["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert values["DO_NOT_TRACK"] == "true"
    assert int(values["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) > 20


def test_setdefaults_never_overrides_existing_values(tmp_path: Path) -> None:
    environ = {"PREFECT_HOME": "/elsewhere", "DO_NOT_TRACK": "false"}
    applied = env.setdefaults(tmp_path, environ)
    assert environ["PREFECT_HOME"] == "/elsewhere"
    assert environ["DO_NOT_TRACK"] == "false"
    assert "PREFECT_HOME" not in applied
    assert set(applied) == set(env.defaults(tmp_path)) - {"PREFECT_HOME", "DO_NOT_TRACK"}
    assert all(environ[k] == v for k, v in applied.items())
