"""Privacy: the pseudonymisation salt, its fingerprint, and scrubbing what leaves a stage.

**The salt.** Stay keys are ``SHA-256(salt:stay_id)`` prefixes (``ogsrl.io.salted_hash``); whoever holds the salt
can link every key back to a MIMIC-IV stay. The demo's salt is public (``cohort.salt`` in params.yaml). For
``data.source: mimic-iv`` it must come from outside git: the environment variable named by ``privacy.salt_env``
(default ``OGSRL_SALT``) or the file ``privacy.salt_file`` outside the project; :func:`resolve_salt` refuses to run
without one, with one shorter than :data:`MIN_SALT_CHARS`, or with a non-public ``cohort.salt`` in params.yaml (that
file is in git). The salt is never written anywhere.

**DVC.** DVC cannot see an environment variable, so the stages that hash ids (``validate_raw``, ``extract``) depend
on :data:`FINGERPRINT_FILE`, a non-secret file holding :func:`fingerprint` (an HMAC of a constant keyed by the salt).
``ogsrl salt-fingerprint`` (run by ``make run`` and the flows before ``dvc repro``) rewrites it when the salt
changes, so DVC reruns those stages; they refuse to run when the file does not match the salt in use. Anyone can test
a guessed salt against the fingerprint, as against any stay key, so the salt must be random (``openssl rand -hex 32``).

**Scrubbing.** :func:`redact` replaces salt values in params / dvc.lock before they are logged; :func:`scrub` removes
MIMIC-style ids (8 digits), dates/times and known secrets from free text (DVC output reaching Prefect state);
:func:`pseudonymise_rows` turns the raw ids an extraction error quotes into salted keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ogsrl.config import ConfigError, build
from ogsrl.errors import DataError
from ogsrl.io import salted_hash, write_json

PUBLIC_DEMO_SALT = "ogsrl-demo-salt"
"""The demo's salt, public by design (params.yaml ``cohort.salt``)."""
MIN_SALT_CHARS = 16
"""Shortest secret salt accepted (use e.g. 64 hex characters from ``openssl rand -hex 32``)."""
FINGERPRINT_FILE = Path("data") / "salt-fingerprint.json"
"""Non-secret file the id-hashing DVC stages depend on (relative to the project root)."""
SECRET_SOURCES = ("mimic-iv",)
"""data.source values whose ids are real and need a secret salt."""
_FINGERPRINT_MESSAGE = b"ogsrl salt fingerprint v1"


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    """Where the secret salt comes from for real data (params section ``privacy``)."""

    salt_env: str = "OGSRL_SALT"
    """environment variable holding the secret salt (read first)"""
    salt_file: str = ""
    """else: a file outside the project holding the salt (first line; whitespace stripped)"""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.salt_env):
            raise ValueError(f"salt_env must be an environment variable name, got {self.salt_env!r}")


def privacy_config(params: Mapping[str, Any]) -> PrivacyConfig:
    """:class:`PrivacyConfig` from ``params["privacy"]`` (defaults when absent)."""
    return build(PrivacyConfig, params.get("privacy") or {}, "privacy")


def _source(params: Mapping[str, Any]) -> str:
    return str(dict(params.get("data") or {}).get("source", "demo"))


def fingerprint(salt: str) -> str:
    """``hmac-sha256:`` + 32 hex of HMAC-SHA256(key = salt, message = a constant): tells salts apart, reveals none."""
    return "hmac-sha256:" + hmac.new(salt.encode("utf-8"), _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:32]


