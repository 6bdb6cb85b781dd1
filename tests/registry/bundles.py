"""A small bundle from the serve tests' fakes (policy and guardian on gcs / spo2 / fluid_cum), and states for it."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl.registry import bundle as bundle_mod  # noqa: E402

LOADERS = {"policy_loader": "ogsrl_fakes:load_policy", "guardian_loader": "ogsrl_fakes:load_guardian"}
RULES = [{"name": "spo2_low", "feature": "spo2", "op": "<", "threshold": 92.0, "units": "%"}]


def build_fake(tmp_path: Path) -> Path:
    """A fake project's SOC policy and guardian bundled at ``tmp_path/bundle``."""
    root = tmp_path / "proj"
    fakes.make_project(root)
    dest = tmp_path / "bundle"
    bundle_mod.build_bundle(dest, policy_dir=root / "data/models/policies/soc/seed42",
                            guardian_dir=root / "data/models/guardian", cost_rules=RULES, notes={"method": "soc"},
                            **LOADERS)
    return dest


def states(**cols: list[float]) -> pd.DataFrame:
    """Two states (the second one desaturated), with any column replaced."""
    base = {"gcs": [15.0, 10.0], "spo2": [97.0, 90.0], "fluid_cum": [1000.0, 3000.0]}
    base.update(cols)
    return pd.DataFrame(base)
