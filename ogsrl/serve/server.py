"""`ogsrl serve`: a small JSON-over-HTTP recommender on 127.0.0.1 (stdlib ``ThreadingHTTPServer``).

Endpoints::

    GET  /health      {"status": "ok"}
    GET  /metadata    model URI/version, state features with units and plausible ranges, guardian certificate
    POST /recommend   (also /invocations)  {"states": [{feature: value, ...}, ...], "units": {feature: unit}?}
                      → {"model": {...}, "predictions": [{"action": {"fluid_ml", "nee_max"} | null,
                         "in_guardian": bool | null, "predicted_costs": {cost: P(cost=1 next step)} | null,
                         "defer_to_clinician": bool,
                         "reason": str}, ...]}

Every row is range-checked against ``ogsrl.features`` (units as documented there; a client may declare its units
and is refused on a mismatch). Implausible or incomplete rows get no action and ``defer_to_clinician: true``;
rows whose (state, recommended action) falls outside the guardian's certified set keep the action for reference but
also defer. Errors: 400 malformed JSON or body shape, 404 unknown path, 411 no Content-Length, 413 body over
``serve.max_request_bytes`` or more than ``serve.max_rows`` rows, 422 missing state columns or unit mismatch.
Binding to a non-loopback address needs ``serve.allow_remote: true`` (there is no authentication).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ogsrl import config
from ogsrl.errors import DataError

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """The local recommendation server (params section `serve`)."""

    model_uri: str = "models:/ogsrl-policy@champion"
    """registered model to serve (models:/name@alias or models:/name/version), or a local bundle directory"""
    host: str = "127.0.0.1"
    """bind address; loopback only unless allow_remote"""
    port: int = 8765
    """TCP port (0 = any free port)"""
    allow_remote: bool = False
    """permit binding to a non-loopback address (the server has no authentication)"""
    max_request_bytes: int = 1_048_576
    """largest accepted request body in bytes (larger → 413)"""
    max_rows: int = 1000
    """most states per request (more → 413)"""
    request_timeout_s: float = 30.0
    """socket timeout per connection, seconds"""

    def __post_init__(self) -> None:
        if not self.model_uri.strip():
            raise ValueError("model_uri must be non-empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.host not in LOOPBACK and not self.allow_remote:
            raise ValueError(f"host {self.host!r} is not loopback; set allow_remote: true to expose the server")
        if self.max_request_bytes < 64:
            raise ValueError(f"max_request_bytes must be ≥ 64, got {self.max_request_bytes}")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be ≥ 1, got {self.max_rows}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")


class RequestError(Exception):
    """A client error with its HTTP status."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def parse_request(body: bytes, max_rows: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Decode and shape-check a /recommend body → (states, units)."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("states"), list):
        raise RequestError(HTTPStatus.BAD_REQUEST, 'body must be an object {"states": [{feature: value}, ...]}')
    unknown = sorted(set(payload) - {"states", "units"})
    if unknown:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown top-level key(s) {unknown}")
    states = payload["states"]
    if not states:
        raise RequestError(HTTPStatus.BAD_REQUEST, "states is empty")
    if len(states) > max_rows:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{len(states)} states; at most {max_rows}")
    for i, row in enumerate(states):
        if not isinstance(row, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"states[{i}] must be an object of feature: number")
        for k, v in row.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"states[{i}].{k} must be a number or null, got {v!r}")
    units = payload.get("units") or {}
    if not isinstance(units, dict) or not all(isinstance(v, str) for v in units.values()):
        raise RequestError(HTTPStatus.BAD_REQUEST, "units must be an object of feature: unit string")
    return states, units


def recommend_json(recommender: Any, states: list[dict[str, Any]], units: Mapping[str, str]) -> list[dict[str, Any]]:
    """Run the recommender on parsed states and shape the JSON predictions."""
    import pandas as pd

    from ogsrl.registry.recommender import COST_PREFIX

    recommender.check_units(units)
    frame = pd.DataFrame.from_records(states).astype("float64")
    out = recommender.recommend(frame)
    cost_cols = [c for c in out.columns if c.startswith(COST_PREFIX)]
    preds = []
    acts = list(getattr(recommender, "action_columns", ("fluid_ml", "nee_max")))
    labels = tuple(getattr(recommender, "action_labels", ()) or ())
    for i, row in enumerate(out.itertuples(index=False)):
        flag = row.in_guardian
        costs = {c[len(COST_PREFIX):]: _num(out[c].iat[i]) for c in cost_cols}
        action: dict[str, Any] | None
        if labels:  # a discrete action: id and label
            ident = out[acts[0]].iat[i]
            action = None if ident is None or ident is pd.NA else {"id": int(ident), "label": labels[int(ident)]}
        else:
            vals = {a: _num(out[a].iat[i]) for a in acts}
            action = None if any(v is None for v in vals.values()) else vals
        preds.append({
            "action": action,
            "in_guardian": None if flag is None or flag is pd.NA else bool(flag),
            "predicted_costs": costs if cost_cols and action is not None else None,
            "defer_to_clinician": bool(row.defer_to_clinician),
            "reason": str(row.reason),
        })
    return preds


