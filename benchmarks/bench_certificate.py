"""Benchmark: does the guardian certificate's PAC statement hold when rows come in stays?

Each replication draws a calibration split of ``--stays`` ICU-stay-like clusters, sets the threshold by each rule
and records the rule's true coverage F(t) of that threshold; the PAC statement "F(t) ≥ α_c" must fail in at most a
share δ of the replications.

Synthetic data with known truth: stay j has ``m_j`` rows (half the stays run the full 20-step window, the rest end
uniformly earlier: mean 15 rows, as the demo's ~12,700 validation rows from ~880 stays) and scores
``s_ji = b_j + e_ji``, ``b_j ~ N(0, ICC)`` a stay effect and ``e_ji`` a stationary AR(1) (lag-1 correlation ρ) with
variance ``1 − ICC``. Every row is marginally N(0, 1) whatever its stay's length, so a threshold's true coverage
(stay-weighted or row-weighted alike) is exactly ``Φ(t)``. ICC 0 with ρ 0 is the independent-rows case.

With ``--root`` (a project whose calibrate_guardian stage ran), a second table resamples the real Christoffel scores
of that project's validation + test stays (a cluster bootstrap: the population is those stays, its true coverage is
computed on all of them).

Rules: ``row pac`` (the old certificate: every row an independent draw), ``stay pac`` (ogsrl.guardian.conformal,
n = stays) and, for reference, the marginal ``row conformal`` / ``stay conformal``.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_certificate.py [--reps 1000] [--root PROJECT]
Writes benchmarks/results/certificate.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ogsrl.guardian import conformal  # noqa: E402
import exclusive  # noqa: E402

ALPHA, DELTA = 0.95, 0.05
SCENARIOS = (  # (ICC, AR(1) ρ)
    (0.0, 0.0),
    (0.0, 0.7),
    (0.3, 0.7),
    (0.6, 0.7),
)


def stay_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Half the stays 20 rows, the rest uniform on 1..19 (mean 15)."""
    return np.where(rng.random(n) < 0.5, 20, rng.integers(1, 20, n))


def clustered_scores(rng: np.random.Generator, m: np.ndarray, icc: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (R,), stay index (R,))``: stay effect + stationary AR(1) noise, every row marginally N(0, 1)."""
    n, steps = m.size, int(m.max())
    e = np.empty((n, steps))
    e[:, 0] = rng.normal(size=n)
    innov = rng.normal(size=(n, steps)) * math.sqrt(1 - rho**2)
    for t in range(1, steps):
        e[:, t] = rho * e[:, t - 1] + innov[:, t]
    s = rng.normal(0.0, math.sqrt(icc), n)[:, None] + math.sqrt(1 - icc) * e  # (n, steps)
    keep = np.arange(steps)[None, :] < m[:, None]
    groups = np.broadcast_to(np.arange(n)[:, None], (n, steps))[keep]
    return s[keep], groups


def thresholds(s: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Threshold of every rule on one calibration draw."""
    return {
        "row pac": conformal.threshold(s, ALPHA, DELTA, "pac")[0],
        "stay pac": conformal.stay_threshold(s, groups, ALPHA, DELTA, "pac")[0],
        "row conformal": conformal.threshold(s, ALPHA, DELTA, "conformal")[0],
        "stay conformal": conformal.stay_threshold(s, groups, ALPHA, DELTA, "conformal")[0],
    }


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else stats.beta.ppf(a, k, n - k + 1)
    hi = 1.0 if k == n else stats.beta.ppf(1 - a, k + 1, n - k)
    return float(lo), float(hi)


def summarise(cov: dict[str, list[float]], reps: int) -> list[str]:
    rows = []
    for rule, values in cov.items():
        c = np.asarray(values)
        k = int(np.sum(c < ALPHA))
        lo, hi = clopper_pearson(k, reps)
        verdict = "≤ δ" if hi <= DELTA else ("> δ" if lo > DELTA else "≈ δ")
        if rule.endswith("conformal"):
            verdict = f"mean {c.mean():.4f} {'≥' if c.mean() >= ALPHA else '<'} α_c"
        rows.append(f"| {rule} | {k / reps:.3f} [{lo:.3f}, {hi:.3f}] | {verdict} | {c.mean():.4f} | "
                    f"{np.quantile(c, 0.05):.4f} |")
    return rows


def synthetic(reps: int, n_stays: int, seed: int) -> list[str]:
    lines = []
    for icc, rho in SCENARIOS:
        rng = np.random.default_rng([seed, int(icc * 100), int(rho * 100)])
        cov: dict[str, list[float]] = {r: [] for r in ("row pac", "stay pac", "row conformal", "stay conformal")}
        n_rows = []
        for _ in range(reps):
            s, g = clustered_scores(rng, stay_lengths(rng, n_stays), icc, rho)
            n_rows.append(s.size)
            for rule, t in thresholds(s, g).items():
                cov[rule].append(float(stats.norm.cdf(t)))
        lines += ["", f"**ICC {icc}, AR(1) ρ {rho}** ({n_stays} stays, {np.mean(n_rows):,.0f} rows on average, "
                  f"{reps} replications)", "",
                  "| rule | PAC failure rate P(F(t) < α_c) [95 % CI] | vs δ = 0.05 | mean true coverage | "
                  "5th pct true coverage |", "|---|---|---|---|---|", *summarise(cov, reps)]
    return lines


