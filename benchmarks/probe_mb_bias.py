"""Model-based OPE's bias among the learners (issue 12): does the ensemble's disagreement, or how a step uses the
ensemble, tell the over-estimated policies apart?

For every trained policy under ``--root`` and every ``--modes`` value of ``ope.model.mode``, the evaluation world
models of the evaluate stage (fitted on the test split, seeds from ``ope.seed``) roll each test stay's first state
out ``ope.model.rollouts`` times per model, exactly as the ``mb`` estimator does, and record per stay

    V = Σ_t γ^t r_t,    U = Σ_t γ^t u_t   (u_t: the elites' disagreement, ``StepSample.uncertainty``),

and whether the episode ended in a sampled death. The page compares, against the truth of a saved rank page
(``--truth-page``), the plain value V (the ``mb`` estimate itself in the default mode) and the MOPO-style pessimistic
value V − κ·U over a grid of κ: Spearman over the policies and median relative error. A per-policy table (first mode)
sets each policy's error beside its model mortality, its true mortality and U.

Usage:
  .venv/bin/python benchmarks/probe_mb_bias.py --root /work/rank15/p --truth-page ope_rank_s16learners
      [--modes random_elite,episode_elite,mean] [--kappas 0,0.5,1,2,4,8] [--out mb_bias_s17]
Writes benchmarks/results/<out>.json and .md (the JSON is also the resume point: finished policies are skipped).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402

from ogsrl.agents import common  # noqa: E402
from ogsrl.config import load_params  # noqa: E402
from ogsrl.ope import stage as ope_stage  # noqa: E402
from ogsrl.world.env import EnvConfig, WorldModelEnv, rollout  # noqa: E402
import exclusive  # noqa: E402


def probe(world: ope_stage.EvalWorld, policy: object, cfg: ope_stage.OPEConfig, name: str) -> dict[str, float]:
    """Means over models, stays and episodes of V, U and the sampled death, with the ``mb`` estimator's seeds."""
    feats = world.state_features
    cols = [feats.index(n) for n in policy.feature_names]  # type: ignore[attr-defined]

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(policy.act(np.asarray(obs, np.float64)[:, cols], rng), np.float32)  # type: ignore

    s_act, _ = ope_stage.policy_streams(cfg.seed, name)[2].spawn(2)
    act_rng = np.random.default_rng(s_act)
    n, reps = len(world.starts), cfg.model.rollouts
    per_model = []
    for model in world.models:
        env = WorldModelEnv(model, world.starts, n * reps,
                            EnvConfig(horizon=int(world.horizons.max()), mode=cfg.model.mode), horizons=world.horizons)
        ro = rollout(env, act, world.env_seed, start_index=np.tile(np.arange(n), reps), act_rng=act_rng)
        live = ro.active * cfg.gamma ** np.arange(ro.rew.shape[0])[:, None]
        per_model.append(((ro.rew * live).sum(0).mean(), (ro.uncertainty * live).sum(0).mean(), ro.mortality))
    v, u, death = np.mean(per_model, axis=0)
    return {"value": float(v), "uncertainty": float(u), "mortality": float(death)}


