"""Benchmark: how often sketch mode's sign-flip rank equals exact mode's, per sketch size K and sketch seed, against
how often exact mode agrees with itself under another resampling seed.

MiniLM / Rotten Tomatoes, the probe's defaults (32 batches x 16, 8 folds): the exact fold means of the 36 modules are
accumulated once; each sketch (Y_j = F_j Omega, W_j = Psi F_j, the maps of `probes.sketch.gaussian_maps`) is taken
of them directly (a sketch is linear: the same as the hooks' sums up to float32 rounding; tests/test_sketch.py),
and `FoldSketches.sign_flip_test` runs on it. Two kinds of p-values:
- `mc`: 199 random sign vectors (seed 0), as the probe ran before `rank.signflip.sign_patterns` enumerated them;
  exact mode is also rerun with seeds 1 and 2;
- `enum`: all 2^8 - 1 sign vectors (every fold sign pattern but the observed), so the p-values carry no Monte Carlo
  noise and a disagreement is the sketch's alone. (The patterns are patched into `sign_patterns` of
  `rank.signflip` and `probes.sketch_recon` here; since this benchmark the library enumerates the 2^7 - 1 patterns
  up to a global sign whenever they are fewer than the resamples, which gives the same p-values as `enum`.)
CPU, one thread. Writes benchmarks/results/sketch-agreement-minilm-rotten-tomatoes-cpu.json.

Run: python benchmarks/sketch_agreement.py [--ks 64,128] [--seeds 0,1] [--batches 32] [--model M --task T]
     [--kinds mc,enum]   (e.g. --model smollm2 --task rotten-tomatoes:lm --ks 128 --kinds enum: SmolLM2's 210 modules)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import time
from pathlib import Path


@contextlib.contextmanager
def signs(kind: str):
    """`mc`: 199 random sign vectors; `enum`: every sign pattern of the K folds but the all-ones one (both tests)."""
    import numpy as np

    import intrinsic.probes.sketch_recon as SR
    import intrinsic.rank.signflip as SF

    def every(resamples: int, folds: int, seed: int, exhaustive=None) -> np.ndarray:
        return np.array(list(itertools.product([1.0, -1.0], repeat=folds)))  # (2^K, K), all ones first

    def drawn(resamples: int, folds: int, seed: int, exhaustive=None) -> np.ndarray:
        return saved[0](resamples, folds, seed, exhaustive=False)

    saved = SF.sign_patterns, SR.sign_patterns
    SF.sign_patterns = SR.sign_patterns = every if kind == "enum" else drawn
    try:
        yield
    finally:
        SF.sign_patterns, SR.sign_patterns = saved


def fold_means(batches: int, model: str = "minilm", task: str = "rotten-tomatoes"):
    """(module names, [(K, m, n) fold means]) of `model` on `task` with the probe's defaults."""
    from intrinsic.arch import discover
    from intrinsic.models import load_model
    from intrinsic.probes import ProbeSettings
    from intrinsic.probes.settings import DEFAULT_FOLDS
    from intrinsic.probes.gradient import accumulate_gradients
    from intrinsic.tasks import load_task, make_batches

    s = ProbeSettings(batches=batches)
    data = load_task(task, seed=s.seed)
    loaded = load_model(model, task_kind=data.kind, num_labels=max(2, data.num_labels), seed=s.seed)
    common = dict(batch_size=s.batch_size, max_length=s.max_length, seed=s.seed, num_batches=s.batches)
    real = make_batches(data, loaded.tokenizer, **common)
    shuffled = make_batches(data, loaded.tokenizer, shuffle_labels=True, **common)
    refs = discover(loaded.model)
    sums = accumulate_gradients(loaded.model, refs, real, shuffled, folds=s.folds or DEFAULT_FOLDS)
    return [r.name for r in refs], sums.folds


def sketch_ranks(folds, k: int, seed: int, statistic: str = "projection", co_range: int = 2) -> list[int]:
    """The sign-flip rank of every module from its fold sketches of size k (co-range co_range * k + 1; the probe's is
    2k + 1), maps seeded `seed`, with the sketch test's `statistic` (`FoldSketches.sign_flip_test`)."""
    from intrinsic.probes.sketch import gaussian_maps, sketch_sizes
    from intrinsic.probes.sketch_recon import FoldSketches

    out = []
    for F in folds:
        _, m, n = F.shape
        kk, _ = sketch_sizes((m, n), k)
        ll = co_range * kk + 1
        omega, psi = gaussian_maps(m, n, kk, ll, seed, "cpu")
        out.append(FoldSketches(F @ omega, psi @ F, psi, (m, n)).sign_flip_test(seed=0, statistic=statistic).rank)
    return out


