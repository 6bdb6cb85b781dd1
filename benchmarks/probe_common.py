"""What the model-based OPE probes share: a project's evaluation split, its evaluation world models, the policies of
saved rank pages and their truth, and how the probes score variants against it and write their pages
(``probe_cost_reader.py``, ``probe_mb_states.py``, ``probe_mb_lags.py``, ``probe_mb_replay.py``,
``probe_logging_policy.py``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

import bench_ope
from ogsrl.agents import common
from ogsrl.config import load_params
from ogsrl.data.contract import read_metadata
from ogsrl.ope import model_based
from ogsrl.ope import stage as ope_stage
from ogsrl.world import stage as world_stage


def add_scoring_args(ap: argparse.ArgumentParser, out: str, fits: int = 4) -> None:
    """--admitted, --fits and --out of the probes that score variants against the truth (:func:`write_variants`)."""
    ap.add_argument("--admitted", default="", help="a saved union page whose admitted policies form the subset")
    ap.add_argument("--fits", type=int, default=fits, help="evaluation fits averaged: 1 = the full-data fit; n ≥ 3 = "
                    "it and n − 1 stay-bootstrap refits, as mb bags them (the root's ope.model.refits + 1 at most)")
    ap.add_argument("--out", default=out)


def add_args(ap: argparse.ArgumentParser) -> None:
    """--root, --pages, --policy-roots and --work."""
    ap.add_argument("--root", type=Path, required=True, help="project whose test split the evaluation models fit")
    ap.add_argument("--pages", required=True, help="saved rank pages with the policies' truth")
    ap.add_argument("--policy-roots", default="", help="more projects whose trained policies to read")
    ap.add_argument("--work", type=Path, required=True, help="bench_ope's work directory (cached rule clones)")


@dataclass
class ProbeSet:
    root: Path
    params: dict
    cfg: ope_stage.OPEConfig
    test: pd.DataFrame
    world: ope_stage.EvalWorld
    table: world_stage.TableLayout
    policies: dict[str, Any]
    """the spread set of ``root`` (bench_ope --spread), the trained runs of ``--policy-roots``"""
    truth: dict[str, dict]
    """policy → its truth on the pages (10,000 patients, seed 13)"""


def load(args: argparse.Namespace, cfg: Callable[[ope_stage.OPEConfig], ope_stage.OPEConfig] = lambda c: c
         ) -> ProbeSet:
    """The probe's data, evaluation world models (``cfg`` may change the project's OPE config first) and policies."""
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    ope_cfg = cfg(ope_stage.ope_config(params))
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, _ = common.read_split(root / "data/trajectories/val.parquet")
    test, meta = common.read_split(root / "data/trajectories/test.parquet")
    world = ope_stage.eval_world(params, ope_cfg, root, test, meta)
    if world is None or not world.models:
        raise SystemExit("no evaluation models on this root")
    path = root / "data/trajectories/test.parquet"
    table = world_stage.table_layout(params, read_metadata(path), test, path)
    pols = bench_ope.build_policies(root, params, train, val, args.work, spread=True)
    for r in filter(None, args.policy_roots.split(",")):
        pols.update(bench_ope.build_policies(Path(r), params, None, None, Path("/nonexistent"),  # type: ignore
                                             trained_only=True))
    truth: dict[str, dict] = {}
    for page in filter(None, args.pages.split(",")):
        truth.update(json.loads((bench_ope.HERE / "results" / f"{page}.json").read_text())["truth"])
    return ProbeSet(root, params, ope_cfg, test, world, table, pols, truth)


def act_fn(pol: Any, feats: list[str]) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """``pol`` acting on states in the columns ``feats``."""
    cols = [feats.index(f) for f in pol.feature_names]
    return lambda obs, rng: np.asarray(pol.act(np.asarray(obs, np.float64)[:, cols], rng), np.float32)


def score(variants: dict[str, dict[str, list[float]]], truth: dict[str, dict], costs: list[str],
          admitted: list[str]) -> list[dict[str, Any]]:
    """Per subset (all policies; those ``admitted``, when ≥ 3), target (the return, each cost, their total) and
    variant: median relative error, Spearman, the regret of the variant's pick (the highest return, the lowest cost:
    its true shortfall from the truly best as a share of the true range, as ``bench_ope.py``'s point regret) and the
    line ``estimate = a + b·truth`` of the variant's values (``[return, cost…]`` per policy) against the truth."""
    def true_of(name: str, target: str) -> float:
        return float(truth[name]["return" if target == "return" else f"cost_return_{target}"])

    def est_of(v: list[float], target: str) -> float:
        return v[0] if target == "return" else (sum(v[1:]) if target == "cost_total" else v[1 + costs.index(target)])

    summary = []
    for subset, names in (("all", list(truth)), ("admitted", [n for n in truth if n in admitted])):
        if len(names) < 3:
            continue
        for target in ["return", *costs, "cost_total"]:
            true = np.array([true_of(n, target) for n in names])
            for variant, vals in variants.items():
                est = np.array([est_of(vals[n], target) for n in names])
                line = stats.linregress(true, est)
                sign = 1.0 if target == "return" else -1.0
                regret = (sign * true).max() - sign * true[int(np.argmax(sign * est))]
                summary.append({"subset": subset, "policies": len(names), "target": target, "variant": variant,
                                "median_rel_error": float(np.median(np.abs(est - true) / np.abs(true))),
                                "spearman": float(stats.spearmanr(est, true)[0]),
                                "regret": float(regret / (true.max() - true.min())), "a": float(line.intercept),
                                "b": float(line.slope)})
    return summary


