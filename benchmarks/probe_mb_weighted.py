"""Model-based OPE with world models fitted towards the evaluated policy's actions (issue 12).

``mb`` reads the SpO₂ cost as a line ≈ 0.24 + 0.79 × truth: the dose effects it learns are those the clinicians'
practice identifies, and policies far from that practice are read towards its level. Session 29/30 found that `mb`
fitted on data *logged by* the policy it evaluates reads that policy nearly right. Importance-weighted model fitting
(Hishinuma & Senda 2021; Sugiyama et al. 2007 for covariate shift) imitates such data from the clinicians' own: each
logged step (s, a) gets the per-step ratio ρ = π_e(a|s) / π̂_b(a|s) (the evaluate stage's π̂_b and ``log_ratios``),
and the models are fitted on a resample of the evaluation split's rows drawn ∝ ρ^λ — the action distribution at
each logged state moved towards the evaluated policy's (λ = 1), or half-way in log-ratio (λ = ½, a bias–variance
compromise). Each policy gets its own models; everything else is ``mb``'s (the stays held out, the stay-bootstrap
refits, seeds, rollouts, start states). The held-out rows used for early stopping and elite choice are resampled
the same way, so the models stop where they fit the weighted distribution best.

Weights are truncated at ``--cap`` times their mean before normalising (a handful of rows otherwise take the whole
resample). Per policy the page reports the weights' Kish effective sample size as a share of the rows. ``--control``
adds, per λ, the same fits on a resample drawn uniformly from a random subset of the rows as large as the weights'
effective sample size: what fewer effective rows alone do, without moving the actions. ``--fine-tune`` keeps the
data instead: each of ``mb``'s fitted models (every row) is trained further on its weighted resample, from its own
weights and input/output scaling, at a tenth of the fitting rate, and each member keeps its state at the epoch of
lowest loss on the weighted held-out rows — epoch 0, the plain model, included, so a member moves only when the
weighted held-out rows say it fits them better. ``--fine-tune-actions`` fine-tunes only the weights that read the
action inputs, so the fit keeps every row for all the state alone determines.

Usage:
  .venv/bin/python benchmarks/probe_mb_weighted.py --root <make-run project> --pages <page with the truth> \
      --work <bench_ope work dir> [--temper 1,0.5] [--cap 20] [--control | --fine-tune | --fine-tune-actions] \
      [--policies a,b,c] [--threads 1] [--fits 4] \
      [--out mb_weighted]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_common  # noqa: E402

from ogsrl import config  # noqa: E402
from ogsrl.ope import model_based  # noqa: E402
from ogsrl.ope import stage as ope_stage  # noqa: E402
from ogsrl.world import stage as world_stage  # noqa: E402
from ogsrl.world.data import Transitions  # noqa: E402
import exclusive  # noqa: E402

WEIGHT_STREAM = 0x575453  # "WTS": the weighted resamples, the same draws for every policy


def resample_weights(log_ratio: np.ndarray, temper: float, cap: float) -> np.ndarray:
    """Resampling probabilities ∝ min(ρ^λ, cap · mean ρ^λ), ρ = exp(log_ratio), normalised to sum 1."""
    lw = temper * np.asarray(log_ratio, np.float64)
    w = np.exp(lw - lw.max())
    w = np.minimum(w, cap * w.mean())
    return w / w.sum()


def kish(p: np.ndarray) -> float:
    """Kish effective sample size of weights ``p`` as a share of their count."""
    return float(1.0 / (len(p) * np.sum(p ** 2))) if p.sum() > 0 else 0.0


def ess_matched(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Resampling probabilities uniform over a random ``share`` of ``n`` rows (at least one): the control for
    weights of that effective sample size."""
    keep = rng.choice(n, size=max(1, int(round(share * n))), replace=False)
    p = np.zeros(n)
    p[keep] = 1.0 / len(keep)
    return p


