"""Stages ``fit-behaviour``, ``simulate-truth`` and ``evaluate``: off-policy evaluation of every trained policy.

* ``fit-behaviour`` (:func:`run_behaviour`): fits π̂_b on train (early stopping on val), saves it to
  ``data/models/behaviour/`` and its fit metrics to ``data/reports/behaviour.json``. It depends on the trajectories
  and ``ope.behaviour``/``ope.seed`` only, so DVC keeps it when policies change.
* ``simulate-truth`` (:func:`run_truth`): on the demo source, the simulator's true values of the behaviour policy and
  of every served policy ``data/models/policies/<run>/seed<seed>/`` (:func:`ogsrl.synth.stage.run_truth`, the same
  policy object), written to ``data/reports/truth.json``. Each policy's result is cached in ``data/truth/`` under a
  hash of its checkpoint files, the truth settings and the simulation code (:func:`truth_code_sha256`), so adding a
  policy simulates only that one. Other sources:
  ``{"truth/available": false}``.
* ``evaluate`` (:func:`run`): for every run × seed on the test split: WIS and PDWIS (plus ``*_clip``), FQE (critic
  fitted on the train split, :mod:`ogsrl.ope.fqe`), and per-decision DR / WDR with that critic
  (:mod:`ogsrl.ope.dr`), and ``hull_fqe_wdr`` (the hull of the FQE and WDR intervals, :func:`estimate.hull`), for
  the reward return and every cost return, ``mb`` (the policy's value in world models fitted on the test split,
  :mod:`ogsrl.ope.model_based`) and ``knn`` (its value in a simulator made of the test split's own transitions,
  :mod:`ogsrl.ope.neighbour`) for the reward and cost returns, and ``consensus`` (the mean of ``ope.consensus``'s
  estimators inside the hull of their intervals, :func:`estimate.consensus`); writes ``data/reports/evaluate/metrics.json``
  (``<run>/seed<seed>/<estimator>/<target>/{value,ci_low,ci_high,ess[,covers_truth]}``, ``<run>/{mean,sd}/…``),
  ``estimates.csv`` and ``weights.csv``. A policy's own random draws (bootstrap, π_e's Monte-Carlo actions) come
  from a seed derived from ``ope.seed`` and the policy key (:func:`estimate.policy_seed`); the critics' init,
  minibatch order and refit resamples, and the evaluation world models' fits and their rollouts' model draws, come
  from ``ope.seed`` alone, the same for every policy (common random numbers: a fit's noise shifts every policy's
  estimate alike instead of reordering them). Either way, adding a
  policy never changes another policy's numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ogsrl import config, features
from ogsrl.agents import bc, common, load_policy
from ogsrl.agents.stage import TRAJECTORY_DIR, policies_config, policy_dir, seed_summary
from ogsrl.errors import DataError
from ogsrl.guardian import support as guardian_support
from ogsrl.io import atomic_path, dir_sha256, file_sha256, remove_temporaries, write_json, write_parquet
from ogsrl.ope import anchored, behaviour, bootstrap, dr, fqe, model_based, neighbour, wis
from ogsrl.ope.estimate import Estimate, cautious, consensus, hull, policy_seed

log = logging.getLogger(__name__)

BEHAVIOUR_DIR = Path("data/models/behaviour")
BEHAVIOUR_REPORT = Path("data/reports/behaviour.json")
TRUTH_DIR = Path("data/truth")
TRUTH_REPORT = Path("data/reports/truth.json")
REPORT_DIR = Path("data/reports/evaluate")
RETURN = "return"
"""target name of the reward return (cost-return targets are named by their cost column)"""
MORTALITY = "mortality_hosp"
"""target name of in-hospital mortality (``ogsrl truth`` reports the same key)"""
BEHAVIOUR = "behaviour"
"""policy key of the clinicians (the logged behaviour policy)"""
CONSENSUS = "consensus"
"""estimator name of the consensus of ``ope.consensus``'s estimators (:func:`estimate.consensus`)"""
CAUTIOUS = "cautious"
"""estimator name of the consensus of the reward return lowered by its parts' disagreement (:func:`estimate.cautious`)"""
COMBINABLE: tuple[str, ...] = ("wis", "pdwis", "wis_clip", "pdwis_clip", "fqe", "dr", "wdr", "mb", "knn")
"""estimators of the reward and every cost return, which ``ope.consensus`` may combine"""


@dataclass(frozen=True, slots=True)
class OPEConfig:
    """Off-policy evaluation on the test split (params ``ope``)."""

    gamma: float = 1.0
    """discount γ of the reward and cost returns (1: undiscounted, as ``ogsrl truth`` reports the return)"""
    weight_clip: float | None = 20.0
    """cap on each stay's importance weight Π_t ρ_t for the extra ``*_clip`` estimators (null: none; the mean weight
    under a correct π̂_b is 1)"""
    n_boot: int = 2000
    """bootstrap replicates (stays resampled with replacement)"""
    ci_level: float = 0.95
    """confidence level of the intervals"""
    seed: int = 42
    """base seed: π̂_b's init and shuffling, the truth simulation, and (with the policy key) each policy's draws"""
    truth_episodes: int = 2000
    """demo only: simulated episodes per policy for the true values"""
    behaviour: bc.Config = field(default_factory=bc.Config)
    """the behaviour-density model π̂_b (hurdle Gaussian on all extracted features; seeded by ``seed``)"""
    fqe: fqe.Config = field(default_factory=fqe.Config)
    """the FQE critic, also the DR / WDR critic"""
    model: model_based.Config = field(default_factory=model_based.Config)
    """model-based OPE (``mb``): world models fitted on the test split (architecture: ``world.model``)"""
    neighbour: neighbour.Config = field(default_factory=neighbour.Config)
    """nearest-neighbour OPE (``knn``): episodes made of the test split's own transitions"""
    anchored: anchored.Config = field(default_factory=anchored.Config)
    """``mb_anchored``: ``mb``'s cost readings through a line fitted across the attendings (needs ``mb``)"""
    consensus: tuple[str, ...] = ("knn", "mb", "fqe")
    """estimators whose mean (inside the hull of their intervals) is reported as ``consensus`` for every policy and
    target they all estimate (:func:`estimate.consensus`); empty: none"""
    cautious_k: float = 1.0
    """``cautious``: the consensus of the reward return minus this many standard deviations of its parts' values, the
    score to choose a policy by (:func:`estimate.cautious`); 0: the consensus' value"""

    def __post_init__(self) -> None:
        unknown = [e for e in self.consensus if e not in COMBINABLE]
        if unknown:
            raise ValueError(f"consensus: unknown estimator(s) {unknown}; allowed: {list(COMBINABLE)}")
        if self.consensus and len(set(self.consensus)) != len(self.consensus):
            raise ValueError(f"consensus lists an estimator twice: {list(self.consensus)}")
        if len(self.consensus) == 1:
            raise ValueError(f"consensus needs at least two estimators (or none), got {list(self.consensus)}")
        off = [e for e, on in (("mb", self.model.enabled), ("knn", self.neighbour.enabled),
                               ("wis_clip", self.weight_clip is not None), ("pdwis_clip", self.weight_clip is not None))
               if e in self.consensus and not on]
        if off:
            raise ValueError(f"consensus combines {off}, which this configuration does not compute (ope.model.enabled, "
                             "ope.neighbour.enabled, ope.weight_clip); list only computed estimators, or [] for none")
        if not (math.isfinite(self.cautious_k) and self.cautious_k >= 0):
            raise ValueError(f"cautious_k must be a finite number ≥ 0, got {self.cautious_k}")
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


