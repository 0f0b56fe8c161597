"""Cost of `intrinsic truncate`'s phases on a random-init model, in one process: factoring every block's update
(one SVD each, float32 on the device), swapping one component's update for its rank-r approximation and back, and
one evaluation forward pass of a batch, per component. Prints the figures and writes JSON to
benchmarks/results/truncate-<shape>-<device>.json (and to $OUT/ when $OUT is set).

Usage (no download: the model is random-init from a config; the "fine-tuned" model is the base plus a random
update of 1% of each weight's norm):
    python benchmarks/bench_truncate.py --shape smollm2 --device cuda
    python benchmarks/bench_truncate.py --shape tiny                 # CPU smoke

Shapes: smollm2 = SmolLM2-135M's config (30 layers, hidden 576, 9 heads / 3 KV heads, FFN 1536), eval batch
64 x 128 tokens; tiny = a 2-layer Llama at hidden 32, batch 8 x 32. An estimate of one default truncate run
(12 components x (7 ranks + the r = 0 point)) = SVD phase + 96 x (swap + evaluation of the run's held-out
batches); the evaluation part is batches x the forward time measured here.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {
    "smollm2": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, batch=(64, 128)),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=64, vocab_size=128, batch=(8, 32)),
}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from intrinsic.arch import discover, num_layers, weight_of
    from intrinsic.truncation import DEFAULT_RANKS, Truncator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed swaps and forwards per component")
    args = ap.parse_args()
    spec = dict(SHAPES[args.shape])
    b, t = spec.pop("batch")
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**spec)).to(args.device).eval()
    ft = copy.deepcopy(base)
    refs = discover(ft)
    with torch.no_grad():
        for r in refs:
            w = weight_of(ft, r)
            w += 0.01 * w.norm() / w.numel() ** 0.5 * torch.randn_like(w)
    base_weights = {r.name: weight_of(base, r) for r in discover(base)}
    _sync(args.device)
    t0 = time.perf_counter()
    trunc = Truncator(ft, base_weights, refs, num_layers(ft), max_rank=max(DEFAULT_RANKS))
    _sync(args.device)
    svd_s = time.perf_counter() - t0
    ids = torch.randint(0, spec["vocab_size"], (b, t), device=args.device)
    rows = []
    for comp in trunc.components:
        swaps, forwards = [], []
        for _ in range(args.repeats):
            _sync(args.device)
            t1 = time.perf_counter()
            with trunc.truncated(comp, 8):
                _sync(args.device)
                t2 = time.perf_counter()
                with torch.no_grad():
                    ft(input_ids=ids).logits.float().sum().item()
                _sync(args.device)
                t3 = time.perf_counter()
            _sync(args.device)
            swaps.append((t2 - t1) + (time.perf_counter() - t3))
            forwards.append(t3 - t2)
        rows.append({"component": comp, "blocks": len(trunc.components[comp]), "swap_s": statistics.median(swaps),
                     "forward_s": statistics.median(forwards)})
    points = len(trunc.components) * (len(DEFAULT_RANKS) + 1)  # + the r = 0 point (the update removed)
    est = svd_s + points * statistics.mean(r["swap_s"] + r["forward_s"] for r in rows)
    out = {"shape": args.shape, "device": args.device, "blocks": len(trunc.blocks), "svd_s": svd_s,
           "batch": [b, t], "components": rows, "points_default": points,
           "estimate_default_run_one_batch_s": est, "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(f"{args.shape} on {args.device}: {len(trunc.blocks)} blocks factored in {svd_s:.2f} s")
    for r in rows:
        print(f"  {r['component']:>10}: {r['blocks']:4d} blocks, swap in+out {1000 * r['swap_s']:8.2f} ms, "
              f"forward {b}x{t} {1000 * r['forward_s']:8.2f} ms")
    print(f"default run ({points} points, one eval batch each): ~{est:.1f} s")
    name = f"truncate-{args.shape}-{args.device.split(':')[0]}.json"
    for folder in [ROOT / "benchmarks" / "results"] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
