"""Serving under load: `ogsrl serve` on loopback, 4 concurrent clients, single rows and batches of 100.

Bundles the trained artefacts of a project (``<root>/data/models``: the served policy of ``--run``/``--seed``, the
certified guardian, the world model's cost heads) exactly as ``ogsrl register`` does, starts ``ogsrl serve
--model-uri <bundle>`` as a subprocess on 127.0.0.1 (a free port), and drives it from ``--clients`` threads, each
sending POST /recommend requests built from real test-split states for ``--seconds`` or at most ``--max-requests``
per mode (bounded in count and time). Reports throughput (requests/s, rows/s), p50/p99 latency and the number of
non-200 answers, and writes ``benchmarks/results/serve.md`` (``python benchmarks/collect.py`` merges it into
RESULTS.md). Run it with ``OMP_NUM_THREADS=1`` (the server's torch threads then do not compete with the clients).

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py --root . --seconds 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import exclusive

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(port: int, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/recommend", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def build_bundle(root: Path, run: str, seed: int, out: Path) -> list[str]:
    """The bundle `ogsrl register` would build from ``root``'s artefacts; returns the policy's state columns."""
    from ogsrl.config import load_params
    from ogsrl.registry import bundle as bundle_mod

    params = load_params(root / "params.yaml")
    guardian = root / "data/models/guardian"
    world = root / "data/models/world"
    bundle_mod.build_bundle(out, policy_dir=root / f"data/models/policies/{run}/seed{seed}",
                            guardian_dir=guardian if (guardian / "certificate.json").is_file() else None,
                            cost_rules=list(dict(params.get("costs") or {}).get("rules") or []),
                            cost_model_dir=world if world.is_dir() else None,
                            notes={"run": run, "seed": seed, "bench": "bench_serve"})
    return list(json.loads((out / bundle_mod.BUNDLE_FILE).read_text())["state_features"])


def drive(port: int, bodies: list[bytes], clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """``clients`` threads post ``bodies`` round-robin until ``seconds`` pass or ``max_requests`` are sent."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        i = k
        while True:
            with lock:
                if sent[0] >= max_requests or time.perf_counter() >= stop:
                    return
                sent[0] += 1
            body = bodies[i % len(bodies)]
            i += clients
            t0 = time.perf_counter()
            try:
                status, raw = _post(port, body)
            except OSError as exc:
                status, raw = -1, str(exc).encode()
            dt_s = time.perf_counter() - t0
            with lock:
                latencies.append(dt_s)
                if status != 200:
                    errors.append(f"{status}: {raw[:200]!r}")

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000.0
    return {"requests": len(latencies), "wall_s": wall, "errors": len(errors), "first_error": errors[:1],
            "req_per_s": len(latencies) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(REPO), help="project holding data/models and data/trajectories")
    ap.add_argument("--run", default="gmb_cpo", help="policy run to serve (default: gmb_cpo, the registry's)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0, help="per mode (single rows, batches)")
    ap.add_argument("--max-requests", type=int, default=5000, help="per mode")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--out", default=str(HERE / "results" / "serve.md"))
    ap.add_argument("--source", default="", help="where the artefacts come from (printed in the results page)")
    args = ap.parse_args(argv)
    exclusive.hold(Path(__file__).stem)
    root = Path(args.root).resolve()

    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="ogsrl-bench-serve-") as tmp:
        bundle = Path(tmp) / "bundle"
        cols = build_bundle(root, args.run, args.seed, bundle)
        test = pd.read_parquet(root / "data/trajectories/test.parquet", columns=cols)
        rows = test.sample(n=min(len(test), 5000), random_state=0).to_dict("records")
        singles = [json.dumps({"states": [r]}).encode() for r in rows[:500]]
        batches = [json.dumps({"states": rows[i:i + args.batch]}).encode()
                   for i in range(0, len(rows) - args.batch + 1, args.batch)][:50]
        port = _free_port()
        env = {**os.environ, "OGSRL_NO_TRACK": "1", "PYTHONPATH": str(REPO)}
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "ogsrl.cli", "--root", str(root), "serve", "--model-uri", str(bundle),
                 "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                        conn.request("GET", "/health")
                        if conn.getresponse().status == 200:
                            break
                    except OSError:
                        pass
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("server did not start:\n" + log_path.read_text()[-3000:])
                    time.sleep(0.25)
                drive(port, singles[:20], 1, 5.0, 20)  # warm-up, not reported
                res = {"single row": drive(port, singles, args.clients, args.seconds, args.max_requests),
                       f"batch of {args.batch}": drive(port, batches, args.clients, args.seconds, args.max_requests)}
            finally:
                server.terminate()
                server.wait(timeout=30)
    for mode, r in res.items():
        n = 1 if mode == "single row" else args.batch
        r["rows_per_s"] = r["req_per_s"] * n
        print(f"{mode:>14}: {r['requests']} requests in {r['wall_s']:.1f} s, {r['req_per_s']:.1f} req/s, "
              f"{r['rows_per_s']:.0f} rows/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
              f"errors {r['errors']} {r['first_error']}")
    write_page(Path(args.out), args, res)
    return 0 if all(r["errors"] == 0 for r in res.values()) else 1


def write_page(path: Path, args: argparse.Namespace, res: dict[str, dict[str, Any]]) -> None:
    today = dt.date.today().isoformat()
    lines = [
        f"# Serving under load (`benchmarks/bench_serve.py`, {today})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs visible (shared with other jobs; timings are rough), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. `ogsrl serve` (one process, thread per "
        f"connection, HTTP/1.0: one connection per request) on 127.0.0.1 serving the `{args.run}` seed {args.seed} "
        "bundle (policy with its guardian fallback, Christoffel guardian, world-model cost heads), "
        f"{args.clients} concurrent client threads in another process, real test-split states; each mode runs "
        f"{args.seconds:g} s or {args.max_requests} requests, whichever comes first. Latency = client-side wall time "
        "per request (connect, send, recommend, receive)." + (f" Artefacts: {args.source}." if args.source else ""),
        "",
        "| mode | requests | errors | requests/s | rows/s | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in res.items():
        lines.append(f"| {mode} | {r['requests']} | {r['errors']} | {r['req_per_s']:.1f} | {r['rows_per_s']:.0f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |")
    lines += ["", f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/bench_serve.py "
              f"--root <project> --seconds {args.seconds:g} --clients {args.clients}`.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