def agreement(a: list[int], b: list[int]) -> dict:
    return {"same": sum(x == y for x, y in zip(a, b)), "within_1": sum(abs(x - y) <= 1 for x, y in zip(a, b)),
            "lower": sum(y < x for x, y in zip(a, b)), "higher": sum(y > x for x, y in zip(a, b)), "of": len(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="64,128", help="sketch sizes K, comma-separated")
    ap.add_argument("--seeds", default="0,1", help="sketch seeds (Omega, Psi), comma-separated")
    ap.add_argument("--batches", type=int, default=32)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--task", default="rotten-tomatoes")
    ap.add_argument("--kinds", default="mc,enum", help="p-value kinds: mc (199 random signs, exact mode also with "
                                                     "seeds 1 and 2) and/or enum (every pattern, as the library now)")
    ap.add_argument("--statistics", default="projection,reconstruction",
                    help="sketch test statistics (FoldSketches.sign_flip_test), comma-separated")
    ap.add_argument("--co-range", type=int, default=2,
                    help="co-range sketch size l = C k + 1 (default 2, the probe's; a larger C is what the projected "
                         "test would gain from more memory)")
    ap.add_argument("--exact-from", default=None, metavar="JSON",
                    help="reuse the enumerated exact ranks of an earlier run of this benchmark (same model, task, "
                         "batches; exact mode is most of the time: 62 CPU-min for SmolLM2), recomputing CHECK of them "
                         "(the smallest modules) to show they still hold")
    ap.add_argument("--check", type=int, default=12, help="exact ranks recomputed with --exact-from (default 12)")
    ap.add_argument("--json", default=None, help="[default: benchmarks/results/sketch-agreement-MODEL-TASK-cpu.json]")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    args.json = args.json or f"benchmarks/results/sketch-agreement-{args.model}-{args.task.replace(':', '-')}-cpu.json"
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import torch

    from intrinsic.rank.signflip import sign_flip_test

    torch.set_num_threads(1)
    names, folds = fold_means(args.batches, args.model, args.task)
    res: dict = {"modules": names, "batches": args.batches, "folds": int(folds[0].shape[0]), "exact": {}, "sketch": []}
    exact = {}
    if "mc" in kinds:
        with signs("mc"):
            exact["mc"] = res["exact"]["mc"] = [sign_flip_test(F, seed=0).rank for F in folds]
            for s in (1, 2):
                r = [sign_flip_test(F, seed=s).rank for F in folds]
                res["exact"][f"mc_seed{s}"] = {"ranks": r, "vs_seed0": agreement(exact["mc"], r)}
                print(f"exact, resampling seed {s} vs 0: {res['exact'][f'mc_seed{s}']['vs_seed0']}", flush=True)
    if "enum" in kinds and args.exact_from:
        old = json.loads(Path(args.exact_from).read_text())
        if old["modules"] != names or old["batches"] != args.batches or "enum" not in old["exact"]:
            raise SystemExit(f"{args.exact_from}: another model, task or number of batches, or no enumerated ranks")
        exact["enum"] = res["exact"]["enum"] = old["exact"]["enum"]
        small = sorted(range(len(folds)), key=lambda i: min(folds[i].shape[1:]))[:args.check]
        with signs("enum"):
            again = {i: sign_flip_test(folds[i], seed=0).rank for i in small}
        same = sum(again[i] == exact["enum"][i] for i in small)
        res["exact"]["enum_from"] = {"file": args.exact_from, "rechecked": len(small), "same": same}
        print(f"exact ranks from {args.exact_from}: {same} of {len(small)} recomputed ones agree", flush=True)
    elif "enum" in kinds:
        with signs("enum"):
            exact["enum"] = res["exact"]["enum"] = [sign_flip_test(F, seed=0).rank for F in folds]
    if len(exact) == 2:
        print(f"exact, enumerated vs random signs: {agreement(exact['mc'], exact['enum'])}", flush=True)
    for k in [int(x) for x in args.ks.split(",")]:
        for seed in [int(x) for x in args.seeds.split(",")]:
            for kind, stat in itertools.product(kinds, args.statistics.split(",")):
                start = time.process_time()
                with signs(kind):
                    r = sketch_ranks(folds, k, seed, stat, args.co_range)
                row = {"k": k, "seed": seed, "signs": kind, "statistic": stat, "co_range": args.co_range, "ranks": r,
                       "vs_exact": agreement(exact[kind], r), "cpu_s": time.process_time() - start}
                res["sketch"].append(row)
                print(f"K={k} sketch seed {seed}, {kind} signs, {stat}: {row['vs_exact']} ({row['cpu_s']:.0f} CPU s)",
                      flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
