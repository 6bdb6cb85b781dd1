"""The ogsrl pipeline as a Prefect flow: the same stages as dvc.yaml, in the same order, as thin tasks.

Runs on Prefect's ephemeral API by default: no server, analytics off, state in ``<project>/.prefect`` (the
defaults from :mod:`ogsrl.env` are applied before Prefect is imported). To use a Prefect server instead, export
``PREFECT_API_URL`` first.

    python -m flows.pipeline                  # stage functions in-process (no dvc.lock update)
    python -m flows.pipeline --dvc            # each task runs `dvc repro --single-item <stage>`
    python -m flows.pipeline --stages generate validate-raw

Stages run one after another (each reads the previous one's outputs); parallelism belongs inside a stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]

from ogsrl import env  # noqa: E402

env.setdefaults(PROJECT_ROOT)

from prefect import flow  # noqa: E402

from ogsrl import config, privacy  # noqa: E402

from tasks.calibrate_guardian import calibrate_guardian  # noqa: E402
from tasks.clinical import clinical  # noqa: E402
from tasks.evaluate import evaluate  # noqa: E402
from tasks.extract import extract  # noqa: E402
from tasks.fit_behaviour import fit_behaviour  # noqa: E402
from tasks.fit_world_model import fit_world_model  # noqa: E402
from tasks.generate import generate  # noqa: E402
from tasks.report import report  # noqa: E402
from tasks.simulate_truth import simulate_truth  # noqa: E402
from tasks.train_policies import train_policies  # noqa: E402
from tasks.validate_raw import validate_raw  # noqa: E402
from tasks.validate_trajectories import validate_trajectories  # noqa: E402

TASKS = {
    "generate": generate,
    "validate-raw": validate_raw,
    "extract": extract,
    "validate-trajectories": validate_trajectories,
    "fit-world-model": fit_world_model,
    "calibrate-guardian": calibrate_guardian,
    "train-policies": train_policies,
    "fit-behaviour": fit_behaviour,
    "simulate-truth": simulate_truth,
    "evaluate": evaluate,
    "clinical": clinical,
    "report": report,
}
"""Stage command → task, in pipeline order (the dvc.yaml stages)."""


@flow(name="ogsrl-pipeline")
def pipeline(
    params: str = "params.yaml", root: str = ".", use_dvc: bool = False, stages: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Run the pipeline stages in order; a failing stage fails the flow run and stops the later stages.

    Args:
        params: params file, relative to ``root`` unless absolute.
        root: project root.
        use_dvc: run each stage through `dvc repro --single-item` (keeps dvc.lock and the cache consistent).
        stages: a subset of stage commands to run (still in pipeline order); default all.

    Returns:
        Stage command → the metrics it returned.
    """
    selected = list(TASKS) if stages is None else [s.replace("_", "-") for s in stages]
    unknown = sorted(set(selected) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(TASKS)}")
    root_path = Path(root).resolve()
    params_path = Path(params) if Path(params).is_absolute() else root_path / params
    if "generate" in selected or "validate-raw" in selected or "extract" in selected:
        # DVC cannot see a secret salt: record its fingerprint, which the id-hashing stages depend on
        privacy.write_fingerprint(config.load_params(params_path), root_path)
    results: dict[str, dict[str, Any]] = {}
    for name, task in TASKS.items():
        if name in selected:
            results[name] = task(params, root, use_dvc)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (relative to --root)")
    parser.add_argument("--root", default=".", help="project root")
    parser.add_argument("--dvc", action="store_true", help="run each stage via `dvc repro --single-item`")
    parser.add_argument("--stages", nargs="+", default=None, help=f"subset of {list(TASKS)}")
    args = parser.parse_args(argv)
    results = pipeline(args.params, args.root, args.dvc, args.stages)
    print(json.dumps(results, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
