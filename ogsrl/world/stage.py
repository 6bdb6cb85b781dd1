"""DVC stage ``fit_world_model``: fit the ensemble on the training split, score it on the test split.

Inputs: ``data/trajectories/{train,val,test}.parquet``. Outputs: ``data/models/world/`` (state_dict + JSON config),
``data/reports/world.json`` (metrics) and ``data/reports/world_plots/{learning_curve,per_feature_rmse,
calibration}.csv``. One-step scores (RMSE, NLL, central-interval coverage) are computed side by side for the
ensemble and two baselines fitted in the same run (1-NN lookup, linear). A multi-step check replays each test
stay's logged actions open-loop from its real start state and compares mortality and mean feature paths with the
logged ones.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm

from ogsrl.config import build, section
from ogsrl.data.contract import cost_columns_of, read_metadata
from ogsrl.data.schema import load_table_schema
from ogsrl.errors import DataError
from ogsrl.io import atomic_path, write_json, write_text
from ogsrl.world.baselines import DeltaRegressor, linear_model, nearest_neighbour
from ogsrl.world.data import Layout, Transitions, transitions_from_frame
from ogsrl.world.ensemble import MODES, EnsembleConfig, WorldModel
from ogsrl.world.env import EnvConfig, first_rows

log = logging.getLogger(__name__)

LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""Nominal central-interval levels of the calibration plot."""


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """How the stage scores the model."""

    interval: float = 0.9
    """nominal level of the central predictive interval whose coverage is reported"""
    n_samples: int = 100
    """Monte-Carlo draws per test row for the ensemble's predictive quantiles"""
    central_features: tuple[str, ...] = ("map", "spo2", "urine_step", "lactate")
    """clinically central features on which the ensemble must beat both baselines (those in the state set)"""
    replay_mode: str = "random_elite"
    """ensemble use in the open-loop multi-step replay: mean, random_member, random_elite or episode_elite"""
    seed: int = 0
    """seeds the Monte-Carlo draws and the replay"""

    def __post_init__(self) -> None:
        if not 0.0 < self.interval < 1.0:
            raise ValueError(f"interval must be in (0, 1), got {self.interval}")
        if self.n_samples < 10:
            raise ValueError(f"n_samples must be >= 10, got {self.n_samples}")
        if self.replay_mode not in MODES:
            raise ValueError(f"replay_mode must be one of {list(MODES)}, got {self.replay_mode!r}")


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """The ``world:`` section of params.yaml."""

    model: EnsembleConfig = field(default_factory=EnsembleConfig)
    """ensemble architecture and fitting"""
    env: EnvConfig = field(default_factory=EnvConfig)
    """rollout environment used by the policy trainers"""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """scoring on the test split"""


def _read(root: Path, split: str) -> tuple[pd.DataFrame, dict[str, object]]:
    path = root / "data" / "trajectories" / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"trajectory table not found: {path} (run `ogsrl extract` first)")
    return pd.read_parquet(path), read_metadata(path)


