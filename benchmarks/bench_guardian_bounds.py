"""Benchmark: the guardian scaled from the data's quantiles vs from the schema's declared bounds.

For each project (``--root``, a directory whose ``data/trajectories/{train,val,test}.parquet`` exist) the
``calibrate_guardian`` stage runs twice on a scratch copy of the trajectories, with the params.yaml of this checkout
(``--params``) and ``guardian.scaling.bounds`` set to ``data`` and to ``schema``. Recorded per run: the Christoffel
guardian's test coverage (per stay and per row), its false-accept rates on the OOD probes, the volume proxy in its
own scaled box, the volume in the *data*-scaled box (the same uniform draws for both settings, so the two sets are
compared on one reference box), the threshold, and how many inputs took the declared bounds. Per project also the
declared width over the data's q0.001–q0.999 width of every column that takes the declared bounds, and the
Christoffel test coverage and shifted-states false-accept rate at ridge 1e-6 and 1e-10 (row conformal rule): the
Christoffel function of full degree-k polynomials is affine-invariant, so any difference is the ridge's.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_guardian_bounds.py --root DEMO_PROJECT --root MDP_PROJECT
Writes benchmarks/results/guardian_bounds.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ogsrl import guardian as guardian_mod
from ogsrl.config import load_params
from ogsrl.data.schema import load_table_schema
from ogsrl.guardian import ood, stage
from ogsrl.guardian.christoffel import ChristoffelConfig, ChristoffelGuardian
from ogsrl.guardian.conformal import CalibrationConfig
from ogsrl.guardian.scaling import Scaler, ScalingConfig
import exclusive

KEYS = ("christoffel/test_coverage_stay", "christoffel/test_coverage", "christoffel/false_accept_extreme_actions",
        "christoffel/false_accept_shifted_states", "christoffel/false_accept_extreme_policy",
        "christoffel/volume_proxy", "volume_in_data_box", "christoffel/threshold", "scaling/n_from_schema",
        "ood/skipped_extreme_actions")


def stage_runs(traj: Path, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stage's metrics with bounds data and schema, plus the volume of each guardian in the data-scaled box."""
    out = {}
    for bounds in ("data", "schema"):
        root = Path(tempfile.mkdtemp())
        try:
            (root / "data").mkdir()
            shutil.copytree(traj, root / "data/trajectories")
            p = copy.deepcopy(params)
            p["guardian"]["scaling"]["bounds"] = bounds
            m = stage.run(p, root)
            g = guardian_mod.load(root / "data/models/guardian/christoffel")
            x_fit, names = stage.read_split(root / "data/trajectories/train.parquet")
            box = Scaler.fit(x_fit, names, ScalingConfig(p["guardian"]["scaling"]["quantile"]), g.discrete)
            raw = box.inverse_transform(box.sample_box(np.random.default_rng(p["guardian"]["seed"]), 100_000))
            m["volume_in_data_box"] = float(np.mean(g.contains(raw)))
            out[bounds] = m
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return out


def width_ratios(traj: Path) -> dict[str, float]:
    """Declared width / data q0.001–q0.999 width of each non-binary input with finite declared bounds."""
    x, names = stage.read_split(traj / "train.parquet")
    discrete, declared = stage.guardian_inputs(load_table_schema(traj / "train.parquet"), names)
    out = {}
    for j, name in enumerate(names):
        lo, hi = declared.get(name, (-np.inf, np.inf))
        if name in discrete or not (np.isfinite(lo) and np.isfinite(hi)) or np.unique(x[:, j]).size <= 2:
            continue
        q = np.quantile(x[:, j], [0.001, 0.999])
        out[name] = float((hi - lo) / max(q[1] - q[0], 1e-12))
    return out


def ridge_check(traj: Path, seed: int) -> list[tuple[float, str, float, float]]:
    """(ridge, bounds, test coverage, shifted-states false accepts) with the row conformal rule at α_c = 0.95."""
    xs = {s: stage.read_split(traj / f"{s}.parquet")[0] for s in ("train", "val", "test")}
    names = stage.read_split(traj / "train.parquet")[1]
    schema = load_table_schema(traj / "train.parquet")
    discrete, declared = stage.guardian_inputs(schema, names)
    shifted = ood.shifted_states(xs["test"], xs["train"], names, np.random.default_rng(seed), 2000,
                                 tuple(schema.action_columns))
    rows = []
    for ridge in (1e-6, 1e-10):
        for bounds in ("data", "schema"):
            g = ChristoffelGuardian(names, ChristoffelConfig(ridge=ridge),
                                    CalibrationConfig(rule="conformal", unit="row"), ScalingConfig(bounds=bounds),
                                    discrete, declared).fit(xs["train"]).calibrate(xs["val"])
            thr = g.certificate().threshold
            rows.append((ridge, bounds, float(np.mean(g.score(xs["test"]) <= thr)),
                         float(np.mean(g.score(shifted) <= thr))))
    return rows


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", action="append", required=True, type=Path, help="project with data/trajectories")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/guardian_bounds.md"))
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    params = load_params(args.params)
    lines = [f"# Guardian scaling: data quantiles vs declared bounds ({datetime.date.today()})", "",
             "`" + " ".join(["benchmarks/bench_guardian_bounds.py", *(f"--root {r}" for r in args.root)]) + "`", ""]
    for root in args.root:
        traj = root / "data/trajectories"
        runs = stage_runs(traj, params)
        ratios = width_ratios(traj)
        lines += [f"## {root}", "", "| metric | bounds: data | bounds: schema |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(runs['data'].get(k))} | {_fmt(runs['schema'].get(k))} |" for k in KEYS]
        if ratios:
            r = np.array(list(ratios.values()))
            lines += ["", f"Declared width / data q0.001–q0.999 width over {len(r)} columns: "
                      f"median {np.median(r):.2f}, max {r.max():.2f} ({max(ratios, key=ratios.__getitem__)})."]
        lines += ["", "| ridge | bounds | test coverage (row conformal) | FA shifted states |", "|---|---|---|---|"]
        checks = ridge_check(traj, params["guardian"]["seed"])
        lines += [f"| {rg:g} | {b} | {c:.4f} | {fa:.4f} |" for rg, b, c, fa in checks]
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
