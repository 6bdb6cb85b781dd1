"""Where model-based OPE's cost error comes from: the cost reading of one step, or the simulated states (issue 12).

For each policy of saved rank pages (their truth: 10,000 patients, seed 13), on the root's evaluation split:
  * **on true states**: ``--patients`` fresh patients simulated under the policy and extracted as the demo's cohort;
    each logged step's P(c = 1 | s, a) read by the evaluation world model's cost head and by the gradient-boosted trees
    of ``ope.model.cost_reader: boosted``, summed per stay — what a perfect simulator of the states would give;
  * **on model states**: the ``mb`` estimator's own episodes (the first evaluation fit, its seeds), costs read by the
    head and by the trees — ``mb`` as shipped with ``cost_reader`` model and boosted.
Per cost: median relative error against the truth, Spearman, and the line ``reading = a + b·truth``.

Usage:
  .venv/bin/python benchmarks/probe_cost_reader.py --root /work/s21/S --pages ope_rank_s21spread_fresh,... \
      --policy-roots /work/s24/E,/work/s24/F --work /work/s21/w_spread [--patients 2000] [--out cost_reader_s27]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

from ogsrl.cohort.extract import CohortConfig  # noqa: E402
from ogsrl.config import build  # noqa: E402
from ogsrl.costs import build_costs  # noqa: E402
from ogsrl.ope import model_based  # noqa: E402
from ogsrl.ope import stage as ope_stage  # noqa: E402
from ogsrl.synth.engine import cohort_observer, simulate  # noqa: E402
from ogsrl.synth.stage import SynthConfig, world_from_params  # noqa: E402
from ogsrl.synth.truth import extract_chunk  # noqa: E402
from ogsrl.world.env import EnvConfig, WorldModelEnv, rollout  # noqa: E402
import exclusive  # noqa: E402

READINGS = ("true_states_head", "true_states_trees", "model_states_head", "model_states_trees")


def true_rows(policy: object, params: dict, patients: int, seed: int) -> pd.DataFrame:
    """The cohort rows of ``patients`` fresh patients under ``policy`` (the truth's simulation and extraction)."""
    scfg = build(SynthConfig, params.get("synth"), "synth")
    cohort, costs, world = build(CohortConfig, params.get("cohort"), "cohort"), build_costs(params), \
        world_from_params(params)
    rows = []
    for c, start in enumerate(range(0, patients, scfg.chunk_stays)):
        res = simulate(min(scfg.chunk_stays, patients - start), np.random.default_rng([seed, c, 7]),
                       first_index=start, world=world, observer=cohort_observer(), policy=policy,
                       cohort_only=True, keep_tables=True)
        rows.append(extract_chunk(res, cohort, costs))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_common.add_args(ap)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="cost_reader")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    ps = probe_common.load(args, lambda c: dataclasses.replace(c, model=dataclasses.replace(c.model,
                                                                                            cost_reader="boosted")))
    params, cfg, world, table, pols, truth = ps.params, ps.cfg, ps.world, ps.table, ps.policies, ps.truth
    fit: model_based.BoostedCosts = world.models[0]
    costs = list(table.cost_columns)
    feats = list(world.state_features)
    res: dict[str, dict[str, dict[str, float]]] = {}
    for name in [n for n in pols if n in truth]:
        pol = pols[name]
        rows = true_rows(pol, params, args.patients, args.seed)
        tr = table.transitions(rows, "simulated")
        n_true = rows["stay_key"].nunique()
        head = fit.model.predict(tr.obs, tr.act).cost_prob[fit.model.elites].mean(0)
        trees = fit.cost_prob(tr.obs, tr.act)
        act = probe_common.act_fn(pol, feats)
        s_act, _ = ope_stage.policy_streams(cfg.seed, name)[2].spawn(2)
        n = len(world.starts)
        env = WorldModelEnv(fit.model, world.starts, n * cfg.model.rollouts,
                            EnvConfig(horizon=int(world.horizons.max()), mode=cfg.model.mode), horizons=world.horizons)
        ro = rollout(env, act, world.env_seed, start_index=np.tile(np.arange(n), cfg.model.rollouts),
                     act_rng=np.random.default_rng(s_act))
        t, b = np.nonzero(ro.active)
        model_trees = fit.cost_prob(ro.obs[t, b], ro.act[t, b])
        res[name] = {c: {"truth": float(truth[name][f"cost_return_{c}"]),
                         "simulated": float(rows[c].sum() / n_true),
                         "true_states_head": float(head[:, i].sum() / n_true),
                         "true_states_trees": float(trees[:, i].sum() / n_true),
                         "model_states_head": float((ro.cost[..., i] * ro.active).sum() / ro.active.shape[1]),
                         "model_states_trees": float(model_trees[:, i].sum() / ro.active.shape[1])}
                     for i, c in enumerate(costs)}
        print(name, {c: {k: round(v, 3) for k, v in r.items()} for c, r in res[name].items()}, file=sys.stderr,
              flush=True)
    summary = {}
    for c in costs:
        true = np.array([res[k][c]["truth"] for k in res])
        for reading in READINGS:
            est = np.array([res[k][c][reading] for k in res])
            line = stats.linregress(true, est)
            summary[f"{c}/{reading}"] = {"median_rel_error": float(np.median(np.abs(est - true) / true)),
                                         "spearman": float(stats.spearmanr(est, true)[0]),
                                         "a": float(line.intercept), "b": float(line.slope)}
    page = {"results": res, "summary": summary,
            "meta": {"date": dt.date.today().isoformat(), "seconds": round(time.perf_counter() - t0, 1),
                     "command": " ".join(["benchmarks/probe_cost_reader.py", *sys.argv[1:]])}}
    (bench_ope.HERE / "results" / f"{args.out}.json").write_text(json.dumps(page, indent=1))
    lines = [f"# Model-based OPE's cost error: the step's reading or the simulated states? (`{args.out}`, "
             f"{page['meta']['date']})", "", f"Command: `{page['meta']['command']}` ({page['meta']['seconds']:.0f} s).",
             "", f"{len(res)} policies; truth from {args.pages} (10,000 patients, seed 13). *True states*: "
             f"{args.patients:,} patients simulated under the policy (seed {args.seed}), each step's cost probability "
             "read from its logged (s, a); *model states*: the `mb` estimator's episodes in the first evaluation fit. "
             "*head*: the world model's cost head; *trees*: `ope.model.cost_reader: boosted`.", "",
             "| cost | reading | median relative error | Spearman | reading = a + b·truth |", "|---|---|---|---|---|"]
    for key, s in summary.items():
        c, reading = key.split("/")
        lines.append(f"| {c} | {reading.replace('_', ' ')} | {s['median_rel_error']:.3f} | {s['spearman']:.3f} | "
                     f"{s['a']:.2f} + {s['b']:.3f}·truth |")
    lines += ["", "Per policy (truth / simulated here / the four readings):", "",
              "| policy | cost | truth | simulated | " + " | ".join(r.replace("_", " ") for r in READINGS) + " |",
              "|---|---|---|---|" + "---|" * len(READINGS)]
    for name in sorted(res):
        for c in costs:
            r = res[name][c]
            lines.append(f"| {name} | {c} | {r['truth']:.3f} | {r['simulated']:.3f} | "
                         + " | ".join(f"{r[k]:.3f}" for k in READINGS) + " |")
    (bench_ope.HERE / "results" / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8 + len(summary)]))


if __name__ == "__main__":
    main()