def project_scores(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Christoffel scores and stay labels of the validation + test rows of a project whose guardian is fitted."""
    from ogsrl.guardian import load
    from ogsrl.guardian.stage import read_split, read_stays

    g = load(root / "data/models/guardian/christoffel")
    parts = [(g.score(read_split(root / f"data/trajectories/{s}.parquet")[0]),
              read_stays(root / f"data/trajectories/{s}.parquet")) for s in ("val", "test")]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def bootstrap(root: Path, reps: int, n_stays: int, seed: int) -> list[str]:
    s_all, labels = project_scores(root)
    idx, n_pop = conformal.group_index(labels, s_all.size)
    order = np.argsort(idx, kind="stable")
    s_sorted, idx_sorted = s_all[order], idx[order]
    starts = np.searchsorted(idx_sorted, np.arange(n_pop))
    ends = np.append(starts[1:], idx_sorted.size)
    pop_sorted, pop_f = conformal.pooled_coverage(s_all, idx)  # population F(t), stay-weighted

    def true_cov(t: float) -> float:
        k = np.searchsorted(pop_sorted, t, side="right")
        return 0.0 if k == 0 else float(pop_f[k - 1])

    all_sorted = np.sort(s_all)

    def true_cov_rows(t: float) -> float:  # every population row weighing the same (long stays count more)
        return float(np.searchsorted(all_sorted, t, side="right") / all_sorted.size)

    # ICC of log scores (one-way ANOVA estimate) to place the real data among the synthetic scenarios
    ls = np.log(s_all)
    m = np.bincount(idx, minlength=n_pop)
    means = np.bincount(idx, weights=ls, minlength=n_pop) / m
    within = float(np.sum((ls - means[idx]) ** 2) / (ls.size - n_pop))
    m0 = (ls.size - np.sum(m**2) / ls.size) / (n_pop - 1)
    between = float(np.sum(m * (means - ls.mean()) ** 2) / (n_pop - 1))
    icc = max(0.0, (between - within) / m0) / (max(0.0, (between - within) / m0) + within)

    rng = np.random.default_rng(seed)
    cov: dict[str, list[float]] = {r: [] for r in ("row pac", "stay pac", "row conformal", "stay conformal")}
    cov_rows: dict[str, list[float]] = {r: [] for r in cov}
    for _ in range(reps):
        pick = rng.integers(0, n_pop, n_stays)
        rows = np.concatenate([np.arange(starts[j], ends[j]) for j in pick])
        g = np.repeat(np.arange(n_stays), ends[pick] - starts[pick])
        for rule, t in thresholds(s_sorted[rows], g).items():
            cov[rule].append(true_cov(t))
            cov_rows[rule].append(true_cov_rows(t))
    return ["", f"**Cluster bootstrap of the Christoffel scores under `{root}`**: population = its {n_pop} validation "
            f"+ test stays ({s_all.size:,} rows, ICC of log score {icc:.2f}); {n_stays} stays drawn with replacement "
            f"per replication, {reps} replications; true coverage = the population's stay-weighted coverage.", "",
            "| rule | PAC failure rate P(F(t) < α_c) [95 % CI] | vs δ = 0.05 | mean true coverage | "
            "5th pct true coverage |", "|---|---|---|---|---|", *summarise(cov, reps), "",
            "The same replications with every population row weighing the same (the quantity the row rules' "
            "statement is about; long stays count more):", "",
            "| rule | PAC failure rate [95 % CI] | vs δ = 0.05 | mean true row coverage | 5th pct |",
            "|---|---|---|---|---|", *summarise(cov_rows, reps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000, help="replications per scenario (≥ 200)")
    parser.add_argument("--stays", type=int, default=880, help="calibration stays per replication")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--root", type=Path, default=None, help="project with a fitted guardian (optional)")
    args = parser.parse_args()
    exclusive.hold(Path(__file__).stem)
    if args.reps < 200:
        parser.error("--reps must be at least 200")
    t0 = time.perf_counter()
    level_pac = conformal.stay_pac_level(args.stays, ALPHA, DELTA)
    level_conf = conformal.stay_conformal_level(args.stays, ALPHA)
    lines = [
        "# Guardian certificate under clustered rows (`benchmarks/bench_certificate.py`)",
        "",
        f"- {datetime.date.today().isoformat()}, `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_certificate.py "
        f"--reps {args.reps} --stays {args.stays} --seed {args.seed}"
        + (f" --root {args.root}`" if args.root else "`"),
        f"- machine: {platform.processor() or platform.machine()} (shared CPU)",
        f"- α_c = {ALPHA}, δ = {DELTA}; with {args.stays} stays the stay rules require a pooled per-stay calibration "
        f"coverage of {level_pac:.4f} (pac) / {level_conf:.4f} (conformal); "
        f"the row pac rule, at ~{15 * args.stays:,} rows, about {conformal.pac_rank(15 * args.stays, ALPHA, DELTA) / (15 * args.stays):.4f}",
        "- PAC failure = a replication whose threshold's true coverage is below α_c; the PAC statement allows a share "
        "δ. Verdict from the Clopper–Pearson 95 % interval. The conformal rules only promise mean coverage ≥ α_c.",
        *synthetic(args.reps, args.stays, args.seed),
    ]
    if args.root is not None:
        lines += bootstrap(args.root, args.reps, args.stays, args.seed)
    lines += ["", f"Wall time {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "certificate.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
