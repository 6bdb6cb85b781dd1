"""Real HTTP requests against the local recommendation server (bound to 127.0.0.1 on a free port)."""

from __future__ import annotations

import http.client
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fakes are loaded by name: `ogsrl_fakes:load_policy`
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl.config import ConfigError, build  # noqa: E402
from ogsrl.registry import bundle as bundle_mod, stage  # noqa: E402
from ogsrl.serve import server as srv  # noqa: E402

OK = {"gcs": 15, "spo2": 97, "fluid_cum": 1000}


def _start(recommender: Any, **cfg: Any) -> tuple[Any, threading.Thread]:
    s = srv.make_server(recommender, srv.ServeConfig(port=0, **cfg), {"uri": "test"})
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    return s, t


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    root = tmp_path / "proj"
    fakes.make_project(root)
    bundle_mod.build_bundle(tmp_path / "bundle", policy_dir=root / "data/models/policies/soc/seed42",
                            guardian_dir=root / "data/models/guardian", cost_rules=[],
                            policy_loader="ogsrl_fakes:load_policy", guardian_loader="ogsrl_fakes:load_guardian",
                            cost_model_dir=root / "data/models/world", cost_model_loader="ogsrl_fakes:load_cost_model")
    rec, _ = srv.load_recommender(str(tmp_path / "bundle"), tmp_path)
    s, t = _start(rec, max_request_bytes=2048, max_rows=5)
    try:
        yield s.server_address[:2]
    finally:
        s.shutdown()
        s.server_close()
        t.join(timeout=5)
    assert not t.is_alive()


def _request(addr: tuple[str, int], method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(*addr, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def _post(addr: tuple[str, int], payload: Any) -> tuple[int, Any]:
    return _request(addr, "POST", "/recommend", json.dumps(payload).encode())


def test_bound_to_loopback(server: tuple[str, int]) -> None:
    assert server[0] == "127.0.0.1"
    assert _request(server, "GET", "/health") == (200, {"status": "ok"})
    status, meta = _request(server, "GET", "/metadata")
    assert status == 200 and [f["name"] for f in meta["state_features"]] == list(fakes.STATE)
    assert meta["state_features"][1] == {"name": "spo2", "unit": "%", "low": 50, "high": 100}


def test_actions_for_in_support_and_deferral_otherwise(server: tuple[str, int]) -> None:
    states = [OK, {**OK, "spo2": 80}, {**OK, "spo2": 140}, {**OK, "weight": -3}]
    status, body = _post(server, {"states": states, "units": {"spo2": "%"}})
    assert status == 200
    p = body["predictions"]
    assert p[0] == {"action": {"fluid_ml": 110.0, "nee_max": 1.5}, "in_guardian": True,
                    "predicted_costs": {"cost_spo2_low": pytest.approx(0.06)}, "defer_to_clinician": False,
                    "reason": ""}
    # plausible but outside the guardian's support
    assert p[1]["in_guardian"] is False and p[1]["defer_to_clinician"] is True
    assert "outside the guardian" in p[1]["reason"]
    # implausible values: SpO2 140, negative weight → no action
    assert p[2]["action"] is None and p[2]["defer_to_clinician"] and "implausible spo2=140" in p[2]["reason"]
    assert p[2]["predicted_costs"] is None and p[1]["predicted_costs"] == {"cost_spo2_low": pytest.approx(0.4)}
    assert p[3]["action"] is None and p[3]["defer_to_clinician"] and "implausible weight=-3" in p[3]["reason"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"states": [{"gcs": 15,', 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b'[{"gcs": 15}]', 400, "body must be an object"),
        (b'{"states": []}', 400, "states is empty"),
        (b'{"states": [{"gcs": "high"}]}', 400, "must be a number"),
        (b'{"states": [{"gcs": 15}], "extra": 1}', 400, "unknown top-level"),
        (json.dumps({"states": [{"gcs": 15, "spo2": 97}]}).encode(), 422, "missing state feature column"),
        (json.dumps({"states": [OK], "units": {"spo2": "fraction"}}).encode(), 422, "unit mismatch"),
        (json.dumps({"states": [OK] * 6}).encode(), 413, "at most 5"),
        (json.dumps({"states": [OK] * 100}).encode(), 413, "at most 2048"),
    ],
    ids=["truncated", "not-utf8", "list", "empty", "string-value", "extra-key", "missing-column", "unit",
         "too-many-rows", "too-many-bytes"],
)
def test_bad_requests_get_4xx_and_server_survives(server: tuple[str, int], body: bytes, status: int,
                                                  message: str) -> None:
    got, err = _request(server, "POST", "/recommend", body)
    assert got == status and message in err["error"]
    assert _post(server, {"states": [OK]})[0] == 200


def test_unknown_path_and_missing_length(server: tuple[str, int]) -> None:
    assert _request(server, "GET", "/nope")[0] == 404
    assert _request(server, "POST", "/nope", b"{}")[0] == 404
    conn = http.client.HTTPConnection(*server, timeout=10)
    conn.putrequest("POST", "/recommend")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


def test_config_refuses_remote_bind_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="not loopback"):
        build(srv.ServeConfig, {"host": "0.0.0.0"}, "serve")
    assert build(srv.ServeConfig, {"host": "0.0.0.0", "allow_remote": True}, "serve").host == "0.0.0.0"
    with pytest.raises(ConfigError, match="max_rows"):
        build(srv.ServeConfig, {"max_rows": 0}, "serve")


def test_serves_the_registered_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = tmp_path / "proj"
    params = fakes.make_project(root)
    stage.run(params, root)
    params["serve"] = {"port": 0}
    s, cfg = srv.build_server(params, root)
    assert cfg.model_uri == "models:/ogsrl-policy@champion" and s.server_address[0] == "127.0.0.1"
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    try:
        status, body = _post(s.server_address[:2], {"states": [OK, {**OK, "spo2": 140}]})
        meta = _request(s.server_address[:2], "GET", "/metadata")[1]
    finally:
        s.shutdown()
        s.server_close()
        t.join(timeout=5)
    assert not t.is_alive()
    assert status == 200 and body["model"]["uri"] == "models:/ogsrl-policy@champion" and body["model"]["run_id"]
    assert body["predictions"][0]["action"] == {"fluid_ml": 110.0, "nee_max": 1.5}
    assert body["predictions"][0]["predicted_costs"] == {"cost_spo2_low": pytest.approx(0.06)}
    assert body["predictions"][1]["defer_to_clinician"] is True
    assert meta["guardian"]["alpha_c"] == 0.95
    with pytest.raises(ValueError, match=r"cannot resolve models:/ogsrl-policy@nope: .*has @champion \(version 1\)"):
        srv.build_server({**params, "serve": {"port": 0, "model_uri": "models:/ogsrl-policy@nope"}}, root)
