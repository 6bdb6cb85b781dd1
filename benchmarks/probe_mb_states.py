"""How the model-based estimator's simulated states drift from the true ones, and whether damping its noise helps (issue 12).

On the root's evaluation split, with the first (full-data) evaluation world model of the ``mb`` estimator:

* **per step** (``--show``): for a few policies, each decision step t's cost rate (the cost head's probability on the
  model's episodes; the realised cost on ``--patients`` fresh patients simulated under the policy and extracted as the
  cohort) and the mean and SD of each cost rule's state feature — where the simulated patients leave the true ones;
* **noise temperature** (``--taus``): every policy of the saved rank pages rolled out with the model's Gaussian state
  noise scaled by τ (τ = 1: ``mb`` as shipped; the reward, death and discharge draws unchanged): median relative
  error, Spearman and the line ``estimate = a + b·truth`` of the return and each cost return against the truth
  (10,000 patients, seed 13), and the clinicians' clone against the split's own logged returns.

Usage:
  .venv/bin/python benchmarks/probe_mb_states.py --root /work/s21/S \
      --pages ope_rank_s21spread_fresh,ope_rank_s24seed58_a,ope_rank_s24seed58_b --policy-roots /work/s24/E,/work/s24/F \
      --work /work/s21/w_spread [--show clin_both0.25,heuristic1.0,soc/seed42] [--taus 1,0.7,0.5] [--out mb_states]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402
import probe_cost_reader  # noqa: E402

from ogsrl.costs import build_costs  # noqa: E402
from ogsrl.features import BY_NAME  # noqa: E402
from ogsrl.ope import model_based  # noqa: E402
from ogsrl.ope import stage as ope_stage  # noqa: E402
from ogsrl.world.ensemble import WorldModel  # noqa: E402
from ogsrl.world.env import EnvConfig, WorldModelEnv, rollout  # noqa: E402
import exclusive  # noqa: E402

STEPS = (0, 1, 2, 4, 8, 12, 16)


@contextlib.contextmanager
def tempered(model: WorldModel, tau: float) -> Iterator[WorldModel]:
    """``model`` whose Gaussian state draws have their SD scaled by ``tau`` (binary features and the reward
    untouched), restored on exit."""
    predict = model.predict

    def scaled(obs: np.ndarray, act: np.ndarray) -> Any:
        p = predict(obs, act)
        return dataclasses.replace(p, next_var=p.next_var * tau ** 2)

    model.predict = scaled  # type: ignore[method-assign]
    try:
        yield model
    finally:
        del model.predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_common.add_args(ap)
    ap.add_argument("--show", default="clin_both0.25,heuristic1.0,soc/seed42", help="policies of the per-step table")
    ap.add_argument("--taus", default="1,0.7,0.5", help="noise temperatures (1 = mb as shipped)")
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="mb_states")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    ps = probe_common.load(args)
    params, cfg, test, world, table, truth = ps.params, ps.cfg, ps.test, ps.world, ps.table, ps.truth
    pols = {**ps.policies, "clinician_clone": ope_stage.load_policy(ps.root / ope_stage.BEHAVIOUR_DIR)}
    first = world.models[0]
    model: WorldModel = first.model if isinstance(first, model_based.BoostedCosts) else first
    costs = list(table.cost_columns)
    rules = {f"cost_{r.name}": r for r in build_costs(params).rules}
    feats = list(world.state_features)
    n = len(world.starts)

    def model_rollout(name: str) -> Any:
        s_act, _ = ope_stage.policy_streams(cfg.seed, name)[2].spawn(2)
        env = WorldModelEnv(model, world.starts, n * cfg.model.rollouts,
                            EnvConfig(horizon=int(world.horizons.max()), mode=cfg.model.mode), horizons=world.horizons)
        return rollout(env, probe_common.act_fn(pols[name], feats), world.env_seed,
                       start_index=np.tile(np.arange(n), cfg.model.rollouts), act_rng=np.random.default_rng(s_act))

    per_step: dict[str, list[dict]] = {}
    for name in filter(None, args.show.split(",")):
        rows = probe_cost_reader.true_rows(pols[name], params, args.patients, args.seed)
        step = rows.groupby("stay_key", sort=False).cumcount().to_numpy()
        ro = model_rollout(name)
        out = []
        for t in (t for t in STEPS if t < ro.active.shape[0]):
            on, live = step == t, ro.active[t]
            if not on.any() or not live.any():
                continue
            r: dict[str, Any] = {"step": t, "true_stays": int(on.sum()), "model_episodes": int(live.sum())}
            for i, c in enumerate(costs):
                r[f"{c}/true"] = float(rows[c].to_numpy()[on].mean())
                r[f"{c}/model"] = float(ro.cost[t, live, i].mean())
                f = rules[c].feature if c in rules else ""
                if f in BY_NAME and f in feats:
                    x_true, x_model = rows[f].to_numpy()[on], ro.obs[t, live, feats.index(f)]
                    r[f"{f}/true"] = [float(x_true.mean()), float(x_true.std())]
                    r[f"{f}/model"] = [float(x_model.mean()), float(x_model.std())]
            out.append(r)
        per_step[name] = out
        print(name, "per step done", file=sys.stderr, flush=True)

    logged = {"return": float(test.groupby("stay_key")["reward"].sum().mean()),
              **{c: float(test.groupby("stay_key")[c].sum().mean()) for c in costs}}
    targets = ["return", *costs, "cost_total"]
    sweep: dict[str, dict] = {}
    for tau in (float(x) for x in args.taus.split(",")):
        values = {}
        with tempered(model, tau):
            for name in [*truth, "clinician_clone"]:
                s_act, _ = ope_stage.policy_streams(cfg.seed, name)[2].spawn(2)
                act = probe_common.act_fn(pols[name], feats)
                v = model_based.stay_values(model, world.starts, world.horizons, act, 1.0, cfg.model.rollouts,
                                            cfg.model.mode, world.env_seed, np.random.default_rng(s_act)).mean(0)
                values[name] = {"return": float(v[0]), **{c: float(v[1 + i]) for i, c in enumerate(costs)},
                                "cost_total": float(v[1:].sum())}
        summary = {}
        for k in targets:
            key = k if k == "return" else f"cost_return_{k}"
            true = np.array([truth[p][key] for p in truth])
            est = np.array([values[p][k] for p in truth])
            line = stats.linregress(true, est)
            summary[k] = {"median_rel_error": float(np.median(np.abs(est - true) / np.abs(true))),
                          "spearman": float(stats.spearmanr(est, true)[0]), "a": float(line.intercept),
                          "b": float(line.slope), "clone": values["clinician_clone"].get(k)}
        sweep[f"{tau:g}"] = {"summary": summary, "values": values}
        print(f"tau {tau:g} done", file=sys.stderr, flush=True)

    page = {"per_step": per_step, "sweep": sweep, "logged": logged,
            "meta": {"date": dt.date.today().isoformat(), "seconds": round(time.perf_counter() - t0, 1),
                     "policies": len(truth), "command": " ".join(["benchmarks/probe_mb_states.py", *sys.argv[1:]])}}
    (bench_ope.HERE / "results" / f"{args.out}.json").write_text(json.dumps(page, indent=1))
    md = [f"# Model-based OPE: simulated against true states, and a damped noise (`{args.out}`, {page['meta']['date']})",
          "", f"Command: `{page['meta']['command']}` ({page['meta']['seconds']:.0f} s).", "",
          f"First (full-data) evaluation world model of `mb`; truth from {args.pages} (10,000 patients, seed 13).", "",
          f"## Per decision step: true ({args.patients:,} fresh patients, seed {args.seed}) against model episodes", ""]
    for name, out in per_step.items():
        cols = [c for c in out[0] if c.endswith("/true")] if out else []
        md += [f"**{name}**", "", "| step | true stays | model episodes | "
               + " | ".join(f"{c.removesuffix('/true')} true / model" for c in cols) + " |",
               "|---|---|---|" + "---|" * len(cols)]
        for r in out:
            cells = []
            for c in cols:
                a, b = r[c], r[c.replace("/true", "/model")]
                cells.append(f"{a:.3f} / {b:.3f}" if isinstance(a, float) else
                             f"{a[0]:.2f} ± {a[1]:.2f} / {b[0]:.2f} ± {b[1]:.2f}")
            md.append(f"| {r['step']} | {r['true_stays']} | {r['model_episodes']} | " + " | ".join(cells) + " |")
        md.append("")
    md += ["## Noise temperature τ (the Gaussian state draws' SD × τ; τ = 1 is `mb`)", "",
           f"{len(truth)} policies. Clinicians' clone against the test split's logged values: "
           + ", ".join(f"{k} {v:.3f}" for k, v in logged.items()) + ".", "",
           "| τ | target | median relative error | Spearman | estimate = a + b·truth | clinicians' clone |",
           "|---|---|---|---|---|---|"]
    for tau, s in sweep.items():
        for k, r in s["summary"].items():
            md.append(f"| {tau} | {k} | {r['median_rel_error']:.3f} | {r['spearman']:.3f} | {r['a']:.2f} + "
                      f"{r['b']:.3f}·truth | {r['clone']:.3f} |")
    (bench_ope.HERE / "results" / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