def summary(res: dict[str, dict[str, float]], truth: dict[str, dict], kappas: list[float]) -> list[dict]:
    names = sorted(res)
    true = np.array([truth[k]["return"] for k in names])
    v = np.array([res[k]["value"] for k in names])
    u = np.array([res[k]["uncertainty"] for k in names])
    rows = []
    for kappa in kappas:
        est = v - kappa * u
        rows.append({"kappa": kappa, "spearman": float(stats.spearmanr(est, true)[0]),
                     "median_rel_error": float(np.median(np.abs(est - true) / np.abs(true)))})
    rows.append({"kappa": "corr(error, U)", "spearman": float(np.corrcoef(v - true, u)[0, 1]),
                 "median_rel_error": float("nan")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--truth-page", required=True, help="saved bench_ope rank page with these policies' truth")
    ap.add_argument("--modes", default="random_elite,episode_elite,mean")
    ap.add_argument("--kappas", default="0,0.5,1,2,4,8")
    ap.add_argument("--out", default="mb_bias")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    truth = json.loads((bench_ope.HERE / "results" / f"{args.truth_page}.json").read_text())["truth"]
    out_json = bench_ope.HERE / "results" / f"{args.out}.json"
    saved = json.loads(out_json.read_text()) if out_json.is_file() else {}
    t0 = time.perf_counter()
    test, meta = common.read_split(root / "data/trajectories/test.parquet")
    pols = bench_ope.build_policies(root, params, None, None, Path("/nonexistent"), trained_only=True)  # type: ignore
    missing = sorted(set(pols) - set(truth))
    if missing:
        raise SystemExit(f"--truth-page {args.truth_page} has no truth for {missing}")
    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, dict[str, dict[str, float]]] = saved.get("results", {})
    base = ope_stage.ope_config(params)
    for mode in modes:
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, mode=mode))
        world = ope_stage.eval_world(params, cfg, root, test, meta)
        if world is None:
            raise SystemExit("too few test stays for model-based OPE")
        done = results.setdefault(mode, {})
        for name, pol in pols.items():
            if name not in done:
                done[name] = probe(world, pol, cfg, name)
                out_json.write_text(json.dumps({"results": results}, indent=1))
                print(f"{mode} {name} {done[name]}", file=sys.stderr, flush=True)
    kappas = [float(k) for k in args.kappas.split(",")]
    page = {"results": results, "summary": {m: summary(results[m], truth, kappas) for m in modes},
            "meta": {"date": dt.date.today().isoformat(), "command": " ".join(["benchmarks/probe_mb_bias.py",
                                                                               *sys.argv[1:]]),
                     "seconds": round(saved.get("meta", {}).get("seconds", 0.0) + time.perf_counter() - t0, 1),
                     "model": dataclasses.asdict(base.model)}}
    out_json.write_text(json.dumps(page, indent=1))
    first = modes[0]
    lines = [f"# Model-based OPE's bias among the learners: {args.out} (`benchmarks/probe_mb_bias.py`, "
             f"{page['meta']['date']})", "",
             f"Command: `{page['meta']['command']}`", "",
             f"Machine: {platform.machine()}, 2 CPUs shared with other jobs; {page['meta']['seconds']:.0f} s over all "
             f"calls that built this page. Truth: `{args.truth_page}` (5,000 patients per policy, "
             f"seed 11). Evaluation models and seeds: the evaluate stage's (ope.model: "
             f"{json.dumps(page['meta']['model'])}), with `mode` as in each table.", "",
             "V − κ·U over the policies: Spearman with the true return and median relative error (κ = 0 is the `mb` "
             "estimate); the last row is the correlation of V's error with U.", ""]
    for mode in modes:
        lines += [f"**mode {mode}**", "", "| κ | Spearman | median relative error |", "|---|---|---|"]
        lines += [f"| {r['kappa']} | {r['spearman']:.3f} | {r['median_rel_error']:.3f} |" for r in page["summary"][mode]]
        lines.append("")
    lines += [f"Per policy (mode {first}), sorted by true return:", "",
              "| policy | true return | V | error | true in-hospital mortality | models: death in the window | U |", "|---|---|---|---|---|---|---|"]
    for name in sorted(results[first], key=lambda k: truth[k]["return"]):
        r, t = results[first][name], truth[name]
        lines.append(f"| {name} | {t['return']:.1f} | {r['value']:.1f} | {r['value'] - t['return']:+.1f} | "
                     f"{t['mortality_hosp']:.3f} | {r['mortality']:.3f} | {r['uncertainty']:.2f} |")
    (bench_ope.HERE / "results" / f"{args.out}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
