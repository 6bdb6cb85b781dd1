"""Off-policy estimators against simulator truth (issue 12): accuracy, ranking, model selection and CI coverage.

Policies (all stochastic, so every estimator applies; built from the project under ``--root`` after
`ogsrl train-policies` and `ogsrl fit-behaviour`):

* every trained run × seed in ``data/models/policies`` (SOC, GMB-CPO, … as served, guardian fallback included);
* ``clinician_clone``: π̂_b itself (the behaviour clone on all features);
* ``soc_noise<σ>``: SOC with Gaussian noise of SD σ on every actor weight (perturbed clinicians; seeded);
* ``heuristic<q>`` / ``bestknown<q>``: a behaviour clone (all features) of clinicians who follow the
  heuristic / best-known :class:`ogsrl.synth.policies.RulePolicy` at each decision with probability q (dose × a
  log-normal jitter, SD 0.3), else act as logged;
* ``mix_<a>_<b>``: the 50/50 mixture of two of the above (density = mean of the densities);
* with ``--spread``: ``soc_noise0.1``/``0.2`` and ``clin_<drug><f>``, a behaviour clone of clinicians who give f × the
  logged dose of one or both drugs (policies the truth separates); ``clinician_clone`` (identical to SOC) is left out;
* with ``--trained-only``: the trained policies alone (selecting among the learners' runs and seeds).

Part 1 (``--rank``): on the project's own test split, every policy × estimator × target (reward return and each cost
return): relative error |V̂ − V| / |V|, Spearman rank correlation of V̂ with V over the policies, the concordance over
the policy pairs the truth itself separates (see :func:`concordance`), and the regret of the policy each estimator
selects (highest return; lowest cost) as a share of the true range.
Part 2 (``--datasets N``): N independently generated demo datasets (synth seeds 1000 + i, ``--stays`` stays each,
the project's params otherwise): extraction, π̂_b and every estimator refitted per dataset, for the
``--coverage-policies``; per estimator and target the share of 95 % intervals that cover the truth, with their median
width, over every interval and over those the promotion gate would act on (ESS ≥ ``registry.gate.min_ess``; below
it the gate says "insufficient evidence"). Truth: ``ogsrl truth`` code (cohort population), ``--truth-episodes``
patients, seed ``--truth-seed``, once per policy (cached in the work directory).
A coverage policy named ``own:clone`` is each dataset's own π̂_b (the clinicians of that dataset, as SOC is of the
project's), ``own:mix<p>_<name>`` the mixture of it (share p %, default 50) with the project's policy ``<name>``:
policies near each dataset's clinicians, so their importance weights keep an effective sample size where the gate
decides. Their truth is simulated per dataset.

``--rank --base PAGE --only a/seed40,b/seed42`` re-evaluates only the named policies (e.g. retrained checkpoints
put in place under ``--root``; their truth is re-simulated, never read from the cache) and keeps PAGE's estimates and
truths for the others: a policy's estimates depend on that policy alone (its critics, bootstrap draws and rollouts
are seeded by its name), so this equals a full rerun at a fraction of the time.

With ``--rank`` (or ``--support`` on a saved rank page) every ranked policy also gets its share of own actions the
project's guardian rejects on the test states (the gate's support check), and the ranking is repeated over the
policies that check admits.

Usage:
  .venv/bin/python benchmarks/bench_ope.py --root . [--rank] [--datasets 20] [--stays 2500]
      [--coverage-policies soc/seed42,gmb_cpo/seed42,heuristic0.5,mix_clinician_clone_heuristic1.0]
      [--truth-episodes 2000] [--work /tmp/bench_ope] [--fqe-refits 4]
Writes benchmarks/results/ope.json and benchmarks/results/ope.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ogsrl import features
from ogsrl.agents import bc, common, load_policy
from ogsrl.agents.actor import SavedPolicy
from ogsrl.config import load_params
from ogsrl.ope import behaviour
from ogsrl.ope import stage as ope_stage
from ogsrl.ope.estimate import Estimate, cautious, consensus, hull
from ogsrl.ope.selection import constrained_choice, feasibility, score_choice, within_limits
from ogsrl.synth import policies as synth_policies
import exclusive

HERE = Path(__file__).resolve().parent
JITTER = 0.3


class Mixture:
    """π = w π_a + (1 − w) π_b (a component drawn per row; density the weighted mean of the two); w = ½ by default."""

    def __init__(self, a: Any, b: Any, w: float = 0.5) -> None:
        self.a, self.b, self.w = a, b, w
        self.feature_names = tuple(dict.fromkeys((*a.feature_names, *b.feature_names)))

    def _cols(self, x: np.ndarray, p: Any) -> np.ndarray:
        return x[:, [self.feature_names.index(n) for n in p.feature_names]]

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng(0)
        x = np.asarray(obs, np.float64)
        out = self.a.act(self._cols(x, self.a), rng)
        pick = rng.random(len(x)) >= self.w
        if pick.any():
            out[pick] = self.b.act(self._cols(x[pick], self.b), rng)
        return out

    def log_prob(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, np.float64)
        la = self.a.log_prob(self._cols(x, self.a), actions)
        lb = self.b.log_prob(self._cols(x, self.b), actions)
        return np.logaddexp(la + np.log(self.w), lb + np.log1p(-self.w))


def noisy(policy: SavedPolicy, sigma: float, seed: int) -> SavedPolicy:
    actor = copy.deepcopy(policy.actor)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in actor.net.parameters():
            p.add_(sigma * torch.randn(p.shape, generator=gen))
    return SavedPolicy(actor, policy.feature_names, "sample", sample_seed=seed)


class ScaledClinicians:
    """The logged doses × a per-drug factor (a clinician who gives more or less of each drug)."""

    feature_names = features.ACTIONS

    def __init__(self, scale: tuple[float, float]) -> None:
        self.scale = np.asarray(scale, dtype=np.float64)

    def act(self, logged: np.ndarray) -> np.ndarray:
        return logged * self.scale


def rule_clone(rule: Any, q: float, train: pd.DataFrame, val: pd.DataFrame, cfg: bc.Config, seed: int,
               jitter: float = JITTER) -> SavedPolicy:
    names = behaviour.behaviour_features(train.columns)
    rng = np.random.default_rng(seed)

    def relabel(df: pd.DataFrame) -> pd.DataFrame:
        a = rule.act(df[list(rule.feature_names)].to_numpy("float64"))
        a = a * np.exp(jitter * rng.standard_normal(a.shape))
        a = np.minimum(a, common.ACTION_MAX)
        follow = rng.random(len(df)) < q
        out = df.copy()
        for j, col in enumerate(features.ACTIONS):
            out[col] = np.where(follow, a[:, j], out[col].to_numpy(np.float64)).astype(out[col].dtype)
        return out

    pol, _, _ = bc.fit_actor(cfg, names, bc.batch_of(relabel(train), names), bc.batch_of(relabel(val), names), seed)
    return pol


SCALES = {"clin_vaso0.5": (1.0, 0.5), "clin_vaso2": (1.0, 2.0), "clin_fluid0.5": (0.5, 1.0),
          "clin_fluid2": (2.0, 1.0), "clin_both0.5": (0.5, 0.5), "clin_both0.25": (0.25, 0.25)}


def cached_policy(work: Path, name: str, make: Any) -> SavedPolicy:
    """The policy saved as ``name`` under ``work``/policies, or ``make()``'s, saved there first."""
    d = work / "policies" / name
    if (d / "config.json").is_file():
        return SavedPolicy.load(d)
    pol = make()
    pol.save(d)
    return pol


