"""Per-row recommendations with safety checks, shared by the REST server and the MLflow pyfunc.

:class:`Recommender` checks each state for plausibility against the bundle's ranges and units (``ogsrl.features``
or a bring-your-own schema's), takes the served policy's action (as its ``act_mode`` says; a guarded policy has
already put the fallback's action where the guardian rejected its own — the same object OPE and ``ogsrl truth``
score), checks the (state, action) pair against the guardian's certified support, and sets ``defer_to_clinician``
with a reason when a row is implausible, incomplete or out of support.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ogsrl import features
from ogsrl.errors import DataError

OUTPUT_COLUMNS = ("fluid_ml", "nee_max", "in_guardian", "defer_to_clinician", "reason")
"""Columns of :meth:`Recommender.recommend`'s frame; with a cost model, one ``p_<cost>`` column per cost follows."""
COST_PREFIX = "p_"
RANGE_RTOL = 1e-6
"""Relative slack on the plausible-range bounds (absorbs float32 storage of boundary values)."""


class Recommender:
    """Per-row recommendations with safety checks (see the module docstring); build one with
    :func:`ogsrl.registry.bundle.load_bundle`."""

    def __init__(self, policy: Any, guardian: Any | None, manifest: Mapping[str, Any],
                 cost_model: Any | None = None) -> None:
        self.policy = policy
        self.guardian = guardian
        self.cost_model = cost_model
        self.cost_names: tuple[str, ...] = tuple(manifest.get("cost_names") or ())
        self.cost_features: tuple[str, ...] = tuple(manifest.get("cost_model_features") or ())
        self.manifest = dict(manifest)
        self.state_features: tuple[str, ...] = tuple(manifest["state_features"])
        self.guardian_features: tuple[str, ...] = tuple(manifest.get("guardian_features") or ())
        self.ranges: dict[str, dict[str, Any]] = dict(manifest["ranges"])
        self.action_columns: tuple[str, ...] = tuple(manifest.get("action_columns") or features.ACTIONS)
        self.action_labels: tuple[str, ...] = tuple(manifest.get("action_labels") or ())
        self.cost_rules: list[dict[str, Any]] = list(manifest.get("cost_rules") or [])

    def check_units(self, units: Mapping[str, str]) -> None:
        """Raise DataError when a client declares a unit that differs from the validated one."""
        bad = [
            f"{k}: got {v!r}, expected {self.ranges[k]['unit']!r}"
            for k, v in units.items() if k in self.ranges and v != self.ranges[k]["unit"]
        ]
        unknown = [k for k in units if k not in self.ranges]
        if unknown:
            raise DataError(f"units given for unknown feature(s) {unknown}", table="request", column="units")
        if bad:
            raise DataError("unit mismatch: " + "; ".join(bad), table="request", column="units")

    def _row_problems(self, df: pd.DataFrame) -> list[list[str]]:
        """Per row: the reasons it cannot be trusted (missing or implausible values).

        Range bounds get a relative tolerance of ``RANGE_RTOL`` so that a boundary value stored as float32
        (0.21 → 0.2099999934) is not called implausible.
        """
        problems: list[list[str]] = [[] for _ in range(len(df))]
        for col in df.columns:
            if col not in self.ranges:
                continue
            r = self.ranges[col]
            vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
            finite = np.isfinite(vals)
            low = -np.inf if r["low"] is None else r["low"] - RANGE_RTOL * max(1.0, abs(r["low"]))
            high = np.inf if r["high"] is None else r["high"] + RANGE_RTOL * max(1.0, abs(r["high"]))
            with np.errstate(invalid="ignore"):
                out_of_range = finite & ((vals < low) | (vals > high))
                not_binary = finite & ~out_of_range & (r["kind"] == "binary") & (vals != 0.0) & (vals != 1.0)
            if col in self.state_features:
                for i in np.flatnonzero(~finite):
                    problems[i].append(f"missing value for {col}")
            for i in np.flatnonzero(out_of_range):
                lo_txt = "-inf" if r["low"] is None else f"{r['low']:g}"
                hi_txt = "inf" if r["high"] is None else f"{r['high']:g}"
                problems[i].append(f"implausible {col}={vals[i]:.6g} (plausible {lo_txt}–{hi_txt} {r['unit']})")
            for i in np.flatnonzero(not_binary):
                problems[i].append(f"implausible {col}={vals[i]:.6g} (binary: 0 or 1)")
        return problems

    def recommend(self, df: pd.DataFrame) -> pd.DataFrame:
        """Recommendations for a batch of states.

        Args:
            df: one row per patient state; must hold every state feature (extra known features are range-checked,
                unknown columns are ignored).

        Returns:
            One row per input row: ``fluid_ml``, ``nee_max`` (NaN when deferred before acting), ``in_guardian``
            (None without a guardian), ``defer_to_clinician``, ``reason`` ("" when not deferred), and with a cost
            model one ``p_<cost>`` column: predicted P(cost = 1) in the next step (NaN when not acted on).
        """
        missing = [c for c in self.state_features if c not in df.columns]
        if missing:
            raise DataError(f"missing state feature column(s) {missing}", table="request")
        n = len(df)
        problems = self._row_problems(df)
        ok = np.array([not p for p in problems], dtype=bool)
        n_act = len(self.action_columns)
        actions = np.full((n, n_act), np.nan)
        in_guardian: list[bool | None] = [None] * n
        costs = np.full((n, len(self.cost_names)), np.nan)
        if ok.any():
            obs = df.loc[ok, list(self.state_features)].to_numpy(dtype=np.float64)
            act = np.asarray(self.policy.act(obs, None), dtype=np.float64)
            if act.ndim == 1:  # a discrete policy's ids (B,) → (B, 1)
                act = act[:, None]
            if act.shape != (len(obs), n_act):
                raise RuntimeError(f"policy returned actions of shape {act.shape}, expected {(len(obs), n_act)}")
            actions[ok] = act
            if self.cost_model is not None:
                cost_obs = df.loc[ok, list(self.cost_features)].to_numpy(dtype=np.float64)
                costs[ok] = np.asarray(self.cost_model.predict_costs(cost_obs, act), dtype=np.float64)
            if self.guardian is not None:
                cols = {**{c: obs[:, j] for j, c in enumerate(self.state_features)},
                        **{a: act[:, j] for j, a in enumerate(self.action_columns)}}
                x = np.column_stack([cols[c] for c in self.guardian_features])
                inside = np.asarray(self.guardian.contains(x), dtype=bool)
                for i, flag in zip(np.flatnonzero(ok), inside):
                    in_guardian[i] = bool(flag)
                    if not flag:
                        problems[i].append("state-action outside the guardian's certified support")
        cols: dict[str, Any] = {a: actions[:, j] for j, a in enumerate(self.action_columns)}
        if self.action_labels:  # a discrete action: its id (nullable integer) and label
            a = self.action_columns[0]
            ids = [None if not np.isfinite(v) else int(v) for v in actions[:, 0]]
            cols = {a: pd.array(ids, dtype="Int64"),
                    f"{a}_label": [None if i is None else self.action_labels[i] for i in ids]}
        out = pd.DataFrame({
            **cols,
            "in_guardian": pd.array(in_guardian, dtype="boolean"),
            "defer_to_clinician": [bool(p) for p in problems],
            "reason": ["; ".join(p) for p in problems],
        })
        for j, name in enumerate(self.cost_names):
            out[COST_PREFIX + name] = costs[:, j]
        return out
