"""What the model-based OPE probes share: a project's evaluation split, its evaluation world models, the policies of
saved rank pages and their truth (``probe_cost_reader.py``, ``probe_mb_states.py``, ``probe_mb_lags.py``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import bench_ope
from ogsrl.agents import common
from ogsrl.config import load_params
from ogsrl.data.contract import read_metadata
from ogsrl.ope import stage as ope_stage
from ogsrl.world import stage as world_stage


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
    for page in args.pages.split(","):
        truth.update(json.loads((bench_ope.HERE / "results" / f"{page}.json").read_text())["truth"])
    return ProbeSet(root, params, ope_cfg, test, world, table, pols, truth)


def act_fn(pol: Any, feats: list[str]) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """``pol`` acting on states in the columns ``feats``."""
    cols = [feats.index(f) for f in pol.feature_names]
    return lambda obs, rng: np.asarray(pol.act(np.asarray(obs, np.float64)[:, cols], rng), np.float32)


def score(variants: dict[str, dict[str, list[float]]], truth: dict[str, dict], costs: list[str],
          admitted: list[str]) -> list[dict[str, Any]]:
    """Per subset (all policies; those ``admitted``, when ≥ 3), target (the return, each cost, their total) and
    variant: median relative error, Spearman and the line ``estimate = a + b·truth`` of the variant's values
    (``[return, cost…]`` per policy) against the truth."""
    from scipy import stats

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
                summary.append({"subset": subset, "policies": len(names), "target": target, "variant": variant,
                                "median_rel_error": float(np.median(np.abs(est - true) / np.abs(true))),
                                "spearman": float(stats.spearmanr(est, true)[0]), "a": float(line.intercept),
                                "b": float(line.slope)})
    return summary


def score_table(summary: list[dict[str, Any]]) -> list[str]:
    """:func:`score`'s rows as a markdown table."""
    md = ["| subset | target | variant | median relative error | Spearman | estimate = a + b·truth |",
          "|---|---|---|---|---|---|"]
    return md + [f"| {r['subset']} ({r['policies']}) | {r['target']} | {r['variant']} | {r['median_rel_error']:.3f} | "
                 f"{r['spearman']:.3f} | {r['a']:.2f} + {r['b']:.3f}·truth |" for r in summary]


def write_page(out: str, page: dict[str, Any], md: list[str]) -> None:
    """benchmarks/results/<out>.json and .md; the markdown printed."""
    (bench_ope.HERE / "results" / f"{out}.json").write_text(json.dumps(page, indent=1))
    (bench_ope.HERE / "results" / f"{out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
