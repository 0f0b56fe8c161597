"""GPU sizing check: versions, MiniLM LoRA step time, and how throughput scales with processes.

Run on the GPU machine after `source scripts/gpu_env.sh`:  python3 benchmarks/gpu_smoke.py [--steps 100]
Prints the time per training step of LoRA (all modules, r=8) and full fine-tuning at batch 32 x 64 tokens.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def step_time(full: bool, steps: int, device: str) -> float:
    from peft import LoraConfig, get_peft_model

    from intrinsic.models import load_model
    from intrinsic.tasks import load_task, make_batches

    loaded = load_model("minilm", device=device)
    data = load_task("rotten-tomatoes")
    batches = make_batches(data, loaded.tokenizer, batch_size=32, max_length=64, num_batches=steps + 10)
    model = loaded.model
    if not full:
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"], modules_to_save=["classifier"])
        model = get_peft_model(model, cfg)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for i, b in enumerate(batches):
        if i == 10:
            torch.cuda.synchronize() if device == "cuda" else None
            t = time.perf_counter()
        b = {k: v.to(device) for k, v in b.items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize() if device == "cuda" else None
    return (time.perf_counter() - t) / steps


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--mode", default="both")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}
    if args.mode in ("both", "lora"):
        out["lora_step_s"] = step_time(False, args.steps, dev)
    if args.mode in ("both", "full"):
        out["full_step_s"] = step_time(True, args.steps, dev)
    print(json.dumps(out))
