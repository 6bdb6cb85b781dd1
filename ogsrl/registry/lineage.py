"""Lineage audit: from a registered model version back to the data it was trained on, and a check that the
workspace still holds exactly those bytes.

At registration :func:`collect` records, as the run artifact ``lineage.json``:

* git commit and dirty flag of the project checkout;
* ``dvc.lock`` parsed (every stage's deps/outs with DVC's md5) and the params the pipeline ran with, both with the
  salt only as an HMAC fingerprint (``ogsrl.privacy``; dvc.lock records params values); the secret salt of real data
  never reaches either, and its fingerprint is recorded from ``data/salt-fingerprint.json``;
* a **sha256 manifest** of every dvc.lock dep/out and every registered input (policy, guardian, OPE metrics,
  validation reports): per file its sha256, per directory a sha256 per contained file;
* the validation reports, the guardian certificate and the OPE metrics (contents);
* the data source: demo seed and generator version, or MIMIC-IV path, version and per-file sha256, or the
  bring-your-own trajectories file and its sha256.

:func:`verify` recomputes in a workspace (this one, or a checkout of the recorded commit after ``dvc pull``)
(1) DVC's own md5 of each dvc.lock path — a file's md5 is the md5 of its bytes; a directory's is the md5 of its
``.dir`` listing, i.e. ``json.dumps(sorted([{"md5": m, "relpath": p}, ...]), sort_keys=True)`` + ``".dir"`` (the
scheme of ``dvc_data.hashfile.tree.Tree``), skipping what ``.dvcignore`` excludes — and (2) the sha256 manifest,
which names the exact files that were added, removed or changed inside a directory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ogsrl import privacy
from ogsrl.io import file_sha256

log = logging.getLogger(__name__)

LINEAGE_FORMAT = 1


# ---- hashing ---------------------------------------------------------------------------------------------------


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    """md5 of a file's bytes (DVC 3's ``hash: md5``)."""
    h = hashlib.md5()  # noqa: S324 - DVC's content hash, not a security use
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class DvcIgnore:
    """The subset of ``.dvcignore`` (gitignore syntax) that matters for hashing: ``name``, ``*.ext``, ``dir/``,
    and root-anchored ``/path`` or ``a/b`` patterns. Negations (``!pattern``) are not supported and raise."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.patterns: list[tuple[str, bool, bool]] = []  # (pattern, dir_only, anchored)
        path = self.root / ".dvcignore"
        if path.is_file():
            for raw in path.read_text(encoding="utf-8").splitlines():
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("!"):
                    raise ValueError(f"{path}: negated pattern {line!r} is not supported by ogsrl lineage")
                dir_only = line.endswith("/")
                line = line.rstrip("/")
                anchored = "/" in line
                self.patterns.append((line.lstrip("/"), dir_only, anchored))

    def ignored(self, path: Path, is_dir: bool) -> bool:
        """Whether ``path`` (inside the root) is excluded from DVC's hashes."""
        try:
            rel = Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return False
        name = rel.rsplit("/", 1)[-1]
        for pattern, dir_only, anchored in self.patterns:
            if dir_only and not is_dir:
                continue
            if fnmatch.fnmatchcase(rel if anchored else name, pattern):
                return True
        return False


def _files(directory: Path, ignore: DvcIgnore | None = None) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if ignore is None or not ignore.ignored(here / d, True))
        out.extend(here / f for f in filenames if ignore is None or not ignore.ignored(here / f, False))
    return sorted(out, key=lambda p: p.relative_to(directory).as_posix())


def dvc_md5(path: Path, ignore: DvcIgnore | None = None) -> str:
    """DVC's md5 of a file, or of a directory (``<md5 of the .dir listing>.dir``), skipping ``ignore``d paths."""
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    listing = [{"md5": file_md5(f), "relpath": f.relative_to(path).as_posix()} for f in _files(path, ignore)]
    listing.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"  # noqa: S324


def sha256_manifest(path: Path, ignore: DvcIgnore | None = None) -> dict[str, Any]:
    """``{"kind": "file", "sha256": h}`` or ``{"kind": "dir", "files": {relpath: sha256}}``."""
    path = Path(path)
    if path.is_file():
        return {"kind": "file", "sha256": file_sha256(path)}
    if path.is_dir():
        return {"kind": "dir",
                "files": {f.relative_to(path).as_posix(): file_sha256(f) for f in _files(path, ignore)}}
    raise FileNotFoundError(path)


# ---- collection at registration -----------------------------------------------------------------------------


def git_info(root: Path) -> dict[str, Any]:
    """Commit and dirty flag of the checkout at ``root`` (``available: False`` outside a git repository)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            check=True, timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("git information unavailable at %s: %s", root, exc)
        return {"available": False, "commit": None, "dirty": None}
    return {"available": True, "commit": commit, "dirty": bool(status.strip())}


def read_dvc_lock(root: Path) -> dict[str, Any] | None:
    """Parsed ``dvc.lock`` at the project root (None when absent)."""
    path = Path(root) / "dvc.lock"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
        raise ValueError(f"{path}: unexpected dvc.lock layout (no 'stages' mapping)")
    return data


def lock_entries(lock: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Flatten dvc.lock to ``[{stage, role (dep|out), path, md5}]``."""
    rows: list[dict[str, Any]] = []
    for stage, body in dict((lock or {}).get("stages") or {}).items():
        for role, key in (("dep", "deps"), ("out", "outs")):
            for entry in body.get(key) or []:
                rows.append({"stage": stage, "role": role, "path": entry["path"], "md5": entry.get("md5")})
    return rows