def ope_config(params: Mapping[str, Any]) -> OPEConfig:
    """Build :class:`OPEConfig` from ``params["ope"]`` (unknown keys are errors)."""
    return config.build(OPEConfig, config.section(params, "ope"), "ope")


# ---------------------------------------------------------------------------------------------------- inputs


def _columns_of(policy: Any, df: pd.DataFrame, who: str) -> np.ndarray:
    missing = [c for c in policy.feature_names if c not in df.columns]
    if missing:
        raise DataError(f"{who} reads feature columns the trajectories lack: {missing} (trained on other features?)",
                        table="test.parquet")
    return df[list(policy.feature_names)].to_numpy("float64")


def log_ratios(target: Any, behaviour_model: Any, df: pd.DataFrame, who: str = "policy") -> np.ndarray:
    """Per-row log ρ = log π_e(a|s) − log π̂_b(a|x) on a trajectory table → ``(R,)``."""
    acts = df[list(getattr(behaviour_model, "action_columns", features.ACTIONS))].to_numpy("float64")
    lp_e = target.log_prob(_columns_of(target, df, who), acts)
    lp_b = behaviour_model.log_prob(_columns_of(behaviour_model, df, "the behaviour model"), acts)
    return lp_e - lp_b


def load_behaviour(root: Path) -> Any:
    """The saved π̂_b; DataError when the ``fit-behaviour`` stage has not run."""
    path = Path(root) / BEHAVIOUR_DIR
    if not (path / "config.json").is_file():
        raise DataError(f"behaviour model missing at {BEHAVIOUR_DIR}; run `ogsrl fit-behaviour` first")
    if json.loads((path / "config.json").read_text(encoding="utf-8")).get("kind") == behaviour.LOGISTIC_KIND:
        return behaviour.LogisticBehaviour.load(path)
    return load_policy(path)


def action_bin_edges(path: Path) -> dict[str, list[float]]:
    """The cohort's action-bin edges from the parquet metadata (``ogsrl.action_bin_edges``)."""
    import pyarrow.parquet as pq

    raw = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    edges = json.loads(raw.get("ogsrl.action_bin_edges", "{}"))
    if not edges:
        raise DataError("ope.fqe.action binned needs the action-bin edges (cohort.action_bins: true)",
                        table=path.name)
    return edges


def _bins(actions: np.ndarray, edges: Mapping[str, list[float]]) -> np.ndarray:
    from ogsrl.cohort.extract import assign_action_bins

    return assign_action_bins(actions[..., 0].reshape(-1), actions[..., 1].reshape(-1), dict(edges)).reshape(
        actions.shape[:-1]).astype(np.int64)


# ---------------------------------------------------------------------------------------------------- stages