def fine_tuned(model, fit: Transitions, stop: Transitions, seed: int, lr_share: float = 0.1, max_epochs: int = 30,
               patience: int = 3, actions_only: bool = False):
    """A copy of fitted ``model`` trained further on ``fit`` (its scaling, elites and architecture kept; the same
    rows for every member), each member at its epoch of lowest loss on ``stop`` (epoch 0 — ``model`` — included).
    ``actions_only``: only the weights that read the action inputs move (the first layer's and the linear skip
    path's action rows, no weight decay); everything the state alone determines stays as fitted on every row."""
    m = copy.deepcopy(model)
    net, cfg = m.net, m.cfg
    gen = torch.Generator().manual_seed(seed)
    params, decay = list(net.parameters()), cfg.weight_decay
    if actions_only:
        n_in = net.in_mean.shape[0]
        rows = torch.zeros(1, n_in, 1)
        rows[:, n_in - m.layout.n_act_in:] = 1.0  # the model input is [state, action input]
        params, decay = [net.layers[0].weight, net.skip.weight], 0.0
        for p in params:
            p.register_hook(lambda g: g * rows)

    def scaled(d: Transitions):
        yg, yb = m._targets(d)
        return m._inputs(d.obs, d.act), (yg - net.out_mean) / net.out_std, yb

    xt, yt, bt = scaled(fit)
    xv, yv, bv = scaled(stop)
    xv = xv.expand(cfg.n_members, -1, -1)
    opt = torch.optim.AdamW(params, lr=lr_share * cfg.lr, weight_decay=decay)
    members = cfg.n_members
    keep = [k for k, v in net.state_dict().items()
            if v.ndim >= 1 and v.shape[0] == members and not k.startswith(("in_", "out_", "elites"))]

    def held_loss() -> np.ndarray:
        net.eval()
        with torch.inference_mode():
            return m._loss(xv, yv, bv).numpy().astype(np.float64)

    best = held_loss()
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    stale = 0
    for _ in range(max_epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), cfg.batch_size):
            b = order[start:start + cfg.batch_size]
            loss = (m._loss(xt[b].expand(members, -1, -1), yt[b], bt[b]).sum()
                    + cfg.logvar_bound_weight * (net.max_logvar - net.min_logvar).sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        now = held_loss()
        better = now < best
        if better.any():
            state = net.state_dict()
            for k in keep:
                best_state[k][better] = state[k][better].detach()
            best[better] = now[better]
            stale = 0
        else:
            stale += 1
            if stale >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return m


def weighted_models(data: Transitions, stays: np.ndarray, p: np.ndarray, new_model, cfg: model_based.Config,
                    seed: np.random.SeedSequence, w_seed: np.random.SeedSequence, fits: int,
                    start_from: list | None = None, actions_only: bool = False) -> list:
    """``fits`` models as :func:`ogsrl.ope.model_based.fit_models` fits them (same held-out stays, stay-bootstrap
    refits and initialisations from ``seed``), each fit's rows and its held-out rows then resampled ∝ ``p``; with
    ``start_from`` (the plain fits, in order) each is that fit :func:`fine_tuned` on its resample instead
    (``actions_only`` as there)."""
    groups = model_based.stays_of(stays)
    n_hold = model_based.held_out(len(groups), cfg)
    s_split, s_resample, s_init = seed.spawn(3)
    perm = np.random.default_rng(s_split).permutation(len(groups))
    held, kept = [groups[i] for i in perm[:n_hold]], [groups[i] for i in perm[n_hold:]]
    init_seeds = s_init.generate_state(1 + cfg.refits)
    rng, w_rng = np.random.default_rng(s_resample), np.random.default_rng(w_seed)

    def drawn(rows: np.ndarray) -> np.ndarray:
        if p[rows].sum() <= 0:
            raise SystemExit("no weight on these rows: raise the ESS share")
        q = p[rows] / p[rows].sum()
        return rows[w_rng.choice(len(rows), size=len(rows), p=q)]

    stop = data.take(drawn(np.concatenate(held)))
    models = []
    for m in range(fits):
        picks = np.arange(len(kept)) if m == 0 else rng.integers(0, len(kept), size=len(kept))
        rows = data.take(drawn(np.concatenate([kept[i] for i in picks])))
        if start_from is not None:
            models.append(fine_tuned(start_from[m], rows, stop, int(init_seeds[m]), actions_only=actions_only))
            continue
        model = new_model(int(init_seeds[m]))
        model.fit(rows, stop)
        models.append(model)
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_common.add_args(ap)
    ap.add_argument("--temper", default="1,0.5", help="exponents λ of the ratio, one variant each")
    ap.add_argument("--cap", type=float, default=20.0, help="weights truncated at cap × their mean")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--control", action="store_true", help="also the ESS-matched uniform resample per λ")
    mode.add_argument("--fine-tune", action="store_true", help="fine-tune mb's plain fits instead of refitting")
    mode.add_argument("--fine-tune-actions", action="store_true",
                      help="fine-tune only the weights reading the action inputs")
    ap.add_argument("--policies", default="", help="only these policies of the pages (default: all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); the fits depend on it")
    probe_common.add_scoring_args(ap, "mb_weighted")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = args.fine_tune or args.fine_tune_actions
    t0 = time.perf_counter()
    ps = probe_common.load(args)
    if args.policies:
        ps.truth = {n: ps.truth[n] for n in args.policies.split(",")}
    tempers = [float(x) for x in args.temper.split(",")]
    fits = len(probe_common.plain_models(ps, args.fits))
    params, root = ps.params, ps.root
    wcfg = config.build(world_stage.WorldConfig, params.get("world"), "world")
    data = ps.table.transitions(ps.test, "test.parquet")
    stays = ps.test["stay_key"].to_numpy()
    beh = ope_stage.load_behaviour(root)
    fit_seed, _ = np.random.SeedSequence([ps.cfg.seed, ope_stage.MODEL_STREAM]).spawn(2)
    w_seed = np.random.SeedSequence([ps.cfg.seed, WEIGHT_STREAM])

    def new_model(seed: int):
        return ps.table.new_model(dataclasses.replace(wcfg.model, seed=seed))

    variants = {"mb": probe_common.mb_values(ps, probe_common.plain_models(ps, fits))}
    ess: dict[str, dict[str, float]] = {}
    for lam in tempers:
        for control in (False, True) if args.control else (False,):
            name = (f"ESS-matched uniform, λ={lam:g}" if control else
                    f"action weights fine-tuned λ={lam:g}" if args.fine_tune_actions else
                    f"fine-tuned λ={lam:g}" if args.fine_tune else f"weighted λ={lam:g}")
            variants[name] = {}
            c_rng = np.random.default_rng(np.random.SeedSequence([ps.cfg.seed, WEIGHT_STREAM, 1]))
            for pol in ps.truth:
                p = resample_weights(ope_stage.log_ratios(ps.policies[pol], beh, ps.test, pol), lam, args.cap)
                if control:
                    p = ess_matched(len(p), kish(p), c_rng)
                ess.setdefault(pol, {})[name] = kish(p)
                models = weighted_models(data, stays, p, new_model, ps.cfg.model, fit_seed, w_seed, fits,
                                         probe_common.plain_models(ps, fits) if tuned else None,
                                         args.fine_tune_actions)
                one = dataclasses.replace(ps, truth={pol: ps.truth[pol]})
                variants[name][pol] = probe_common.mb_values(one, models)[pol]
                print(f"{name} {pol}: ESS share {ess[pol][name]:.3f}, values {variants[name][pol]}",
                      file=sys.stderr, flush=True)
    names = list(variants)[1:]
    sections = ["Per-step weights' Kish effective sample size, as a share of the test split's rows:", "",
                "| policy | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
                *(f"| {pol} | " + " | ".join(f"{ess[pol][n]:.3f}" for n in names) + " |" for pol in ps.truth), ""]
    probe_common.write_variants(
        "probe_mb_weighted.py", args.out, t0, "Model-based OPE fitted towards the evaluated policy's actions",
        f"`mb` ({fits} fits) against the same fits {'fine-tuned' if tuned else 'made'} on the test split's "
        f"rows resampled ∝ min(ρ^λ, {args.cap:g} × mean), "
        f"ρ the per-step ratio π_e / π̂_b, one set of models per policy; {len(ps.truth)} policies.",
        variants, ps.truth, list(ps.table.cost_columns), probe_common.admitted_by(args.admitted),
        extra={"ess_share": ess, "truth": ps.truth}, sections=sections)


if __name__ == "__main__":
    main()
