"""A CQL-family checkpoint's raw actor sampled (as served and scored by OPE) against the same actor at its mode, on
simulator truth (issue 14: is raw CQL's mortality its sampled doses?).

Usage: .venv/bin/python benchmarks/probe_cql_mode.py <root> <run> <seed> [episodes=5000] [truth seed=11]
Prints one line per form: mortality, SOFA return, cost per stay (SpO₂, urine).
"""

import sys
from pathlib import Path

from ogsrl.agents import load_policy
from ogsrl.agents.actor import SavedPolicy
from ogsrl.cohort.extract import CohortConfig
from ogsrl.config import build, load_params
from ogsrl.costs import build_costs
from ogsrl.synth.stage import SynthConfig, world_from_params
from ogsrl.synth.truth import evaluate_policy
import exclusive


def main() -> None:
    exclusive.hold(Path(__file__).stem)
    root, run, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    episodes = int(sys.argv[4]) if len(sys.argv) > 4 else 5000
    truth_seed = int(sys.argv[5]) if len(sys.argv) > 5 else 11
    params = load_params(root / "params.yaml")
    raw = load_policy(root / f"data/models/policies/{run}/seed{seed}/policy")
    cfg = build(SynthConfig, params.get("synth"), "synth")
    for form in ("sample", "mode"):
        policy = SavedPolicy(raw.actor, raw.feature_names, form, sample_seed=seed)
        r = evaluate_policy(policy, episodes, truth_seed, world=world_from_params(params), chunk=cfg.chunk_stays,
                            cohort=build(CohortConfig, params.get("cohort"), "cohort"),
                            costs=build_costs(params)).to_dict()
        print(f"{run}/seed{seed} raw {form}: mortality {r['truth/mortality_hosp']:.3f}, return {r['truth/return']:.1f}, "
              f"cost SpO2 {r['truth/cost_return_cost_spo2_low']:.2f}, urine {r['truth/cost_return_cost_urine_low']:.2f}")


if __name__ == "__main__":
    main()
