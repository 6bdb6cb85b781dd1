"""A fresh demo dataset for the spread-set benchmarks (issue 12): a base project's models on other patients.

Copies ``--base`` (its params, trained models — policies, behaviour clone, guardian, world model — and reports;
not its environment, git, DVC cache or tracking store) to ``--dest`` and generates, validates and extracts the demo there at synth seed ``--seed`` (the simulator, cohort and logging policy
unchanged), as :func:`probe_logging_policy.regenerate` does for ``reseeded``. ``bench_anchored.py --root <dest>``
then fits its evaluation models on the new test split and reads the base project's policies.

Usage:
  .venv/bin/python benchmarks/reseed_set.py --base <make-run project> --dest <new dir> --seed 57
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_logging_policy  # noqa: E402
import exclusive  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="a project after make run")
    ap.add_argument("--dest", type=Path, required=True, help="the new project (must not exist)")
    ap.add_argument("--seed", type=int, required=True, help="synth.seed of the new dataset")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    if args.dest.exists():
        raise SystemExit(f"{args.dest} exists: choose a new directory")
    doc = yaml.safe_load((args.base / "params.yaml").read_text())
    if doc["synth"]["seed"] == args.seed:
        raise SystemExit(f"--seed {args.seed} is the base project's own synth seed")
    doc["synth"]["seed"] = args.seed - 1  # regenerate("reseeded") adds one
    shutil.copytree(args.base, args.dest, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", ".git", ".dvc", ".prefect", "mlruns", "*.db", "raw"))
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.yaml"
        params.write_text(yaml.safe_dump(doc, sort_keys=False))
        test = probe_logging_policy.regenerate("reseeded", params, args.dest)
    print(f"{args.dest}: synth seed {args.seed}, test split {test}")


if __name__ == "__main__":
    main()