def data_source(params: Mapping[str, Any], root: Path, hash_raw_files: bool = True) -> dict[str, Any]:
    """Describe where the trajectories came from (see the module docstring)."""
    data = dict(params.get("data") or {})
    kind = data.get("source", "demo")
    if kind == "demo":
        synth = dict(params.get("synth") or {})
        try:
            from ogsrl import synth as synth_pkg

            version = getattr(synth_pkg, "GENERATOR_VERSION", None)
        except ImportError:
            version = None
        from ogsrl import __version__ as pkg_version  # type: ignore[attr-defined]

        return {"kind": "demo", "seed": synth.get("seed"), "stays": synth.get("stays"),
                "generator_version": version or f"ogsrl {pkg_version}"}
    if kind == "mimic-iv":
        path = Path(str(data.get("mimic_path", "")))
        found = re.search(r"(\d+\.\d+)", path.resolve().as_posix()) if str(path) else None
        files: dict[str, str] = {}
        if hash_raw_files and path.is_dir():
            for sub in ("hosp", "icu"):
                if (path / sub).is_dir():
                    for f in _files(path / sub):
                        files[f.relative_to(path).as_posix()] = file_sha256(f)
        return {"kind": "mimic-iv", "path": str(path), "version": found.group(1) if found else None,
                "files_sha256": files}
    if kind == "trajectories":
        path = Path(str(data.get("trajectories_path", "")))
        out = {"kind": "trajectories", "path": str(path), "sha256": file_sha256(path) if path.is_file() else None}
        schema = Path(str(data.get("schema_path", "") or ""))
        if str(data.get("schema_path", "") or "").strip():
            out["schema_sha256"] = file_sha256(schema) if schema.is_file() else None
        return out
    return {"kind": str(kind)}


def redact(params: Any) -> Any:
    """Copy of ``params`` (or a parsed dvc.lock) with every salt value replaced by its HMAC fingerprint
    (:func:`ogsrl.privacy.redact`): with the salt, salted stay keys could be linked back to stay ids. The
    fingerprint still tells whether two runs used the same salt."""
    return privacy.redact(params)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def collect(
    root: Path,
    params: Mapping[str, Any],
    *,
    inputs: Iterable[str],
    validation_reports: Iterable[str],
    certificate: str | None,
    ope_metrics: str,
    hash_raw_files: bool = True,
) -> dict[str, Any]:
    """Build the lineage record of a registration (stored as ``lineage.json`` in the MLflow run).

    Args:
        root: project root.
        params: the params mapping the pipeline ran with.
        inputs: registered inputs (paths relative to root) hashed besides every dvc.lock path.
        validation_reports: validation report paths (relative).
        certificate: guardian certificate path (relative) or None.
        ope_metrics: OPE metrics path (relative).
        hash_raw_files: hash every MIMIC-IV file for the data source (slow on the full database).
    """
    root = Path(root)
    lock = read_dvc_lock(root)
    ignore = DvcIgnore(root)
    paths = sorted({e["path"] for e in lock_entries(lock)} | set(inputs))
    manifest: dict[str, Any] = {}
    for rel in paths:
        p = root / rel
        manifest[rel] = sha256_manifest(p, ignore) if p.exists() else {"kind": "missing"}
    return {
        "format": LINEAGE_FORMAT,
        "git": git_info(root),
        "dvc_lock": redact(lock) if lock is not None else None,
        "manifest": manifest,
        "params": json.loads(json.dumps(redact(params), default=str)),
        "validation": {r: _read_json(root / r) for r in validation_reports},
        "certificate": _read_json(root / certificate) if certificate else None,
        "ope": _read_json(root / ope_metrics),
        "data_source": data_source(params, root, hash_raw_files),
        "salt_fingerprint": (_read_json(root / privacy.FINGERPRINT_FILE) or {}).get("fingerprint"),
    }


# ---- verification ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    """One file or directory that no longer matches its recorded hash."""

    path: str
    """path relative to the project root (a file inside a directory for sha256 differences)"""
    kind: str
    """changed | missing | added | dvc-md5"""
    detail: str
    """what was expected and what was found"""


