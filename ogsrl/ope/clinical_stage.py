"""Stage ``clinical``: the paper's clinical metrics (docs/metrics.md) for every trained policy and the clinicians.

Reads the test split, every served policy ``data/models/policies/<run>/seed<seed>/`` (``ogsrl.agents.load_policy``;
``act`` follows the policy's act_mode, drawn ``clinical.samples`` times per logged state with a generator seeded
by ``(clinical.seed, run, seed)``, so adding a policy never changes another's draws), the world model (its cost
heads give the share of next steps below the safety thresholds under the policy's actions) and the OPE return
estimates of ``data/reports/evaluate/metrics.json`` (for ME). Writes ``data/reports/clinical.json`` (flat
``<run>/seed<seed>/<metric>``, ``<run>/{mean,sd}/<metric>`` and ``clinicians/<metric>``) and two plot tables under
``data/reports/clinical_plots/``: ``metrics.csv`` (policy, seed, metric, value, ci_low, ci_high) and
``mortality_curve.csv`` (the fitted return → mortality relation).
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ogsrl import config, costs, features
from ogsrl.agents import common, load_policy
from ogsrl.agents.stage import TRAJECTORY_DIR, policies_config, policy_dir, seed_summary
from ogsrl.errors import DataError
from ogsrl.io import atomic_path, write_json
from ogsrl.ope import clinical
from ogsrl.report import inputs

log = logging.getLogger(__name__)

WORLD_DIR = Path("data/models/world")
METRICS_FILE = Path("data/reports/clinical.json")
PLOTS_DIR = Path("data/reports/clinical_plots")
CLINICIANS = "clinicians"


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Per-action tolerance τ: MCR's match window, AIR's escalation margin and ACP's unit."""

    fluid_ml: float = 250.0
    """IV fluid, mL per step"""
    nee_max: float = 0.05
    """vasopressor, µg/kg/min norepinephrine-equivalent"""

    def __post_init__(self) -> None:
        if not (self.fluid_ml > 0 and self.nee_max > 0):
            raise ValueError(f"tolerances must be > 0, got fluid_ml={self.fluid_ml}, nee_max={self.nee_max}")

    def array(self) -> np.ndarray:
        return np.array([getattr(self, a) for a in features.ACTIONS], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ClinicalConfig:
    """The ``clinical:`` section of params.yaml."""

    seed: int = 42
    """seed of the policies' action draws (combined with run and policy seed)"""
    samples: int = 4
    """actions drawn per logged test state and policy (metrics average over the draws)"""
    tolerance: Tolerance = field(default_factory=Tolerance)
    """per-action tolerance τ"""
    sofa_rise: float = 2.0
    """AIR: a step is deteriorating when SOFA rose by at least this many points since the previous step"""
    me_estimator: str = "pdwis"
    """ME: OPE estimator whose return estimate (and CI) is mapped to mortality"""
    gamma: float = 1.0
    """ME: discount of the stay returns of the return → mortality relation; must equal the OPE metrics' gamma"""

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be ≥ 1, got {self.samples}")
        if not self.sofa_rise > 0:
            raise ValueError(f"sofa_rise must be > 0, got {self.sofa_rise}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")


def clinical_config(params: Mapping[str, Any]) -> ClinicalConfig:
    return config.build(ClinicalConfig, params.get("clinical") or {}, "clinical")


def policy_actions(policy: Any, test: pd.DataFrame, samples: int, rng: np.random.Generator, who: str) -> np.ndarray:
    """``(K, R, A)`` actions of ``policy.act`` on the test states, K = ``samples`` draws."""
    names = list(policy.feature_names)
    missing = [n for n in names if n not in test.columns]
    if missing:
        raise DataError(f"policy {who} reads feature(s) {missing} that the test split does not have (trained on "
                        "other features?)", table="test.parquet", column=missing[0])
    obs = test[names].to_numpy(np.float64)
    return np.stack([np.asarray(policy.act(obs, rng), dtype=np.float64) for _ in range(samples)])


def model_cost_probs(world: Any, test: pd.DataFrame, actions: np.ndarray, cost_columns: tuple[str, ...]
                     ) -> np.ndarray:
    """``(K, R, C)`` P(cost = 1 in the next step | s, a) from the world model's cost heads (elite mean)."""
    names = list(world.layout.cost_names)
    missing = [c for c in cost_columns if c not in names]
    if missing:
        raise DataError(f"the world model has no cost head for {missing} (refit it with the current costs.rules)",
                        table="world_model.json", column=missing[0])
    gone = [n for n in world.layout.state_features if n not in test.columns]
    if gone:
        raise DataError(f"the world model reads feature(s) {gone} that the test split does not have",
                        table="test.parquet", column=gone[0])
    obs = test[list(world.layout.state_features)].to_numpy(np.float64)
    idx = [names.index(c) for c in cost_columns]
    out = [np.asarray(world.predict(obs, a).cost_prob, dtype=np.float64)[world.elites].mean(axis=0)[:, idx]
           for a in actions]
    return np.stack(out)


def paper_action_metrics(acts: np.ndarray, test: pd.DataFrame, cfg: ClinicalConfig) -> dict[str, float]:
    """MCR, AIR (+ parts) and ACP (+ per dimension) of actions ``(K, R, A)`` on the test split's rows."""
    stay = test["stay_key"].to_numpy()
    clin = test[list(features.ACTIONS)].to_numpy(np.float64)
    tol = cfg.tolerance.array()
    air = clinical.appropriate_intensity(acts, clin, test["sofa"].to_numpy(np.float64), stay, tol, cfg.sofa_rise)
    acp = clinical.action_change(acts, stay, tol)
    return {
        "mcr": clinical.match_rate(acts, clin, tol),
        "air": air["air"],
        "air/escalate_when_deteriorating": air["escalate_when_deteriorating"],
        "air/hold_when_stable": air["hold_when_stable"],
        "acp": acp["acp"],
        **{f"acp/{a}": float(v) for a, v in zip(features.ACTIONS, acp["per_dim"])},
    }


def action_metrics(acts: np.ndarray, test: pd.DataFrame, cfg: ClinicalConfig, below_model: np.ndarray,
                   rules: tuple[str, ...]) -> dict[str, float]:
    """:func:`paper_action_metrics` and the model-predicted below-threshold shares of one actor."""
    out = paper_action_metrics(acts, test, cfg)
    out.update({f"below/{r}/model": float(v) for r, v in zip(rules, clinical.below_share(below_model))})
    return out


def draws_of(policy: Any, test: pd.DataFrame, cfg: ClinicalConfig, run: str, seed: int) -> np.ndarray:
    """The stage's ``(K, R, A)`` draws of run × seed on the test states (generator keyed by ``(clinical.seed, run,
    seed)``, so the same policy gets the same draws wherever it is scored)."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(run.encode()), seed])
    return policy_actions(policy, test, cfg.samples, rng, f"{run}/seed{seed}")


def _me(curve: clinical.MortalityCurve, est: pd.DataFrame, label: str, cfg: ClinicalConfig,
        truth: Mapping[str, float]) -> dict[str, float]:
    rows = est[(est["policy"] == label) & (est["estimator"] == cfg.me_estimator) & (est["target"] == "return")]
    if rows.empty:
        known = sorted(est.loc[est["target"] == "return", "estimator"].unique()) if len(est) else []
        raise DataError(f"no {cfg.me_estimator!r} return estimate for {label} in the OPE metrics (clinical."
                        f"me_estimator; estimators there: {known})", table="metrics.json", column=cfg.me_estimator)
    r = rows.iloc[0]
    me, lo, hi = clinical.mortality_estimate(curve, float(r["value"]), float(r["ci_low"]), float(r["ci_high"]))
    return {"me": me, "me/ci_low": lo, "me/ci_high": hi, "me/return_estimate": float(r["value"]),
            **_truth_me(curve, truth)}


def _truth_me(curve: clinical.MortalityCurve, truth: Mapping[str, float]) -> dict[str, float]:
    """Demo: m̂ at the true return, and the true in-hospital mortality, where the simulator's truth has them."""
    out = {}
    true_return = inputs.truth_of(truth, "return")
    if true_return is not None:
        out["me/at_true_return"] = float(curve(true_return))
    true_mortality = inputs.truth_of(truth, "mortality_hosp")
    if true_mortality is not None:
        out["truth/mortality_hosp"] = true_mortality
    return out


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The short form the CLI prints: the paper's metrics (ME, MCR, AIR, ACP, shares below the thresholds) of the
    clinicians and of each run's seed mean (per seed and per action: ``data/reports/clinical.json``)."""
    metric = re.compile(r"(clinicians|[^/]+/mean)/(me|mcr|air|acp|below/[^/]+/(model|observed)|mortality_observed)")
    out = {k: v for k, v in metrics.items() if metric.fullmatch(k) or k == "me_relation/spearman"}
    out["metrics_file"] = str(METRICS_FILE)
    return out


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Clinical metrics of every run × seed of ``policies`` and of the clinicians on the test split."""
    from ogsrl.world.ensemble import WorldModel

    cfg = clinical_config(params)
    pcfg = policies_config(params)
    rules = tuple(r.name for r in costs.build_costs(params).rules)
    cost_cols = tuple(f"cost_{r}" for r in rules)
    root = Path(root)
    test, meta = common.read_split(root / TRAJECTORY_DIR / "test.parquet")
    if not meta["schema"].is_canonical:  # MCR/AIR tolerances, SOFA and the paper's thresholds are MIMIC-specific
        skipped: dict[str, Any] = {"clinical/available": False, "test/rows": int(len(test)),
                                   "clinical/reason": "bring-your-own table: the paper's clinical metrics need the "
                                                      "canonical features (SOFA, fluid_ml, nee_max)"}
        write_json(root / METRICS_FILE, skipped)
        _write_tables(root / PLOTS_DIR, skipped, {}, (), clinical.MortalityCurve(np.zeros(0), np.zeros(0)))
        return skipped
    for col in ("sofa", "died_in_hosp", *cost_cols):
        if col not in test.columns:
            raise DataError("required column missing", table="test.parquet", column=col)
    ope = inputs.read_json(root, "ope")
    if "ope/gamma" in ope and float(ope["ope/gamma"]) != cfg.gamma:
        raise DataError(f"clinical.gamma {cfg.gamma} differs from the OPE metrics' gamma {ope['ope/gamma']}: ME would "
                        "map returns on another scale", table="metrics.json", column="ope/gamma")
    est = inputs.ope_estimates(ope)
    truth = inputs.truth_values(ope, inputs.read_json(root, "truth", required=False))
    world = WorldModel.load(root / WORLD_DIR)

    stay = test["stay_key"].to_numpy()
    returns = clinical.stay_returns(test["reward"].to_numpy(np.float64), stay, cfg.gamma)
    died = test.groupby("stay_key", sort=False)["died_in_hosp"].max().to_numpy(np.float64)
    curve = clinical.mortality_curve(returns, died)
    varies = np.ptp(returns) > 0 and np.ptp(died) > 0
    rho = stats.spearmanr(returns, died).statistic if varies else float("nan")  # undefined for a constant input

    logged = test[list(features.ACTIONS)].to_numpy(np.float64)[None]
    clin = action_metrics(logged, test, cfg, model_cost_probs(world, test, logged, cost_cols), rules)
    clin.pop("mcr")  # 1 by definition
    clin.update({f"below/{r}/observed": float(v)
                 for r, v in zip(rules, clinical.below_share(test[list(cost_cols)].to_numpy(np.float64)))})
    clin.update({"me": float(curve(returns.mean())), "me/return_estimate": float(returns.mean()),
                 "mortality_observed": float(died.mean())})
    clin.update(_truth_me(curve, truth.get(inputs.CLINICIANS, {})))
    metrics: dict[str, Any] = {f"{CLINICIANS}/{k}": v for k, v in clin.items()}
    metrics.update({"me_relation/spearman": float(rho), "me_relation/stays": int(len(returns)),
                    "me_relation/mortality_at_min_return": float(curve.y[0]),
                    "me_relation/mortality_at_max_return": float(curve.y[-1]), "test/rows": int(len(test))})

    for name in pcfg.runs:
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in pcfg.seeds:
            label = f"{name}/seed{seed}"
            policy = load_policy(root / policy_dir(name, seed))
            common.check_units(policy, meta["schema"], f"test split (policy {label})")
            acts = draws_of(policy, test, cfg, name, seed)
            m = action_metrics(acts, test, cfg, model_cost_probs(world, test, acts, cost_cols), rules)
            m.update(_me(curve, est, label, cfg, truth.get(label, {})))
            per_seed[seed] = m
            log.info("clinical %s: MCR %.3f AIR %.3f ACP %.2f ME %.3f", label, m["mcr"], m["air"], m["acp"], m["me"])
        metrics.update(seed_summary(per_seed, name))

    write_json(root / METRICS_FILE, metrics)
    _write_tables(root / PLOTS_DIR, metrics, pcfg.runs, pcfg.seeds, curve)
    return metrics


def _write_tables(out: Path, metrics: Mapping[str, Any], runs: Any, seeds: tuple[int, ...],
                  curve: clinical.MortalityCurve) -> None:
    rows = []
    labels = [(CLINICIANS, None, f"{CLINICIANS}/")] + [(r, s, f"{r}/seed{s}/") for r in runs for s in seeds]
    for policy, seed, prefix in labels:
        for key, v in metrics.items():
            rest = key[len(prefix):]
            if not key.startswith(prefix) or rest.endswith(("/ci_low", "/ci_high")) or v is None:
                continue
            rows.append({"policy": policy, "seed": seed, "metric": rest, "value": v,
                         "ci_low": metrics.get(f"{key}/ci_low"), "ci_high": metrics.get(f"{key}/ci_high")})
    with atomic_path(out / "metrics.csv") as tmp:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=["policy", "seed", "metric", "value", "ci_low", "ci_high"]).astype(
            {"seed": "Int64"}).to_csv(tmp, index=False)
    with atomic_path(out / "mortality_curve.csv") as tmp:
        pd.DataFrame({"return": curve.x, "mortality": curve.y}).to_csv(tmp, index=False)