def _cohort(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """params ``cohort`` (the fallback for what the parquet metadata lacks), empty when absent."""
    return section(params, "cohort") if "cohort" in params else {}


def _columns(meta: Mapping[str, object], frame: pd.DataFrame, params: Mapping[str, Any]
             ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """State features (parquet metadata, else params cohort.state_features) and cost columns."""
    feats = meta.get("ogsrl.state_features")
    if feats is None:
        feats = _cohort(params).get("state_features")
    if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
        raise DataError("state features missing from the parquet metadata and params cohort.state_features",
                        table="train")
    costs = meta.get("ogsrl.cost_columns")
    if not isinstance(costs, list):
        costs = cost_columns_of(frame)
    return tuple(feats), tuple(str(c) for c in costs if c != "cost_total")  # the total is their sum, not a rule


def _final_hour(meta: Mapping[str, object], params: Mapping[str, Any]) -> float | None:
    """The window's last decision time in hours since onset, cohort.window_start_h + (n_steps − 1)·step_h (n_steps
    and step_h from the parquet metadata, else params); None when unknown (then each table's latest decision)."""
    cohort = _cohort(params)
    start = cohort.get("window_start_h")
    n_steps = meta.get("ogsrl.n_steps", cohort.get("n_steps"))
    step_h = meta.get("ogsrl.step_h", cohort.get("step_h"))
    if start is None or n_steps is None or step_h is None:
        return None
    try:
        return float(start) + (int(n_steps) - 1) * float(step_h)
    except (TypeError, ValueError) as exc:
        raise DataError(f"window_start_h {start!r}, n_steps {n_steps!r}, step_h {step_h!r} must be numbers",
                        table="train") from exc


def death_charge_of(meta: Mapping[str, object], params: Mapping[str, Any]) -> tuple[float, float | None]:
    """(reward charged per decision time left after a death, decision interval in hours) from the parquet metadata
    (``ogsrl.death_charge``, absent: 0, the reward is taken as logged; ``ogsrl.step_h``, else params)."""
    raw_charge = meta.get("ogsrl.death_charge", 0.0)
    raw_step = meta.get("ogsrl.step_h", _cohort(params).get("step_h"))
    try:
        charge = float(json.loads(raw_charge) if isinstance(raw_charge, str) else raw_charge)
        step_h = None if raw_step is None else float(json.loads(raw_step) if isinstance(raw_step, str) else raw_step)
    except (TypeError, ValueError) as exc:
        raise DataError(f"ogsrl.death_charge {raw_charge!r} and ogsrl.step_h {raw_step!r} must be numbers",
                        table="train") from exc
    if not (np.isfinite(charge) and charge >= 0):
        raise DataError(f"ogsrl.death_charge must be a number >= 0, got {raw_charge!r}", table="train")
    return charge, step_h


@dataclass(frozen=True, slots=True)
class TableLayout:
    """How a trajectory table becomes the world model's transitions (from its parquet metadata, else params)."""

    state_features: tuple[str, ...]
    """the model's state columns"""
    cost_columns: tuple[str, ...]
    """the cost rules it predicts (not their total)"""
    final_hour: float | None
    """the window's last decision time, hours since onset (None: each table's latest)"""
    death_charge: float
    """reward charged per decision time left after a death"""
    step_h: float | None
    """decision interval, hours"""
    schema: Any
    """the table's declared schema (action columns)"""

    def transitions(self, frame: pd.DataFrame, table: str) -> Transitions:
        """The model's arrays of ``frame`` (rows aligned with its rows)."""
        return transitions_from_frame(frame, self.state_features, self.cost_columns, table, self.final_hour,
                                      tuple(self.schema.action_columns), self.death_charge, self.step_h)

    def model_layout(self, cfg: EnsembleConfig) -> Layout:
        """How the model's state columns are stepped (copied, Bernoulli, Gaussian, sums) under ``cfg``."""
        return Layout.make(self.state_features, self.cost_columns, cfg.copy_features, cfg.sum_features, self.schema)

    def new_model(self, cfg: EnsembleConfig) -> WorldModel:
        """An unfitted ensemble over this layout."""
        return WorldModel(cfg, self.model_layout(cfg), self.death_charge)


def table_layout(params: Mapping[str, Any], meta: Mapping[str, object], frame: pd.DataFrame, path: Path
                 ) -> TableLayout:
    """:class:`TableLayout` of the trajectory table at ``path`` (its metadata ``meta``, a split ``frame`` of it)."""
    feats, costs = _columns(meta, frame, params)
    charge, step_h = death_charge_of(meta, params)
    return TableLayout(feats, costs, _final_hour(meta, params), charge, step_h, load_table_schema(path))


def _gauss_scores(y: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: np.ndarray
                  ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Per-feature NLL of y/scale and central-interval coverage per level for Gaussian forecasts (B, K)."""
    sd = np.maximum(std, 1e-6)
    nll = (-norm.logpdf(y, mean, sd) - np.log(scale)).mean(0)
    cov = {lv: (np.abs(y - mean) <= norm.ppf(0.5 + lv / 2) * sd).mean(0) for lv in LEVELS}
    return nll, cov


def evaluate(model: WorldModel, baselines: list[DeltaRegressor], test: Transitions, cfg: EvalConfig,
             scale: np.ndarray) -> dict[str, dict[str, Any]]:
    """One-step scores on ``test`` per model: rmse (S,), nll (K,), coverage {level: (K,)} over Gaussian features.

    ``scale`` (K,) puts NLL in units of each feature's typical one-step change, comparable across features.
    """
    gi = list(model.layout.gauss_idx)
    y = test.next_obs[:, gi].astype(np.float64)
    rng = np.random.default_rng(cfg.seed)
    p = model.predict(test.obs, test.act)
    el = model.elites
    mu, var = p.next_mean[el][:, :, gi].astype(np.float64), p.next_var[el][:, :, gi].astype(np.float64)
    sd = np.sqrt(np.maximum(var, 1e-12))
    # mixture NLL: −log (1/M) Σ_m N(y; μ_m, σ_m²)
    logp = logsumexp(norm.logpdf(y[None], mu, sd), axis=0) - np.log(len(el))
    nll = (-logp - np.log(scale)).mean(0)
    # Monte-Carlo predictive quantiles, clipped like rollouts: (n, B, K)
    k = rng.integers(0, len(el), size=(cfg.n_samples, len(y)))
    rows = np.arange(len(y))
    draws = mu[k, rows] + sd[k, rows] * rng.standard_normal((cfg.n_samples, *y.shape))
    full = np.broadcast_to(test.obs, (cfg.n_samples, *test.obs.shape)).copy()
    full[:, :, gi] = draws
    draws = model.clip_state(np.broadcast_to(test.obs, full.shape), full)[:, :, gi]
    cov = {}
    for lv in LEVELS:
        lo, hi = np.quantile(draws, [0.5 - lv / 2, 0.5 + lv / 2], axis=0)
        cov[lv] = ((y >= lo) & (y <= hi)).mean(0)
    mean_all = p.next_mean[el].mean(0)
    out = {"ensemble": {"rmse": np.sqrt(((mean_all - test.next_obs) ** 2).mean(0)), "nll": nll, "coverage": cov}}
    for b in baselines:
        f = b.predict(test.obs, test.act)
        b_nll, b_cov = _gauss_scores(y, f.mean[:, gi], f.std[:, gi], scale)
        out[b.name] = {"rmse": np.sqrt(((f.mean - test.next_obs) ** 2).mean(0)), "nll": b_nll, "coverage": b_cov}
    return out


def replay(model: WorldModel, frame: pd.DataFrame, feats: tuple[str, ...], mode: str, seed: int,
           horizon: int) -> dict[str, Any]:
    """Open-loop replay of logged actions from each test stay's first state.

    Each stay runs for its logged number of rows (≤ horizon) or until a sampled death. Returns model vs logged
    mortality and the mean path (per step since the stay's first row) of every state feature, model and logged.
    """
    frame = frame.iloc[np.lexsort((frame["step"].to_numpy(), frame["stay_key"].to_numpy()))]
    first = first_rows(frame.reset_index(drop=True), "test")  # sorted frame: first rows in ascending order
    keys = frame["stay_key"].to_numpy()
    n = len(first)
    length = np.diff(np.append(first, len(frame)))
    act = np.zeros((horizon, n, len(model.layout.action_names)), dtype=np.float32)
    logged = np.full((horizon + 1, n, len(feats)), np.nan)
    a_all = frame[list(model.layout.action_names)].to_numpy(np.float32)
    s_all = frame[list(feats)].to_numpy(np.float64)
    ns_all = frame[[f"next_{f}" for f in feats]].to_numpy(np.float64)
    for t in range(horizon):
        has = length > t
        act[t, has] = a_all[first[has] + t]
        logged[t, has] = s_all[first[has] + t]
        last = length == t + 1
        logged[t + 1, last] = ns_all[first[last] + t]
    rng = np.random.default_rng(seed)
    member = (model.elites[rng.integers(0, len(model.elites), size=n)] if mode == "episode_elite"
              else np.full(n, model.elites[0]))
    obs = s_all[first].astype(np.float32)
    alive = np.ones(n, dtype=bool)
    died = np.zeros(n, dtype=bool)
    sim = np.full((horizon + 1, n, len(feats)), np.nan)
    sim[0] = obs
    for t in range(horizon):
        run = alive & (length > t)
        if not run.any():
            break
        s = model.step(obs[run], act[t, run], mode, rng, member=member[run])  # type: ignore[arg-type]
        obs[run] = s.next_obs
        d = rng.random(int(run.sum())) < s.death_prob
        died[np.flatnonzero(run)[d]] = True
        alive[np.flatnonzero(run)[d]] = False
        sim[t + 1, run] = obs[run]
    logged_death = frame.groupby("stay_key")["death_in_step"].any().reindex(keys[first]).to_numpy(dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN steps after every stay ended
        return {"mortality_model": float(died.mean()), "mortality_logged": float(logged_death.mean()),
                "path_model": np.nanmean(sim, axis=1), "path_logged": np.nanmean(logged, axis=1), "n_stays": n}


def _csv(path: Path, frame: pd.DataFrame) -> None:
    write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The short form the CLI prints: every metric except the per-feature ones (all of them:
    ``data/reports/world.json``)."""
    from ogsrl import features

    out = {k: v for k, v in metrics.items() if k.rsplit("/", 1)[-1] not in features.ALL}
    out["metrics_file"] = "data/reports/world.json"
    return out


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Fit, save and score the world model; write metrics and plot tables; return the flat metrics."""
    cfg = build(WorldConfig, params.get("world"), "world")
    root = Path(root)
    train_df, meta = _read(root, "train")
    val_df, _ = _read(root, "val")
    test_df, _ = _read(root, "test")
    tl = table_layout(params, meta, train_df, root / "data" / "trajectories" / "train.parquet")
    feats = tl.state_features
    train, val, test = (tl.transitions(df, name) for df, name in ((train_df, "train"), (val_df, "val"),
                                                                  (test_df, "test")))
    model = tl.new_model(cfg.model)
    t0 = time.perf_counter()
    fit = model.fit(train, val)
    fit_s = time.perf_counter() - t0
    with atomic_path(root / "data" / "models" / "world") as tmp:
        model.save(tmp)
    baselines = [b.fit(train, val) for b in (nearest_neighbour(), linear_model())]
    gi = list(model.layout.gauss_idx)
    scale = np.maximum((train.next_obs - train.obs)[:, gi].std(0), 1e-6).astype(np.float64)
    scores = evaluate(model, baselines, test, cfg.eval, scale)
    rep = replay(model, test_df, feats, cfg.eval.replay_mode, cfg.eval.seed, cfg.env.horizon)

    names = list(model.layout.gauss_idx) + list(model.layout.binary_idx) + list(model.layout.sum_idx)
    pred_feats = [feats[i] for i in sorted(names)]
    gauss_feats = [feats[i] for i in gi]
    central = [f for f in cfg.eval.central_features if f in pred_feats]
    lv = min(LEVELS, key=lambda x: abs(x - cfg.eval.interval))
    m: dict[str, Any] = {
        "world/fit_seconds": round(fit_s, 2), "world/epochs": fit.epochs, "world/stopped_early": fit.stopped_early,
        "world/elites": ",".join(str(i) for i in fit.elites), "world/elite_val_loss": float(np.sort(fit.member_val_loss)[:len(fit.elites)].mean()),
        "world/n_train": len(train), "world/n_val": len(val), "world/n_test": len(test),
        "world/central_features": ",".join(central),
    }
    for name, sc in scores.items():
        for i, f in enumerate(feats):
            if f in pred_feats:
                m[f"world/rmse/{name}/{f}"] = float(sc["rmse"][i])
        for j, f in enumerate(gauss_feats):
            m[f"world/nll/{name}/{f}"] = float(sc["nll"][j])
            m[f"world/coverage{int(round(lv * 100))}/{name}/{f}"] = float(sc["coverage"][lv][j])
        m[f"world/nll/{name}"] = float(np.mean(sc["nll"]))
        m[f"world/coverage{int(round(lv * 100))}/{name}"] = float(np.mean(sc["coverage"][lv]))
    ens = scores["ensemble"]["rmse"]
    m["world/beats_baselines_on_central"] = bool(central) and all(
        ens[feats.index(f)] < scores[b.name]["rmse"][feats.index(f)] for f in central for b in baselines)
    p = model.predict(test.obs, test.act)
    el = model.elites
    m["world/reward_rmse"] = float(np.sqrt(((p.rew_mean[el].mean(0) - test.rew) ** 2).mean()))
    m["world/death_brier"] = float(((p.death_prob[el].mean(0) - test.death) ** 2).mean())
    m["world/discharge_brier"] = float(((p.discharge_prob[el].mean(0) - test.exits) ** 2).mean())
    m["world/discharge_rate/model"] = float(p.discharge_prob[el].mean(0).mean())
    m["world/discharge_rate/test"] = float(test.exits.mean())
    for j, c in enumerate(tl.cost_columns):
        m[f"world/cost_brier/{c}"] = float(((p.cost_prob[el].mean(0)[:, j] - test.cost[:, j]) ** 2).mean())
    m["world/replay/mortality_model"] = rep["mortality_model"]
    m["world/replay/mortality_logged"] = rep["mortality_logged"]
    m["world/replay/mortality_gap"] = rep["mortality_model"] - rep["mortality_logged"]
    for i, f in enumerate(feats):
        if f in gauss_feats:
            gap = np.nanmax(np.abs(rep["path_model"][:, i] - rep["path_logged"][:, i]))
            m[f"world/replay/max_mean_path_gap/{f}"] = float(gap)

    plots = root / "data" / "reports" / "world_plots"
    _csv(plots / "learning_curve.csv", pd.DataFrame(fit.history).rename(columns={"epoch": "step"}))
    _csv(plots / "per_feature_rmse.csv", pd.DataFrame(
        {"feature": pred_feats, **{n: [float(sc["rmse"][feats.index(f)]) for f in pred_feats]
                                   for n, sc in scores.items()}}))
    _csv(plots / "calibration.csv", pd.DataFrame(
        {"nominal": list(LEVELS), **{n: [float(np.mean(sc["coverage"][x])) for x in LEVELS]
                                     for n, sc in scores.items()}}))
    steps = np.arange(rep["path_model"].shape[0])
    _csv(plots / "replay_paths.csv", pd.concat([pd.DataFrame(
        {"step": steps, "feature": f, "model": rep["path_model"][:, i], "logged": rep["path_logged"][:, i]})
        for i, f in enumerate(feats) if f in gauss_feats], ignore_index=True))
    write_json(root / "data" / "reports" / "world.json", m)
    log.info("world model: fit %.1fs, %d epochs, coverage %.3f", fit_s, fit.epochs,
             m[f"world/coverage{int(round(lv * 100))}/ensemble"])
    return m
