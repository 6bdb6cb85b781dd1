"""Compressed bytes per row of the full-size stand-in, on a sample, against the real MIMIC-IV v3.1 files.

Pads a small generated demo (``--base``, e.g. ``ogsrl synth --stays 2000``) with ``ogsrl synth-filler`` at
``--scale`` = stays / 94,458 (so base and filler rows keep their full-size proportions), then per padded table
reports rows, bytes as written (``gzip -1``, our writer), bytes after recompressing at ``gzip -6`` (gzip's default
level, which we assume PhysioNet used) and the real file's bytes per row. Usage::

    python benchmarks/calibrate_filler.py --base /work/fullsize/cal-base --stays 2000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from ogsrl.synth import filler
from ogsrl.synth import tables as T
import exclusive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--stays", type=int, required=True, help="ICU stays of the base demo")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tables", nargs="+", default=list(filler.PADDED), choices=list(filler.PADDED))
    a = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    scale = a.stays / filler.MIMIC_IV_STAYS
    out = Path(tempfile.mkdtemp(prefix="ogsrl-calibrate-")) / "filled"
    try:
        targets = filler.targets_for(scale)
        report = filler.add_filler(a.base, out, targets, a.seed, "csv.gz")
        print(f"scale {scale:.5f}, built in {report['seconds']} s")
        print("| table | rows | base share | B/row gzip -1 | B/row gzip -6 | real B/row | -6 / real |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for t in a.tables:
            path = out / T.MODULE[t] / f"{t}.csv.gz"
            rows = targets[t]
            level6 = int(subprocess.run(f"gzip -dc '{path}' | gzip -6 -c | wc -c", shell=True, check=True,
                                        capture_output=True, text=True).stdout)
            real = filler.MIMIC_IV_BYTES[t] / filler.MIMIC_IV_ROWS[t]
            print(f"| {t} | {rows:,} | {report[f'share_base.{t}']:.3f} | {path.stat().st_size / rows:.2f} | "
                  f"{level6 / rows:.2f} | {real:.2f} | {level6 / rows / real:.2f} |", flush=True)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
