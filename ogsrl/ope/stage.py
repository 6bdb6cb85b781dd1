"""Stage ``evaluate``: off-policy evaluation of every trained policy on the test split.

Reads ``data/trajectories/{train,val,test}.parquet`` and every served policy ``data/models/policies/<run>/seed<seed>/``
(runs × seeds of params ``policies``; the object ``ogsrl.agents.load_policy`` returns, guardian fallback included);
fits the behaviour density on train (saved to ``data/models/behaviour/``); writes
``data/reports/evaluate/metrics.json`` (``<run>/seed<seed>/<estimator>/<target>/{value,ci_low,ci_high,ess}`` plus
``<run>/mean/…`` and ``<run>/sd/…`` over seeds) and two plot tables, ``estimates.csv`` (one row per policy ×
seed × estimator × target) and ``weights.csv`` (how much of the total importance weight the top-k stays carry). On the demo
source it also simulates the true value of the behaviour policy and of each served policy
(``ogsrl.synth.stage.run_truth``, the same policy object) and puts the true values beside the estimates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ogsrl import config, features
from ogsrl.errors import DataError
from ogsrl.agents import bc, common, load_policy
from ogsrl.agents.stage import TRAJECTORY_DIR, policies_config, policy_dir, seed_summary
from ogsrl.io import atomic_path, write_json
from ogsrl.ope import behaviour, wis

log = logging.getLogger(__name__)

BEHAVIOUR_DIR = Path("data/models/behaviour")
REPORT_DIR = Path("data/reports/evaluate")
RETURN = "return"
"""target name of the reward return (cost-return targets are named by their cost column)"""
MORTALITY = "mortality_hosp"
"""target name of in-hospital mortality (``ogsrl truth`` reports the same key)"""


@dataclass(frozen=True, slots=True)
class OPEConfig:
    """Off-policy evaluation on the test split."""

    gamma: float = 1.0
    """discount γ of the reward and cost returns (1: undiscounted, as ``ogsrl truth`` reports the return)"""
    weight_clip: float | None = 20.0
    """cap on each stay's importance weight Π_t ρ_t for the extra ``*_clip`` estimators (null: none; the mean weight
    under a correct π̂_b is 1)"""
    n_boot: int = 2000
    """bootstrap replicates (stays resampled with replacement)"""
    ci_level: float = 0.95
    """confidence level of the percentile bootstrap intervals"""
    seed: int = 42
    """seed of the bootstrap and of the ground-truth simulation"""
    truth_episodes: int = 2000
    """demo only: simulated episodes per policy for the true values"""
    behaviour: bc.Config = field(default_factory=bc.Config)
    """the behaviour-density model π̂_b (hurdle Gaussian on all extracted features; seeded by ``seed``)"""

    def __post_init__(self) -> None:
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.weight_clip is not None and self.weight_clip <= 0:
            raise ValueError(f"weight_clip must be positive or null, got {self.weight_clip}")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be ≥ 100 for a percentile interval, got {self.n_boot}")
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")
        if self.truth_episodes <= 0:
            raise ValueError(f"truth_episodes must be positive, got {self.truth_episodes}")


def log_ratios(target: Any, behaviour_model: Any, df: pd.DataFrame) -> np.ndarray:
    """Per-row log ρ = log π_e(a|s) − log π̂_b(a|x) on a trajectory table → ``(R,)``."""
    acts = df[list(features.ACTIONS)].to_numpy("float64")
    lp_e = target.log_prob(df[list(target.feature_names)].to_numpy("float64"), acts)
    lp_b = behaviour_model.log_prob(df[list(behaviour_model.feature_names)].to_numpy("float64"), acts)
    return lp_e - lp_b


def estimate_all(
    episodes: wis.Episodes, cost_columns: tuple[str, ...], cfg: OPEConfig, rng: np.random.Generator,
    off_policy: bool,
) -> dict[tuple[str, str], wis.Estimate]:
    """(estimator, target) → Estimate for every target of the report.

    Targets: ``return`` (discounted by γ) and each cost column's discounted return, with WIS and PDWIS;
    ``rate_<cost>`` (share of steps breaking the rule) and ``mortality_hosp`` (in-hospital death placed on a stay's
    last step, undiscounted) with WIS. Estimators ``wis``/``pdwis`` use the raw weights; with ``ope.weight_clip``
    set, ``wis_clip``/``pdwis_clip`` repeat them with capped weights. ``off_policy`` False: the behaviour policy's
    own values (all ratios 1, i.e. plain sample means; estimator ``onpolicy``).
    """
    v, mask = episodes.values, episodes.mask
    if off_policy:
        variants = [("", None)] + ([("_clip", cfg.weight_clip)] if cfg.weight_clip is not None else [])
        log_ratio = v["log_ratio"]
    else:
        variants, log_ratio = [("onpolicy", None)], np.zeros_like(v["log_ratio"])
    out = {}
    for suffix, clip in variants:
        kw = {"clip": clip, "n_boot": cfg.n_boot, "level": cfg.ci_level}
        fns = {"wis": wis.wis, "pdwis": wis.pdwis} if off_policy else {"": wis.wis}
        plain = f"wis{suffix}" if off_policy else suffix
        for name, fn in fns.items():
            for target in (RETURN, *cost_columns):
                out[(f"{name}{suffix}", target)] = fn(v[target], log_ratio, mask, cfg.gamma, rng, **kw)
        for col in cost_columns:
            out[(plain, f"rate_{col}")] = wis.wis_rate(v[col], log_ratio, mask, rng, **kw)
        out[(plain, MORTALITY)] = wis.wis(v[MORTALITY], log_ratio, mask, 1.0, rng, **kw)
    return out


def weight_concentration(log_ratio: np.ndarray, mask: np.ndarray, clip: float | None, top: int = 100) -> np.ndarray:
    """Share of the total trajectory weight held by the k heaviest stays, k = 1 … min(top, N) → ``(k,)``."""
    log_w = wis.cumulative_log_weights(log_ratio, mask, clip)[:, -1]
    w = np.sort(np.exp(log_w - log_w.max()))[::-1]
    return np.cumsum(w)[:top] / w.sum()


def _truth(params: Mapping[str, Any], root: Path, policy: str, cfg: OPEConfig) -> dict[str, Any] | None:
    """True value of ``policy`` (builtin name or saved directory) from the simulator; None when it is unavailable."""
    try:
        from ogsrl.synth import stage as synth_stage

        run_truth = synth_stage.run_truth
    except (ImportError, AttributeError) as exc:
        log.warning("evaluate: simulator ground truth unavailable (%s); true values left out", exc)
        return None
    result = run_truth(params, root, policy, cfg.truth_episodes, cfg.seed)
    return {
        k.removeprefix("truth/"): v for k, v in dict(result).items() if isinstance(v, (int, float, bool))
    }


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """OPE of every run × seed of ``policies`` on the test split; writes metrics and plot tables under ``root``."""
    cfg = config.build(OPEConfig, config.section(params, "ope"), "ope")
    pcfg = policies_config(params)
    root = Path(root)
    train, _ = common.read_split(root / TRAJECTORY_DIR / "train.parquet")
    val, _ = common.read_split(root / TRAJECTORY_DIR / "val.parquet")
    test, meta = common.read_split(root / TRAJECTORY_DIR / "test.parquet")
    costs = tuple(meta["cost_columns"])
    rng = np.random.default_rng(cfg.seed)

    behaviour_model, fit_metrics = behaviour.fit_behaviour(cfg.behaviour, train, val, cfg.seed)
    behaviour_model.save(root / BEHAVIOUR_DIR)
    metrics: dict[str, Any] = {f"behaviour_model/{k}": v for k, v in fit_metrics.items()}
    metrics["test/stays"] = int(test["stay_key"].nunique())
    metrics["ope/gamma"] = cfg.gamma

    if "died_in_hosp" not in test.columns:
        raise DataError("required column missing", table="test.parquet", column="died_in_hosp")
    last = np.r_[test["stay_key"].to_numpy()[1:] != test["stay_key"].to_numpy()[:-1], True]  # (R,) last row of a stay
    columns = {
        RETURN: test["reward"].to_numpy(),
        MORTALITY: (test["died_in_hosp"].to_numpy(bool) & last).astype(np.float64),
        **{c: test[c].to_numpy() for c in costs},
    }
    demo = config.section(params, "data").get("source") == "demo"
    truth_ok = demo
    rows: list[dict[str, Any]] = []
    concentration: list[dict[str, Any]] = []

    def report(name: str, seed: int | None, res: dict[tuple[str, str], wis.Estimate], truth: dict[str, Any]
               ) -> dict[str, float]:
        """Flat ``<estimator>/<target>/…`` metrics of one policy; appends its rows to the estimates table."""
        out: dict[str, float] = {}
        for (estimator, target), est in res.items():
            key = f"{estimator}/{target}"
            out.update({f"{key}/value": est.value, f"{key}/ci_low": est.ci_low, f"{key}/ci_high": est.ci_high,
                        f"{key}/ess": est.ess})
            true_value = truth.get(target)
            if target == RETURN and cfg.gamma != 1.0:
                true_value = None  # `ogsrl truth` reports the undiscounted return
            if isinstance(true_value, (int, float)) and not isinstance(true_value, bool):
                out[f"{key}/covers_truth"] = bool(est.ci_low <= true_value <= est.ci_high)
            rows.append({"policy": name, "seed": seed, "estimator": estimator, "target": target, "value": est.value,
                         "ci_low": est.ci_low, "ci_high": est.ci_high, "ess": est.ess,
                         "truth": true_value if isinstance(true_value, (int, float)) else np.nan})
        return out

    def truth_of(name: str, ref: str) -> dict[str, Any]:
        nonlocal truth_ok
        if not truth_ok:
            return {}
        truth = _truth(params, root, ref, cfg)
        if truth is None:
            truth_ok = False
            return {}
        metrics.update({f"truth/{name}/{k}": v for k, v in truth.items()})
        return truth

    on_policy = wis.pad_by_stay(test["stay_key"].to_numpy(), {**columns, "log_ratio": np.zeros(len(test))})
    res = estimate_all(on_policy, costs, cfg, rng, off_policy=False)
    metrics.update({f"behaviour/{k}": v for k, v in report("behaviour", None, res, truth_of("behaviour",
                                                                                             "behaviour")).items()})
    for name in pcfg.runs:
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in pcfg.seeds:
            path = root / policy_dir(name, seed)
            policy = load_policy(path)
            lr = log_ratios(policy, behaviour_model, test)
            episodes = wis.pad_by_stay(test["stay_key"].to_numpy(), {**columns, "log_ratio": lr})
            res = estimate_all(episodes, costs, cfg, rng, off_policy=True)
            share = weight_concentration(episodes.values["log_ratio"], episodes.mask, cfg.weight_clip)
            concentration.extend({"policy": name, "seed": seed, "step": k + 1, "weight_share": s}
                                 for k, s in enumerate(share))
            truth = truth_of(f"{name}/seed{seed}", str(path))
            per_seed[seed] = {**report(name, seed, res, truth), "weights/mean_log_ratio": float(lr.mean()),
                              "weights/top1_share": float(share[0])}
        metrics.update(seed_summary(per_seed, name))
    metrics["truth/available"] = bool(truth_ok)

    report_dir = root / REPORT_DIR
    write_json(report_dir / "metrics.json", metrics)
    with atomic_path(report_dir / "estimates.csv") as tmp:
        pd.DataFrame(rows).astype({"seed": "Int64"}).to_csv(tmp, index=False)
    with atomic_path(report_dir / "weights.csv") as tmp:
        pd.DataFrame(concentration, columns=["policy", "seed", "step", "weight_share"]).to_csv(tmp, index=False)
    return metrics
