"""FQE's bias without the truth (issue 12): a single FQE fit per critic setting and policy, read on the validation
and test splits' first states, beside the clinicians' logged mean return and, where a saved rank page has it, the
policy's true return.

π̂_b's FQE value should equal the logged mean (the data come from that policy): the gap is the critic's own bias,
measured without a simulator. Settings: ``base`` (params ``ope.fqe``), ``ep6`` (6 epochs per backup), ``h128``
((128, 128) layers), ``binned`` (the 5 × 5 tabular head). One fit each, critic seed from ``ope.seed`` (as the
pipeline's full-data critic); policies as ``bench_ope.py --spread`` builds them (rule clones cached in ``--work``).

Usage:
  .venv/bin/python benchmarks/probe_fqe_bias.py --root <make-run root> [--settings base,binned]
      [--policies soc/seed42,soc_noise0.1,heuristic1.0] [--truth-page ope_rank_s11b] [--work /tmp/bench_ope]
Prints one line per setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ope  # noqa: E402

from ogsrl.agents import common  # noqa: E402
from ogsrl.config import load_params  # noqa: E402
from ogsrl.ope import fqe  # noqa: E402
from ogsrl.ope import stage as ope_stage  # noqa: E402
import exclusive  # noqa: E402

SETTINGS = {"base": {}, "ep6": {"epochs": 6}, "h128": {"hidden": (128, 128)}, "binned": {"action": "binned"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--settings", default="base,ep6,h128,binned")
    ap.add_argument("--policies", default="soc/seed42,soc_noise0.1,soc_noise0.3,heuristic1.0,clin_vaso0.5")
    ap.add_argument("--truth-page", default="ope_rank_s11b", help="saved bench_ope page with the policies' truth")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_ope"))
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    root = args.root.resolve()
    params = load_params(root / "params.yaml")
    cfg = ope_stage.ope_config(params)
    train, _ = common.read_split(root / "data/trajectories/train.parquet")
    val, meta = common.read_split(root / "data/trajectories/val.parquet")
    test, _ = common.read_split(root / "data/trajectories/test.parquet")
    costs = tuple(meta["cost_columns"])
    pols = bench_ope.build_policies(root, params, train, val, args.work, spread=True)
    page = bench_ope.HERE / "results" / f"{args.truth_page}.json"
    truth = json.loads(page.read_text())["truth"] if page.is_file() else {}
    names = [n for n in args.policies.split(",") if n]
    fit_seed = int(ope_stage.critic_seeds(cfg.seed)[0].generate_state(1)[0])

    def logged(df: object) -> float:
        return float(df.groupby("stay_key")["reward"].sum().mean())  # type: ignore[attr-defined]

    print(f"logged mean return: val {logged(val):.2f}, test {logged(test):.2f}")
    for setting in (s for s in args.settings.split(",") if s):
        fc = dataclasses.replace(cfg.fqe, **SETTINGS[setting])
        c = dataclasses.replace(cfg, fqe=fc)
        edges = ope_stage.action_bin_edges(root / "data/trajectories/test.parquet") if fc.action == "binned" else None
        splits = {name: ope_stage.critic_data(c, train, df, costs, edges) for name, df in (("val", val), ("test", test))}
        cells = []
        for n in names:
            rng = np.random.default_rng(0)
            critic = fqe.fit(fc, splits["val"].train, ope_stage._draws(pols[n], train, fc.mc_actions, rng, fc, edges, n),
                             cfg.gamma, fit_seed)
            reads = []
            for name, df in (("val", val), ("test", test)):
                cd = splits[name]
                draws = ope_stage._draws(pols[n], df, fc.mc_actions, rng, fc, edges, n)
                first = np.nonzero(cd.test.step == 0)[0]
                reads.append(fqe.initial_values(critic, cd.test.obs, cd.test.step, draws, first)[:, 0].mean())
            true = f"{truth[n]['return']:.1f}" if n in truth else "–"
            cells.append(f"{n}: val {reads[0]:.1f} test {reads[1]:.1f} true {true}")
        print(f"{setting} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