def run_behaviour(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Stage ``fit-behaviour``: fit π̂_b on train/val; save it and its fit metrics."""
    cfg = ope_config(params)
    root = Path(root)
    train, meta = common.read_split(root / TRAJECTORY_DIR / "train.parquet")
    val, _ = common.read_split(root / TRAJECTORY_DIR / "val.parquet")
    model, fit_metrics = behaviour.fit_behaviour(cfg.behaviour, train, val, cfg.seed, meta["schema"])
    model.save(root / BEHAVIOUR_DIR)
    metrics = {f"behaviour_model/{k}": v for k, v in fit_metrics.items()}
    write_json(root / BEHAVIOUR_REPORT, metrics)
    return metrics


def _policy_hash(path: Path) -> str:
    return dir_sha256(path)


TRUTH_CODE = ("synth", "cohort", "agents", "guardian", "costs.py", "features.py")
"""the ogsrl modules a true value depends on (the stage's code dependencies in dvc.yaml, this file aside)"""


def truth_code_sha256() -> str:
    """SHA-256 over the source (``*.py``, by relative path) of :data:`TRUTH_CODE`: part of every truth cache key, so a
    change to the simulator or the served policies' code invalidates the persisted cache."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in TRUTH_CODE:
        p = pkg / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(pkg).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def run_truth(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Stage ``simulate-truth``: true values of the behaviour policy and every run × seed (demo source only)."""
    cfg = ope_config(params)
    pcfg = policies_config(params)
    root = Path(root)
    if config.section(params, "data").get("source") != "demo":
        out: dict[str, Any] = {"truth/available": False}
        (root / TRUTH_DIR).mkdir(parents=True, exist_ok=True)  # the stage's DVC output, an empty cache here
        write_json(root / TRUTH_DIR / "README.json", {"truth/available": False,
                                                      "reason": "true values need the demo simulator"})
        write_json(root / TRUTH_REPORT, out)
        return out
    from ogsrl.synth import stage as synth_stage

    settings = json.dumps({k: params.get(k) for k in ("synth", "cohort", "costs")}, sort_keys=True, default=str)
    base = hashlib.sha256(f"{settings}|{cfg.truth_episodes}|{cfg.seed}|{truth_code_sha256()}".encode()).hexdigest()
    keys = [BEHAVIOUR] + [f"{r}/seed{s}" for r in pcfg.runs for s in pcfg.seeds]
    remove_temporaries(root / TRUTH_DIR)  # a killed earlier run's half-written cache entries
    out = {"truth/available": True, "truth/episodes": cfg.truth_episodes, "truth/seed": cfg.seed}
    cached = 0
    per_patient: dict[str, pd.DataFrame] = {}
    for key in keys:
        spec = BEHAVIOUR if key == BEHAVIOUR else str(root / policy_dir(*_split_key(key)))
        ident = hashlib.sha256((base + (BEHAVIOUR if key == BEHAVIOUR else _policy_hash(Path(spec)))).encode())
        cache = root / TRUTH_DIR / f"{key.replace('/', '__')}.json"
        patients = cache.with_suffix(".parquet")
        doc = json.loads(cache.read_text()) if cache.is_file() else {}
        if doc.get("id") != ident.hexdigest() or not patients.is_file():
            res = synth_stage.truth_result(params, root, spec, cfg.truth_episodes, cfg.seed)
            values = {k.removeprefix("truth/"): v for k, v in res.to_dict().items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            doc = {"id": ident.hexdigest(), "values": values}
            per_patient[key] = res.per_stay.set_axis(res.per_stay.index.astype(str))
            write_parquet(patients, per_patient[key].reset_index())
            write_json(cache, doc)
        else:
            cached += 1
            per_patient[key] = pd.read_parquet(patients).set_index("patient")
        out.update({f"truth/{key}/{k}": v for k, v in doc["values"].items()})
    for key in keys[1:]:
        out.update({f"truth/{key}/{k}": v for k, v in against_behaviour(per_patient[key],
                                                                         per_patient[BEHAVIOUR]).items()})
    write_json(root / TRUTH_REPORT, out)  # a dependency of evaluate: only what the values depend on
    log.info("simulate-truth: %d of %d policies from the cache", cached, len(keys))
    return {**out, "truth/cached_policies": cached}


VS_BEHAVIOUR = "vs_behaviour_"
"""prefix of a policy's true differences to the clinicians on the same simulated patients"""


def against_behaviour(policy: pd.DataFrame, clinicians: pd.DataFrame) -> dict[str, float]:
    """The policy's true return, in-hospital mortality and total cost return minus the clinicians', per simulated
    patient (both truths score the same patients: one seed), averaged over the patients both cohorts keep, with 95 %
    CIs (:func:`ogsrl.synth.truth.paired_difference`): ``vs_behaviour_<metric>`` (``_ci_lo``, ``_ci_hi``) and
    ``vs_behaviour_patients``."""
    from ogsrl.synth.truth import paired_difference

    cols = [c for c in ("return", "died_in_hosp", f"cost_return_{TOTAL_COST}") if c in policy and c in clinicians]
    diff = paired_difference(policy[cols], clinicians[cols])
    out: dict[str, float] = {f"{VS_BEHAVIOUR}patients": diff[cols[0]].ess}
    for col, est in diff.items():
        name = "mortality_hosp" if col == "died_in_hosp" else col
        out.update({f"{VS_BEHAVIOUR}{name}": est.value, f"{VS_BEHAVIOUR}{name}_ci_lo": est.ci_low,
                    f"{VS_BEHAVIOUR}{name}_ci_hi": est.ci_high})
    return out


HEADLINE_TRUTH = re.compile(r"truth/(.+)/((vs_behaviour_)?(return|mortality_hosp|cost_return_cost_total))")
"""the true values a stage's printed summary keeps: each policy's return, mortality and total cost, and the same
against the clinicians"""


def truth_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The short form ``simulate-truth`` prints: per policy the true return, in-hospital mortality and total cost
    return, and how many policies came from the cache (all values with their CIs: ``data/reports/truth.json``)."""
    out = {k: v for k, v in metrics.items() if HEADLINE_TRUTH.fullmatch(k) or "/" not in k.removeprefix("truth/")}
    out["metrics_file"] = str(TRUTH_REPORT)
    return out


def _split_key(key: str) -> tuple[str, int]:
    run, seed = key.rsplit("/seed", 1)
    return run, int(seed)


def _true_value(truth: Mapping[str, Any], key: str, target: str, costs: tuple[str, ...], gamma: float
                ) -> float | None:
    """The simulator's value of an OPE target (None when the truth has none, e.g. a discounted return)."""
    name = {RETURN: "return", MORTALITY: MORTALITY}.get(target)
    if target in costs:
        name = f"cost_return_{target}"
    elif target.startswith("rate_"):
        name = target
    if name is None or (gamma != 1.0 and (target == RETURN or target in costs)):
        return None  # the truth reports undiscounted returns
    v = truth.get(f"truth/{key}/{name}")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# ---------------------------------------------------------------------------------------------------- evaluate


def estimate_is(episodes: wis.Episodes, cost_columns: tuple[str, ...], cfg: OPEConfig, rng: np.random.Generator,
                off_policy: bool) -> dict[tuple[str, str], Estimate]:
    """(estimator, target) → Estimate for the importance-sampling estimators.

    Targets: ``return`` (discounted by γ) and each cost column's discounted return, with WIS and PDWIS;
    ``rate_<cost>`` (share of steps breaking the rule) and ``mortality_hosp`` (in-hospital death placed on a stay's
    last step, undiscounted) with WIS. With ``ope.weight_clip`` set, ``wis_clip``/``pdwis_clip`` repeat them with
    capped weights. ``off_policy`` False: the behaviour policy's own values (all ratios 1, i.e. plain sample means;
    estimator ``onpolicy``).
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


@dataclass(frozen=True, slots=True)
class CriticData:
    """What FQE needs from the trajectories, built once for every policy."""

    names: tuple[str, ...]
    """critic state columns (every canonical feature present, as π̂_b)"""
    targets: tuple[str, ...]
    """critic heads: the reward return, then each cost column"""
    train: fqe.Transitions
    """the fitting rows (train split)"""
    test: fqe.Transitions
    """the evaluation rows (test split)"""
    edges: Mapping[str, list[float]] | None
    """action-bin edges (binned critic only)"""


def critic_data(cfg: OPEConfig, train: pd.DataFrame, test: pd.DataFrame, costs: tuple[str, ...],
                edges: Mapping[str, list[float]] | None, schema: Any = None) -> CriticData:
    """Transitions of the train and test splits for the critic (``schema``: a bring-your-own table's)."""
    names = behaviour.behaviour_features(train.columns, schema)
    targets = ("reward", *costs)
    space = common.action_space_of(schema, "FQE critic")
    if cfg.fqe.action == "binned" and not space == common.CANONICAL_SPACE:
        raise ValueError("ope.fqe.action binned needs the canonical table's 5 x 5 action_bin; this table declares "
                         f"its own action {list(space.columns)}: use ope.fqe.action continuous")

    prev = cfg.fqe.previous_action
    dims = None
    if not isinstance(prev, bool):
        unknown = [c for c in prev if c not in space.columns]
        if unknown:
            raise ValueError(f"ope.fqe.previous_action: {unknown} are not action columns of this table "
                             f"({list(space.columns)})")
        dims = [space.columns.index(c) for c in prev]

    def tr(df: pd.DataFrame) -> fqe.Transitions:
        acts = df[list(space.columns)].to_numpy("float64")
        a = _bins(acts, edges) if cfg.fqe.action == "binned" and edges is not None else acts
        own_space = None if space == common.CANONICAL_SPACE else space
        obs = df[list(names)].to_numpy("float64")
        keys = df["stay_key"].to_numpy()
        parts = [obs, fqe.previous_observations(keys, obs, cfg.fqe.history)]
        if prev:
            parts.append(fqe.previous_actions(keys, acts, own_space, dims))
        return fqe.transitions(keys, np.column_stack(parts), a, df[list(targets)].to_numpy("float64"), own_space)

    return CriticData(names, (RETURN, *costs), tr(train), tr(test), edges)


def _draws(policy: Any, df: pd.DataFrame, m: int, rng: np.random.Generator, cfg: fqe.Config,
           edges: Mapping[str, list[float]] | None, who: str) -> Any:
    """π_e's Monte-Carlo actions at every row of ``df``: (M, R, A), or (R, 25) bin shares for the binned critic."""
    x = _columns_of(policy, df, who)
    draws = np.stack([np.asarray(policy.act(x, rng), np.float64) for _ in range(m)])
    return fqe.bin_probs(_bins(draws, edges)) if cfg.action == "binned" and edges is not None else draws


CRITIC_STREAM = 0x46514500  # "FQE": keeps the critics' stream apart from every policy_seed stream


HULL = "hull_fqe_wdr"
"""the interval hull of FQE and WDR (value: FQE's), reported beside them; the gate reads its cost upper bounds
(``registry.cost_estimator``, the default) and, if ``registry.estimator`` names it, its return's lower bound"""


def critic_seeds(seed: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """(fit, refit) seeds of the FQE critics: from ``ope.seed`` only, shared by every policy."""
    fit, refit = np.random.SeedSequence([seed, CRITIC_STREAM]).spawn(2)
    return fit, refit


def estimate_fqe_dr(cd: CriticData, policy: Any, train: pd.DataFrame, test: pd.DataFrame, episodes: wis.Episodes,
                    cfg: OPEConfig, seeds: np.random.SeedSequence, who: str
                    ) -> tuple[dict[tuple[str, str], Estimate], dict[str, float]]:
    """FQE, DR and WDR of every critic target; returns (estimates, diagnostics)."""
    s_draw, _, s_boot, _ = seeds.spawn(4)
    s_fit, s_refit = critic_seeds(cfg.seed)
    fc = cfg.fqe
    rng_draw = np.random.default_rng(s_draw)
    d_train = _draws(policy, train, fc.mc_actions, rng_draw, fc, cd.edges, who)
    d_test = _draws(policy, test, fc.mc_actions, rng_draw, fc, cd.edges, who)
    fit_seed = int(s_fit.generate_state(1)[0])
    critic = fqe.fit(fc, cd.train, d_train, cfg.gamma, fit_seed)
    first = np.nonzero(cd.test.step == 0)[0]
    v0 = fqe.initial_values(critic, cd.test.obs, cd.test.step, d_test, first)  # (N, K)
    refits = None
    if fc.refits >= 2:
        stays = np.cumsum(cd.train.step == 0) - 1  # (R,) stay number of each train row
        n_stays = int(stays[-1]) + 1
        rng_refit = np.random.default_rng(s_refit)
        vs = []
        for b in range(fc.refits):
            counts = rng_refit.multinomial(n_stays, np.full(n_stays, 1.0 / n_stays))
            c = fqe.fit(fc, cd.train, d_train, cfg.gamma, fit_seed + 1 + b, row_weights=counts[stays])
            vs.append(fqe.initial_values(c, cd.test.obs, cd.test.step, d_test, first))
        refits = np.stack(vs)
    rng_boot = np.random.default_rng(s_boot)
    value, lo, hi = bootstrap.bagged_interval(v0, refits, rng_boot, cfg.n_boot, cfg.ci_level)
    overlap = bool(np.isfinite(episodes.values["log_ratio"][episodes.mask]).any())
    ess_w = wis.ess(wis.cumulative_log_weights(episodes.values["log_ratio"], episodes.mask)[:, -1]) if overlap else 0.0
    out: dict[tuple[str, str], Estimate] = {}
    q = critic.q(cd.test.obs, cd.test.step, cd.test.actions)  # (R, K)
    v = critic.v(cd.test.obs, cd.test.step, d_test)
    rows = episodes.rows
    assert rows is not None
    mask = episodes.mask
    for k, target in enumerate(cd.targets):
        out[("fqe", target)] = Estimate(float(value[k]), float(lo[k]), float(hi[k]), ess_w)
        if not overlap:  # every weight 0: DR and WDR are undefined
            continue
        qk = np.where(mask, q[np.maximum(rows, 0), k], 0.0)
        vk = np.where(mask, v[np.maximum(rows, 0), k], 0.0)
        r = episodes.values[target]
        kw = {"n_boot": cfg.n_boot, "level": cfg.ci_level}
        out[("dr", target)] = dr.dr(r, qk, vk, episodes.values["log_ratio"], mask, cfg.gamma, rng_boot, **kw)
        out[("wdr", target)] = dr.wdr(r, qk, vk, episodes.values["log_ratio"], mask, cfg.gamma, rng_boot, **kw)
        out[(HULL, target)] = hull(out[("fqe", target)], out[("wdr", target)])
    diag = {"fqe/refit_sd_return": float(refits.mean(axis=1)[:, 0].std(ddof=1)) if refits is not None else 0.0}
    return out, diag


MODEL_STREAM = 0x4D4245  # "MBE": the evaluation world models' stream, apart from the critics' and the policies'
MB = "mb"
"""estimator name of model-based OPE"""
NEIGHBOUR_STREAM = 0x4B4E4E  # "KNN": the nearest-neighbour pools' resamples
KNN = "knn"
"""estimator name of nearest-neighbour OPE"""
MB_ANCHORED = "mb_anchored"
"""estimator name of attending-anchored model-based OPE (:mod:`ogsrl.ope.anchored`)"""
ANCHOR_STREAM = 0x414E43  # "ANC": the attendings' clones, replays and line resamples
PROVIDERS = Path("providers.parquet")
"""stay_key → provider_key beside the splits (``ogsrl.cohort.stage.PROVIDERS``)"""
TOTAL_COST = "cost_total"
"""the cost column that sums the rules (``ogsrl.costs``)"""


@dataclass(frozen=True, slots=True)
class EvalWorld:
    """Model-based and nearest-neighbour OPE's simulators (built from the test split) and where their episodes start
    and stop."""

    models: tuple[Any, ...]
    """:class:`ogsrl.world.ensemble.WorldModel` fits: the full-data one, then the refits (empty: no ``mb``)"""
    pools: tuple[neighbour.NeighbourModel, ...]
    """nearest-neighbour pools: every test stay, then the resamples (empty: no ``knn``)"""
    state_features: tuple[str, ...]
    """the simulators' state columns"""
    starts: np.ndarray
    """(N, S) each test stay's first state, in the models' state columns"""
    horizons: np.ndarray
    """(N,) decision steps each test stay had left in the window"""
    targets: tuple[str, ...]
    """the targets reported: the reward return, each cost column the models predict, and ``cost_total`` (their sum)
    when the split has it"""
    combine: np.ndarray
    """(1 + C, len(targets)) each target as a combination of the models' reward and cost returns"""
    env_seed: int
    """seed of the simulators' draws in every policy's rollouts (common random numbers)"""
    pool_offsets: tuple[np.ndarray, ...] = ()
    """anchored ``knn``: per pool, (N, 1 + C) the clinicians' logged per-stay returns minus their value in the pool
    (:func:`ogsrl.ope.neighbour.clinician_offsets`; empty: not anchored)"""
    anchors: anchored.Anchors | None = None
    """``mb_anchored``'s attending lines (None: not made, ``anchor_report`` says why)"""
    anchor_report: Mapping[str, Any] = field(default_factory=dict)
    """run-level ``anchored/…`` metrics: the lines, the balance check, or why there is no ``mb_anchored``"""


def eval_world(params: Mapping[str, Any], cfg: OPEConfig, root: Path, test: pd.DataFrame,
               meta: Mapping[str, Any]) -> EvalWorld | None:
    """Fit model-based OPE's world models on ``test`` (``world.model`` architecture, seeds from ``ope.seed``) and
    build the nearest-neighbour pools, as enabled; no world models, with a warning, when the split has too few stays
    to fit on and hold some out; None when neither is left."""
    from ogsrl.agents.inputs import grid
    from ogsrl.data.contract import read_metadata
    from ogsrl.world import stage as world_stage
    from ogsrl.world.env import logged_returns, start_states, steps_left

    n_stays = int(test["stay_key"].nunique())
    fit_mb = cfg.model.enabled and model_based.enough_stays(n_stays, cfg.model)
    if cfg.model.enabled and not fit_mb:
        log.warning("evaluate: %d test stays are too few for model-based OPE (fit on >= 2, hold out %d); no mb "
                    "estimates", n_stays, model_based.held_out(n_stays, cfg.model))
    if not (fit_mb or cfg.neighbour.enabled):
        return None
    path = Path(root) / TRAJECTORY_DIR / "test.parquet"
    wcfg = config.build(world_stage.WorldConfig, params.get("world"), "world")
    table = world_stage.table_layout(params, read_metadata(path), test, path)
    layout = table.model_layout(wcfg.model)
    data = table.transitions(test, "test.parquet")
    stays = test["stay_key"].to_numpy()
    fit_seed, env_seed = np.random.SeedSequence([cfg.seed, MODEL_STREAM]).spawn(2)
    models = model_based.fit_models(
        data, stays, lambda seed: table.new_model(dataclasses.replace(wcfg.model, seed=seed)), cfg.model,
        fit_seed) if fit_mb else ()
    fit_knn = cfg.neighbour.enabled and len(data) >= cfg.neighbour.k
    if cfg.neighbour.enabled and not fit_knn:
        log.warning("evaluate: %d test transitions are fewer than ope.neighbour.k = %d; no knn estimates", len(data),
                    cfg.neighbour.k)
    pools = neighbour.fit_pools(data, stays, layout, table.death_charge, cfg.neighbour,
                                np.random.SeedSequence([cfg.seed, NEIGHBOUR_STREAM])) if fit_knn else ()
    if not (models or pools):
        return None
    feats = layout.state_features
    start, step_h, n_steps = grid(meta, params.get("cohort") or {})
    horizons = np.minimum(steps_left(test, start, step_h, n_steps, "test.parquet"), wcfg.env.horizon)
    names = (RETURN, *layout.cost_names)
    combine = np.eye(len(names))
    if TOTAL_COST in test.columns and TOTAL_COST not in names:
        names, combine = (*names, TOTAL_COST), np.column_stack([combine, np.r_[0.0, np.ones(len(names) - 1)]])
    starts, env = start_states(test, feats, "test.parquet"), int(env_seed.generate_state(1)[0])
    offsets: tuple[np.ndarray, ...] = ()
    if pools and cfg.neighbour.anchor:
        logged = logged_returns(test, ("reward", *layout.cost_names), horizons, cfg.gamma, "test.parquet")
        offsets = neighbour.clinician_offsets(pools, starts, horizons, logged, cfg.gamma, cfg.neighbour, env)
    anchors, anchor_report = None, {}
    if models and cfg.anchored.enabled:
        anchors, anchor_report = attending_anchors(Path(root), cfg, models, layout,
                                                   common.action_space_of(table.schema), (start, step_h, n_steps),
                                                   wcfg.env.horizon, env)
    return EvalWorld(models, pools, tuple(feats), starts, horizons, names, combine, env, offsets, anchors,
                     anchor_report)


def attending_anchors(root: Path, cfg: OPEConfig, models: tuple[Any, ...], layout: Any, space: Any,
                      window: tuple[float, float, int], horizon: int, env_seed: int
                      ) -> tuple[anchored.Anchors | None, dict[str, Any]]:
    """``mb_anchored``'s lines from every split's stays of each attending (:mod:`ogsrl.ope.anchored`), or None and
    ``anchored/unavailable`` saying why: no attendings recorded, too few with enough stays, or baseline features
    that differ between the attendings' patients (insufficient evidence).

    Per attending (sorted pseudonyms): a behaviour clone fitted on its train-split stays (early stopping on its
    val-split stays, else its test-split ones; with stays in one split only, on all but every fifth of them) acts
    after a stay's logged end; each evaluation fit replays the attending's logged doses on its stays from their
    first states.
    """
    from ogsrl.world.env import logged_returns, start_states, steps_left

    t0 = time.perf_counter()
    acfg = cfg.anchored
    path = root / TRAJECTORY_DIR / PROVIDERS
    if not path.is_file():
        return None, {"anchored/unavailable": "the trajectories record no attendings (providers.parquet)"}
    costs = tuple(layout.cost_names)
    missing = [t for t in acfg.targets if t not in costs]
    if missing:
        raise ValueError(f"ope.anchored.targets lists {missing}, which the world models do not predict (costs: "
                         f"{list(costs)}); list some of those or set ope.anchored.enabled: false")
    who = pd.read_parquet(path).drop_duplicates("stay_key").set_index("stay_key")["provider_key"]
    frames = pd.concat([common.read_split(root / TRAJECTORY_DIR / f"{s}.parquet")[0] for s in ("train", "val", "test")],
                       ignore_index=True)
    frames = frames.assign(provider_key=who.reindex(frames["stay_key"]).to_numpy())
    frames = frames[frames["provider_key"].notna()].sort_values(["stay_key", "step"], kind="stable")
    per_stay = frames.drop_duplicates("stay_key").set_index("stay_key")
    ids, counts = np.unique(per_stay["provider_key"].to_numpy(str), return_counts=True)
    ok, why = anchored.usable(counts, acfg)
    report: dict[str, Any] = {"anchored/attendings_recorded": int(len(ids)),
                              "anchored/stays_with_attending": int(len(per_stay))}
    if why:
        return None, {**report, "anchored/unavailable": f"insufficient evidence: {why}"}
    ids = ids[ok]
    frames = frames[frames["provider_key"].isin(ids)]
    feats = tuple(layout.state_features)
    baseline = acfg.balance_features or tuple(feats[i] for i in layout.copy_idx)
    if not baseline:
        return None, {**report, "anchored/unavailable": "insufficient evidence: no baseline features to compare the "
                      "attendings' patients on; list some in ope.anchored.balance_features"}
    bal = anchored.balance(start_states(frames, baseline, "trajectories"),
                           frames.drop_duplicates("stay_key")["provider_key"].to_numpy(str), baseline,
                           acfg.balance_alpha)
    report.update({"anchored/balance_p": bal.p_min, "anchored/balance_feature": bal.feature})
    if not bal.passed:
        return None, {**report, "anchored/unavailable": (
            f"insufficient evidence: the attendings' patients differ in {bal.feature} (Kruskal-Wallis, "
            f"Bonferroni p = {bal.p_min:.2g} < {acfg.balance_alpha}); the anchors would mix practice with case mix")}
    seeds = np.random.SeedSequence([cfg.seed, ANCHOR_STREAM]).spawn(len(ids) + 1)
    rollouts, actions = cfg.model.rollouts, tuple(layout.action_names)
    m_stays, y_stays = [], []
    for i, pid in enumerate(ids):
        df = frames[frames["provider_key"] == pid]
        fit_rows, stop_rows = df[df["split"] == "train"], df[df["split"] == "val"]
        if stop_rows.empty:
            stop_rows = df[df["split"] == "test"]
        if fit_rows.empty or stop_rows.empty:  # all in one split: every fifth stay stops the fit
            held = df["stay_key"].isin(df["stay_key"].drop_duplicates().iloc[::5])
            fit_rows, stop_rows = df[~held], df[held]
        s_clone, s_act = seeds[i].spawn(2)
        clone = bc.fit_actor(cfg.behaviour, feats, bc.batch_of(fit_rows, feats, actions),
                             bc.batch_of(stop_rows, feats, actions), int(s_clone.generate_state(1)[0] % 2**31),
                             space)[0]
        starts = start_states(df, feats, "trajectories")
        horizons = np.minimum(steps_left(df, *window, "trajectories"), horizon)
        doses, lengths = anchored.logged_doses(df["stay_key"].to_numpy(), df["step"].to_numpy(),
                                               df[list(actions)].to_numpy(np.float64))
        after = lambda obs, rng, c=clone: np.asarray(c.act(np.asarray(obs, np.float64), rng), np.float32)  # noqa: E731
        m_stays.append(np.stack([model_based.stay_values(
            model, starts, horizons, anchored.replayed(doses, lengths, rollouts, after), cfg.gamma, rollouts,
            cfg.model.mode, env_seed, np.random.default_rng(s_act)) for model in models]))
        y_stays.append(logged_returns(df, ("reward", *costs), horizons, cfg.gamma, "trajectories"))
    columns = [1 + costs.index(t) for t in acfg.targets]
    anchors = anchored.fit_anchors(m_stays, y_stays, columns, np.random.default_rng(seeds[-1]), cfg.n_boot)
    log.info("evaluate: mb_anchored lines from %d attendings (%d stays) in %.0f s", len(ids), int(anchors.stays.sum()),
             time.perf_counter() - t0)
    return anchors, {**report, **anchored.describe(anchors, acfg.targets)}


def estimate_model_based(world: EvalWorld, policy: Any, cfg: OPEConfig, seeds: np.random.SeedSequence,
                         ess: float) -> dict[tuple[str, str], Estimate]:
    """``mb`` and ``knn`` estimates of every target the simulators give (as enabled); empty when the policy reads
    columns they do not step (flagged ``flags/mb_unavailable`` by :func:`evaluate_policy`). ``ess``: the importance
    weights' ESS, reported as the estimate's (how far the policy strays from the logged actions: where the world
    models extrapolate, and where the nearest logged action is far)."""
    feats = world.state_features
    if not set(policy.feature_names) <= set(feats):
        return {}
    cols = [feats.index(n) for n in policy.feature_names]
    s_act, s_boot = seeds.spawn(2)  # mb's, drawn first whether it runs or not, so knn's never move it
    k_act, k_boot = seeds.spawn(2)

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(policy.act(np.asarray(obs, np.float64)[:, cols], rng), np.float32)

    a_read, = seeds.spawn(1)  # after mb's and knn's, so neither moves
    out: dict[tuple[str, str], Estimate] = {}
    if world.models:
        per_model = model_based.per_model_values(world.models, world.starts, world.horizons, act, cfg.gamma, cfg.model,
                                                 world.env_seed, np.random.default_rng(s_act))
        value, lo, hi = model_based.bagged(per_model, np.random.default_rng(s_boot), cfg.n_boot, cfg.ci_level,
                                           world.combine)
        out.update({(MB, t): Estimate(float(value[k]), float(lo[k]), float(hi[k]), ess)
                    for k, t in enumerate(world.targets)})
        if world.anchors is not None:
            value, lo, hi = anchored.read(world.anchors, np.stack(per_model), np.random.default_rng(a_read),
                                          cfg.ci_level)
            out.update({(MB_ANCHORED, t): Estimate(float(value[j]), float(lo[j]), float(hi[j]), ess)
                        for j, t in enumerate(cfg.anchored.targets)})
    if world.pools:
        value, lo, hi = neighbour.estimate(world.pools, world.starts, world.horizons, act, cfg.gamma, cfg.neighbour,
                                           world.env_seed, np.random.default_rng(k_act), np.random.default_rng(k_boot),
                                           cfg.n_boot, cfg.ci_level, world.combine, world.pool_offsets)
        out.update({(KNN, t): Estimate(float(value[k]), float(lo[k]), float(hi[k]), ess)
                    for k, t in enumerate(world.targets)})
    return out


def weight_concentration(log_ratio: np.ndarray, mask: np.ndarray, clip: float | None, top: int = 100) -> np.ndarray:
    """Share of the total trajectory weight held by the k heaviest stays, k = 1 … min(top, N) → ``(k,)``."""
    log_w = wis.cumulative_log_weights(log_ratio, mask, clip)[:, -1]
    w = np.sort(np.exp(log_w - log_w.max()))[::-1]
    return np.cumsum(w)[:top] / w.sum()


@dataclass(frozen=True, slots=True)
class PolicyEvaluation:
    """Every estimate of one policy."""

    estimates: dict[tuple[str, str], Estimate]
    """(estimator, target) → estimate"""
    diagnostics: dict[str, Any]
    """weights/…, fqe/…, flags/no_overlap"""
    weight_share: np.ndarray
    """share of the total weight carried by the k heaviest stays"""


def policy_streams(seed: int, key: str) -> tuple[np.random.SeedSequence, ...]:
    """(importance sampling, FQE/DR, model-based) seed streams of the policy ``key`` (from :func:`policy_seed`)."""
    return tuple(policy_seed(seed, key).spawn(3))


def evaluate_policy(policy: Any, key: str, behaviour_model: Any, train: pd.DataFrame, test: pd.DataFrame,
                    columns: Mapping[str, np.ndarray], cd: CriticData, cfg: OPEConfig,
                    world: EvalWorld | None = None) -> PolicyEvaluation:
    """WIS/PDWIS (+ clipped), FQE, DR and WDR of one policy on the test split, and MB / kNN with ``world``.

    All random draws come from ``policy_seed(cfg.seed, key)``. A policy that gives every logged action density 0
    (no overlap) gets FQE (and MB) only, flagged ``flags/no_overlap``; one that reads columns the world models do not
    predict gets no MB, flagged ``flags/mb_unavailable`` (documented fallbacks).
    """
    who = f"policy {key}"
    lr = log_ratios(policy, behaviour_model, test, who=who)
    episodes = wis.pad_by_stay(test["stay_key"].to_numpy(), {**columns, "log_ratio": lr})
    s_is, s_critic, s_model = policy_streams(cfg.seed, key)
    overlap = bool(np.isfinite(lr).any())
    res: dict[tuple[str, str], Estimate] = {}
    if overlap:  # else every weight is 0 and the IS estimators are undefined
        res.update(estimate_is(episodes, tuple(c for c in cd.targets if c != RETURN), cfg,
                               np.random.default_rng(s_is), True))
    else:
        log.warning("evaluate: %s gives every logged action density 0; only FQE is reported", key)
    fq, diag = estimate_fqe_dr(cd, policy, train, test, episodes, cfg, s_critic, who)
    res.update(fq)
    share = weight_concentration(episodes.values["log_ratio"], episodes.mask, cfg.weight_clip) if overlap else \
        np.zeros(1)
    diag = {**diag, "flags/no_overlap": not overlap, "weights/top1_share": float(share[0])}
    if world is not None:
        mb = estimate_model_based(world, policy, cfg, s_model, res[("fqe", RETURN)].ess)
        res.update(mb)
        diag["flags/mb_unavailable"] = not mb
        if not mb:
            log.warning("evaluate: %s reads columns the world models do not predict; no model-based estimate", key)
    if overlap:
        diag["weights/mean_log_ratio"] = float(lr[np.isfinite(lr)].mean())
    if cfg.consensus:
        agreed = consensus_of(res, cfg.consensus, cfg.cautious_k)
        res.update(agreed)
        diag["flags/consensus_unavailable"] = not agreed
        if not agreed:
            log.warning("evaluate: %s lacks %s estimates; no consensus", key,
                        [e for e in cfg.consensus if (e, RETURN) not in res])
    return PolicyEvaluation(res, diag, share)


def consensus_of(estimates: Mapping[tuple[str, str], Estimate], members: tuple[str, ...], k: float
                 ) -> dict[tuple[str, str], Estimate]:
    """``(consensus, target)`` for every target that each of ``members`` estimates (:func:`estimate.consensus`), and
    ``(cautious, return)`` (:func:`estimate.cautious` with ``k``)."""
    targets = [t for e, t in estimates if e == members[0] and all((m, t) in estimates for m in members)]
    out = {(CONSENSUS, t): consensus([estimates[(e, t)] for e in members]) for t in targets}
    if RETURN in targets:
        out[(CAUTIOUS, RETURN)] = cautious([estimates[(e, RETURN)] for e in members], k)
    return out


def read_truth(root: Path, demo: bool) -> dict[str, Any]:
    """The ``simulate-truth`` stage's values (empty when not on the demo or not yet simulated)."""
    path = Path(root) / TRUTH_REPORT
    if not demo:
        return {}
    if not path.is_file():
        log.warning("evaluate: %s missing (run `ogsrl simulate-truth`); true values left out", TRUTH_REPORT)
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc if doc.get("truth/available") else {}


@dataclass(frozen=True, slots=True)
class SplitData:
    """What every policy's evaluation on the test split shares (built once)."""

    train: pd.DataFrame
    """the train split (the critic's fitting rows)"""
    test: pd.DataFrame
    """the test split"""
    costs: tuple[str, ...]
    """cost columns"""
    columns: dict[str, np.ndarray]
    """per-row targets: return, mortality, each cost"""
    critic: CriticData
    """the critic's transitions"""
    behaviour_model: Any
    """π̂_b"""
    sha256: str
    """hash of the test split file (recorded as ``test/sha256``)"""
    schema: Any
    """the table's declared schema (units a policy must have been trained with)"""
    world: EvalWorld | None = None
    """model-based OPE's world models and the nearest-neighbour pools (None: neither enabled)"""


def load_test_split(cfg: OPEConfig, root: Path, params: Mapping[str, Any] | None = None) -> SplitData:
    """Load the splits, π̂_b and the critic data under ``root`` for :func:`evaluate_policy`; with ``params``, also
    fit model-based OPE's world models and build the nearest-neighbour pools on the test split (as enabled)."""
    root = Path(root)
    test_path = root / TRAJECTORY_DIR / "test.parquet"
    train, _ = common.read_split(root / TRAJECTORY_DIR / "train.parquet")
    test, meta = common.read_split(test_path)
    costs = tuple(meta["cost_columns"])
    behaviour_model = load_behaviour(root)
    edges = action_bin_edges(test_path) if cfg.fqe.action == "binned" else None
    schema = meta["schema"]
    outcome = "died_in_hosp" if schema.is_canonical else (schema.outcome[0] if schema.outcome else None)
    if outcome is None:
        raise DataError("OPE's mortality target needs a stay-level outcome column; the schema declares none",
                        table="test.parquet", column="outcome")
    if outcome not in test.columns:
        raise DataError("required column missing", table="test.parquet", column=outcome)
    last = np.r_[test["stay_key"].to_numpy()[1:] != test["stay_key"].to_numpy()[:-1], True]  # (R,) last row of a stay
    columns = {
        RETURN: test["reward"].to_numpy(),
        MORTALITY: (test[outcome].to_numpy(bool) & last).astype(np.float64),
        **{c: test[c].to_numpy() for c in costs},
    }
    world = eval_world(params, cfg, root, test, meta) \
        if params is not None and (cfg.model.enabled or cfg.neighbour.enabled) else None
    return SplitData(train, test, costs, columns, critic_data(cfg, train, test, costs, edges, schema), behaviour_model,
                     file_sha256(test_path), schema, world)


def evaluate_current(params: Mapping[str, Any], root: Path, policy: Any, key: str) -> dict[tuple[str, str], Estimate]:
    """Every estimate of one policy on the current test split under ``root``, exactly as the evaluate stage computes
    it for a policy with key ``key`` (the promotion gate uses it for a champion the stage did not score) — except
    ``mb_anchored``, which no decision reads and whose anchors take minutes to build."""
    cfg = ope_config(params)
    cfg = dataclasses.replace(cfg, anchored=dataclasses.replace(cfg.anchored, enabled=False))
    ts = load_test_split(cfg, root, params)
    common.check_units(policy, ts.schema, f"test split (policy {key})")
    return evaluate_policy(policy, key, ts.behaviour_model, ts.train, ts.test, ts.columns, ts.critic, cfg,
                           ts.world).estimates


SUMMARY_TARGETS = ("return", "cost_total")
"""targets of the short form the CLI prints (every target is in the metrics file)"""
_ESTIMATE_VALUE = re.compile(r"(?P<policy>.+)/(?P<estimator>[a-z_]+)/(?P<target>[a-z_]+)/value")


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The short form of the stage's metrics the CLI prints: per policy and estimator, ``value [ci_low, ci_high]``
    of the reward return and the total cost return with the effective sample size (and, on the demo, whether the
    interval covers the truth), plus each policy's true values; everything else: ``data/reports/evaluate/metrics.json``."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        m = _ESTIMATE_VALUE.fullmatch(key)
        if (m is None or key.startswith("truth/") or m["target"] not in SUMMARY_TARGETS
                or m["policy"].rsplit("/", 1)[-1] in ("mean", "sd")):  # per seed only; aggregates: metrics file
            continue
        stem = key[: -len("/value")]
        text = f"{value:.3g} [{metrics.get(stem + '/ci_low', float('nan')):.3g}, " \
               f"{metrics.get(stem + '/ci_high', float('nan')):.3g}]"
        if (ess := metrics.get(stem + "/ess")) is not None:
            text += f" ESS {ess:.1f}"
        if (covers := metrics.get(stem + "/covers_truth")) is not None:
            text += f", covers truth: {'yes' if covers else 'no'}"
        out[stem] = text
    out.update({k: v for k, v in metrics.items() if HEADLINE_TRUTH.fullmatch(k)})
    out["test/stays"] = metrics.get("test/stays")
    out["metrics_file"] = "data/reports/evaluate/metrics.json"
    return out


@dataclass(frozen=True, slots=True)
class SupportCheck:
    """The promotion gate's support check, applied to every policy the stage scores."""

    guardian: Any
    """the registry's guardian (``registry.guardian_dir``); None: not calibrated, no check"""
    test: pd.DataFrame
    """the test split"""
    seed: int
    """``registry.support_seed``: the seed of each policy's action draws, as the gate draws them"""
    metrics: dict[str, Any]
    """``support/…``: whether the check ran, its seed and the share of the clinicians' own logged pairs rejected"""

    def of(self, policy: Any) -> dict[str, float]:
        """``{"support/reject_share": share}`` of ``policy`` (:func:`ogsrl.guardian.support.reject_share`); {}
        without a guardian."""
        if self.guardian is None:
            return {}
        return {"support/reject_share": guardian_support.reject_share(policy, self.guardian, self.test, self.seed)}


def support_check(params: Mapping[str, Any], root: Path, test: pd.DataFrame) -> SupportCheck:
    """The gate's support check on ``test`` with the registry's guardian and seed (no check when the guardian has
    no certificate yet, as the gate would not bundle it)."""
    from ogsrl.registry.loaders import resolve_loader
    from ogsrl.registry.stage import registry_config

    rcfg = registry_config(params)
    gdir = Path(root) / rcfg.guardian_dir
    if not (gdir / "certificate.json").is_file():
        log.warning("evaluate: no certified guardian at %s; the policies' support is not checked", rcfg.guardian_dir)
        return SupportCheck(None, test, rcfg.support_seed, {"support/available": False})
    guardian = resolve_loader(rcfg.guardian_loader)(gdir)
    return SupportCheck(guardian, test, rcfg.support_seed, {
        "support/available": True, "support/seed": rcfg.support_seed,
        "support/clinicians_reject_share": guardian_support.logged_reject_share(guardian, test)})


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """OPE of every run × seed of ``policies`` on the test split; writes metrics and plot tables under ``root``."""
    cfg = ope_config(params)
    pcfg = policies_config(params)
    root = Path(root)
    ts = load_test_split(cfg, root, params)
    train, test, costs, columns, cd = ts.train, ts.test, ts.costs, ts.columns, ts.critic
    behaviour_model = ts.behaviour_model
    metrics: dict[str, Any] = {"test/stays": int(test["stay_key"].nunique()), "test/sha256": ts.sha256,
                               "ope/gamma": cfg.gamma, "ope/fqe_action": cfg.fqe.action,
                               "ope/fqe_history": cfg.fqe.history,
                               "ope/fqe_previous_action": bool(cfg.fqe.previous_action),
                               "ope/model_based": bool(ts.world and ts.world.models),
                               "ope/neighbour": bool(ts.world and ts.world.pools),
                               "ope/anchored": bool(ts.world and ts.world.anchors is not None),
                               **(ts.world.anchor_report if ts.world else {})}

    truth = read_truth(root, config.section(params, "data").get("source") == "demo")
    metrics["truth/available"] = bool(truth)
    metrics.update({k: v for k, v in truth.items() if k.count("/") >= 2})
    rows: list[dict[str, Any]] = []
    concentration: list[dict[str, Any]] = []

    def report(name: str, seed: int | None, key: str, res: Mapping[tuple[str, str], Estimate]) -> dict[str, Any]:
        """Flat ``<estimator>/<target>/…`` metrics of one policy; appends its rows to the estimates table."""
        out: dict[str, Any] = {}
        for (estimator, target), est in res.items():
            k = f"{estimator}/{target}"
            out.update({f"{k}/{f}": v for f, v in est.to_dict().items()})
            true_value = _true_value(truth, key, target, costs, cfg.gamma)
            if true_value is not None:
                out[f"{k}/covers_truth"] = est.covers(true_value)
            rows.append({"policy": name, "seed": seed, "estimator": estimator, "target": target, **est.to_dict(),
                         "truth": np.nan if true_value is None else true_value})
        return out

    support = support_check(params, root, test)
    metrics.update(support.metrics)
    stay_keys = test["stay_key"].to_numpy()
    on_policy = wis.pad_by_stay(stay_keys, {**columns, "log_ratio": np.zeros(len(test))})
    res = estimate_is(on_policy, costs, cfg, np.random.default_rng(policy_seed(cfg.seed, BEHAVIOUR)), False)
    metrics.update({f"{BEHAVIOUR}/{k}": v for k, v in report(BEHAVIOUR, None, BEHAVIOUR, res).items()})
    for name in pcfg.runs:
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in pcfg.seeds:
            key = f"{name}/seed{seed}"
            policy = load_policy(root / policy_dir(name, seed))
            common.check_units(policy, ts.schema, f"test split (policy {key})")
            ev = evaluate_policy(policy, key, behaviour_model, train, test, columns, cd, cfg, ts.world)
            concentration.extend({"policy": name, "seed": seed, "step": k + 1, "weight_share": s}
                                 for k, s in enumerate(ev.weight_share))
            per_seed[seed] = {**report(name, seed, key, ev.estimates), **ev.diagnostics, **support.of(policy)}
        metrics.update(seed_summary(per_seed, name))

    report_dir = root / REPORT_DIR
    write_json(report_dir / "metrics.json", metrics)
    with atomic_path(report_dir / "estimates.csv") as tmp:
        pd.DataFrame(rows).astype({"seed": "Int64"}).to_csv(tmp, index=False)
    with atomic_path(report_dir / "weights.csv") as tmp:
        pd.DataFrame(concentration, columns=["policy", "seed", "step", "weight_share"]).to_csv(tmp, index=False)
    return metrics
