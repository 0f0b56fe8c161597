"""Benchmark: peak memory and time of a causal LM's held-out log-loss, from the model's full logits (the evaluation
before 2026-11-29) against the labelled positions' hidden states in chunks (`training.evaluation.labelled_nll`),
side by side in one run, each arm in its own process.

Why: smollm2-placement-gen's 64 x 256-token evaluation batches made B x T x V = 805M float32 logits (3.2 GB, twice
with the log-softmax) per process, and 16 such processes ran out of an H200's memory. A completion task scores
only the answer's few tokens (`--scored 0.05`); a continued-pre-training task scores every token (`--scored 1`).

Per arm: the peak memory the evaluation adds above the model and batch (CUDA: max_memory_allocated; CPU: the peak
RSS of the process, ru_maxrss, above its RSS before the evaluation), the seconds of one evaluation batch (after
one warm-up), and the loss, which must agree between the arms.

Run: python benchmarks/bench_eval_memory.py [--model smollm2] [--batch 64] [--tokens 256] [--scored 0.05]
     [--device cpu|cuda] [--out benchmarks/results]   (--model tiny: a tiny random-init llama, for tests)
The model is random-init from the named model's config (the shapes are what matter). Writes eval-memory-<model>-<batch>x<tokens>-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("logits", "labelled")


def _build(model: str, device: str):
    import torch

    if model == "tiny":
        from intrinsic.testing import build_tiny_model

        m = build_tiny_model("llama", "lm").model
    else:
        from transformers import AutoConfig, AutoModelForCausalLM

        from intrinsic.models import resolve

        _, path = resolve(model)
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), torch_dtype=torch.float32)
    return m.to(device).eval()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(arm: str, model: str, batch: int, tokens: int, scored: float, device: str) -> dict:
    """One arm in this process: {arm, loss, count, peak_mb, seconds}."""
    import torch
    import torch.nn.functional as F

    from intrinsic.training.evaluation import labelled_nll

    m = _build(model, device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, m.config.vocab_size, (batch, tokens), generator=g)
    labels = ids.clone()
    labels[:, : tokens - max(2, int(round(scored * tokens)))] = -100  # the prompt: not scored
    ids, labels = ids.to(device), labels.to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def run():
        with torch.no_grad():
            if arm == "labelled":
                nll, count = labelled_nll(m, inputs, labels)
                return float(nll), int(count)
            logits = m(**inputs).logits.float()
            y = labels[:, 1:].reshape(-1)
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), y, ignore_index=-100, reduction="sum")
            return float(nll), int((y != -100).sum())

    cuda = device.startswith("cuda")
    if cuda:
        run()  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()  # no warm-up on the CPU: the peak RSS must be this evaluation's
    t = time.perf_counter()
    nll, count = run()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = ((torch.cuda.max_memory_allocated() - base) / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    return {"arm": arm, "loss": nll / count, "count": count, "peak_mb": peak, "seconds": seconds}


def measure(model: str, batch: int, tokens: int, scored: float, device: str) -> dict:
    rows = []
    for arm in ARMS:
        argv = [sys.executable, __file__, "--worker", arm, "--model", model, "--batch", str(batch), "--tokens",
                str(tokens), "--scored", str(scored), "--device", device]
        out = subprocess.run(argv, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"arm {arm} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    a, b = rows
    return {"model": model, "device": device, "batch": batch, "tokens": tokens, "scored": scored, "rows": rows,
            "memory_ratio": a["peak_mb"] / max(b["peak_mb"], 1e-9), "time_ratio": a["seconds"] / b["seconds"],
            "loss_rel_diff": abs(a["loss"] - b["loss"]) / abs(a["loss"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--scored", type=float, default=0.05, help="share of each sequence's tokens scored (0-1]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.batch < 1 or a.tokens < 2 or not 0 < a.scored <= 1:
        print("--batch must be >= 1, --tokens >= 2, --scored in (0, 1]", file=sys.stderr)
        return 2
    if a.worker:
        print(json.dumps(worker(a.worker, a.model, a.batch, a.tokens, a.scored, a.device)))
        return 0
    got = measure(a.model, a.batch, a.tokens, a.scored, a.device)
    print(f"{a.model}, batch {a.batch} x {a.tokens} tokens, {a.scored:.0%} scored, {a.device}")
    for r in got["rows"]:
        print(f"  {r['arm']:9s} peak +{r['peak_mb']:8.1f} MB  {r['seconds']:7.3f} s  loss {r['loss']:.6f}")
    print(f"  full logits / labelled: memory {got['memory_ratio']:.1f}x, time {got['time_ratio']:.2f}x; "
          f"loss rel. diff {got['loss_rel_diff']:.1e}")
    from intrinsic.results import write_json

    dev = "cuda" if a.device.startswith("cuda") else "cpu"
    path = write_json(Path(a.out) / f"eval-memory-{a.model}-{a.batch}x{a.tokens}-{dev}.json", got)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
