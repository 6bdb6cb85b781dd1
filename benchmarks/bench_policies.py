"""Learned policies against simulator truth (issue 11): every trained run × seed beside the clinicians, the
heuristic and the best-known rule.

For each checkpoint `data/models/policies/<run>/seed<seed>/` under `--root` (the object that is served: guardian
fallback included) this scores, on simulator truth with the cohort population and the same `--episodes` patients
for every policy (seed `--seed`, never a search or training seed): in-hospital mortality, the SOFA return, the cost
return per stay of each cost rule against the run's limits, and — from `data/reports/train.json` — the return the
policy earns inside the world model and its training time. Per run: mean ± sd over seeds, the share of the
clinicians → best-known mortality gap closed, and whether the true cost return of every seed is within the limit.

The paper's clinical metrics of each served policy on the test split (MCR, AIR, ACP; docs/metrics.md, the draws
`ogsrl clinical` makes) are added per seed, and for the clinicians (AIR and ACP of the logged actions).

Usage (after `ogsrl train-policies`, e.g. `make run`):
  .venv/bin/python benchmarks/bench_policies.py [--root .] [--episodes 5000] [--seed 11] [--workers 2] [--out policies]
Writes benchmarks/results/<out>.md and benchmarks/results/<out>.json. Roots trained in parallel (each with its own
runs, the same data and limits) are scored one by one and joined into one page with
  .venv/bin/python benchmarks/bench_policies.py --merge <out1> <out2> ... --out <page>
and a page saved before the clinical columns existed gets them (no truth rerun) with
  .venv/bin/python benchmarks/bench_policies.py --root <root> --clinical <out>
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ogsrl.config import load_params
from ogsrl.synth.stage import run_truth
import exclusive

HERE = Path(__file__).resolve().parent
CLINICAL = ("mcr", "air", "acp")
REFERENCES = ("behaviour", "heuristic", "best-known")
ROWS = ("soc", "cql", "ccql", "gcql", "gccql", "mb_trpo", "mb_cpo", "gmb_trpo", "gmb_cpo", "gmb_ppo_lag")


def score(root: str, params_file: str, spec: str, episodes: int, seed: int) -> dict[str, float | str]:
    params = load_params(Path(params_file))
    return {"spec": spec, **run_truth(params, Path(root), spec, episodes, seed)}


def clinical_scores(root: Path, params: dict, checkpoints: list[Path]) -> tuple[dict, dict]:
    """(clinicians' AIR/ACP, {"<run>/<seedN>": {mcr, air, acp}}) on the root's test split."""
    from ogsrl import features
    from ogsrl.agents import common, load_policy
    from ogsrl.ope.clinical_stage import clinical_config, draws_of, paper_action_metrics

    test, _ = common.read_split(root / "data/trajectories/test.parquet")
    cfg = clinical_config(params)
    logged = paper_action_metrics(test[list(features.ACTIONS)].to_numpy(np.float64)[None], test, cfg)
    scores = {}
    for p in checkpoints:
        acts = draws_of(load_policy(p), test, cfg, p.parent.name, int(p.name.removeprefix("seed")))
        m = paper_action_metrics(acts, test, cfg)
        scores[f"{p.parent.name}/{p.name}"] = {k: m[k] for k in CLINICAL}
    return {k: logged[k] for k in ("air", "acp")}, scores


def add_clinical(result: dict, clinicians: dict, scores: dict) -> None:
    """Put per-seed MCR/AIR/ACP lists into each run of ``result`` (in its seed order) and the clinicians' values."""
    result["clinicians_clinical"] = clinicians
    for run, x in result["runs"].items():
        x["clinical"] = {k: [scores[f"{run}/{s}"][k] for s in x["seeds"]] for k in CLINICAL}


def fmt(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def render(result: dict, title_note: str) -> str:
    """The markdown page of a result dict (what ``main`` saves as JSON): references, then one row per run."""
    title = result.get("title", "Learned policies against simulator truth")
    limits = result["limits"]
    costs = sorted(limits)
    clin, best = result["clinicians"], result["best_known"]

    def gap(m: float) -> float:
        return (clin - m) / (clin - best)

    header = ("| policy | seeds | true mortality | gap closed | true SOFA return | "
              + " | ".join(f"true {c} return (limit {limits[c]:.2f})" for c in costs)
              + f" | true share of steps with {' / '.join(costs)} | within limits (seeds) | MCR | AIR | ACP | "
              "model-estimated return (served) | in-model return of the raw learner (kept iterate's batch) | "
              "training s |")
    sep = "|" + "---|" * (13 + len(costs))
    clin_clinical = result.get("clinicians_clinical", {})
    lines = []
    for name in REFERENCES:
        r = result["references"][name]
        m = float(r["truth/mortality_hosp"])
        clinical = (f"1 | {clin_clinical['air']:.3f} | {clin_clinical['acp']:.2f}"
                    if name == "behaviour" and clin_clinical else "– | – | –")
        lines.append(f"| {name if name != 'behaviour' else 'clinicians'} | – | {m:.3f} | {gap(m):.2f} | "
                     f"{float(r['truth/return']):.1f} | "
                     + " | ".join(f"{float(r[f'truth/cost_return_{c}']):.2f}" for c in costs)
                     + " | " + " / ".join(f"{float(r[f'truth/rate_{c}']):.3f}" for c in costs)
                     + f" | – | {clinical} | – | – | – |")
    for run in sorted(result["runs"], key=lambda n: (ROWS.index(n) if n in ROWS else 99, n)):
        x = result["runs"][run]
        n = len(x["seeds"])
        within = sum(all(x["cost_return"][c][i] <= limits[c] for c in costs) for i in range(n))
        lines.append(f"| {run} | {n} | {fmt(x['mortality'], 3)} | {fmt(x['gap_closed'], 2)} | {fmt(x['return'], 1)} | "
                     + " | ".join(fmt(x["cost_return"][c], 2) for c in costs)
                     + " | " + (" / ".join(fmt(x["cost_rate"][c], 3) for c in costs) if "cost_rate" in x else "–")
                     + f" | {within} of {n} | "
                     + " | ".join(fmt(x.get("clinical", {}).get(k, []), 3 if k != "acp" else 2) for k in CLINICAL)
                     + f" | {fmt(x['model_return'], 1)} | {fmt(x['train_return'], 1)} | {fmt(x['train_seconds'], 0)} |")
    return f"""# {title} (`benchmarks/bench_policies.py`)

{title_note}
{result['episodes']} simulated septic patients per policy (seed {result['seed']}, the same patients for every policy),
scored on the stays the cohort extraction keeps. Each learned policy is scored as it is served (guardian fallback
to SOC included). Gap closed = (clinicians − policy) / (clinicians − best-known) in true in-hospital mortality; 1 =
as good as the best-known rule. Cost limits are the runs' expected safety cost per stay (0.8 × the clinicians' on
the train split unless set in params); "within limits" counts the seeds whose true cost return is within every
limit. Model-estimated return: the served policy's return in the unguarded world model (`train.json`); in-model
return of the raw learner: the training batch of the iterate it kept (the last batch for unconstrained learners)
in the (guarded or unguarded) world model, before the guardian fallback — where the model's optimism shows. MCR,
AIR, ACP: the paper's clinical metrics of the served policy's draws on the test split (docs/metrics.md; the
clinicians' MCR is 1 by definition). Share of steps with a cost: the true per-step rate of each cost rule (SpO₂ or
urine below its threshold); "–" on rows scored before the rates were saved.

{header}
{sep}
{chr(10).join(lines)}
"""


def write(name: str, result: dict, page: str) -> None:
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.md").write_text(page, encoding="utf-8")
    (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(page)


def _union(a: dict, b: dict) -> dict:
    """Per-seed lists of one run scored in two roots on disjoint seeds, concatenated (flags: both must hold)."""
    out: dict = {}
    for k, v in a.items():
        if isinstance(v, dict):
            out[k] = _union(v, b[k])
        elif isinstance(v, list):
            out[k] = v + b[k]
        elif isinstance(v, bool):
            out[k] = v and b[k]
        else:
            out[k] = v
    return out


def merge(names: list[str], out: str, title: str | None = None) -> None:
    """One page from several saved results of the same patients and limits (e.g. roots trained in parallel)."""
    parts = [json.loads((HERE / "results" / f"{n}.json").read_text(encoding="utf-8")) for n in names]
    first = parts[0]
    for n, p in zip(names, parts):
        same = {k: p[k] for k in ("episodes", "seed", "limits")} == {k: first[k] for k in ("episodes", "seed", "limits")}
        if not same or abs(p["clinicians"] - first["clinicians"]) > 1e-12:
            raise SystemExit(f"bench_policies --merge: {n}.json has other patients, limits or references than "
                             f"{names[0]}.json")
    runs: dict = {}
    for p in parts:
        for run, x in p["runs"].items():
            kept = runs.setdefault(run, x)
            shared = set(kept["seeds"]) & set(x["seeds"])
            for seed in shared:  # a run trained in several roots (e.g. the fallback soc) must score the same there
                if kept["mortality"][kept["seeds"].index(seed)] != x["mortality"][x["seeds"].index(seed)]:
                    raise SystemExit(f"bench_policies --merge: run {run} {seed} scores differently in two results")
            if len(x["seeds"]) > len(kept["seeds"]) and shared == set(kept["seeds"]):
                runs[run] = x
            elif not shared:  # the same run, other seeds (seeds split over roots): one row over all of them
                runs[run] = _union(kept, x)
    result = {**first, "runs": runs, "merged_from": names}
    if title:
        result["title"] = title
    if not all("clinicians_clinical" in p for p in parts):
        result.pop("clinicians_clinical", None)
    write(out, result, render(result, f"Merged from {', '.join(f'`results/{n}.json`' for n in names)} "
                                       "(`bench_policies.py --merge`)."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--params", type=Path, default=None, help="params file (default: <root>/params.yaml)")
    ap.add_argument("--episodes", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=str, default="policies", help="result page name under benchmarks/results/")
    ap.add_argument("--merge", nargs="+", metavar="NAME", help="only merge saved results/<NAME>.json into --out")
    ap.add_argument("--title", help="page title (default: Learned policies against simulator truth)")
    ap.add_argument("--clinical", metavar="NAME", help="only add MCR/AIR/ACP from --root to saved results/<NAME>.json")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    if args.merge:
        merge(args.merge, args.out, args.title)
        return
    root = args.root.resolve()
    params_file = (args.params or root / "params.yaml").resolve()
    if args.clinical:
        saved = json.loads((HERE / "results" / f"{args.clinical}.json").read_text(encoding="utf-8"))
        ckpts = [root / "data/models/policies" / run / s for run, x in saved["runs"].items() for s in x["seeds"]]
        add_clinical(saved, *clinical_scores(root, load_params(params_file), ckpts))
        write(args.clinical, saved, render(saved, saved.get("note", f"Project `{root.name}`.") + " Clinical "
                                           f"metrics added with `--clinical` from `{root.name}`."))
        return
    train = json.loads((root / "data/reports/train.json").read_text(encoding="utf-8"))
    costs = sorted(k.split("/")[-1] for k in train if k.startswith("cost_limit/") and not k.endswith("from_params"))
    limits = {c: float(train[f"cost_limit/{c}"]) for c in costs}
    checkpoints = sorted((root / "data/models/policies").glob("*/seed*"))
    checkpoints = [p for p in checkpoints if p.is_dir()]
    specs = list(REFERENCES) + [str(p.relative_to(root)) for p in checkpoints]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        rows = list(ex.map(score, [str(root)] * len(specs), [str(params_file)] * len(specs), specs,
                           [args.episodes] * len(specs), [args.seed] * len(specs)))
    seconds = time.perf_counter() - t0
    by = {r["spec"]: r for r in rows}
    clin = float(by["behaviour"]["truth/mortality_hosp"])
    best = float(by["best-known"]["truth/mortality_hosp"])
    runs: dict[str, list[tuple[str, dict]]] = {}
    for p in checkpoints:
        runs.setdefault(p.parent.name, []).append((p.name, by[str(p.relative_to(root))]))
    summary = {}
    for run, seeds in runs.items():
        mort = [float(r["truth/mortality_hosp"]) for _, r in seeds]
        summary[run] = {
            "seeds": [s for s, _ in seeds], "mortality": mort,
            "mortality_ci": [[float(r["truth/mortality_hosp_ci_lo"]), float(r["truth/mortality_hosp_ci_hi"])]
                             for _, r in seeds],
            "gap_closed": [(clin - m) / (clin - best) for m in mort],
            "return": [float(r["truth/return"]) for _, r in seeds],
            "cost_return": {c: [float(r[f"truth/cost_return_{c}"]) for _, r in seeds] for c in costs},
            "cost_rate": {c: [float(r[f"truth/rate_{c}"]) for _, r in seeds] for c in costs},
            "within_limits": all(float(r[f"truth/cost_return_{c}"]) <= limits[c] for c in costs for _, r in seeds),
            "model_return": [float(train[k]) for s, _ in seeds if (k := f"{run}/{s}/model/return") in train],
            "train_return": [float(train.get(f"{run}/{s}/train/selected_return", train[k])) for s, _ in seeds
                             if (k := f"{run}/{s}/train/return") in train],
            "train_seconds": [float(train[k]) for s, _ in seeds if (k := f"{run}/{s}/train/seconds") in train]}
    result = {"episodes": args.episodes, "seed": args.seed, "clinicians": clin, "best_known": best, "limits": limits,
              "references": {k: by[k] for k in REFERENCES}, "runs": summary}
    add_clinical(result, *clinical_scores(root, load_params(params_file), checkpoints))
    note = (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.workers} worker processes; {seconds:.0f} s "
            f"in all. Project `{root.name}`, params `{params_file.name}`.")
    result["note"] = note
    if args.title:
        result["title"] = args.title
    write(args.out, result, render(result, note))


if __name__ == "__main__":
    main()
