"""A bundle: the directory a registered model version carries (policy, guardian, cost model, bundle.json).

Layout::

    bundle.json      format version, loaders, state/action columns, plausible ranges and units, cost rules,
                     guardian certificate (copied), provenance notes
    policy/          the policy checkpoint directory as trained (input scalers live inside it)
    guardian/        the certified guardian only (model + certificate.json; its scaler inside), optional: from the
                     calibrate_guardian layout (christoffel/, kde/, certificate.json) just the directory the
                     top-level certificate names. A guardian whose saved model is row-level patient data (the KDE:
                     its scaled training rows) is refused, as is a Christoffel guardian fitted on too few rows for
                     its moment matrix to hide them (``release_problem``)
    costs/           a cost model directory (by default the world model, whose cost heads give P(cost = 1) for
                     the next step given (state, action)), optional

Each component is loaded by the function named in ``bundle.json`` (``"module:function"``, defaults
``ogsrl.agents:load_policy`` and :mod:`ogsrl.registry.loaders`), never unpickled. :func:`load_bundle` returns the
:class:`~ogsrl.registry.recommender.Recommender` that serving and the MLflow pyfunc (:mod:`ogsrl.registry.pyfunc`)
share.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ogsrl import features
from ogsrl.data.schema import DiscreteAction, Schema
from ogsrl.io import write_json
from ogsrl.registry.loaders import certified_guardian_dir, resolve_loader
from ogsrl.registry.recommender import Recommender

BUNDLE_FORMAT = 1
"""bundle.json format version; :func:`load_bundle` refuses others."""
BUNDLE_FILE = "bundle.json"
DEFAULT_POLICY_LOADER = "ogsrl.agents:load_policy"
DEFAULT_GUARDIAN_LOADER = "ogsrl.registry.loaders:load_guardian"
DEFAULT_COST_MODEL_LOADER = "ogsrl.registry.loaders:load_cost_model"


def _ranges(schema: Schema | None = None) -> dict[str, dict[str, Any]]:
    """Plausible range, unit and kind per known feature: ``ogsrl.features``, or a bring-your-own schema's declared
    ones (an unbounded side is null)."""
    if schema is None:
        return {f.name: {"low": f.low, "high": f.high, "unit": f.unit, "kind": f.kind} for f in features.FEATURES}
    return {f.name: {"low": None if math.isinf(f.low) else f.low, "high": None if math.isinf(f.high) else f.high,
                     "unit": f.unit, "kind": f.kind} for f in schema.state}


def _actions(schema: Schema | None) -> tuple[list[str], dict[str, str]]:
    """(action columns, unit per column) of the served action."""
    if schema is None:
        return list(features.ACTIONS), dict(features.ACTION_UNITS)
    if isinstance(schema.action, DiscreteAction):
        return [schema.action.column], {schema.action.column: f"id 0-{schema.action.n - 1} (labels: action_labels)"}
    return list(schema.action.columns), dict(zip(schema.action.columns, schema.action.units))


def build_bundle(
    dest: Path,
    *,
    policy_dir: Path,
    guardian_dir: Path | None,
    cost_rules: Sequence[Mapping[str, Any]],
    policy_loader: str = DEFAULT_POLICY_LOADER,
    guardian_loader: str = DEFAULT_GUARDIAN_LOADER,
    cost_model_dir: Path | None = None,
    cost_model_loader: str = DEFAULT_COST_MODEL_LOADER,
    notes: Mapping[str, Any] | None = None,
    schema: Schema | None = None,
) -> dict[str, Any]:
    """Assemble a bundle directory at ``dest`` (which must not exist) and check that it loads.

    Args:
        dest: target directory.
        policy_dir: trained policy checkpoint directory.
        guardian_dir: calibrated guardian directory (with certificate.json), or None.
        cost_rules: the params `costs.rules` list.
        policy_loader: ``module:function`` that loads ``policy_dir``.
        guardian_loader: ``module:function`` that loads ``guardian_dir``.
        cost_model_dir: a cost model directory (the world model), or None.
        cost_model_loader: ``module:function`` that loads ``cost_model_dir`` (an object with ``feature_names``,
            ``cost_names`` and ``predict_costs(obs, act) -> (B, C)``).
        notes: free provenance notes stored in bundle.json (method name, OPE summary, ...).
        schema: the training table's schema (docs/data-contract.md §4); None or canonical: ``ogsrl.features``.

    Returns:
        The bundle.json content.
    """
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"bundle destination exists: {dest}")
    if not Path(policy_dir).is_dir():
        raise FileNotFoundError(f"policy directory not found: {policy_dir}")
    policy = resolve_loader(policy_loader)(Path(policy_dir))
    names = tuple(getattr(policy, "feature_names", ()))
    if not names:
        raise ValueError(f"policy loaded from {policy_dir} has no feature_names")
    if schema is not None and schema.is_canonical:
        schema = None
    if schema is None:
        features.state_features(names)
    else:
        unknown = [n for n in names if n not in schema.state_names]
        if unknown:
            raise ValueError(f"policy reads state column(s) {unknown} that the table's schema does not declare")
    action_columns, action_units = _actions(schema)
    certificate: dict[str, Any] | None = None
    guardian_names: tuple[str, ...] = ()
    if guardian_dir is not None:
        cert_path = Path(guardian_dir) / "certificate.json"
        if not cert_path.is_file():
            raise FileNotFoundError(f"guardian certificate not found: {cert_path}")
        certificate = json.loads(cert_path.read_text(encoding="utf-8"))
        guardian_src = certified_guardian_dir(Path(guardian_dir))
        guardian = resolve_loader(guardian_loader)(guardian_src)
        problem = getattr(guardian, "release_problem", None)
        reason = problem() if callable(problem) else None
        if reason:
            raise ValueError(f"guardian at {guardian_src} cannot be registered: {reason}")
        guardian_names = tuple(guardian.feature_names)
        allowed = set(names) | set(action_columns)
        unknown = [n for n in guardian_names if n not in allowed]
        if unknown:
            raise ValueError(f"guardian reads columns {unknown} that are neither policy state nor action columns")
    cost_names: tuple[str, ...] = ()
    cost_features: tuple[str, ...] = ()
    if cost_model_dir is not None:
        cost_model = resolve_loader(cost_model_loader)(Path(cost_model_dir))
        cost_names, cost_features = tuple(cost_model.cost_names), tuple(cost_model.feature_names)
        unknown = [n for n in cost_features if n not in names]
        if unknown:
            raise ValueError(f"cost model reads state columns {unknown} that the policy does not")
    dest.mkdir(parents=True)
    shutil.copytree(policy_dir, dest / "policy")
    if guardian_dir is not None:
        shutil.copytree(guardian_src, dest / "guardian")
    if cost_model_dir is not None:
        shutil.copytree(cost_model_dir, dest / "costs")
    for meta_path in sorted(dest.rglob("guardian.json")):  # also a guardian a served policy embeds
        if json.loads(meta_path.read_text(encoding="utf-8")).get("kind") == "kde":
            raise ValueError(f"{meta_path.relative_to(dest)}: a KDE guardian stores its training rows (patient-level "
                             "data) and cannot be registered")
    manifest = {
        "format": BUNDLE_FORMAT,
        "policy_loader": policy_loader,
        "guardian_loader": guardian_loader if guardian_dir is not None else None,
        "state_features": list(names),
        "action_columns": action_columns,
        "action_units": action_units,
        "guardian_features": list(guardian_names),
        "certificate": certificate,
        "cost_model_loader": cost_model_loader if cost_model_dir is not None else None,
        "cost_model_features": list(cost_features),
        "cost_names": list(cost_names),
        "cost_rules": [dict(r) for r in cost_rules],
        "ranges": _ranges(schema),
        "notes": dict(notes or {}),
    }
    if schema is not None:
        manifest["schema"] = schema.to_dict()
        if isinstance(schema.action, DiscreteAction):
            manifest["action_labels"] = list(schema.action.labels)
    write_json(dest / BUNDLE_FILE, manifest)
    return manifest


def load_bundle(path: Path) -> Recommender:
    """Load a bundle directory into a :class:`Recommender`."""
    path = Path(path)
    manifest_path = path / BUNDLE_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"not a bundle (no {BUNDLE_FILE}): {path}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{manifest_path}: bundle format {manifest.get('format')!r}, expected {BUNDLE_FORMAT}")
    from ogsrl.policy import load_checked

    policy = load_checked(resolve_loader(manifest["policy_loader"]), path / "policy")
    if tuple(policy.feature_names) != tuple(manifest["state_features"]):
        raise ValueError(f"{path}: policy feature_names {policy.feature_names} differ from bundle.json")
    guardian = None
    if manifest.get("guardian_loader"):
        guardian = load_checked(resolve_loader(manifest["guardian_loader"]), path / "guardian", "guardian")
        if tuple(guardian.feature_names) != tuple(manifest["guardian_features"]):
            raise ValueError(f"{path}: guardian feature_names {guardian.feature_names} differ from bundle.json")
    cost_model = None
    if manifest.get("cost_model_loader"):
        cost_model = load_checked(resolve_loader(manifest["cost_model_loader"]), path / "costs", "cost model")
        if tuple(cost_model.cost_names) != tuple(manifest["cost_names"]):
            raise ValueError(f"{path}: cost model cost_names {cost_model.cost_names} differ from bundle.json")
    return Recommender(policy, guardian, manifest, cost_model)
