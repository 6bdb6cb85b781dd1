"""Benchmark the demo simulator: wall time, rows/s and peak RSS of `ogsrl synth` for several sizes.

Usage: python benchmarks/bench_synth.py [STAYS ...]   (default: 500 5000 50000; 500 is the in-run baseline)
Writes benchmarks/results/synth.md. Each size runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
import exclusive

CHILD = """
import json, resource, sys, time
from pathlib import Path
from ogsrl.synth import stage
t = time.perf_counter()
m = stage.generate(int(sys.argv[1]), 42, Path(sys.argv[2]), chunk_stays=2500)
m["wall_s"] = time.perf_counter() - t
m["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(m))
"""


def run(stays: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "raw"
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", CHILD, str(stays), str(out)], capture_output=True, text=True,
                             check=True)
        m = json.loads(res.stdout.strip().splitlines()[-1])
        m["process_s"] = time.perf_counter() - t
        m["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    rows = sum(v for k, v in m.items() if k.startswith("synth/rows_"))
    return {"stays": stays, "wall_s": m["wall_s"], "rows": rows, "rows_per_s": rows / m["wall_s"],
            "stays_per_s": stays / m["wall_s"], "peak_rss_mb": m["peak_rss_mb"], "mb_written": m["bytes"] / 2**20,
            "mortality": m["synth/behaviour_mortality_hosp"]}


def main() -> None:
    exclusive.hold(Path(__file__).stem)
    sizes = [int(a) for a in sys.argv[1:]] or [500, 5000, 50000]
    results = []
    for n in sizes:
        r = run(n)
        results.append(r)
        print(json.dumps(r), flush=True)
    base = results[0]
    lines = [
        "# Simulator benchmark (`ogsrl synth`, csv.gz, chunk_stays 2500)",
        "",
        f"Machine: {os.cpu_count()} CPUs visible (shared; timings are rough). Baseline = the first size "
        f"({base['stays']} stays) in the same run.",
        "",
        "| stays | wall s | rows | rows/s | throughput vs baseline | peak RSS MB | RSS vs baseline | MB written |"
        " behaviour in-hosp mortality |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['stays']} | {r['wall_s']:.1f} | {r['rows']} | {r['rows_per_s']:.0f} | "
                     f"{r['rows_per_s'] / base['rows_per_s']:.2f}× | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}× | {r['mb_written']:.1f} | {r['mortality']:.3f} |")
    out = Path(__file__).resolve().parent / "results" / "synth.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(out.read_text())


if __name__ == "__main__":
    main()