def build_policies(root: Path, params: dict, train: pd.DataFrame, val: pd.DataFrame, work: Path,
                   spread: bool = False, trained_only: bool = False) -> dict[str, Any]:
    pols: dict[str, Any] = {}

    def cached(name: str, make: Any) -> SavedPolicy:  # rule clones are saved in the work directory
        return cached_policy(work, name, make)

    pdir = root / "data/models/policies"
    for run in sorted(p.name for p in pdir.iterdir() if p.is_dir()) if pdir.is_dir() else []:
        for sd in sorted(d for d in (pdir / run).iterdir() if d.is_dir()):  # not the units' key files
            pols[f"{run}/{sd.name}"] = load_policy(sd)
    if trained_only:
        return pols
    clone = load_policy(root / ope_stage.BEHAVIOUR_DIR)
    if not spread:  # the same model as SOC (one behaviour clone, one seed): kept only to repeat earlier runs
        pols["clinician_clone"] = clone
    soc = next((p for k, p in pols.items() if k.startswith("soc/")), None)
    if soc is not None:
        for i, sigma in enumerate((0.05, 0.15, 0.3) + ((0.1, 0.2) if spread else ())):
            pols[f"soc_noise{sigma}"] = noisy(soc, sigma, 100 + i)
    cfg = ope_stage.ope_config(params).behaviour
    heur, best = synth_policies.HeuristicPolicy(), synth_policies.best_known_policy()
    pols["heuristic0.5"] = cached("heuristic0.5", lambda: rule_clone(heur, 0.5, train, val, cfg, 7))
    pols["heuristic1.0"] = cached("heuristic1.0", lambda: rule_clone(heur, 1.0, train, val, cfg, 8))
    pols["bestknown0.5"] = cached("bestknown0.5", lambda: rule_clone(best, 0.5, train, val, cfg, 9))
    pols["mix_clinician_clone_heuristic1.0"] = Mixture(clone, pols["heuristic1.0"])
    pols["mix_clinician_clone_bestknown0.5"] = Mixture(clone, pols["bestknown0.5"])
    if spread:  # clinicians who give more or less of each drug: policies the truth separates
        for i, (name, scale) in enumerate(SCALES.items()):
            pols[name] = cached(name, lambda s=scale, i=i: rule_clone(ScaledClinicians(s), 1.0, train, val, cfg,
                                                                     20 + i, jitter=0.0))
    return pols


def truth_of(name: str, policy: Any, params: dict, episodes: int, seed: int, work: Path,
             refresh: bool = False) -> dict[str, float]:
    from ogsrl.cohort.extract import CohortConfig
    from ogsrl.config import build
    from ogsrl.costs import build_costs
    from ogsrl.synth.stage import SynthConfig, world_from_params
    from ogsrl.synth.truth import evaluate_policy

    cache = work / "truth" / f"{name.replace('/', '__')}_{episodes}_{seed}.json"
    if cache.is_file() and not refresh:
        return json.loads(cache.read_text())
    scfg = build(SynthConfig, params.get("synth"), "synth")
    res = evaluate_policy(policy, episodes, seed, world=world_from_params(params), chunk=scfg.chunk_stays,
                          cohort=build(CohortConfig, params.get("cohort"), "cohort"), costs=build_costs(params))
    out = {k.removeprefix("truth/"): v for k, v in res.to_dict().items() if isinstance(v, (int, float))}
    cache.parent.mkdir(parents=True, exist_ok=True)
    per_stay = cache.with_suffix(".parquet")
    res.per_stay.set_axis(res.per_stay.index.astype(str)).to_parquet(per_stay.with_suffix(".tmp"))
    per_stay.with_suffix(".tmp").replace(per_stay)
    cache.write_text(json.dumps(out))
    return out


def per_stay_truths(work: Path | None, names: list[str], episodes: int, seed: int) -> dict[str, pd.DataFrame]:
    """The per-patient truths :func:`truth_of` kept in ``work`` for each named policy that has them (one seed and
    patient count: the same simulated patients under every policy)."""
    if work is None:
        return {}
    files = {n: work / "truth" / f"{n.replace('/', '__')}_{episodes}_{seed}.parquet" for n in names}
    return {n: pd.read_parquet(f) for n, f in files.items() if f.is_file()}


def paired_gap(a: pd.DataFrame, b: pd.DataFrame, column: str) -> tuple[float, float]:
    """Mean of a − b over the patients both truths score and its 95 % half-width
    (:func:`ogsrl.synth.truth.paired_difference`); nan when they share fewer than two."""
    from ogsrl.synth.truth import paired_difference

    try:
        d = paired_difference(a[[column]], b[[column]])[column]
    except ValueError:
        return float("nan"), float("nan")
    return d.value, d.ci_high - d.value


def true_target(truth: dict[str, float], target: str) -> float:
    return truth["return"] if target == "return" else truth[f"cost_return_{target}"]


def true_half_width(truth: dict[str, float], target: str) -> float:
    key = "return" if target == "return" else f"cost_return_{target}"
    return (truth[f"{key}_ci_hi"] - truth[f"{key}_ci_lo"]) / 2


def concordance(est: np.ndarray, true: np.ndarray, half: np.ndarray) -> tuple[float, int]:
    """Share of policy pairs the estimator orders as the truth does, over the pairs the truth itself separates.

    A pair (i, j) counts when |V_i − V_j| > sqrt(h_i² + h_j²), h the truth's 95 % half-widths (so that the truth's
    own sampling error cannot have ordered it); ties in the estimate count as half.
    """
    i, j = np.triu_indices(len(true), 1)
    sep = np.abs(true[i] - true[j]) > np.hypot(half[i], half[j])
    agree = np.sign(est[i] - est[j]) * np.sign(true[i] - true[j])
    n = int(sep.sum())
    return (float(np.mean((agree[sep] + 1) / 2)) if n else float("nan")), n


