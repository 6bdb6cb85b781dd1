"""Model-based OPE anchored on the attendings: each attending's own stays are an on-policy sample of their practice
(issue 12).

``mb`` reads the SpO₂ cost as a line in the truth (≈ 0.24 + 0.79 × truth on the spread set): right in rank, shrunk
towards the clinicians' level. Undoing the line needs anchors away from that level whose values are known without a
model; session 25 found none in the pooled logged data. The attendings are such anchors: in the demo each stay's
attending (``admissions.admit_provider_id``) is drawn at random, and attendings differ in fluid liberality,
vasopressor threshold and dose, so the mean logged outcome over one attending's stays is an unbiased on-policy value
of that attending's practice. Per attending k this probe

1. fits a behaviour clone π̂_k on k's training and validation stays (the evaluate stage's behaviour-model config and
   features; a hospital can do the same),
2. reads π̂_k with ``mb`` (the same fits, seeds and rollouts as every other policy): m_k per target,
3. takes y_k, the mean per-stay logged return and costs over k's stays in all three splits,

then regresses y on m across the attendings (ordinary least squares, one line per target) and reads every evaluated
policy as c + d·mb (costs floored at 0): ``attending-anchored``. ``anchored via the coded clone`` does the same with
one clone fitted on every attending's rows with the attending as a one-hot input, acting as each. ``anchored on the
replayed attendings`` (session 33) takes m_k from the attending's own logged doses instead: the models simulate
k's stays (all splits) from their logged first states, each episode given that stay's logged dose at every step
the stay was logged (open loop) and the clone's after it ended, paired with the same stays' logged values; ``SpO₂
anchored on the replayed attendings`` reads only the SpO₂ cost through that line (its interval from resampling each
attending's stays: :func:`line_band`; the replay is the evaluate stage's :func:`ogsrl.ope.anchored.replayed`); ``SpO₂ anchored, replayed, pooled clone after the stay`` the same with one
clone of every attending's stays acting after a stay ends (no per-attending fit). Two diagnostics:
the same with the simulator's own attending policies as the anchors (``anchored on the true attendings``: an oracle
for the policy side, not available in a hospital) and each clone's simulated truth against its attending's logged
mean (how far cloning moves the anchor). The line is also reported from the test split's stays alone.

Assumption the demo satisfies by construction and a hospital must check: attendings see comparable patients
(quasi-random assignment); otherwise y_k mixes practice with case mix.

Usage:
  .venv/bin/python benchmarks/probe_mb_attending.py --root <make-run project> --pages <page with the truth> \
      --work <bench_ope work dir> [--fits 4] [--truth-episodes 4000] [--threads 1] [--out mb_attending]
Writes benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402
import probe_common  # noqa: E402

from ogsrl.agents import bc, common  # noqa: E402
from ogsrl.agents.actor import SavedPolicy  # noqa: E402
from ogsrl.agents.inputs import grid  # noqa: E402
from ogsrl.features import ACTIONS  # noqa: E402
from ogsrl.io import salted_hash  # noqa: E402
from ogsrl.ope import anchored as anchored_ope, behaviour, model_based, stage as ope_stage  # noqa: E402
from ogsrl.synth import clinician  # noqa: E402
from ogsrl.world.env import logged_returns, start_states, steps_left  # noqa: E402
import exclusive  # noqa: E402

TARGETS = ("reward", "cost_spo2_low", "cost_urine_low")
"""logged per-step columns summed per stay, in the order of ``mb``'s ``[return, cost…]``"""
CLONE_SEED = 4100
LINE_BOOT_SEED = 4200


def stay_attendings(root: Path, salt: str) -> pd.Series:
    """stay key → attending id (``admissions.admit_provider_id`` via ``icustays``), from the project's raw tables."""
    adm = pd.read_csv(root / "data/raw/hosp/admissions.csv.gz", usecols=["hadm_id", "admit_provider_id"])
    stays = pd.read_csv(root / "data/raw/icu/icustays.csv.gz", usecols=["hadm_id", "stay_id"])
    m = stays.merge(adm, on="hadm_id", how="left")
    if m["admit_provider_id"].isna().any():
        raise SystemExit(f"admissions.admit_provider_id missing for {int(m['admit_provider_id'].isna().sum())} stays")
    return pd.Series(m["admit_provider_id"].astype(str).to_numpy(),
                     index=salted_hash(m["stay_id"].tolist(), salt), name="attending")


