"""How much of model-based OPE's cost error is the evaluation sample's size (issue 12)?

Two measurements on one project's spread set (``bench_ope.build_policies(spread=True)``: the trained runs, SOC with
noise, heuristic and best-known clones, mixtures, scaled clinicians), truth from ``ogsrl truth`` code
(``--truth-episodes`` patients, seed ``--truth-seed``, cached in ``--work``):

* **The sampling floor.** Even an estimator that knew the simulator would score a policy on the evaluation split's
  patients only. From the per-patient truths, ``--draws`` random sets of *n* patients (the same set for every policy,
  as one evaluation split serves every policy): each policy's mean over the set against its truth over all patients;
  per draw the median relative error over the policies, per target. Reported for *n* = the test split's stays and
  the validation + test stays: the error an exact model would have from the sample alone.
* **`mb` fitted on more stays.** ``mb`` (``--fits`` fits, the project's OPE config and seeds) with its world models
  fitted on the test split (the evaluate stage), on validation + test, or on the validation split alone (another
  sample of the same size), each with episodes from the first states of the stays it was fitted on — and fitted on
  validation + test but started from the test stays only (which of the two, the fit or the start states, matters).

Usage:
  .venv/bin/python benchmarks/probe_mb_more_stays.py --root <make-run project> --work /tmp/w \
      [--truth-episodes 10000] [--truth-seed 13] [--fits 4] [--draws 2000] [--out mb_more_stays]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

from ogsrl.ope import stage as ope_stage  # noqa: E402
from ogsrl.agents import common  # noqa: E402
import exclusive  # noqa: E402


def sampling_floor(per_stay: dict[str, pd.DataFrame], truth: dict[str, dict], targets: list[str], n: int,
                   draws: int, seed: int) -> dict[str, dict[str, float]]:
    """Per target: the median over policies of |mean over n drawn patients − truth| / |truth|, summarised over
    ``draws`` draws (median, 10th and 90th percentile, and the share of draws at or below 0.10).

    The n patients are drawn without replacement from the N the truth averages, so a draw's deviation from the truth
    has variance σ²(1/n − 1/N); an independent evaluation sample's has σ²(1/n + 1/N). Deviations are scaled by
    sqrt((N + n) / (N − n)) to the latter."""
    patients = pd.Index(sorted(set().union(*(df.index for df in per_stay.values()))))
    if n > len(patients):
        raise SystemExit(f"sampling floor: {n} patients asked, the truths hold {len(patients)}")
    rng = np.random.default_rng(seed)
    names = list(per_stay)
    cols = ["return" if t == "return" else f"cost_return_{t}" for t in targets]
    aligned = {p: per_stay[p].reindex(patients)[cols].to_numpy() for p in names}  # NaN where a policy lost the stay
    true = np.array([[bench_ope.true_target(truth[p], t) for t in targets] for p in names])
    scale = np.sqrt((len(patients) + n) / (len(patients) - n))
    errs = np.empty((draws, len(targets)))
    for d in range(draws):
        pick = rng.choice(len(patients), n, replace=False)
        est = np.array([np.nanmean(aligned[p][pick], axis=0) for p in names])
        errs[d] = np.median(scale * np.abs(est - true) / np.abs(true), axis=0)
    return {t: {"median": float(np.median(errs[:, i])), "p10": float(np.quantile(errs[:, i], 0.1)),
                "p90": float(np.quantile(errs[:, i], 0.9)), "share_at_most_0.10": float(np.mean(errs[:, i] <= 0.10))}
            for i, t in enumerate(targets)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="a project after make run")
    ap.add_argument("--work", type=Path, required=True, help="rule clones and truths are cached here")
    ap.add_argument("--truth-episodes", type=int, default=10_000)
    ap.add_argument("--truth-seed", type=int, default=13)
    ap.add_argument("--draws", type=int, default=2000)
    probe_common.add_scoring_args(ap, "mb_more_stays")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    ps = probe_common.load(argparse.Namespace(root=args.root, pages="", policy_roots="", work=args.work))
    for name, pol in ps.policies.items():
        if name == "clinician_clone":
            continue
        ps.truth[name] = bench_ope.truth_of(name, pol, ps.params, args.truth_episodes, args.truth_seed, args.work)
        print(f"truth {name}: return {ps.truth[name]['return']:.2f}", file=sys.stderr, flush=True)
    costs = list(ps.table.cost_columns)
    targets = ["return", *costs]
    per_stay = bench_ope.per_stay_truths(args.work, list(ps.truth), args.truth_episodes, args.truth_seed)

    root = ps.root
    val, meta = common.read_split(root / "data/trajectories/val.parquet")
    both = pd.concat([val, ps.test], ignore_index=True)

    def world_on(df: pd.DataFrame) -> ope_stage.EvalWorld:
        w = ope_stage.eval_world(ps.params, ps.cfg, root, df, meta)
        if w is None or not w.models:
            raise SystemExit("no evaluation models")
        return w

    n_test, n_both = int(ps.test["stay_key"].nunique()), int(both["stay_key"].nunique())
    floor = {str(n): sampling_floor(per_stay, ps.truth, targets, n, args.draws, args.truth_seed)
             for n in (n_test, n_both)}
    worlds = {"test": ps.world, "val": world_on(val), "val+test": world_on(both)}
    started_on_test = dataclasses.replace(worlds["val+test"], starts=ps.world.starts, horizons=ps.world.horizons)
    variants: dict[str, dict[str, list[float]]] = {}
    for name, world in (*worlds.items(), ("fit val+test, start test", started_on_test)):
        psv = dataclasses.replace(ps, world=world)
        variants[name] = probe_common.mb_values(psv, probe_common.plain_models(psv, args.fits))
        print(f"{name} done", file=sys.stderr, flush=True)

    sections = [
        f"Stays: test {n_test}, validation {int(val['stay_key'].nunique())}, validation + test {n_both}.", "",
        f"**Sampling floor** ({args.draws} draws of n patients from the {args.truth_episodes:,}-patient truth, the "
        "same patients for every policy, deviations scaled to an independent sample's): the median over "
        "policies of the relative error of the drawn patients' mean — the error of an estimator that knew the "
        "simulator, from the sample alone.", "",
        "| n | target | median over draws | 10th – 90th percentile | share of draws ≤ 0.10 |", "|---|---|---|---|---|",
        *(f"| {n} | {t} | {v['median']:.3f} | {v['p10']:.3f} – {v['p90']:.3f} | {v['share_at_most_0.10']:.2f} |"
          for n, per in floor.items() for t, v in per.items()), ""]
    probe_common.write_variants(
        "probe_mb_more_stays.py", args.out, t0, "Model-based OPE fitted on more stays, and the sampling floor",
        f"`mb`'s values ({args.fits} fits) with its world models fitted on (and episodes started from) the named "
        f"split; truth over {args.truth_episodes:,} patients (seed {args.truth_seed}), {len(ps.truth)} policies.",
        variants, ps.truth, costs, [], extra={"floor": floor, "truth": ps.truth}, sections=sections)


if __name__ == "__main__":
    main()