def make_server(recommender: Any, cfg: ServeConfig, model_info: Mapping[str, Any]) -> ThreadingHTTPServer:
    """Build (not start) the HTTP server; ``server.server_address`` tells the bound port."""
    meta = {
        "model": dict(model_info),
        "state_features": [
            {"name": n, **{k: recommender.ranges[n][k] for k in ("unit", "low", "high")}}
            for n in recommender.state_features
        ],
        "action_units": recommender.manifest.get("action_units"),
        **({"action_labels": recommender.manifest["action_labels"]}
           if recommender.manifest.get("action_labels") else {}),
        "guardian": recommender.manifest.get("certificate"),
        "limits": {"max_request_bytes": cfg.max_request_bytes, "max_rows": cfg.max_rows},
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "ogsrl-serve"
        timeout = cfg.request_timeout_s

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: HTTPStatus, obj: Any) -> None:
            body = json.dumps(obj, allow_nan=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status >= 400:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, {"error": message, "status": int(status)})

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok"})
            elif self.path == "/metadata":
                self._send(HTTPStatus.OK, meta)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"unknown path {self.path}")

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            if self.path not in ("/recommend", "/invocations"):
                self._error(HTTPStatus.NOT_FOUND, f"unknown path {self.path}")
                return
            length = self.headers.get("Content-Length")
            if length is None:
                self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
                return
            try:
                n = int(length)
            except ValueError:
                self._error(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
                return
            if n < 0 or n > cfg.max_request_bytes:
                self.close_connection = True
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"body of {n} bytes; at most {cfg.max_request_bytes}")
                return
            body = self.rfile.read(n)
            try:
                states, units = parse_request(body, cfg.max_rows)
                preds = recommend_json(recommender, states, units)
            except RequestError as exc:
                self._error(exc.status, str(exc))
                return
            except DataError as exc:
                self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))
                return
            except Exception:  # a bug must not kill the server; the client gets no internals
                log.exception("recommendation failed")
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see server log)")
                return
            self._send(HTTPStatus.OK, {"model": dict(model_info), "predictions": preds})

    server = ThreadingHTTPServer((cfg.host, cfg.port), Handler)
    server.daemon_threads = True
    return server


def load_recommender(model_uri: str, root: Path) -> tuple[Any, dict[str, Any]]:
    """Load a registered model (``models:/…``) or a local bundle directory → (Recommender, model info)."""
    from ogsrl.registry.bundle import load_bundle
    from ogsrl.registry.pyfunc import OgsrlPolicyModel

    if model_uri.startswith("models:/"):
        import mlflow

        try:
            loaded = mlflow.pyfunc.load_model(model_uri)
        except mlflow.exceptions.MlflowException as exc:
            from ogsrl.registry.stage import unresolvable

            raise ValueError(unresolvable(mlflow.MlflowClient(), model_uri, exc.message)) from exc
        wrapper = loaded.unwrap_python_model()
        if not isinstance(wrapper, OgsrlPolicyModel) or wrapper.recommender is None:
            raise ValueError(f"{model_uri} is not an ogsrl policy bundle")
        info = {"uri": model_uri, "model_id": getattr(loaded.metadata, "model_id", None),
                "run_id": loaded.metadata.run_id}
        return wrapper.recommender, info
    path = Path(model_uri)
    path = path if path.is_absolute() else Path(root) / path
    return load_bundle(path), {"uri": str(path)}


def serve_config(params: Mapping[str, Any]) -> ServeConfig:
    """Build :class:`ServeConfig` from ``params["serve"]`` (defaults when absent)."""
    return config.build(ServeConfig, params.get("serve") or {}, "serve")


def build_server(
    params: Mapping[str, Any],
    root: Path,
    *,
    host: str | None = None,
    port: int | None = None,
    model_uri: str | None = None,
    tracking_uri: str | None = None,
) -> tuple[ThreadingHTTPServer, ServeConfig]:
    """Load the model named by params `serve` (arguments override it) and bind, but do not start, the server."""
    import dataclasses

    cfg = serve_config(params)
    overrides = {k: v for k, v in {"host": host, "port": port, "model_uri": model_uri}.items() if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)  # re-runs __post_init__ validation
    if cfg.model_uri.startswith("models:/"):
        from ogsrl.registry.stage import mlflow_client, mlflow_uris_restored

        with mlflow_uris_restored():
            mlflow_client(params, Path(root), tracking_uri)  # points MLflow's registry at the project store
            recommender, info = load_recommender(cfg.model_uri, Path(root))
    else:
        recommender, info = load_recommender(cfg.model_uri, Path(root))
    return make_server(recommender, cfg, info), cfg


def serve(
    params: Mapping[str, Any],
    root: Path,
    *,
    host: str | None = None,
    port: int | None = None,
    model_uri: str | None = None,
    tracking_uri: str | None = None,
) -> None:
    """Serve until interrupted (`ogsrl serve [--host H] [--port P] [--model-uri URI]`)."""
    server, cfg = build_server(params, root, host=host, port=port, model_uri=model_uri, tracking_uri=tracking_uri)
    host_, port_ = server.server_address[:2]
    log.info("serving %s on http://%s:%s (POST /recommend)", cfg.model_uri, host_, port_)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("interrupted; shutting down")
    finally:
        server.server_close()