def resolve_salt(params: Mapping[str, Any], root: Path) -> str:
    """The salt the id-hashing stages use: ``cohort.salt`` for the demo, the secret one for real data.

    Raises ConfigError (one line) when real data has no usable secret salt.
    """
    params_salt = dict(params.get("cohort") or {}).get("salt", PUBLIC_DEMO_SALT)
    if not isinstance(params_salt, str) or not params_salt:
        raise ConfigError("params: cohort.salt must be a non-empty string")
    source = _source(params)
    if source not in SECRET_SOURCES:
        return params_salt
    cfg = privacy_config(params)
    if params_salt != PUBLIC_DEMO_SALT:
        raise ConfigError(f"params: cohort.salt must stay the public demo salt {PUBLIC_DEMO_SALT!r} for data.source "
                          f"{source}: params.yaml is in git; put the secret salt in env {cfg.salt_env} or "
                          "privacy.salt_file")
    value = os.environ.get(cfg.salt_env, "")
    origin = f"env {cfg.salt_env}"
    if not value and cfg.salt_file:
        path = Path(cfg.salt_file).expanduser()
        path = path if path.is_absolute() else Path(root) / path
        if path.resolve().is_relative_to(Path(root).resolve()):
            raise ConfigError(f"params: privacy.salt_file {str(path)!r} lies inside the project (it could reach git, "
                              "DVC or a bundle); keep the salt file outside it")
        if not path.is_file():
            raise ConfigError(f"params: privacy.salt_file {str(path)!r} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
        value, origin = (lines[0].strip() if lines else ""), "privacy.salt_file"
    if not value:
        raise ConfigError(f"data.source {source} needs a secret salt: set env {cfg.salt_env} (e.g. "
                          f"`export {cfg.salt_env}=$(openssl rand -hex 32)`) or privacy.salt_file, a file outside "
                          "the project")
    if len(value) < MIN_SALT_CHARS or value == PUBLIC_DEMO_SALT:
        raise ConfigError(f"the salt from {origin} is too weak: use at least {MIN_SALT_CHARS} random characters "
                          "(e.g. `openssl rand -hex 32`), not the public demo salt")
    return value


def fingerprint_record(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """What :data:`FINGERPRINT_FILE` holds for the salt in use."""
    return {"format": 1, "secret": _source(params) in SECRET_SOURCES,
            "fingerprint": fingerprint(resolve_salt(params, root))}


def write_fingerprint(params: Mapping[str, Any], root: Path) -> tuple[Path, bool]:
    """Write :data:`FINGERPRINT_FILE` for the salt in use; returns (path, whether it changed)."""
    path = Path(root) / FINGERPRINT_FILE
    record = fingerprint_record(params, root)
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if old == record:
        return path, False
    write_json(path, record)
    return path, True


def check_fingerprint(params: Mapping[str, Any], root: Path, salt: str) -> None:
    """For real data: refuse to run when :data:`FINGERPRINT_FILE` exists and does not match ``salt`` (DVC hashes that
    file, so its record would otherwise claim outputs of another salt). No-op for the demo's public salt."""
    if _source(params) not in SECRET_SOURCES:
        return
    path = Path(root) / FINGERPRINT_FILE
    if not path.exists():
        return  # no file, no stale DVC record (under DVC a missing dependency stops the run before the stage)
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded != fingerprint(salt):
        raise ConfigError(f"{FINGERPRINT_FILE} does not match the secret salt in use: run `ogsrl salt-fingerprint` "
                          "first (make run and the flows do), so that DVC reruns the stages that hash ids")


# ---- redaction and scrubbing ------------------------------------------------------------------------------------


def is_secret_key(key: Any) -> bool:
    """A params / dvc.lock key naming the salt (``salt``, ``cohort.salt``, ...)."""
    return isinstance(key, str) and key.rsplit(".", 1)[-1] == "salt"


def redact(obj: Any) -> Any:
    """Copy of a nested params-like structure with every salt value replaced by its :func:`fingerprint` (and a
    mapping that holds a ``salt`` key, e.g. dvc.lock's ``cohort`` section, redacted inside)."""
    if isinstance(obj, Mapping):
        return {k: (fingerprint(str(v)) if is_secret_key(k) and not isinstance(v, Mapping) else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


_ID = re.compile(r"(?<![\w.])[1-3]\d{7}(?![\w])")
"""MIMIC-IV subject_id (1xxxxxxx), hadm_id (2xxxxxxx) and stay_id (3xxxxxxx) values: 8 digits"""
_DATETIME = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\b")


def secrets_from_env(params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The secret salt from the environment variable, when set (for :func:`scrub`)."""
    name = privacy_config(params).salt_env if params is not None else PrivacyConfig().salt_env
    value = os.environ.get(name, "")
    return (value,) if value else ()


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secrets, MIMIC-style 8-digit ids and dates/times replaced by placeholders."""
    for s in secrets:
        if s:
            text = text.replace(s, "<salt>")
    text = _DATETIME.sub("<datetime>", text)
    return _ID.sub("<id>", text)


def pseudonymise_rows(exc: DataError, salt: str) -> DataError:
    """A copy of an extraction error whose quoted rows (raw stay/subject/admission ids) are salted keys instead."""
    if not exc.rows:
        return exc
    keys = salted_hash(exc.rows, salt)
    base = str(exc).split(" [offending rows:", 1)[0]
    if exc.table:
        prefix = ", ".join(p for p in (f"table {exc.table!r}", f"column {exc.column!r}" if exc.column else "") if p)
        base = base.removeprefix(prefix + ": ")
    new = DataError(f"{base} (ids shown as salted keys, as stay_key)", table=exc.table, column=exc.column,
                    rows=[f"key:{k}" for k in keys])
    return new
