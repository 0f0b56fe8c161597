"""Benchmark: the gradient probe in one process against N processes (one GPU each), on the same batches.

The N processes each take every N-th batch, sum their accumulators across processes (`probes.distributed`), then
each estimates every N-th row (the sign-flip test is most of the probe's time at LLM scale) and shares the rows.
Both runs measure the same random-init model (built on the CPU from one seed, then moved) and the same random-token
batches; this prints and writes each phase's wall time, the speed-up, and the agreement of every estimator's rank
and of the top-8 singular values. Target (issue 10): N processes give the ranks of one.

Run (a host with N GPUs, after `source scripts/gpu_env.sh`; NCCL, NVLink multicast left off):
    python3 benchmarks/bench_distributed.py --shape llama-1b --procs 2 --json $OUT/probe-distributed-llama-1b.json
CPU smoke (gloo): python3 benchmarks/bench_distributed.py --shape llama-tiny --device cpu --procs 2 --batches 8
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def worker(args) -> None:
    """One process of a run (WORLD_SIZE processes, or one): probe the shape's batches, rank 0 writes JSON."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from bench_probe import SHAPES, random_token_batches
    from intrinsic.arch import discover
    from intrinsic.probes.distributed import init_from_env, world
    from intrinsic.probes.gradient import accumulate_gradients
    from intrinsic.probes.rows import gradient_rows
    from intrinsic.probes.topk import measure_sums_topk

    init_from_env()
    rank, size = world()
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if args.device == "cuda" else "cpu")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    overrides, batch, seq = SHAPES[args.shape]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**overrides), dtype=torch.float32)
    model = model.to(device=device, dtype=dtype).eval()
    refs = discover(model)
    real = random_token_batches(args.batches, batch, seq, overrides["vocab_size"], seed=1)
    shuffled = random_token_batches(args.batches, batch, seq, overrides["vocab_size"], seed=2, shuffled=True)

    def lap(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if size > 1:
            torch.distributed.barrier()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if size > 1:
            torch.distributed.barrier()
        return out, time.perf_counter() - t0

    accumulate_gradients(model, refs, real[:2], shuffled[:2], folds=0)  # warm-up (context, kernels): not timed
    sums, t_acc = lap(lambda: accumulate_gradients(model, refs, real, shuffled, folds=args.folds))
    spec, t_spec = lap(lambda: measure_sums_topk(sums, args.batches * batch * seq, 128, 0))
    rows, t_est = lap(lambda: gradient_rows(refs, spec, "sign_flip" if args.folds else "half_difference"))
    if rank == 0:
        res = {"processes": size, "accumulate_s": t_acc, "spectra_s": t_spec, "estimate_s": t_est,
               "probe_s": t_acc + t_spec + t_est, "rows": len(rows),
               "ranks": {r.name: dict(r.grad_ranks) for r in rows},
               "designated": {r.name: r.intrinsic_rank for r in rows},
               "top8": {r.name: list(r.grad_sv[:8]) for r in rows},
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        Path(args.worker_out).write_text(json.dumps(res))
    if size > 1:
        torch.distributed.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, procs: int, out: Path) -> dict:
    """Run `procs` worker processes (ranks 0..procs-1, GPU = local rank) and read rank 0's JSON."""
    argv = [sys.executable, __file__, "--worker-out", str(out), "--shape", args.shape, "--device", args.device,
            "--dtype", args.dtype, "--batches", str(args.batches), "--folds", str(args.folds)]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_port()), "WORLD_SIZE": str(procs),
           "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    ps = [subprocess.Popen(argv, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(procs)]
    codes = [p.wait() for p in ps]
    if any(codes):
        raise SystemExit(f"a worker failed (exit codes {codes})")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-1b", choices=["llama-1b", "llama-8b", "llama-tiny"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--procs", type=int, default=2, help="processes of the distributed run (one GPU each)")
    ap.add_argument("--batches", type=int, default=32, help="batches of the shape's size (real and as many shuffled)")
    ap.add_argument("--folds", type=int, default=8, help="fold means for the sign-flip test (0: off)")
    ap.add_argument("--json", default=None, help="where to write the comparison")
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_out:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        one = launch(args, 1, Path(tmp) / "one.json")
        many = launch(args, args.procs, Path(tmp) / "many.json")
    names = list(one["designated"])
    agree = sum(one["designated"][n] == many["designated"][n] for n in names) / len(names)
    every = sum(one["ranks"][n] == many["ranks"][n] for n in names) / len(names)
    err = max(abs(a - b) / max(abs(a), 1e-12) for n in names for a, b in zip(one["top8"][n], many["top8"][n]))
    res = {"shape": args.shape, "batches": args.batches, "folds": args.folds, "dtype": args.dtype,
           "device_name": one["device_name"], "one": {k: v for k, v in one.items() if k in PHASES},
           "many": {k: v for k, v in many.items() if k in PHASES}, "processes": args.procs,
           "speedup": one["probe_s"] / many["probe_s"], "designated_agree": agree, "all_estimators_agree": every,
           "top8_rel_err_max": err, "rows": len(names)}
    for who in ("one", "many"):
        r = res[who]
        print(f"{one['processes'] if who == 'one' else args.procs} process(es): accumulate {r['accumulate_s']:.2f} s, "
              f"spectra {r['spectra_s']:.2f} s, estimators {r['estimate_s']:.2f} s, probe {r['probe_s']:.2f} s")
    print(f"speed-up {res['speedup']:.2f}x; designated ranks agree on {100 * agree:.1f}% of {len(names)} rows, every "
          f"estimator on {100 * every:.1f}%; top-8 values relative difference max {err:.1e}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")


PHASES = ("accumulate_s", "spectra_s", "estimate_s", "probe_s")

if __name__ == "__main__":
    main()
