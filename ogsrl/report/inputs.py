"""One loader for every pipeline output the report (and the clinical stage) reads.

Missing or unreadable required inputs raise a one-line :class:`~ogsrl.errors.DataError` naming the file and the
command that writes it. OPE metrics are parsed from their flat keys without a fixed list of estimators or targets,
so estimators added later (fqe, dr, wdr, …) appear in the report without code changes:

* ``<run>/seed<seed>/<estimator>/<target>/<field>`` — a trained policy (fields: value, ci_low, ci_high, ess,
  covers_truth, and any others);
* ``behaviour/<estimator>/<target>/<field>`` — the clinicians (their own on-policy values);
* ``truth/<policy>/<key>`` — simulator truth on the demo (``<policy>`` = ``behaviour`` or ``<run>/seed<seed>``);
  ``data/reports/truth.json``, when present, is read too (same keys, with or without the ``truth/`` prefix) and wins.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ogsrl.errors import DataError

REPORTS = Path("data/reports")
CLINICIANS = "behaviour"
"""policy label of the clinicians in the OPE metrics"""

FILES: dict[str, tuple[str, str]] = {
    # name: (path under the project root, the command that writes it)
    "cohort": ("data/reports/cohort.json", "ogsrl extract"),
    "validation_raw": ("data/reports/validation_raw.json", "ogsrl validate-raw"),
    "validation_trajectories": ("data/reports/validation_trajectories.json", "ogsrl validate-trajectories"),
    "world": ("data/reports/world.json", "ogsrl fit-world-model"),
    "guardian": ("data/reports/guardian.json", "ogsrl calibrate-guardian"),
    "train": ("data/reports/train.json", "ogsrl train-policies"),
    "ope": ("data/reports/evaluate/metrics.json", "ogsrl evaluate"),
    "truth": ("data/reports/truth.json", "the truth stage (demo)"),
    "clinical": ("data/reports/clinical.json", "ogsrl clinical"),
}
"""JSON inputs by name"""

TABLES: dict[str, tuple[str, str]] = {
    "train_curves": ("data/reports/train_curves.csv", "ogsrl train-policies"),
    "world_learning_curve": ("data/reports/world_plots/learning_curve.csv", "ogsrl fit-world-model"),
    "world_calibration": ("data/reports/world_plots/calibration.csv", "ogsrl fit-world-model"),
    "world_rmse": ("data/reports/world_plots/per_feature_rmse.csv", "ogsrl fit-world-model"),
    "clinical_metrics": ("data/reports/clinical_plots/metrics.csv", "ogsrl clinical"),
    "mortality_curve": ("data/reports/clinical_plots/mortality_curve.csv", "ogsrl clinical"),
}
"""CSV inputs by name"""

_SEED = re.compile(r"seed(\d+)$")


def read_json(root: Path, name: str, required: bool = True) -> dict[str, Any] | None:
    """The JSON input ``name`` of :data:`FILES` (None when optional and absent)."""
    rel, producer = FILES[name]
    path = Path(root) / rel
    if not path.is_file():
        if required:
            raise DataError(f"report input missing: {rel} (written by `{producer}`)", table=Path(rel).name)
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"report input {rel} is not readable JSON ({type(exc).__name__})", table=Path(rel).name)
    if not isinstance(doc, dict):
        raise DataError(f"report input {rel} must hold a JSON object", table=Path(rel).name)
    return doc


def read_csv(root: Path, name: str, required: bool = False) -> pd.DataFrame | None:
    """The CSV input ``name`` of :data:`TABLES` (None when optional and absent or empty)."""
    rel, producer = TABLES[name]
    path = Path(root) / rel
    if not path.is_file():
        if required:
            raise DataError(f"report input missing: {rel} (written by `{producer}`)", table=Path(rel).name)
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"report input {rel} is not a readable CSV ({type(exc).__name__})", table=Path(rel).name)
    return frame if len(frame) else None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def ope_estimates(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Tidy OPE estimates: one row per (policy, estimator, target) with columns policy (``behaviour`` or
    ``<run>/seed<seed>``), run, seed (None for the clinicians), estimator, target and every field found (value,
    ci_low, ci_high, ess, covers_truth, …)."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, v in metrics.items():
        parts = str(key).split("/")
        if parts[0] == CLINICIANS and len(parts) == 4:
            run, seed, (est, target, fld) = CLINICIANS, None, parts[1:]
        elif len(parts) == 5 and _SEED.match(parts[1]) and parts[0] not in ("truth", "behaviour_model"):
            run, seed, (est, target, fld) = parts[0], int(_SEED.match(parts[1]).group(1)), parts[2:]
        else:
            continue
        label = run if seed is None else f"{run}/seed{seed}"
        row = rows.setdefault((label, est, target), {"policy": label, "run": run, "seed": seed, "estimator": est,
                                                      "target": target})
        row[fld] = bool(v) if isinstance(v, bool) else _number(v) if _number(v) is not None else v
    frame = pd.DataFrame(list(rows.values()))
    if frame.empty:
        return pd.DataFrame(columns=["policy", "run", "seed", "estimator", "target", "value", "ci_low", "ci_high"])
    for col in ("value", "ci_low", "ci_high"):
        if col not in frame.columns:
            frame[col] = math.nan
    return frame.sort_values(["policy", "estimator", "target"], kind="stable").reset_index(drop=True)


def support_shares(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Per policy label (``<run>/seed<seed>``, and ``clinicians`` for their own logged actions): the share of its
    own (state, action) pairs on the test states that the registry's guardian rejects (the evaluate stage's support
    check; {} when it did not run)."""
    out: dict[str, float] = {}
    for key, v in metrics.items():
        parts = str(key).split("/")
        if len(parts) == 4 and _SEED.match(parts[1]) and parts[2:] == ["support", "reject_share"] \
                and _number(v) is not None:
            out[f"{parts[0]}/{parts[1]}"] = float(v)
    if _number(metrics.get("support/clinicians_reject_share")) is not None:
        out[CLINICIANS] = float(metrics["support/clinicians_reject_share"])
    return out


def truth_values(metrics: Mapping[str, Any], truth_doc: Mapping[str, Any] | None = None
                 ) -> dict[str, dict[str, float]]:
    """Simulator truth per policy label: ``{label: {key: value}}`` from the ``truth/…`` keys of the OPE metrics,
    overridden by ``truth_doc`` (data/reports/truth.json) where given. Non-numeric values are left out."""
    out: dict[str, dict[str, float]] = {}
    for source, prefixed in ((metrics, True), (truth_doc or {}, False)):
        for key, v in source.items():
            parts = str(key).split("/")
            if parts[0] == "truth":
                parts = parts[1:]
            elif prefixed:
                continue
            num = _number(v)
            if len(parts) < 2 or num is None:
                continue
            out.setdefault("/".join(parts[:-1]), {})[parts[-1]] = num
    return out


def truth_of(truth: Mapping[str, float], target: str) -> float | None:
    """The true value of an OPE target: the same key, or ``cost_return_<target>`` for a cost return."""
    for key in (target, f"cost_return_{target}"):
        if key in truth and math.isfinite(truth[key]):
            return float(truth[key])
    return None
