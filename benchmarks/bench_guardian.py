"""Benchmark: fit time and query throughput of the Christoffel guardian vs the KDE baseline at equal coverage.

Data: the demo's trajectories (data/trajectories/{train,val,test}.parquet) when present, resampled with
replacement to ``--n`` fit points; otherwise synthetic contract-shaped rows (tests/guardian/guardian_fakes.py).
Both guardians are calibrated by the same rule (split conformal, α_c = 0.95) on a validation split, so the
throughput ratio is at equal coverage. KDE throughput is measured on ``--kde-queries`` points and extrapolated.

Usage: .venv/bin/python benchmarks/bench_guardian.py [--n 200000] [--kde-queries 1000]
Writes benchmarks/results/guardian.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ogsrl.guardian.christoffel import ChristoffelGuardian  # noqa: E402
from ogsrl.guardian.conformal import CalibrationConfig  # noqa: E402
from ogsrl.guardian.kde import KDEConfig, KDEGuardian  # noqa: E402
from ogsrl.guardian.stage import read_split  # noqa: E402
import exclusive  # noqa: E402


def load_data(
    root: Path, n: int, n_cal: int, n_test: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], tuple, str]:
    traj = root / "data" / "trajectories"
    if all((traj / f"{s}.parquet").is_file() for s in ("train", "val", "test")):
        (fit, names), (cal, _), (test, _) = (read_split(traj / f"{s}.parquet") for s in ("train", "val", "test"))
        source = f"trajectories under {root} (train split, {len(fit)} rows, resampled with replacement to {n})"
        fit = fit[rng.choice(len(fit), n, replace=len(fit) < n)]
    else:
        from tests.guardian.guardian_fakes import NAMES, contract_matrix

        names = NAMES
        fit, cal, test = contract_matrix(n, 1), contract_matrix(n_cal, 2), contract_matrix(n_test, 3)
        source = "synthetic contract-shaped rows (demo trajectories not found)"
    return {"fit": fit, "cal": cal[:n_cal], "test": test[:n_test]}, names, source


def timed(fn, *args, **kw) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="fit points")
    ap.add_argument("--n-cal", type=int, default=20_000, help="calibration points (Christoffel)")
    ap.add_argument("--n-test", type=int, default=20_000, help="test points (Christoffel)")
    ap.add_argument("--kde-queries", type=int, default=1000, help="points per KDE calibration / test / timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", type=Path, default=ROOT, help="project root holding data/trajectories")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    data, names, source = load_data(args.root, args.n, args.n_cal, args.n_test, rng)
    cal_cfg = CalibrationConfig(alpha_c=0.95, rule="conformal", unit="row")  # a speed comparison at equal coverage

    chris, fit_c = timed(ChristoffelGuardian(names, calibration=cal_cfg).fit, data["fit"])
    chris.calibrate(data["cal"])
    cov_c = float(chris.contains(data["test"]).mean())
    q = np.concatenate([data["test"]] * max(1, 200_000 // len(data["test"])))[:200_000]
    _, t_c = timed(chris.contains, q)
    batch = q[:10_000]
    _, t_batch = timed(chris.contains, batch)
    xt = torch.tensor(q[:50_000], dtype=torch.float32)
    _, t_torch = timed(chris.score_torch, xt)

    kq = args.kde_queries
    kde, fit_k = timed(KDEGuardian(names, KDEConfig(max_eval=kq), cal_cfg).fit, data["fit"])
    kde.calibrate(data["cal"], rng=rng)
    test_k = data["test"][rng.choice(len(data["test"]), kq, replace=False)]
    inside_k, t_k = timed(kde.contains, test_k)
    cov_k = float(inside_k.mean())
    rate_c, rate_k = len(q) / t_c, kq / t_k
    lines = [
        "# Guardian benchmark",
        "",
        f"- data: {source}; {len(names)} inputs; fit {len(data['fit'])} points",
        f"- machine: {platform.processor() or platform.machine()}, torch threads 1 (shared CPU: rough figures)",
        "- both calibrated by split conformal (α_c = 0.95) on the validation split: equal target coverage",
        "",
        "| guardian | fit s | test coverage | query points/s | 10k batch ms |",
        "|---|---|---|---|---|",
        f"| Christoffel (k=2, 136 monomials), numpy | {fit_c:.2f} | {cov_c:.4f} (n={len(data['test'])}) "
        f"| {rate_c:,.0f} | {1000 * t_batch:.1f} |",
        f"| Christoffel, torch float32 | – | – | {len(xt) / t_torch:,.0f} | – |",
        f"| KDE (σ=0.535, sklearn kd_tree, exact) | {fit_k:.2f} (tree only) | {cov_k:.4f} (n={kq}) "
        f"| {rate_k:,.0f} | {1000 * 10_000 / rate_k:,.0f} (extrapolated) |",
        "",
        f"**Query speed-up Christoffel / KDE: {rate_c / rate_k:,.0f}×** (goal ≥ 100×).",
        "",
        "KDE fit time is the tree build only; its threshold needs KDE scores of calibration points, which cost "
        f"{1 / rate_k * 1000:.1f} ms each.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "guardian.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
