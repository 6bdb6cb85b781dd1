"""Stage ``train_policies``: train every method listed in ``policies.methods`` on the train split.

Reads ``data/trajectories/{train,val}.parquet``; writes ``data/models/policies/<method>/`` (checkpoint directories),
``data/reports/train.json`` (metrics) and ``data/reports/train_curves.csv`` (per-epoch losses, a DVC plot).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ogsrl import config, features
from ogsrl.agents import bc, common
from ogsrl.io import atomic_path, write_json

log = logging.getLogger(__name__)

TRAJECTORY_DIR = Path("data/trajectories")
POLICY_DIR = Path("data/models/policies")
METRICS_FILE = Path("data/reports/train.json")
CURVES_FILE = Path("data/reports/train_curves.csv")


@dataclass(frozen=True, slots=True)
class PoliciesConfig:
    """Which policies to train and their hyper-parameters."""

    methods: tuple[str, ...] = ("soc",)
    """methods to train, each a key of TRAINERS (today: soc)"""
    soc: bc.BCConfig = field(default_factory=bc.BCConfig)
    """SOC = behaviour cloning of the clinicians"""

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in TRAINERS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct names from {sorted(TRAINERS)}, got {list(self.methods)}")


TrainResult = tuple[bc.BCPolicy, dict[str, float], list[dict[str, float]]]


def _train_soc(cfg: PoliciesConfig, train: pd.DataFrame, val: pd.DataFrame, state: tuple[str, ...]) -> TrainResult:
    """SOC: BC on the configured state features."""
    return bc.fit(cfg.soc, state, batch_of(train, state), batch_of(val, state))


TRAINERS: dict[str, Callable[[PoliciesConfig, pd.DataFrame, pd.DataFrame, tuple[str, ...]], TrainResult]] = {
    "soc": _train_soc,
}
"""method name → trainer; the one explicit list of trainable methods"""


def batch_of(df: pd.DataFrame, columns: tuple[str, ...]) -> bc.Batch:
    """Rows of a trajectory table → a Batch of (state columns, actions) as float64 arrays."""
    return bc.Batch(
        obs=df[list(columns)].to_numpy(dtype="float64"), act=df[list(features.ACTIONS)].to_numpy(dtype="float64")
    )


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Train ``policies.methods`` and write checkpoints, metrics and curves under ``root``."""
    cfg = config.build(PoliciesConfig, config.section(params, "policies"), "policies")
    root = Path(root)
    train, meta = common.read_split(root / TRAJECTORY_DIR / "train.parquet")
    val, meta_val = common.read_split(root / TRAJECTORY_DIR / "val.parquet")
    if meta_val["state_features"] != meta["state_features"]:
        raise ValueError("train and val parquet metadata disagree on ogsrl.state_features")
    state = meta["state_features"]
    metrics: dict[str, Any] = {}
    curves = []
    for method in cfg.methods:
        pol, m, history = TRAINERS[method](cfg, train, val, state)
        pol.save(root / POLICY_DIR / method)
        metrics.update({f"{method}/{k}": v for k, v in m.items()})
        curves.extend({"method": method, "step": int(h["epoch"]), **h} for h in history)
        log.info("train_policies: %s saved to %s", method, POLICY_DIR / method)
    write_json(root / METRICS_FILE, metrics)
    with atomic_path(root / CURVES_FILE) as tmp:
        pd.DataFrame(curves).drop(columns="epoch").to_csv(tmp, index=False)
    return metrics