def per_stay(df: pd.DataFrame, attending: pd.Series, targets: tuple[str, ...] = TARGETS) -> pd.DataFrame:
    """One row per stay: its attending, split and the summed logged ``targets``."""
    g = df.groupby("stay_key", sort=True).agg(split=("split", "first"), **{t: (t, "sum") for t in targets})
    g["attending"] = attending.reindex(g.index).to_numpy()
    if g["attending"].isna().any():
        raise SystemExit(f"{int(g['attending'].isna().sum())} trajectory stays have no attending in the raw tables")
    return g


def anchor_line(m: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(c, d) of the least-squares line y = c + d·m across the anchors."""
    d, c = np.polyfit(np.asarray(m, np.float64), np.asarray(y, np.float64), 1)
    return float(c), float(d)


def anchored(values: dict[str, list[float]], lines: list[tuple[float, float]], only: tuple[int, ...] | None = None
             ) -> dict[str, list[float]]:
    """Each policy's ``[return, cost…]`` read through the anchors' lines (``only``: these positions, the others
    as they are); costs floored at 0."""
    out = {}
    for name, v in values.items():
        read = [c + d * x if only is None or j in only else x for j, (x, (c, d)) in enumerate(zip(v, lines))]
        out[name] = [read[0], *(max(0.0, x) for x in read[1:])]
    return out


class AsAttending:
    """One behaviour clone of every attending's stays, fitted with the attending as a one-hot input, acting as
    attending ``k`` (the state features it reads, then the code)."""

    def __init__(self, inner: SavedPolicy, k: int, n: int) -> None:
        self.inner, self.k, self.n = inner, k, n
        self.feature_names = inner.feature_names[:-n]

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(obs, np.float64)
        code = np.zeros((len(x), self.n))
        code[:, self.k] = 1.0
        return self.inner.act(np.hstack([x, code]), rng)


def conditioned_clone(splits: dict[str, pd.DataFrame], stays: pd.DataFrame, ids: list[str], names: tuple[str, ...],
                      cfg: bc.Config, work: Path) -> SavedPolicy:
    """The clone behind :class:`AsAttending`, fitted on the training and validation splits (cached in ``work``)."""
    code = [f"attending_code_{i}" for i in range(len(ids))]

    def coded(df: pd.DataFrame) -> pd.DataFrame:
        who = stays["attending"].reindex(df["stay_key"]).to_numpy()
        return df.assign(**{c: (who == a).astype(np.float64) for c, a in zip(code, ids)})

    cols = (*names, *code)
    return bench_ope.cached_policy(work, "attending_conditioned", lambda: bc.fit_actor(
        cfg, cols, bc.batch_of(coded(splits["train"]), cols), bc.batch_of(coded(splits["val"]), cols), CLONE_SEED)[0])


def line_band(m: list[np.ndarray], y: list[np.ndarray], readings: np.ndarray, rng: np.random.Generator,
              n_boot: int = 2000, level: float = 0.95) -> np.ndarray:
    """(P, 2) percentile interval of the readings read through the anchor line (floored at 0) over resamples of
    each anchor's stays (with replacement; a stay's m and y stay paired) and, where ``m`` and ``readings`` have a
    leading fit axis F, over the fits (each fit's readings through the line of its own m).

    Args:
        m: per anchor, (N_k,) or (F, N_k) the model's value of each of its stays.
        y: per anchor, (N_k,) the same stays' logged values.
        readings: (P,) or (F, P) the model's readings of the policies.
    """
    ms, ys = [], []
    for mk, yk in zip(m, y):
        mk = np.atleast_2d(mk)
        idx = rng.integers(0, mk.shape[1], size=(n_boot, mk.shape[1]))
        ms.append(mk[:, idx].mean(2))  # (F, B)
        ys.append(np.asarray(yk)[idx].mean(1))  # (B,)
    mb, yb = np.stack(ms, 2), np.stack(ys, 1)[None]  # (F, B, K), (1, B, K)
    mc, yc = mb - mb.mean(2, keepdims=True), yb - yb.mean(2, keepdims=True)
    d = (mc * yc).sum(2) / (mc * mc).sum(2)  # (F, B)
    c = yb.mean(2) - d * mb.mean(2)
    read = np.maximum(0.0, c[..., None] + d[..., None] * np.atleast_2d(readings)[:, None, :])  # (F, B, P)
    return np.quantile(read.reshape(-1, read.shape[2]), [(1 - level) / 2, (1 + level) / 2], axis=0).T


class TrueAttending:
    """The simulator's attending ``k`` acting on the observed state (the demo's logging policy for one attending)."""

    feature_names = clinician.FEATURES

    def __init__(self, k: int) -> None:
        self.k = k

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(obs, np.float64)
        return clinician.sample(x, np.full(len(x), self.k, dtype=np.int64), rng)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_common.add_args(ap)
    ap.add_argument("--truth-episodes", type=int, default=4000, help="simulated patients per clone's truth")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    probe_common.add_scoring_args(ap, "mb_attending")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ps = probe_common.load(args)
    fits = len(probe_common.plain_models(ps, args.fits))
    models = probe_common.plain_models(ps, fits)
    root, params = ps.root, ps.params
    att = stay_attendings(root, str(params["cohort"]["salt"]))
    read_splits = {s: common.read_split(root / f"data/trajectories/{s}.parquet") for s in ("train", "val", "test")}
    splits, test_meta = {s: df for s, (df, _) in read_splits.items()}, read_splits["test"][1]
    targets = ("reward", *ps.table.cost_columns)
    if targets != TARGETS:
        raise SystemExit(f"the probe reads the demo's targets {TARGETS}, this table has {targets}")
    stays = pd.concat([per_stay(df, att) for df in splits.values()])
    names = behaviour.behaviour_features(splits["train"].columns)
    cfg = ps.cfg.behaviour
    ids = sorted(stays["attending"].unique())

    def clone_of(i: int, a: str) -> SavedPolicy:
        keys = stays.index[stays["attending"] == a]
        tr, va = (splits[s][splits[s]["stay_key"].isin(keys)] for s in ("train", "val"))
        return bc.fit_actor(cfg, names, bc.batch_of(tr, names), bc.batch_of(va, names), CLONE_SEED + i)[0]

    anchors = {f"attending_{i}": bench_ope.cached_policy(args.work, f"attending_{i}", lambda i=i, a=a: clone_of(i, a))
               for i, a in enumerate(ids)}
    shared = conditioned_clone(splits, stays, ids, names, cfg, args.work)
    coded = {f"coded_attending_{i}": AsAttending(shared, i, len(ids)) for i in range(len(ids))}
    if not all(re.fullmatch(r"P\d{3}SIM", a) for a in ids):
        raise SystemExit("the attendings are not the demo simulator's (P000SIM …): the probe needs its truth")
    oracle = {f"true_attending_{i}": TrueAttending(int(a[1:4])) for i, a in enumerate(ids)}

    def read(pols: dict[str, object]) -> dict[str, list[float]]:
        one = dataclasses.replace(ps, policies={**ps.policies, **pols}, truth={n: {} for n in pols})
        return probe_common.mb_values(one, models)

    plain_fits = [probe_common.mb_values(ps, [model]) for model in models]
    plain = {n: [float(x) for x in np.mean([f[n] for f in plain_fits], axis=0)] for n in ps.truth}
    m_clone, m_coded, m_true = read(anchors), read(coded), read(oracle)
    feats = list(ps.world.state_features)
    window = grid(test_meta, params.get("cohort") or {})
    horizon = int(params["world"]["env"]["horizon"])

    def replay(i: int, a: str, after: SavedPolicy) -> tuple[np.ndarray, np.ndarray, float]:
        """(F, N_i, 1 + C) each fit's `mb` per stay of attending i's logged doses on their own stays (``after``
        acting once a stay has ended), (N_i, 1 + C) the same stays' logged values over the same steps, and the share
        of the window's steps after the logged stays ended."""
        keys = stays.index[stays["attending"] == a]
        df = pd.concat([d[d["stay_key"].isin(keys)] for d in splits.values()])
        starts = start_states(df, tuple(feats), "trajectories")
        horizons = np.minimum(steps_left(df, *window, "trajectories"), horizon)
        doses, lengths = anchored_ope.logged_doses(df["stay_key"].to_numpy(), df["step"].to_numpy(),
                                                   df[list(ACTIONS)].to_numpy(np.float64))
        clone = probe_common.act_fn(after, feats)
        per_fit = []
        for model in models:
            s_act, _ = ope_stage.policy_streams(ps.cfg.seed, f"replayed_attending_{i}")[2].spawn(2)
            act = anchored_ope.replayed(doses, lengths, ps.cfg.model.rollouts, clone)
            per_fit.append(model_based.stay_values(model, starts, horizons, act, 1.0, ps.cfg.model.rollouts,
                                                   ps.cfg.model.mode, ps.world.env_seed, np.random.default_rng(s_act)))
        y = logged_returns(df, TARGETS, horizons, 1.0, "trajectories")
        share = float(np.clip(horizons - lengths, 0, None).sum() / horizons.sum())
        return np.stack(per_fit), y, share

    replays = [replay(i, a, anchors[f"attending_{i}"]) for i, a in enumerate(ids)]
    pooled = bench_ope.cached_policy(args.work, "attending_pooled", lambda: bc.fit_actor(
        cfg, names, bc.batch_of(splits["train"], names), bc.batch_of(splits["val"], names), CLONE_SEED - 1)[0])
    m_pooled = np.array([replay(i, a, pooled)[0].mean((0, 1)) for i, a in enumerate(ids)])
    mr, y_replay = np.array([r[0].mean((0, 1)) for r in replays]), np.array([r[1].mean(0) for r in replays])
    clone_share = [r[2] for r in replays]
    spo2 = TARGETS.index("cost_spo2_low")
    band = line_band([r[0].mean(0)[:, spo2] for r in replays], [r[1][:, spo2] for r in replays],
                     np.array([plain[n][spo2] for n in ps.truth]), np.random.default_rng(LINE_BOOT_SEED))
    band_fits = line_band([r[0][:, :, spo2] for r in replays], [r[1][:, spo2] for r in replays],
                          np.array([[f[n][spo2] for n in ps.truth] for f in plain_fits]),
                          np.random.default_rng(LINE_BOOT_SEED))
    print(f"anchors read ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    def logged(subset: pd.DataFrame) -> np.ndarray:
        return np.array([subset.loc[subset["attending"] == a, list(TARGETS)].mean().to_numpy() for a in ids])

    y_all, y_test = logged(stays), logged(stays[stays["split"] == "test"])
    n_all = [int((stays["attending"] == a).sum()) for a in ids]
    mc = np.array([m_clone[f"attending_{i}"] for i in range(len(ids))])
    mt = np.array([m_true[f"true_attending_{i}"] for i in range(len(ids))])
    mk = np.array([m_coded[f"coded_attending_{i}"] for i in range(len(ids))])
    lines = {"clones, all splits": [anchor_line(mc[:, j], y_all[:, j]) for j in range(len(TARGETS))],
             "clones, test split": [anchor_line(mc[:, j], y_test[:, j]) for j in range(len(TARGETS))],
             "coded clone, all splits": [anchor_line(mk[:, j], y_all[:, j]) for j in range(len(TARGETS))],
             "true attendings, all splits": [anchor_line(mt[:, j], y_all[:, j]) for j in range(len(TARGETS))],
             "replayed attendings, all splits": [anchor_line(mr[:, j], y_replay[:, j]) for j in range(len(TARGETS))],
             "replayed, pooled clone after the stay": [anchor_line(m_pooled[:, j], y_replay[:, j])
                                                       for j in range(len(TARGETS))]}
    variants = {"mb": plain, "attending-anchored": anchored(plain, lines["clones, all splits"]),
                "anchored, test-split means": anchored(plain, lines["clones, test split"]),
                "anchored via the coded clone": anchored(plain, lines["coded clone, all splits"]),
                "anchored on the true attendings": anchored(plain, lines["true attendings, all splits"]),
                "anchored on the replayed attendings": anchored(plain, lines["replayed attendings, all splits"]),
                "SpO₂ anchored on the replayed attendings": anchored(plain, lines["replayed attendings, all splits"],
                                                                     only=(TARGETS.index("cost_spo2_low"),)),
                "SpO₂ anchored, replayed, pooled clone after the stay": anchored(
                    plain, lines["replayed, pooled clone after the stay"], only=(TARGETS.index("cost_spo2_low"),))}

    clone_truth = {}
    for i in range(len(ids)):
        tr = bench_ope.truth_of(f"attending_{i}", anchors[f"attending_{i}"], params, args.truth_episodes, 13,
                                args.work)
        clone_truth[f"attending_{i}"] = [tr["return"], tr["cost_return_cost_spo2_low"],
                                         tr["cost_return_cost_urine_low"]]
    sections = ["Anchors: per attending, stays (all splits), the logged mean per stay y (all splits; test split), "
                "`mb`'s reading of the clone m and of the true attending, and the clone's simulated truth "
                f"({args.truth_episodes} patients, seed 13) — return / SpO₂ cost / urine cost:", "",
                "| attending | stays | logged y (all) | logged y (test) | mb of clone | mb of coded clone | "
                "mb of true attending | clone's truth | mb of replayed doses (clone's share of steps) |",
                "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: " / ".join(f"{x:.3f}" if j else f"{x:.2f}" for j, x in enumerate(v))  # noqa: E731
    for i in range(len(ids)):
        sections.append(f"| {i} | {n_all[i]} | {fmt(y_all[i])} | {fmt(y_test[i])} | {fmt(mc[i])} | {fmt(mk[i])} | "
                        f"{fmt(mt[i])} | {fmt(clone_truth[f'attending_{i}'])} | {fmt(mr[i])} ({clone_share[i]:.2f}) |")
    sections += ["", "Anchor lines y = c + d·m (return / SpO₂ cost / urine cost):", ""]
    sections += [f"- {k}: " + "; ".join(f"{c:.3f} + {d:.3f}·m" for c, d in v) for k, v in lines.items()]
    true_spo2 = np.array([ps.truth[n]["cost_return_cost_spo2_low"] for n in ps.truth])
    read = np.array([variants["SpO₂ anchored on the replayed attendings"][n][spo2] for n in ps.truth])
    bands = {"line": band, "line and fits": band_fits}
    covers = {k: (v[:, 0] <= true_spo2) & (true_spo2 <= v[:, 1]) for k, v in bands.items()}
    width = {k: float(np.median((v[:, 1] - v[:, 0]) / true_spo2)) for k, v in bands.items()}
    sections += ["", "95 % intervals of the SpO₂-anchored reading from resampling each attending's stays (2,000 "
                 "draws): `line` holds `mb`'s readings fixed (the line's own sampling uncertainty); `line and fits` "
                 f"reads each of the {fits} evaluation fits through the line of its own replayed m. Cover the truth: "
                 + "; ".join(f"{k} {int(covers[k].sum())} of {len(true_spo2)} (median width {width[k]:.3f} of the "
                             "truth)" for k in bands) + ".", "",
                 "| policy | true SpO₂ cost | mb | SpO₂-anchored | line interval | line and fits interval |",
                 "|---|---|---|---|---|---|"]
    cell = lambda k, i: f"[{bands[k][i, 0]:.3f}, {bands[k][i, 1]:.3f}]{'' if covers[k][i] else ' ✘'}"  # noqa: E731
    sections += [f"| {n} | {t:.3f} | {plain[n][spo2]:.3f} | {r:.3f} | {cell('line', i)} | {cell('line and fits', i)} |"
                 for i, (n, t, r) in enumerate(zip(ps.truth, true_spo2, read))]
    sections.append("")
    probe_common.write_variants(
        "probe_mb_attending.py", args.out, t0, "Model-based OPE anchored on the attendings",
        f"`mb` ({fits} fits) and its readings through the line y = c + d·m fitted across the {len(ids)} attendings "
        "(y: the attending's logged mean per stay; m: `mb`'s reading of the attending's behaviour clone, or of "
        "their replayed doses); "
        f"{len(ps.truth)} policies.", variants, ps.truth, list(ps.table.cost_columns),
        probe_common.admitted_by(args.admitted),
        extra={"anchors": {"ids": list(range(len(ids))), "stays": n_all, "logged_all": y_all.tolist(),
                           "logged_test": y_test.tolist(), "mb_clone": mc.tolist(), "mb_coded": mk.tolist(),
                           "mb_true": mt.tolist(), "mb_replayed": mr.tolist(), "logged_replayed": y_replay.tolist(),
                           "mb_replayed_pooled_after": m_pooled.tolist(),
                           "clone_share_bound": clone_share,
                           "clone_truth": clone_truth, "lines": lines},
               "spo2_anchored_intervals": {"policies": list(ps.truth), **{
                   k: {"low": v[:, 0].tolist(), "high": v[:, 1].tolist(), "covers": covers[k].tolist(),
                       "median_width_over_truth": width[k]} for k, v in bands.items()}}, "truth": ps.truth},
        sections=sections)


if __name__ == "__main__":
    main()
