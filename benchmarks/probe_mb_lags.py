"""Model-based OPE with history: evaluation world models whose state carries the previous steps' values (issue 12).

The ``mb`` estimator's world model is Markov in the observed state, so a simulated patient forgets its own course
and re-draws its noise at every step (``probe_mb_states.py``). Here the evaluation split's state is extended by lag
columns ``prev_<f>`` (the value one step back; ``prev<k>_<f>``: k steps back; at a stay's first step every lag
equals the current value) and a model of the same architecture is fitted on it. The lags are **copied by identity**,
never learned: the ensemble copies them unchanged (``world.model.copy_features``) and each simulated step then
shifts them (``prev_f ← f``, ``prev<k>_f ← prev<k-1>_f`` of the state it left). For every policy of the saved rank
pages, the value averaged over ``--fits`` fits — as ``mb`` computes it, same seeds — with and without the lags, against
the truth (10,000 patients, seed 13): median relative error, Spearman and the line ``estimate = a + b·truth`` of the
return and each cost return, over all policies and over those the pages' union admits.

Usage:
  .venv/bin/python benchmarks/probe_mb_lags.py --root /work/s21/S \
      --pages ope_rank_s21spread_fresh,ope_rank_s24seed58_a,ope_rank_s24seed58_b --policy-roots /work/s24/E,/work/s24/F \
      --work /work/s21/w_spread --admitted ope_rank_s24union58 \
      --lags spo2,fio2,pf_ratio,pao2,map,lactate,urine_step,hr,rr,sofa --depths 1,2 [--fits 4] [--out mb_lags]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_common  # noqa: E402

import ogsrl.features as F  # noqa: E402
from ogsrl.config import build  # noqa: E402
from ogsrl.ope import model_based  # noqa: E402
from ogsrl.ope import stage as ope_stage  # noqa: E402
from ogsrl.world import stage as world_stage  # noqa: E402
from ogsrl.world.ensemble import StepSample, WorldModel  # noqa: E402
from ogsrl.world.env import start_states  # noqa: E402
import exclusive  # noqa: E402


def lag_name(feature: str, k: int) -> str:
    return f"prev_{feature}" if k == 1 else f"prev{k}_{feature}"


def with_lags(frame: pd.DataFrame, features: list[str], depth: int) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """``frame`` (rows in stay and time order) with lag columns and their ``next_`` values; (lag, source) pairs."""
    out = frame.copy()
    by_stay = out.groupby("stay_key", sort=False)
    pairs = []
    for k in range(1, depth + 1):
        for f in features:
            lag, src = lag_name(f, k), (f if k == 1 else lag_name(f, k - 1))
            out[lag] = by_stay[f].shift(k).fillna(out[src])
            out[f"next_{lag}"] = out[src]
            pairs.append((lag, src))
    return out, pairs


class Shifted:
    """A fitted model over a lag-extended state whose steps set every lag by identity from the state they left."""

    def __init__(self, model: WorldModel, lag_idx: list[int], src_idx: list[int]) -> None:
        self.model, self.lag_idx, self.src_idx = model, lag_idx, src_idx

    layout = property(lambda self: self.model.layout)
    elites = property(lambda self: self.model.elites)
    death_charge = property(lambda self: self.model.death_charge)

    def step(self, obs: np.ndarray, act: np.ndarray, mode: Any, rng: np.random.Generator,
             member: np.ndarray | None = None) -> StepSample:
        s = self.model.step(obs, act, mode, rng, member)
        nxt = s.next_obs.copy()
        nxt[:, self.lag_idx] = np.asarray(obs)[:, self.src_idx]
        return dataclasses.replace(s, next_obs=nxt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_common.add_args(ap)
    ap.add_argument("--lags", required=True, help="state features whose previous values join the state")
    ap.add_argument("--depths", default="1", help="lag depths to try (1: one step back)")
    probe_common.add_scoring_args(ap, "mb_lags", fits=1)
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    ps = probe_common.load(args)
    root, params, cfg, test, table, truth = ps.root, ps.params, ps.cfg, ps.test, ps.table, ps.truth
    wcfg = build(world_stage.WorldConfig, params.get("world"), "world")
    costs = list(table.cost_columns)
    lags = [f for f in args.lags.split(",") if f]
    unknown = [f for f in lags if f not in table.state_features]
    if unknown:
        raise SystemExit(f"--lags {unknown} are not state features of {root}")
    admitted = probe_common.admitted_by(args.admitted)
    fit_seed = np.random.SeedSequence([cfg.seed, ope_stage.MODEL_STREAM]).spawn(2)[0]

    plain = probe_common.plain_models(ps, args.fits)
    variants: dict[str, dict[str, list[float]]] = {"none": probe_common.mb_values(ps, plain)}
    print("none done", file=sys.stderr, flush=True)
    for depth in (int(d) for d in args.depths.split(",")):
        frame, pairs = with_lags(test, lags, depth)
        for lag, _ in pairs:  # a lag's plausible range is its feature's (the model clips states to them)
            base = F.BY_NAME[lag.split("_", 1)[1]]
            F.BY_NAME.setdefault(lag, dataclasses.replace(base, name=lag, kind="continuous"))
        feats = [*table.state_features, *(lag for lag, _ in pairs)]
        lagged = dataclasses.replace(table, state_features=tuple(feats))
        mcfg = dataclasses.replace(wcfg.model, copy_features=(*wcfg.model.copy_features, *(lag for lag, _ in pairs)))
        fitted = model_based.fit_models(lagged.transitions(frame, "test"), frame["stay_key"].to_numpy(),
                                        lambda seed: lagged.new_model(dataclasses.replace(mcfg, seed=seed)),
                                        dataclasses.replace(cfg.model, refits=args.fits - 1 if args.fits > 1 else 0),
                                        fit_seed)
        shifted = [Shifted(m, [feats.index(a) for a, _ in pairs], [feats.index(b) for _, b in pairs]) for m in fitted]
        variants[f"depth {depth}"] = probe_common.mb_values(ps, shifted, start_states(frame, tuple(feats), "test"),
                                                            feats)
        print(f"depth {depth} done", file=sys.stderr, flush=True)

    probe_common.write_variants(
        "probe_mb_lags.py", args.out, t0, "Model-based OPE with history: lags copied by identity",
        f"Values averaged over {args.fits} evaluation fit(s) (the first on all stays, then stay-bootstrap refits: "
        f"the `mb` estimator's fits, seeds and rollouts); lags of {', '.join(lags)}; truth from "
        f"{args.pages} (10,000 patients, seed 13); *admitted*: the policies {args.admitted or '–'} admits.",
        variants, truth, costs, admitted, extra={"lags": lags})


if __name__ == "__main__":
    main()
