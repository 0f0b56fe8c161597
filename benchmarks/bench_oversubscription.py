"""Benchmark: several processes doing float64 linear algebra at once, with torch's default CPU threads against a
thread cap, side by side in one run. Why `scripts/gpu_pool.py` caps OMP/MKL/OpenBLAS threads at cores / slots.

Each process runs `--reps` calls of `torch.linalg.svdvals` on a float64 matrix of SmolLM2's MLP shape (576 x
1536: what the probe's weight-alpha statistic does per module, on the CPU). For every thread count T of
`--threads`, one process alone, then `--procs` processes at once, each with OMP_NUM_THREADS = T. Reported per T:
seconds alone, mean seconds of a process among --procs, and the slowdown against the ideal of that many
processes sharing the cores (procs x alone x min(T, cores) / cores, at least alone).

Run: python benchmarks/bench_oversubscription.py [--procs 4] [--threads 0,1] [--reps 10] [--out benchmarks/results]
(0 = torch's default, the number of cores). Prints a table and writes oversubscription-cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = ("import sys, time, torch; torch.manual_seed(0); "
          "A = torch.randn(int(sys.argv[2]), int(sys.argv[3]), dtype=torch.float64); t = time.perf_counter(); "
          "[torch.linalg.svdvals(A) for _ in range(int(sys.argv[1]))]; print(time.perf_counter() - t)")


def _run(n: int, threads: int, reps: int, shape: tuple[int, int]) -> list[float]:
    """Seconds of each of `n` worker processes started at once with `threads` threads (0: the default)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(var, None)
        if threads:
            env[var] = str(threads)
    argv = [sys.executable, "-c", WORKER, str(reps), str(shape[0]), str(shape[1])]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    out = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a worker failed")
    return [float(o.strip().splitlines()[-1]) for o in out]


def measure(procs: int, threads: list[int], reps: int, shape: tuple[int, int]) -> dict:
    cores = os.cpu_count() or 1
    rows = []
    for t in threads:
        alone = _run(1, t, reps, shape)[0]
        each = _run(procs, t, reps, shape)
        used = min(t or cores, cores)
        ideal = max(alone, procs * alone * used / cores)
        rows.append({"threads": t or cores, "default": t == 0, "alone_s": alone, "shared_s": statistics.mean(each),
                     "shared_runs_s": each, "ideal_s": ideal, "slowdown_vs_ideal": statistics.mean(each) / ideal})
    return {"cores": cores, "procs": procs, "reps": reps, "shape": list(shape), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--threads", default="0,1", help="comma-separated thread counts; 0 = torch's default")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--shape", default="576,1536")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args(argv)
    try:
        threads = [int(x) for x in a.threads.split(",")]
        shape = tuple(int(x) for x in a.shape.split(","))
    except ValueError:
        print("--threads and --shape take comma-separated integers", file=sys.stderr)
        return 2
    if a.procs < 1 or a.reps < 1 or len(shape) != 2 or min(shape) < 1 or min(threads) < 0:
        print("--procs, --reps and the shape must be positive, --threads at least 0", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    res = measure(a.procs, threads, a.reps, shape)
    print(f"{res['procs']} processes on {res['cores']} cores, {a.reps} x svdvals of a {shape[0]}x{shape[1]} float64")
    print(f"{'threads':>12} {'alone s':>8} {'shared s':>9} {'ideal s':>8} {'slowdown':>9}")
    for r in res["rows"]:
        name = f"{r['threads']}{' (default)' if r['default'] else ''}"
        print(f"{name:>12} {r['alone_s']:8.2f} {r['shared_s']:9.2f} {r['ideal_s']:8.2f} {r['slowdown_vs_ideal']:8.2f}x")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "oversubscription-cpu.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**res, "seconds": time.perf_counter() - t0}, indent=1))
    tmp.replace(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
