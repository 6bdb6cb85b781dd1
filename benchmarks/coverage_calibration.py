"""How far a coverage page's count is from the goal, and whether its intervals are too narrow (issue 12).

A count of intervals that cover the truth (``bench_ope.py --datasets``) is a binomial draw: 37 of 40 is 0.925, but
anything from 0.80 to 0.98 would give it often. This script adds, per estimator × target × regime (where the gate
decides: ESS ≥ ``registry.gate.min_ess``; below it; all), the count's Clopper–Pearson 95 % interval (scipy) and a
calibration check that uses every interval, not only its hit or miss: the standardised error

    z = (truth − estimate) / (h / 1.96),   h: the interval's half on the truth's side

For a well-calibrated 95 % interval z has SD ≈ 1 and mean ≈ 0; SD above 1 means the intervals are too narrow, and
the share covered that a normal z with the measured mean and SD implies (``implied``) is then below 0.95.

Usage: ``.venv/bin/python benchmarks/coverage_calibration.py --page ope_coverage_s43x40 --work /work/s43/cov
--out coverage_calibration_s43`` (the page's work directory holds its per-dataset parts). Writes
benchmarks/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402

TARGETS = ("return", "cost_spo2_low", "cost_urine_low", "cost_total")
REGIMES = ("gate", "below", "all")


def standardised_error(est: dict[str, float], truth: float) -> float:
    """(truth − value) in units of the interval's standard error on the truth's side (nan for a zero half)."""
    half = est["ci_high"] - est["value"] if truth > est["value"] else est["value"] - est["ci_low"]
    return (truth - est["value"]) / (half / 1.96) if half > 0 else float("nan")


def calibration(hits: list[bool], z: list[float]) -> dict[str, float]:
    """The count's share with its Clopper–Pearson 95 % interval, z's mean and SD, and the two-sided coverage a
    normal z with that mean and SD implies."""
    k, n = int(sum(hits)), len(hits)
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    zs = np.asarray(z, dtype=float)
    zs = zs[np.isfinite(zs)]
    mean, sd = (float(zs.mean()), float(zs.std(ddof=1))) if len(zs) > 1 else (float("nan"), float("nan"))
    implied = float(stats.norm.cdf((1.96 - mean) / sd) - stats.norm.cdf((-1.96 - mean) / sd)) if sd > 0 \
        else float("nan")
    return {"covered": k, "intervals": n, "coverage": k / n, "ci_low": float(ci.low), "ci_high": float(ci.high),
            "z_mean": mean, "z_sd": sd, "implied": implied}


def rows_of(cov: dict[str, Any], truths: dict[str, dict], min_ess: float, estimators: list[str]) -> list[dict]:
    """One row per estimator × target × regime over every dataset's policies (two-sided and gate-side counts, the
    range of the estimates' ESS)."""
    rows = []
    for e in estimators:
        for target in TARGETS:
            got: dict[str, dict[str, list]] = {r: {"two": [], "side": [], "z": [], "ess": []} for r in REGIMES}
            for ds in cov.values():
                for name, r in ds.items():
                    est = bench_ope.estimate_of(r, e, target)
                    if est is None:
                        continue
                    t = bench_ope.true_target(r.get("truth") or truths[name], target)
                    regime = "gate" if est.get("ess", np.nan) >= min_ess else "below"
                    for g in (got[regime], got["all"]):
                        g["two"].append(est["ci_low"] <= t <= est["ci_high"])
                        g["side"].append(t >= est["ci_low"] if target == "return" else t <= est["ci_high"])
                        g["z"].append(standardised_error(est, t))
                        g["ess"].append(est.get("ess", np.nan))
            for regime, g in got.items():
                if g["two"]:
                    side = calibration(g["side"], [])
                    rows.append({"estimator": e, "target": target, "regime": regime, **calibration(g["two"], g["z"]),
                                 "gate_side": side["coverage"], "gate_side_ci_low": side["ci_low"],
                                 "ess_min": float(np.nanmin(g["ess"])), "ess_max": float(np.nanmax(g["ess"]))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", required=True, help="a bench_ope.py coverage page (benchmarks/results/<page>.json)")
    ap.add_argument("--work", type=Path, required=True, help="that page's --work directory (its coverage parts)")
    ap.add_argument("--estimators", default="wdr,hull_fqe_wdr,fqe,consensus")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    page = json.loads((bench_ope.HERE / "results" / f"{args.page}.json").read_text())
    parts = sorted(args.work.glob(f"coverage_{args.page}_[0-9]*.json"))
    if not parts:
        raise SystemExit(f"--work {args.work}: no coverage parts coverage_{args.page}_*.json")
    cov = {k: v for p in parts for k, v in json.loads(p.read_text()).items()}
    if len(cov) != page["coverage"]["datasets"]:
        raise SystemExit(f"{args.page}: {page['coverage']['datasets']} datasets on the page, {len(cov)} in the parts")
    min_ess = page["coverage"]["min_ess"]
    rows = rows_of(cov, page["truth"], min_ess, args.estimators.split(","))
    result = {"rows": rows, "meta": {"date": dt.date.today().isoformat(), "page": args.page, "datasets": len(cov),
                                     "min_ess": min_ess, "command": f"benchmarks/coverage_calibration.py "
                                                                    f"{' '.join(sys.argv[1:])}"}}
    out = bench_ope.HERE / "results" / args.out
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    md = [f"# Interval calibration: {args.out} (`benchmarks/coverage_calibration.py`, {result['meta']['date']})", "",
          f"Command: `{result['meta']['command']}`", "",
          f"Page `{args.page}`: {len(cov)} datasets, policies {page['coverage']['policies']}. Regime `gate`: "
          f"ESS ≥ {min_ess:g} (where the promotion gate decides); `below`: where it answers insufficient evidence. "
          "Coverage: two-sided, with its Clopper–Pearson 95 % interval; gate side: the bound the gate reads. z: "
          "(truth − estimate) in standard errors of the interval's side (SD 1 when calibrated); implied: the "
          "two-sided coverage a normal z with that mean and SD gives.", "",
          "| estimator | target | regime | ESS | covered | coverage [95 % CI] | gate side | z mean | z SD | implied |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['estimator']} | {r['target']} | {r['regime']} | {r['ess_min']:.1f} – {r['ess_max']:.1f} | "
           f"{r['covered']} / {r['intervals']} | "
           f"{r['coverage']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['gate_side']:.3f} | "
           f"{r['z_mean']:+.2f} | {r['z_sd']:.2f} | {r['implied']:.3f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
