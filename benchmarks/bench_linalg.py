"""Benchmark: the probe's small linear algebra on a device, the orthonormalizations of this version against
Householder QR and a batched SVD (what the code used before), side by side in one run.

- the sign-flip test (`rank.signflip.sign_flip_test`, 8 folds, 199 resamples, block power iterations of 8
  columns) on SmolLM2's module shapes; method "gram" (shifted CholeskyQR of the 8-column blocks, the GPU default) vs
  "qr" (`torch.linalg.qr`, the CPU default and what every device used before);
- top-k spectra (`spectra.topk_batched`, k = 128, 16 oversampling, 4 power iterations) on batches of 15
  matrices (5 per row x 3 rows) of the Llama-3.2-1B shapes; "gram" (`orthonormalize`: shifted CholeskyQR3;
  `small_svd`: eigenpairs of B B^T) vs "qr" (QR and `torch.linalg.svd`).
- the sign-flip test's fold Gram matrices (`rank.signflip.fold_grams`) on the Llama-3.2-1B shapes: "tf32" (split
  3xTF32 tensor-core products, the CUDA default) vs "float64", the whole test timed, ranks and p-values compared.
Batched QR and SVD are one cuSOLVER call per matrix on a GPU; that is what this measures.

Run: python benchmarks/bench_linalg.py --device cuda [--out benchmarks/results] [--repeats 2] [--parts grams]
Prints a table and writes linalg-<device>.json: seconds per call (median of --repeats), the ratio, and whether the
results agree (ranks equal; top-k values within 1e-4 relative).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from intrinsic.rank import signflip
from intrinsic import spectra
from intrinsic.results import write_json

SIGNFLIP_SHAPES = {"q/o 576x576": (576, 576), "k/v 192x576": (192, 576), "gate/up 1536x576": (1536, 576)}
TOPK_SHAPES = {"q/o 2048x2048": (2048, 2048), "k/v 512x2048": (512, 2048), "gate/up 8192x2048": (8192, 2048),
               "down 2048x8192": (2048, 8192)}


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device, repeats):
    out, times = None, []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _planted(shape, rank, gen, device, dtype):
    m, n = shape
    U, V = torch.randn(m, rank, generator=gen), torch.randn(rank, n, generator=gen)
    return (U @ V * 3.0 / np.sqrt(max(m, n))).to(device, dtype)


def _signflip_pairs(device, repeats, shapes, seed, new: dict, old: dict):
    """Per shape: the sign-flip test on 8 planted rank-3 fold means, with keyword arguments `new` and `old`,
    timed side by side: {name: ((seconds, result) new, (seconds, result) old)}."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        F = torch.randn(8, *shape, generator=gen).to(device, torch.float64) + _planted(shape, 3, gen, device,
                                                                                      torch.float64)
        out[name] = tuple(_time(lambda kw=kw: signflip.sign_flip_test(F, **kw), device, repeats) for kw in (new, old))
    return out


def bench_signflip(device, repeats):
    rows = {}
    for name, ((t_new, a), (t_qr, b)) in _signflip_pairs(device, repeats, SIGNFLIP_SHAPES, 0, dict(method="gram"),
                                                          dict(method="qr")).items():
        rows[name] = dict(new_s=t_new, qr_s=t_qr, speedup=t_qr / t_new, rank_new=a.rank, rank_qr=b.rank,
                          agree=a.rank == b.rank)
    return rows


GRAMS_SHAPES = {"q/o 2048x2048": (2048, 2048), "k/v 512x2048": (512, 2048), "down 2048x8192": (2048, 8192)}


def bench_grams(device, repeats):
    rows = {}
    for name, ((t_new, a), (t_old, b)) in _signflip_pairs(device, repeats, GRAMS_SHAPES, 2, dict(grams="tf32"),
                                                          dict(grams="float64")).items():
        rows[name] = dict(new_s=t_new, qr_s=t_old, speedup=t_old / t_new, rank_tf32=a.rank, rank_float64=b.rank,
                          pvalues_equal=a.pvalues == b.pvalues,
                          stats_max_rel_diff=float(np.max(np.abs(np.subtract(a.stats, b.stats)) / np.abs(b.stats))),
                          agree=a.rank == b.rank)
    return rows


def bench_topk(device, repeats):
    rows = {}
    gen = torch.Generator().manual_seed(1)
    for name, shape in TOPK_SHAPES.items():
        A = torch.randn(15, *shape, generator=gen).to(device, torch.float32) * 1e-3
        A += _planted(shape, 4, gen, device, torch.float32)
        res = {label: _time(lambda: spectra.topk_batched(A, 128, vectors=64, seed=0, method=method), device, repeats)
               for label, method in (("new", "gram"), ("qr", "qr"))}
        s_new, s_qr = res["new"][1][0], res["qr"][1][0]
        err = float(np.max(np.abs(s_new[:, :8] - s_qr[:, :8]) / s_qr[:, :1]))
        rows[name] = dict(new_s=res["new"][0], qr_s=res["qr"][0], speedup=res["qr"][0] / res["new"][0],
                          top8_max_err_rel_sigma1=err, agree=err < 1e-4)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--parts", default="signflip,topk,grams",
                    help="comma-separated: signflip (gram vs qr orthonormalization), topk, grams (tf32 vs float64)")
    a = ap.parse_args(argv)
    parts = [p for p in a.parts.split(",") if p]
    if not parts or set(parts) - {"signflip", "topk", "grams"}:
        print(f"--parts must name signflip, topk or grams, got {a.parts!r}", file=sys.stderr)
        return 2
    if a.repeats < 1:
        print("--repeats must be at least 1", file=sys.stderr)
        return 2
    result = dict(device=a.device, name=torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
                  torch=torch.__version__)
    benches = dict(signflip=bench_signflip, topk=bench_topk, grams=bench_grams)
    for part in parts:
        result[part] = benches[part](a.device, a.repeats)
    for part in parts:
        for name, r in result[part].items():
            print(f"{part:8s} {name:18s} new {r['new_s']:8.3f} s  old {r['qr_s']:8.3f} s  {r['speedup']:6.1f}x  "
                  f"agree {r['agree']}")
    name = f"linalg-{a.device.split(':')[0]}{'' if len(parts) == 3 else '-' + '-'.join(parts)}.json"
    path = write_json(Path(a.out) / name, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