def verify(record: Mapping[str, Any], root: Path) -> list[Difference]:
    """Recompute every recorded hash under ``root``; an empty list means the workspace matches.

    Checks DVC's md5 of each dvc.lock dep/out, then the sha256 manifest (naming files inside directories).
    """
    root = Path(root)
    ignore = DvcIgnore(root)
    diffs: list[Difference] = []
    for e in lock_entries(record.get("dvc_lock")):
        p = root / e["path"]
        if e["md5"] is None:
            continue
        if not p.exists():
            diffs.append(Difference(e["path"], "missing", f"{e['role']} of stage {e['stage']} is missing"))
            continue
        got = dvc_md5(p, ignore)
        if got != e["md5"]:
            diffs.append(Difference(
                e["path"], "dvc-md5", f"{e['role']} of stage {e['stage']}: dvc.lock md5 {e['md5']}, now {got}",
            ))
    for rel, want in dict(record.get("manifest") or {}).items():
        p = root / rel
        if want["kind"] == "missing":
            continue
        if not p.exists():
            diffs.append(Difference(rel, "missing", "recorded at registration, absent now"))
            continue
        if want["kind"] == "file":
            got = file_sha256(p) if p.is_file() else None
            if got != want["sha256"]:
                diffs.append(Difference(rel, "changed", f"sha256 {want['sha256'][:12]}…, now {str(got)[:12]}…"))
            continue
        have = sha256_manifest(p, ignore)["files"] if p.is_dir() else {}
        wanted = want["files"]
        for f in sorted(set(wanted) | set(have)):
            full = f"{rel.rstrip('/')}/{f}"
            if f not in have:
                diffs.append(Difference(full, "missing", "recorded at registration, absent now"))
            elif f not in wanted:
                diffs.append(Difference(full, "added", "not present at registration"))
            elif have[f] != wanted[f]:
                diffs.append(Difference(full, "changed", f"sha256 {wanted[f][:12]}…, now {have[f][:12]}…"))
    return diffs


# ---- resolution from the registry -------------------------------------------------------------------------------


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` or ``models:/name/version`` → (name, alias, version)."""
    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri.strip())
    if not m:
        raise ValueError(f"model URI {uri!r} must look like models:/<name>@<alias> or models:/<name>/<version>")
    return m.group(1), m.group(2), m.group(3)


def resolve(client: Any, uri: str) -> dict[str, Any]:
    """Walk version → run → lineage record, returning every link with a ``resolved`` flag.

    Args:
        client: an ``mlflow.MlflowClient`` on the tracking/registry store.
        uri: ``models:/name@alias`` or ``models:/name/version``.
    """
    import mlflow

    name, alias, version = parse_model_uri(uri)
    mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    record = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/lineage.json")
    lock = record.get("dvc_lock")
    links = {
        "model_version": {"resolved": True, "name": name, "version": mv.version, "aliases": list(mv.aliases),
                          "tags": dict(mv.tags), "source": mv.source},
        "run": {"resolved": True, "run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                "status": run.info.status},
        "git": {"resolved": bool(record["git"].get("available")), **record["git"]},
        "dvc_lock": {"resolved": lock is not None,
                     "stages": {s: {"deps": {d["path"]: d.get("md5") for d in b.get("deps") or []},
                                    "outs": {o["path"]: o.get("md5") for o in b.get("outs") or []}}
                                for s, b in dict((lock or {}).get("stages") or {}).items()}},
        "params": {"resolved": bool(record.get("params")), "params": record.get("params")},
        "validation": {"resolved": all(v is not None for v in record["validation"].values())
                       and bool(record["validation"]),
                       "reports": {k: (v or {}).get("success") for k, v in record["validation"].items()}},
        "certificate": {"resolved": record.get("certificate") is not None, "certificate": record.get("certificate")},
        "ope": {"resolved": record.get("ope") is not None, "metrics": record.get("ope")},
        "data_source": {"resolved": bool(record.get("data_source")), **(record.get("data_source") or {})},
    }
    return {"uri": uri, "links": links, "record": record}


def render(lineage: Mapping[str, Any]) -> str:
    """Human-readable lineage summary (one section per link)."""
    L = lineage["links"]
    mv, run, git = L["model_version"], L["run"], L["git"]
    lines = [
        f"model     {mv['name']} v{mv['version']} aliases={mv['aliases']} "
        f"gate={mv['tags'].get('gate.decision', 'pending')}",
        f"run       {run['run_id']} (experiment {run['experiment_id']}, {run['status']})",
        f"git       {git.get('commit') or 'unavailable'}{' (dirty)' if git.get('dirty') else ''}",
    ]
    if L["dvc_lock"]["resolved"]:
        for stage, body in L["dvc_lock"]["stages"].items():
            lines.append(f"stage     {stage}: {len(body['deps'])} deps, {len(body['outs'])} outs")
            lines.extend(f"            out {p} {h}" for p, h in body["outs"].items())
    else:
        lines.append("stage     no dvc.lock recorded")
    lines.append(f"params    {len(L['params']['params'] or {})} sections")
    lines.append(f"validate  {L['validation']['reports']}")
    cert = L["certificate"]["certificate"]
    lines.append("guardian  " + (
        f"alpha_c={cert.get('alpha_c')} test coverage={cert.get('test_coverage', cert.get('empirical_test_coverage'))}"
        if cert else "none bundled"))
    lines.append(f"ope       {'recorded' if L['ope']['resolved'] else 'missing'}")
    src = {k: v for k, v in L["data_source"].items() if k not in ("resolved", "files_sha256")}
    lines.append(f"data      {src}")
    return "\n".join(lines)