def model_based_all(root: Path, params: dict, pols: dict[str, Any], names: list[str]) -> dict[str, dict]:
    """The simulator estimates alone (``mb/<target>``, ``knn/<target>``) of each named policy on ``root``'s test split, exactly as
    the evaluate stage computes them (its fits, its seeds, the policy's FQE/WIS ESS left to the caller)."""
    cfg = ope_stage.ope_config(params)
    test, meta = common.read_split(root / "data/trajectories/test.parquet")
    t0 = time.perf_counter()
    world = ope_stage.eval_world(params, cfg, root, test, meta)
    print(f"  evaluation world models: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if world is None:
        return {n: {} for n in names}
    out = {}
    for name in names:
        est = ope_stage.estimate_model_based(world, pols[name], cfg, ope_stage.policy_streams(cfg.seed, name)[2],
                                             float("nan"))
        out[name] = {f"{e}/{t}": v.to_dict() for (e, t), v in est.items()}
    return out


def evaluate_all(root: Path, params: dict, pols: dict[str, Any], names: list[str]) -> dict[str, dict]:
    """Every estimator of each named policy on ``root``'s test split (π̂_b from ``root``)."""
    cfg = ope_stage.ope_config(params)
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    test, meta = common.read_split(root / "data/trajectories/test.parquet")
    world = ope_stage.eval_world(params, cfg, root, test, meta) if cfg.model.enabled or cfg.neighbour.enabled \
        else None
    costs = tuple(meta["cost_columns"])
    bmodel = ope_stage.load_behaviour(root)
    last = np.r_[test["stay_key"].to_numpy()[1:] != test["stay_key"].to_numpy()[:-1], True]
    columns = {"return": test["reward"].to_numpy(),
               "mortality_hosp": (test["died_in_hosp"].to_numpy(bool) & last).astype(float),
               **{c: test[c].to_numpy() for c in costs}}
    edges = ope_stage.action_bin_edges(root / "data/trajectories/test.parquet") if cfg.fqe.action == "binned" \
        else None
    cd = ope_stage.critic_data(cfg, train, test, costs, edges)
    out = {}
    for name in names:
        t0 = time.perf_counter()
        ev = ope_stage.evaluate_policy(pols[name], name, bmodel, train, test, columns, cd, cfg, world)
        out[name] = {"estimates": {f"{e}/{t}": est.to_dict() for (e, t), est in ev.estimates.items()},
                     "diagnostics": ev.diagnostics, "seconds": time.perf_counter() - t0}
        print(f"  {name}: {out[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
    return out


def make_dataset(params: dict, seed: int, stays: int, work: Path) -> Path:
    from ogsrl.cohort import stage as cohort_stage
    from ogsrl.synth import stage as synth_stage
    from ogsrl.validate import stage as validate_stage

    ds = work / f"ds{seed}"
    if (ds / "data/models/behaviour/config.json").is_file():
        return ds
    raw = ds / "raw"
    synth_stage.generate(stays, seed, raw, "parquet", overwrite=True, world=synth_stage.world_from_params(params))
    p = {**params, "data": {**params["data"], "source": "demo", "raw_dir": str(raw)}}
    validate_stage.run_raw(p, ds)  # extraction refuses raw tables without a passed validation report
    cohort_stage.run(p, ds)
    ope_stage.run_behaviour(p, ds)
    shutil.rmtree(raw)
    return ds


ESTIMATORS = ("wis", "pdwis", "wis_clip", "pdwis_clip", "fqe", "dr", "wdr", ope_stage.HULL, ope_stage.MB,
              ope_stage.KNN, ope_stage.CONSENSUS, ope_stage.CAUTIOUS)
CONSENSUS_MEMBERS = ope_stage.OPEConfig().consensus
"""the parts of ``consensus`` and ``cautious`` derived on pages saved before the evaluate stage reported them (the
default's)"""
CAUTIOUS_K = ope_stage.OPEConfig().cautious_k
"""``cautious``'s k where it is derived from its parts (the default's)"""


def add_model_based(result: dict, root: Path, params: dict, pols: dict[str, Any], work: Path, source: str,
                    out: str) -> None:
    """Add the ``mb`` estimates to a saved page's rank (``root``'s test split) and to its coverage parts (each
    cached dataset under ``work``; parts ``coverage_<source>_*.json`` → ``coverage_<out>_*.json``). An estimate gets
    the FQE estimate's ESS of the same policy (the same importance weights), so the gate regime is the same."""
    def merge(entry: dict, mb: dict) -> None:
        ess = entry["estimates"].get("fqe/return", {}).get("ess", float("nan"))
        entry["estimates"].update({k: {**v, "ess": ess} for k, v in mb.items()})
        drop_derived(entry)

    if "rank" in result:
        ranked = result["rank"]["policies"]
        missing = sorted(set(ranked) - set(pols))
        if missing:
            raise SystemExit(f"--add-mb: policies {missing} of the page are not built here (pass --spread?)")
        for n, mb in model_based_all(root, params, pols, list(ranked)).items():
            merge(ranked[n], mb)
    parts = sorted(work.glob(f"coverage_{source}_[0-9]*.json"))  # runs split over seed ranges
    if not parts:
        return
    cov = {k: v for part in parts for k, v in json.loads(part.read_text()).items()}
    target = work / f"coverage_{out}_{min(cov, key=int)}.json"
    done = json.loads(target.read_text()) if target.is_file() else {}  # a killed run's datasets
    for seed, entries in sorted(cov.items(), key=lambda kv: int(kv[0])):
        if seed in done:
            cov[seed] = done[seed]
            continue
        t1 = time.perf_counter()
        ds = work / f"ds{seed}"
        mine = {**pols, **own_policies(ds, pols, list(entries))}
        for n, mb in model_based_all(ds, params, mine, list(entries)).items():
            merge(entries[n], mb)
        done[seed] = entries
        target.write_text(json.dumps(done))
        print(f"dataset {seed}: {time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)


def support_shares(root: Path, params: dict, pols: dict[str, Any], names: Any) -> tuple[float, dict[str, float]]:
    """(the gate's ``registry.gate.max_support_reject_share``, each named policy's share of own actions on ``root``'s
    test states that its guardian rejects): the gate's support check, with its guardian (``registry.guardian_dir``
    through ``registry.guardian_loader``) and its seed ``registry.support_seed``."""
    from ogsrl.registry.loaders import resolve_loader
    from ogsrl.registry.stage import registry_config, support_reject_share

    cfg = registry_config(params)
    g = resolve_loader(cfg.guardian_loader)(root / cfg.guardian_dir)
    return cfg.gate.max_support_reject_share, {
        n: support_reject_share(pols[n], g, root / "data/trajectories/test.parquet", cfg.support_seed) for n in names}


def add_support(rank: dict, root: Path, params: dict, pols: dict[str, Any], truths: dict, targets: list[str],
                per_stay: dict[str, pd.DataFrame] | None = None) -> None:
    """Each ranked policy's share of own actions on the test states that the project's guardian rejects
    (:func:`support_shares`), and the ranking over the policies the gate would consider (share ≤ the gate's limit):
    OPE cannot know the value of doses the data never shows."""
    limit, shares = support_shares(root, params, pols, rank["policies"])
    for n, r in rank["policies"].items():
        r["support_reject_share"] = shares[n]
    kept = {n: r for n, r in rank["policies"].items() if r["support_reject_share"] <= limit}
    rank["support_limit"] = limit
    rank["supported_summary"] = summarise_rank(kept, truths, targets, per_stay)


def summarise_rank(rank: dict, truths: dict, targets: list[str],
                   per_stay: dict[str, pd.DataFrame] | None = None) -> list[dict]:
    """Per target and estimator: accuracy, rank agreement and the regret of the policy it selects — by its point
    value and, ``lcb``, by its interval's bound on the pessimistic side (highest lower bound of the return, lowest
    upper bound of a cost). With ``per_stay`` truths of the selected and the truly best policy, the regret's 95 %
    interval from their paired per-patient difference (:func:`paired_gap`)."""
    rows = []
    names = list(rank)
    per_stay = per_stay or {}

    def regret_of(pick: int, true: np.ndarray, target: str, span: float) -> tuple[float, float, float, float]:
        best = int(np.argmax(true) if target == "return" else np.argmin(true))
        point = (true[best] - true[pick] if target == "return" else true[pick] - true[best]) / span
        a, b = names[best], names[pick]
        if pick == best:
            return point, 0.0, 0.0, 0.0
        if a not in per_stay or b not in per_stay:
            return point, float("nan"), float("nan"), float("nan")
        col = "return" if target == "return" else f"cost_return_{target}"
        gap, half = paired_gap(per_stay[a], per_stay[b], col) if target == "return" else \
            paired_gap(per_stay[b], per_stay[a], col)
        return point, gap / span, (gap - half) / span, (gap + half) / span
    for target in targets:
        true = np.array([true_target(truths[n], target) for n in names])
        half = np.array([true_half_width(truths[n], target) for n in names])
        rng_ = true.max() - true.min()
        for e in (e for e in ESTIMATORS if e != ope_stage.HULL):  # the hull's value is FQE's
            est = np.array([(estimate_of(rank[n], e, target) or {}).get("value", np.nan) for n in names])
            ok = np.isfinite(est)
            if ok.sum() < 3:
                continue
            rel = np.abs(est[ok] - true[ok]) / np.abs(true[ok])
            rho = stats.spearmanr(est[ok], true[ok]).statistic
            side = "ci_low" if target == "return" else "ci_high"
            bound = np.array([(estimate_of(rank[n], e, target) or {}).get(side, np.nan) for n in names])
            if target == "return":
                pick = int(np.nanargmax(np.where(ok, est, -np.inf)))
                pick_lcb = int(np.nanargmax(np.where(ok & np.isfinite(bound), bound, -np.inf)))
            else:
                pick = int(np.nanargmin(np.where(ok, est, np.inf)))
                pick_lcb = int(np.nanargmin(np.where(ok & np.isfinite(bound), bound, np.inf)))
            regret, paired, regret_lo, regret_hi = regret_of(pick, true, target, rng_)
            conc, pairs = concordance(est[ok], true[ok], half[ok])
            rows.append({"target": target, "estimator": e, "policies": int(ok.sum()),
                         "median_rel_error": float(np.median(rel)), "spearman": float(rho),
                         "separated_pairs": pairs, "concordance": conc,
                         "regret": float(regret), "regret_paired": paired, "regret_lo": regret_lo,
                         "regret_hi": regret_hi,
                         "selected": names[pick], "regret_lcb": regret_of(pick_lcb, true, target, rng_)[0],
                         "selected_lcb": names[pick_lcb]})
    return rows


CHOICE_RETURN = (ope_stage.CAUTIOUS, ope_stage.CONSENSUS, "wdr")
"""return estimators of the constrained choice (``--limits``): the one the benchmark backs, the mean, the gate's"""
CHOICE_COST = (ope_stage.MB, ope_stage.KNN, "fqe", ope_stage.CONSENSUS, ope_stage.HULL)
"""cost estimators of the constrained choice, each read at its point value and at its interval's upper bound"""


def summarise_constrained(rank: dict, truths: dict, limits: dict[str, float]) -> dict[str, list[dict]]:
    """The constrained choice (:mod:`ogsrl.ope.selection`) over ``rank``'s policies: per return estimator × cost
    estimator × bound (``value`` or ``ci_high``) the chosen policy, its regret against the best policy truly within
    every limit and its excess over the limits (``choice``); per cost, estimator and bound, the policies read within
    the limit that truly break it and the truly-within ones read above it (``feasibility``)."""
    names = list(rank)
    costs = list(limits)
    d = np.array([limits[c] for c in costs])
    true_value = np.array([true_target(truths[n], "return") for n in names])
    true_costs = np.array([[true_target(truths[n], c) for c in costs] for n in names])

    def read(e: str, target: str, side: str) -> np.ndarray:
        return np.array([(estimate_of(rank[n], e, target) or {}).get(side, np.nan) for n in names])

    def listed(rows: tuple[int, ...]) -> str:
        return ", ".join(names[i] for i in rows) or "–"

    choice, feas = [], []
    for r in CHOICE_RETURN:
        value = read(r, "return", "value")
        for e in CHOICE_COST:
            for side in ("value", "ci_high"):
                est = np.stack([read(e, c, side) for c in costs], axis=1)
                s = score_choice(constrained_choice(value, est, d), true_value, true_costs, d)
                choice.append({"return_estimator": r, "cost_estimator": e, "cost_bound": side,
                               "read_within": int(within_limits(est, d).sum()),
                               "truly_within": int(within_limits(true_costs, d).sum()),
                               "chosen": names[s.chosen] if s.chosen is not None else "none",
                               "truly_best": names[s.best] if s.best is not None else "none",
                               "regret": s.regret, "excess": s.excess})
    for j, c in enumerate(costs):
        for e in CHOICE_COST:
            for side in ("value", "ci_high"):
                f = feasibility(read(e, c, side), true_costs[:, j], float(d[j]))
                feas.append({"cost": c, "limit": float(d[j]), "estimator": e, "bound": side,
                             "read_within": f.read_within, "truly_within": f.truly_within,
                             "false_within": len(f.false_within), "missed": len(f.missed),
                             "false_within_policies": listed(f.false_within), "missed_policies": listed(f.missed)})
    return {"limits": dict(limits), "choice": choice, "feasibility": feas}


CHOICE_COLUMNS = ["return_estimator", "cost_estimator", "cost_bound", "read_within", "truly_within", "chosen",
                  "truly_best", "regret", "excess"]
FEASIBILITY_COLUMNS = ["cost", "limit", "estimator", "bound", "read_within", "truly_within", "false_within", "missed",
                       "false_within_policies", "missed_policies"]


def parse_limits(text: str) -> dict[str, float]:
    """``cost_a=0.8,cost_b=4.6`` → {cost column: limit}; SystemExit naming a malformed item."""
    out = {}
    for item in (t for t in text.split(",") if t):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"--limits: {item!r} is not cost_column=number") from None
        if not name.strip().startswith("cost_") or not np.isfinite(out[name.strip()]) or out[name.strip()] < 0:
            raise SystemExit(f"--limits: {item!r} needs a cost_ column and a finite limit ≥ 0")
    return out


OWN = "own:"
"""coverage-policy prefix: a policy built from each dataset's own π̂_b (see the module docstring)"""


def resummarise(rank: dict, truths: dict, targets: list[str], per_stay: dict[str, pd.DataFrame] | None = None
                ) -> None:
    """Recompute a rank page's summaries (all policies, and those the support check admits) from its estimates."""
    rank["summary"] = summarise_rank(rank["policies"], truths, targets, per_stay)
    if "support_limit" in rank:
        kept = {n: r for n, r in rank["policies"].items() if r["support_reject_share"] <= rank["support_limit"]}
        rank["supported_summary"] = summarise_rank(kept, truths, targets, per_stay)


def retruth_page(args: argparse.Namespace) -> dict[str, Any]:
    """The saved rank page ``args.retruth`` scored against new truths of ``args.truth_episodes`` patients per policy
    (seed ``args.truth_seed``): the estimates are kept as they are, the page's truths move to ``truth_previous``."""
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    result = json.loads((HERE / "results" / f"{args.retruth}.json").read_text())
    if "rank" not in result:
        raise SystemExit(f"--retruth: {args.retruth} has no rank page")
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, meta = common.read_split(root / "data/trajectories/val.parquet")
    pols = build_policies(root, params, train, val, args.work, spread=args.spread, trained_only=args.trained_only)
    ranked = result["rank"]["policies"]
    missing = sorted(set(ranked) - set(pols))
    if missing:
        raise SystemExit(f"--retruth: policies {missing} of {args.retruth} are not built here (pass --spread or "
                         "--trained-only as its rank run did?)")
    t0 = time.perf_counter()
    truths = {}
    for n in ranked:
        truths[n] = truth_of(n, pols[n], params, args.truth_episodes, args.truth_seed, args.work)
        print(f"truth {n}: return {truths[n]['return']:.2f} (was {result['truth'][n]['return']:.2f})",
              file=sys.stderr, flush=True)
    result["truth_previous"] = {"episodes": result["meta"]["truth_episodes"], "seed": result["meta"]["truth_seed"],
                                "truth": {n: result["truth"][n] for n in ranked}}
    result["truth"] = truths
    resummarise(result["rank"], truths, ["return", *meta["cost_columns"]])
    result["meta"].update(truth_episodes=args.truth_episodes, truth_seed=args.truth_seed,
                          retruth={"page": args.retruth, "command": " ".join(["benchmarks/bench_ope.py", *sys.argv[1:]]),
                                   "seconds": round(time.perf_counter() - t0, 1), "date": dt.date.today().isoformat()})
    (HERE / "results" / f"{args.out}.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def own_policies(ds: Path, pols: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The ``own:`` coverage policies of dataset ``ds``: its π̂_b (``own:clone``), or the mixture of it with
    ``pols[<name>]`` (``own:mix<p>_<name>``: π̂_b's share p %, 50 when omitted)."""
    clone = load_policy(ds / ope_stage.BEHAVIOUR_DIR)
    out: dict[str, Any] = {}
    for n in (n for n in names if n.startswith(OWN)):
        what = n.removeprefix(OWN)
        mix = re.fullmatch(r"mix(\d*)_(.+)", what)
        if what == "clone":
            out[n] = clone
        elif mix and mix[2] in pols:
            out[n] = Mixture(clone, pols[mix[2]], int(mix[1]) / 100 if mix[1] else 0.5)
        else:
            raise SystemExit(f"--coverage-policies: unknown {n!r} (own:clone or own:mix[<clone %>]_<policy>)")
    return out


def drop_derived(entry: dict) -> None:
    """Forget ``entry``'s consensus and cautious estimates (after its parts changed): :func:`estimate_of` recomputes
    them from the parts."""
    for key in [k for k in entry["estimates"] if k.split("/")[0] in (ope_stage.CONSENSUS, ope_stage.CAUTIOUS)]:
        del entry["estimates"][key]


def estimate_of(r: dict, e: str, target: str) -> dict | None:
    """``r``'s estimate of ``target`` by ``e``; the hull of FQE and WDR, the consensus and the cautious consensus (of
    :data:`CONSENSUS_MEMBERS`) recomputed from their parts on pages saved before the evaluate stage reported them."""
    got = r["estimates"].get(f"{e}/{target}")
    if got is not None or e not in (ope_stage.HULL, ope_stage.CONSENSUS, ope_stage.CAUTIOUS):
        return got
    names = ("fqe", "wdr") if e == ope_stage.HULL else CONSENSUS_MEMBERS
    parts = [r["estimates"].get(f"{p}/{target}") for p in names]
    if None in parts:
        return None
    ests = [Estimate.from_dict(p) for p in parts]
    if e == ope_stage.HULL:
        return hull(*ests).to_dict()
    if e == ope_stage.CONSENSUS:
        return consensus(ests).to_dict()
    return cautious(ests, CAUTIOUS_K).to_dict() if target == "return" else None


def summarise_coverage(cov: dict, truths: dict, targets: list[str], by_policy: bool = False,
                       min_ess: float = 0.0) -> list[dict]:
    """Coverage, the gate side's coverage, median width and median relative error per target × estimator
    (× policy), over the intervals with ESS ≥ ``min_ess`` (0: all). The gate side is the bound the promotion gate
    reads: truth ≥ lower bound for the return, truth ≤ upper bound for a cost (nominal 97.5 % for a 95 % interval)."""
    rows = []
    groups = sorted({n for ds in cov.values() for n in ds}) if by_policy else [None]
    for target in targets:
        for e, group in ((e, g) for e in ESTIMATORS for g in groups):
            hits, gate_side, widths, errs = [], [], [], []
            for ds in cov.values():
                for name, r in ds.items():
                    est = estimate_of(r, e, target) if group in (None, name) else None
                    if est is None or (min_ess > 0 and not est.get("ess", np.nan) >= min_ess):  # unknown: out
                        continue
                    t = true_target(r.get("truth") or truths[name], target)
                    hits.append(est["ci_low"] <= t <= est["ci_high"])
                    gate_side.append(t >= est["ci_low"] if target == "return" else t <= est["ci_high"])
                    widths.append(est["ci_high"] - est["ci_low"])
                    errs.append(abs(est["value"] - t) / abs(t))
            if hits:
                rows.append({"target": target, "estimator": e, **({"policy": group} if group else {}),
                             "intervals": len(hits),
                             "coverage": float(np.mean(hits)), "gate_side_coverage": float(np.mean(gate_side)),
                             "median_width": float(np.median(widths)),
                             "median_rel_error": float(np.median(errs))})
    return rows


def coverage_result(cov: dict, truths: dict, targets: list[str], names: list[str], stays: int, params: dict
                    ) -> dict[str, Any]:
    min_ess = float(((params.get("registry") or {}).get("gate") or {}).get("min_ess", 0.0))
    return {"datasets": len(cov), "stays": stays, "policies": names, "min_ess": min_ess,
            "summary": summarise_coverage(cov, truths, targets),
            "by_policy": summarise_coverage(cov, truths, targets, by_policy=True),
            "gate_regime": summarise_coverage(cov, truths, targets, min_ess=min_ess),
            "gate_regime_by_policy": summarise_coverage(cov, truths, targets, by_policy=True, min_ess=min_ess)}


def table(rows: list[dict], cols: list[str]) -> str:
    def f(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(f(r[c]) for c in cols) + " |" for r in rows])


RANK_COLUMNS = ["target", "estimator", "policies", "median_rel_error", "spearman", "separated_pairs", "concordance",
                "regret", "regret_paired", "regret_lo", "regret_hi", "selected", "regret_lcb", "selected_lcb"]
"""the columns of a ranking table"""
REGRET_NOTE = ("`regret_paired` (`regret_lo`–`regret_hi`, 95 %): the regret on the simulated patients both the "
               "selected and the truly best policy's truths score, paired patient by patient (nan: a page without "
               "per-patient truths); the cohort keeps a few % of patients under one policy only, so it can differ "
               "from `regret`. `regret_lcb`, `selected_lcb`: selecting by the interval's pessimistic bound (highest "
               "lower bound of the return, lowest upper bound of a cost).")


def union_page(pages: list[str], out: str, limits: dict[str, float] | None = None) -> None:
    """Rank over the union of saved rank pages' policies (a name in several pages: the last page's estimates and
    truth), over all and over those the gate's support check admits (each page's own limit); with ``limits``, the
    constrained choice among the admitted ones (:func:`summarise_constrained`); writes results/<out>.json and .md. The pages may come from different projects (test splits): each estimate is still
    its own split's, as the gate would read it."""
    saved = {p: json.loads((HERE / "results" / f"{p}.json").read_text()) for p in pages}
    ranked: dict[str, Any] = {}
    truths: dict[str, Any] = {}
    admitted: dict[str, Any] = {}
    per_stay: dict[str, pd.DataFrame] = {}
    for page, doc in saved.items():
        if "rank" not in doc:
            raise SystemExit(f"--union: page {page} has no rank part")
        limit = doc["rank"].get("support_limit")
        meta = doc.get("meta", {})
        kept = per_stay_truths(Path(meta["work"]) if meta.get("work") else None, list(doc["rank"]["policies"]),
                               meta.get("truth_episodes", 0), meta.get("truth_seed", 0))
        for name, entry in doc["rank"]["policies"].items():
            ranked[name], truths[name] = entry, doc["truth"][name]
            per_stay.pop(name, None)
            if name in kept:
                per_stay[name] = kept[name]
            admitted.pop(name, None)
            if limit is not None and entry.get("support_reject_share", np.inf) <= limit:
                admitted[name] = entry
    targets = ["return", *sorted({k.split("/", 1)[1] for r in ranked.values() for k in r["estimates"]
                                  if k.split("/", 1)[1].startswith("cost_")})]
    settings = {(d.get("meta", {}).get("truth_episodes"), d.get("meta", {}).get("truth_seed")) for d in saved.values()}
    paired = per_stay if len(settings) == 1 else {}  # the same simulated patients only under one seed and count
    result = {"pages": pages, "policies": sorted(ranked), "admitted": sorted(admitted),
              "summary": summarise_rank(ranked, truths, targets, paired),
              "supported_summary": summarise_rank(admitted, truths, targets, paired),
              "meta": {"date": dt.date.today().isoformat(), "command": " ".join(["benchmarks/bench_ope.py", *sys.argv[1:]])}}
    if limits:
        missing = sorted(set(limits) - set(targets))
        if missing:
            raise SystemExit(f"--limits: the pages estimate no {missing} (costs: {targets[1:]})")
        result["constrained"] = summarise_constrained(admitted, truths, limits)
    (HERE / "results" / f"{out}.json").write_text(json.dumps(result, indent=1, default=float))
    cols = RANK_COLUMNS
    md = [f"# OPE against simulator truth, over several saved pages: {out} (`benchmarks/bench_ope.py`, "
          f"{result['meta']['date']})", "", f"Command: `{result['meta']['command']}`", "",
          f"Pages: {', '.join(f'`{p}`' for p in pages)} ({len(ranked)} distinct policies; a name in several pages "
          "takes the last page's estimates and truth). Each estimate is its own project's test split's; regret is a "
          f"share of the union's true range. {REGRET_NOTE}", "", "## All policies", "", table(result["summary"], cols), "",
          f"## The {len(admitted)} the gate's support check admits", "", table(result["supported_summary"], cols), ""]
    if limits:
        md += constrained_lines(result["constrained"], len(admitted))
    (HERE / "results" / f"{out}.md").write_text("\n".join(md), encoding="utf-8")


def constrained_lines(part: dict, admitted: int) -> list[str]:
    """The constrained choice's markdown section (:func:`summarise_constrained`)."""
    lim = ", ".join(f"{c} ≤ {v:g}" for c, v in part["limits"].items())
    return [f"## Choosing under the cost limits ({lim} per stay), among the {admitted} admitted", "",
            "The policy with the highest estimated return among those whose estimated cost returns are within every "
            "limit (`cost_bound` value: the point estimate; ci_high: the 95 % interval's upper bound), scored by "
            "the truth: `regret` against the best policy truly within every limit (share of the true return range), "
            "`excess` the chosen policy's largest true relative excess over a limit (> 0: it breaks one). "
            "`read_within` / `truly_within`: policies within every limit by the estimates / by the truth "
            "(`ogsrl.ope.selection`).", "", table(part["choice"], CHOICE_COLUMNS), "",
            "Per cost: `false_within`, policies read within the limit that truly break it (the unsafe error); "
            "`missed`, truly-within policies read above it.", "", table(part["feasibility"], FEASIBILITY_COLUMNS), ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--rank", action="store_true", help="part 1 on the project's own test split")
    ap.add_argument("--spread", action="store_true",
                    help="rank a wider set: more noise levels and clinicians scaled to give more or less of each drug")
    ap.add_argument("--datasets", type=int, default=0, help="part 2: independently generated datasets")
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--stays", type=int, default=2500)
    ap.add_argument("--coverage-policies", default="soc/seed42,gmb_cpo/seed42,heuristic0.5,"
                                                  "mix_clinician_clone_heuristic1.0")
    ap.add_argument("--truth-episodes", type=int, default=2000)
    ap.add_argument("--truth-seed", type=int, default=11)
    ap.add_argument("--fqe-refits", type=int, default=None, help="override ope.fqe.refits")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_ope"))
    ap.add_argument("--out", default="ope")
    ap.add_argument("--trained-only", action="store_true",
                    help="rank only the trained run × seed policies under --root (model selection among learners)")
    ap.add_argument("--support", action="store_true",
                    help="add the guardian's support shares to the saved rank page --out (no OPE rerun)")
    ap.add_argument("--only", metavar="NAMES", help="with --rank --base: re-evaluate only these comma-separated "
                                                    "policies (run/seedN) and keep the base page's other ones")
    ap.add_argument("--base", metavar="PAGE", help="the saved rank page --only starts from (written as --out)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md page from the saved .json")
    ap.add_argument("--add-mb", metavar="PAGE",
                    help="copy the saved page PAGE (its rank and its coverage parts in --work), add the simulator "
                         "estimates (mb: params ope.model; knn: ope.neighbour) of its policies on the same data, "
                         "write it as --out")
    ap.add_argument("--only-knn", action="store_true",
                    help="with --add-mb: add the knn estimates alone (the page's mb estimates are kept)")
    ap.add_argument("--union", metavar="PAGES", help="comma-separated saved rank pages: rank over their policies' "
                                                       "union, written as --out (no OPE rerun)")
    ap.add_argument("--limits", metavar="COSTS", type=parse_limits,
                    help="with --union: cost limits per stay, e.g. cost_spo2_low=0.833,cost_urine_low=4.594 (the "
                         "learners' own): adds the constrained choice among the admitted policies")
    ap.add_argument("--retruth", metavar="PAGE",
                    help="score the saved rank page PAGE against new truths (--truth-episodes, --truth-seed) of its "
                         "policies (built from --root, --work, --spread / --trained-only as its run), written as "
                         "--out (no OPE rerun)")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    if args.retruth:
        write_report(retruth_page(args), args)
        return
    if args.union:
        union_page([p for p in args.union.split(",") if p], args.out, args.limits)
        return
    if args.add_mb:
        root = args.root.resolve()
        params = load_params(root / "params.yaml")
        if args.only_knn:
            ope = params.get("ope") or {}
            params = {**params, "ope": {**ope, "model": {**(ope.get("model") or {}), "enabled": False},
                                        "consensus": []}}  # the page's consensus is derived from its parts
        t0 = time.perf_counter()
        result = json.loads((HERE / "results" / f"{args.add_mb}.json").read_text())
        train, _ = common.read_split(root / "data/trajectories/train.parquet")
        val, meta = common.read_split(root / "data/trajectories/val.parquet")
        targets = ["return", *meta["cost_columns"]]
        pols = build_policies(root, params, train, val, args.work, spread=args.spread,
                          trained_only=args.trained_only)
        add_model_based(result, root, params, pols, args.work, args.add_mb, args.out)
        if "rank" in result:
            resummarise(result["rank"], result["truth"], targets)
        parts = sorted(args.work.glob(f"coverage_{args.out}_[0-9]*.json"))
        if parts and "coverage" in result:
            cov = {k: v for part in parts for k, v in json.loads(part.read_text()).items()}
            c = result["coverage"]
            result["coverage"] = coverage_result(cov, result["truth"], targets, c["policies"], c["stays"], params)
        cfg = ope_stage.ope_config(params)
        result["meta"]["knn" if args.only_knn else "model_based"] = {
            "command": " ".join(sys.argv), "seconds": round(time.perf_counter() - t0, 1),
            "model": dataclasses.asdict(cfg.neighbour if args.only_knn else cfg.model),
            "date": dt.date.today().isoformat()}
        (HERE / "results" / f"{args.out}.json").write_text(json.dumps(result, indent=1, default=float))
        write_report(result, args)
        return
    if args.report_only:  # from the saved .json, or a partial coverage run's per-dataset file
        saved = HERE / "results" / f"{args.out}.json"
        result = json.loads(saved.read_text()) if saved.is_file() else {}
        parts = sorted(args.work.glob(f"coverage_{args.out}_[0-9]*.json"))  # runs split over seed ranges
        if parts:
            cov = {k: v for part in parts for k, v in json.loads(part.read_text()).items()}
            names = [n for n in args.coverage_policies.split(",") if n]
            truths = {n: json.loads((args.work / "truth" / f"{n.replace('/', '__')}_{args.truth_episodes}_"
                                     f"{args.truth_seed}.json").read_text()) for n in names if not n.startswith(OWN)}
            targets = ["return", *sorted({k.split("/", 1)[1] for ds in cov.values() for r in ds.values()
                                          for k in r["estimates"] if k.split("/", 1)[1].startswith("cost_")})]
            result["truth"] = {**result.get("truth", {}), **truths}
            result["coverage"] = coverage_result(cov, truths, targets, names, args.stays,
                                                 load_params(args.root / "params.yaml"))
            result.setdefault("meta", {"date": dt.date.today().isoformat(), "command": " ".join(sys.argv),
                                       "seconds": float("nan"), "truth_episodes": args.truth_episodes,
                                       "truth_seed": args.truth_seed, "fqe": None})
            saved.write_text(json.dumps(result, indent=1, default=float))
        write_report(result, args)
        return
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    if args.fqe_refits is not None:
        params = {**params, "ope": {**params["ope"], "fqe": {**(params["ope"].get("fqe") or {}),
                                                             "refits": args.fqe_refits}}}
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, meta = common.read_split(root / "data/trajectories/val.parquet")
    targets = ["return", *meta["cost_columns"]]
    pols = build_policies(root, params, train, val, args.work, spread=args.spread,
                          trained_only=args.trained_only)
    out_json = HERE / "results" / f"{args.out}.json"
    result: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    only = [n for n in (args.only or "").split(",") if n]
    if only or args.base:
        base = HERE / "results" / f"{args.base}.json"
        if not (only and args.base and args.rank and not args.datasets):
            raise SystemExit("--only and --base go together, with --rank and without --datasets")
        if not base.is_file():
            raise SystemExit(f"--base: no saved page {base}")
        result = json.loads(base.read_text())
        unknown = sorted(set(only) - set(result.get("rank", {}).get("policies", {})) | set(only) - set(pols))
        if unknown:
            raise SystemExit(f"--only: {unknown} are not ranked on {args.base} or not built under {root}")
    needed = (only or list(pols)) if args.rank else []
    needed += [n for n in args.coverage_policies.split(",") if n and args.datasets and n not in needed
               and not n.startswith(OWN)]  # own: policies get their truth per dataset
    truths = {}
    for n in needed:
        truths[n] = truth_of(n, pols[n], params, args.truth_episodes, args.truth_seed, args.work, refresh=bool(only))
        print(f"truth {n}: return {truths[n]['return']:.2f}", file=sys.stderr, flush=True)
    result["truth"] = {**result.get("truth", {}), **truths}
    paired = per_stay_truths(args.work, list(result["truth"]), args.truth_episodes, args.truth_seed)
    if only:
        rank = {**result["rank"]["policies"], **evaluate_all(root, params, pols, only)}
        truths = result["truth"]
        result["rank"] = {"policies": rank, "summary": summarise_rank(rank, truths, targets, paired)}
        result["meta"]["base"] = {"page": args.base, "command": result["meta"]["command"],
                                  "date": result["meta"]["date"], "seconds": result["meta"]["seconds"],
                                  "kept": sorted(set(rank) - set(only))}
    elif args.rank:
        rank = evaluate_all(root, params, pols, list(pols))
        result["rank"] = {"policies": rank, "summary": summarise_rank(rank, truths, targets, paired)}
    if args.rank or args.support:  # --support alone: add the shares to the saved rank page's policies
        missing = sorted(set(result.get("rank", {}).get("policies", {})) - set(pols)) if "rank" in result else None
        if missing is None or missing:
            raise SystemExit(f"--support: {out_json} has no rank page" if missing is None else
                             f"--support: policies {missing} of {out_json} are not built here (pass --spread as its "
                             "rank run did?)")
        add_support(result["rank"], root, params, pols, truths or result["truth"], targets, paired)
        if not args.rank:
            resummarise(result["rank"], result["truth"], targets, paired)
    if args.datasets:
        names = [n for n in args.coverage_policies.split(",") if n]
        cov: dict[str, Any] = {}
        parts = sorted(args.work.glob(f"coverage_{args.out}_[0-9]*.json"))  # runs split over seed ranges
        if parts:
            cov = {k: v for part in parts for k, v in json.loads(part.read_text()).items()}
        part = args.work / f"coverage_{args.out}_{args.first_seed}.json"  # this process's seed range
        for i in range(args.datasets):
            seed = args.first_seed + i
            if str(seed) in cov:
                continue
            t1 = time.perf_counter()
            ds = make_dataset(params, seed, args.stays, args.work)
            mine = {**pols, **own_policies(ds, pols, names)}
            cov[str(seed)] = evaluate_all(ds, params, mine, names)
            for n in names:
                if n.startswith(OWN):
                    cov[str(seed)][n]["truth"] = truth_of(f"{n}@ds{seed}", mine[n], params, args.truth_episodes,
                                                          args.truth_seed, args.work)
            part.write_text(json.dumps(cov))
            print(f"dataset {seed}: {time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
        result["coverage"] = coverage_result(cov, result["truth"], targets, names, args.stays, params)
    if args.support and not (args.rank or args.datasets):  # the page's numbers still come from its own command
        result["meta"]["support_command"] = " ".join(sys.argv)
    else:
        result["meta"] = {"date": dt.date.today().isoformat(), "command": " ".join(sys.argv),
                          "seconds": round(time.perf_counter() - t0, 1), "truth_episodes": args.truth_episodes,
                          "truth_seed": args.truth_seed, "fqe": params["ope"].get("fqe"),
                          "work": str(args.work.resolve()),  # per-patient truths (scratch) for paired regrets
                          **({"base": result["meta"]["base"]} if only else {})}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1, default=float))
    write_report(result, args)


SHOWN = ("fqe", "wdr", ope_stage.HULL, ope_stage.MB, ope_stage.KNN, ope_stage.CONSENSUS)
"""estimators of the per-policy coverage tables"""


def retruth_lines(result: dict[str, Any]) -> list[str]:
    """How the page's previous truths compare with the new ones (the stated precision of the old, checked)."""
    re_, prev = result["meta"]["retruth"], result["truth_previous"]
    names = sorted(prev["truth"])
    delta = np.array([prev["truth"][n]["return"] - result["truth"][n]["return"] for n in names])
    held = sum(prev["truth"][n]["return_ci_lo"] <= result["truth"][n]["return"] <= prev["truth"][n]["return_ci_hi"]
               for n in names)
    rank = result["rank"]
    admitted = [n for n in names if rank["policies"][n].get("support_reject_share", 0.0) <= rank.get("support_limit",
                                                                                                     np.inf)]

    def rho(among: list[str]) -> float:
        return float(stats.spearmanr([prev["truth"][n]["return"] for n in among],
                                     [result["truth"][n]["return"] for n in among]).statistic)

    return [f"Truths re-simulated on {re_['date']} by `{re_['command']}` ({re_['seconds']:.0f} s): the estimates are "
            f"`{re_['page']}`'s, unchanged. Its previous truths ({prev['episodes']} patients, seed {prev['seed']}) "
            f"differ from these in the return by a median |Δ| of {np.median(np.abs(delta)):.2f} (max "
            f"{np.max(np.abs(delta)):.2f}); their 95 % intervals hold the new value for {held} of {len(names)}. "
            f"Read as an estimator of these truths, the previous truths rank the return at Spearman {rho(names):.3f} "
            f"over all {len(names)}" + (f" and {rho(admitted):.3f} over the {len(admitted)} admitted"
                                        if len(admitted) < len(names) else "") + ".", ""]


def write_report(result: dict[str, Any], args: argparse.Namespace) -> None:
    import os
    import platform

    md = [f"# OPE against simulator truth: {args.out} (`benchmarks/bench_ope.py`, {result['meta']['date']})", "",
          f"Command: `{result['meta']['command']}`", "",
          *([f"This command evaluated only its `--only` policies; estimates and truths of the others were kept from "
             f"`{result['meta']['base']['page']}` ({result['meta']['base']['date']}, "
             f"`{result['meta']['base']['command']}`, {result['meta']['base']['seconds']:.0f} s): "
             f"{', '.join(result['meta']['base']['kept'])}.", ""]
            if result["meta"].get("base") else []),
          *([f"Support shares added by `{result['meta']['support_command']}`.", ""]
            if result["meta"].get("support_command") else []),
          *(line for key, what in (("model_based", "Model-based estimates (`mb`, ope.model"),
                                   ("knn", "Nearest-neighbour estimates (`knn`, ope.neighbour"))
            if (added := result["meta"].get(key))
            for line in (f"{what}: {json.dumps(added['model'])}) added on {added['date']} by `{added['command']}` "
                         f"({added['seconds']:.0f} s; same data, policies and truth).", "")),
          *(retruth_lines(result) if result["meta"].get("retruth") else []),
          f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, one torch thread; "
          f"{result['meta']['seconds']:.0f} s in all. Truth: `ogsrl truth` code, cohort population, "
          f"{result['meta']['truth_episodes']} patients per policy, seed {result['meta']['truth_seed']} (never an "
          f"OPE seed). Estimates use "
          f"the project's params (ope.fqe: {json.dumps(result['meta']['fqe'])}).", ""]
    if "rank" in result:
        md += ["## Ranking and selection (project test split)", "",
               table(result["rank"]["summary"], [c for c in RANK_COLUMNS
                                                 if c in (result["rank"]["summary"] or [{}])[0]]), REGRET_NOTE, ""]
        if result["rank"].get("supported_summary"):
            md += [f"Over the policies the gate's support check admits (the guardian rejects ≤ "
                   f"{result['rank']['support_limit']:g} of their own actions on the test states; column "
                   "`rejected` below):", "",
                   table(result["rank"]["supported_summary"], [c for c in RANK_COLUMNS
                                                               if c in result["rank"]["supported_summary"][0]]), ""]
        pr = result["rank"]["policies"]
        rows = [{"policy": n, "true return": result["truth"][n]["return"],
                 "±": true_half_width(result["truth"][n], "return"),
                 "true mortality": result["truth"][n]["mortality_hosp"],
                 "true cost_total": result["truth"][n]["cost_return_cost_total"],
                 "ESS": pr[n]["estimates"].get("fqe/return", {}).get("ess", float("nan")),
                 "rejected": pr[n].get("support_reject_share", float("nan")),
                 **{e: (estimate_of(pr[n], e, "return") or {}).get("value", float("nan"))
                    for e in ("wis_clip", "pdwis_clip", "fqe", "dr", "wdr", ope_stage.MB, ope_stage.KNN,
                              ope_stage.CONSENSUS, ope_stage.CAUTIOUS)}}
                for n in pr]
        md += ["Per policy (reward return; estimates' point values):", "",
               table(rows, ["policy", "true return", "±", "true mortality", "true cost_total", "ESS", "rejected",
                            "wis_clip",
                            "pdwis_clip", "fqe",
                            "dr", "wdr", ope_stage.MB, ope_stage.KNN, ope_stage.CONSENSUS, ope_stage.CAUTIOUS]), ""]
    if "coverage" in result:
        c = result["coverage"]
        cols = ["target", "estimator", "intervals", "coverage",
                *(["gate_side_coverage"] if "gate_side_coverage" in c["summary"][0] else []), "median_width",
                "median_rel_error"]
        md += [f"## 95 % CI coverage ({c['datasets']} datasets × {c['stays']} stays; policies {c['policies']})", "",
               *(["`gate_side_coverage`: the share of intervals whose bound the gate reads holds (truth ≥ lower "
                  "bound for the return, truth ≤ upper bound for a cost; nominal 0.975).", ""]
                 if "gate_side_coverage" in cols else []),
               table(c["summary"], cols), ""]
        if "by_policy" in c:
            keep = [r for r in c["by_policy"] if r["estimator"] in SHOWN]
            md += ["Per policy (FQE, WDR, their hull, MB, kNN, consensus):", "",
                   table(keep, [*cols[:2], "policy", *cols[2:]]), ""]
        if c.get("gate_regime"):
            keep = [r for r in c["gate_regime_by_policy"] if r["estimator"] in SHOWN]
            md += [f"### Where the gate decides: intervals with ESS ≥ min_ess = {c['min_ess']:g}", "",
                   table(c["gate_regime"], cols), "", "Per policy (FQE, WDR, their hull, MB, kNN, consensus):", "",
                   table(keep, [*cols[:2], "policy", *cols[2:]]), ""]
    (HERE / "results" / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