def score_table(summary: list[dict[str, Any]]) -> list[str]:
    """:func:`score`'s rows as a markdown table."""
    md = ["| subset | target | variant | median relative error | Spearman | regret | estimate = a + b·truth |",
          "|---|---|---|---|---|---|---|"]
    return md + [f"| {r['subset']} ({r['policies']}) | {r['target']} | {r['variant']} | {r['median_rel_error']:.3f} | "
                 f"{r['spearman']:.3f} | {r['regret']:.3f} | {r['a']:.2f} + {r['b']:.3f}·truth |" for r in summary]


def write_page(out: str, page: dict[str, Any], md: list[str]) -> None:
    """benchmarks/results/<out>.json and .md; the markdown printed."""
    (bench_ope.HERE / "results" / f"{out}.json").write_text(json.dumps(page, indent=1))
    (bench_ope.HERE / "results" / f"{out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def mb_values(ps: ProbeSet, models: list[Any], starts: np.ndarray | None = None, feats: list[str] | None = None
              ) -> dict[str, list[float]]:
    """Each truth policy's ``[return, cost…]`` as ``mb`` reads it (undiscounted), averaged over ``models``, each
    rolled out with the policy's own action stream and the evaluation world's draws (as the evaluate stage).
    ``starts``/``feats``: start states in other state columns (default: the evaluation world's)."""
    feats = list(ps.world.state_features) if feats is None else feats
    starts = ps.world.starts if starts is None else starts
    out = {}
    for name in ps.truth:
        per_fit = []
        for model in models:
            s_act, _ = ope_stage.policy_streams(ps.cfg.seed, name)[2].spawn(2)
            per_fit.append(model_based.stay_values(model, starts, ps.world.horizons,
                                                   act_fn(ps.policies[name], feats), 1.0, ps.cfg.model.rollouts,
                                                   ps.cfg.model.mode, ps.world.env_seed,
                                                   np.random.default_rng(s_act)).mean(0))
        out[name] = [float(x) for x in np.mean(per_fit, axis=0)]
    return out


def plain_models(ps: ProbeSet, fits: int) -> list[Any]:
    """The first ``fits`` evaluation world models, without a boosted cost reader."""
    models = [m.model if isinstance(m, model_based.BoostedCosts) else m for m in ps.world.models]
    if fits < 1 or fits == 2 or fits > len(models):
        raise SystemExit(f"--fits must be 1 or 3 … {len(models)} (the root's ope.model.refits + 1), got {fits}")
    return models[:fits]


def admitted_by(page: str) -> list[str]:
    """The policies a saved union page admits ([] without a page)."""
    return json.loads((bench_ope.HERE / "results" / f"{page}.json").read_text())["admitted"] if page else []


def write_variants(script: str, out: str, t0: float, title: str, about: str, variants: dict[str, dict[str, list[float]]],
                   truth: dict[str, dict], costs: list[str], admitted: list[str], extra: dict[str, Any] | None = None,
                   sections: list[str] | None = None) -> None:
    """Score ``variants`` against ``truth`` (:func:`score`) and write the result page: ``about`` (what the variants
    are) and any ``sections`` (markdown lines) above the score table; ``extra`` joins the JSON."""
    summary = score(variants, truth, costs, admitted)
    meta = {"date": dt.date.today().isoformat(), "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join([f"benchmarks/{script}", *sys.argv[1:]])}
    page = {"summary": summary, "values": variants, **(extra or {}), "meta": meta}
    md = [f"# {title} (`{out}`, {meta['date']})", "", f"Command: `{meta['command']}` ({meta['seconds']:.0f} s).", "",
          about, "", *(sections or []), *score_table(summary)]
    write_page(out, page, md)
