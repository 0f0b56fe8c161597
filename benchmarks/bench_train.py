"""Trainer benchmark: (1) overhead of `intrinsic.training.train` over plain PEFT + a minimal AdamW loop on the
same batches, (2) the default `intrinsic train minilm rotten-tomatoes` end to end (wall time, accuracy).

Usage:  python benchmarks/bench_train.py [--steps 12] [--repeats 5] [--placement auto|all] [--skip-default]

(1) Both arms train MiniLM with the same LoRA config (all@8) on the same pre-made batches from a
freshly loaded model; arms alternate (plain, trainer, plain, ...) so machine load hits both alike.
Time per step is the median over all steps but the first of each run, pooled over repeats (robust
to other sessions' bursts). The plain arm times forward, backward, AdamW step and zero_grad; the
trainer's steps are the gaps between its step events, so they include everything it adds per
step: gradient clipping, the LR schedule, a loss.item() sync for the NaN check, the loss-curve
and callback bookkeeping, and the RSS sampling thread. Target: <= 5% overhead. One torch thread by
default (--threads): with 2 OpenMP threads on 2 cores shared with other sessions, step times
swing 10x from spin-waiting, which swamps any difference between the arms.
(2) Runs the CLI in a subprocess, as a user would: `--placement auto` runs its quick gradient
probe first (unless --placement all). On a shared machine both numbers carry the load of the
other sessions: compare the arms of (1) with each other, not with other days.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def plain_loop(loaded, plan, batches) -> list[float]:
    """Seconds of each step of the minimal PEFT + AdamW loop."""
    import torch
    from peft import get_peft_model

    from intrinsic.training.model import head_module_names

    torch.manual_seed(0)
    config = plan.to_peft_config("SEQ_CLS", modules_to_save=head_module_names(loaded.model))
    model = get_peft_model(loaded.model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def trainer_loop(loaded, plan, task, steps: int) -> list[float]:
    """Seconds of each trainer step: the gaps between its step events (all per-step work included)."""
    from intrinsic.training import TrainConfig, train

    stamps = []

    def on_event(ev):
        if ev["event"] in ("start", "step"):
            stamps.append(time.perf_counter())

    config = TrainConfig(steps=steps, max_eval_examples=16)
    train(loaded, task, plan, config, callback=on_event)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def overhead(steps: int, repeats: int) -> dict:
    from intrinsic.arch import discover
    from intrinsic.models import base_param_count, load_model
    from intrinsic.placement import fixed_plan
    from intrinsic.tasks import load_task, make_batches
    from intrinsic.training import TrainConfig

    cfg = TrainConfig(steps=steps)
    task = load_task("rotten-tomatoes", seed=cfg.seed, max_eval_examples=16)
    plain, trainer = [], []
    for rep in range(repeats + 1):  # repeat 0 warms up both arms (kernel caches, allocator) and is dropped
        if rep == 1:
            plain.clear(), trainer.clear()
        for arm in ("plain", "trainer"):
            loaded = load_model("minilm", num_labels=2, seed=cfg.seed)
            plan = fixed_plan(discover(loaded.model), "all", 8, base_params=base_param_count(loaded.model))
            if arm == "plain":  # exactly the batches the trainer makes for itself
                batches = make_batches(task, loaded.tokenizer, split="train", batch_size=cfg.batch_size,
                                       max_length=cfg.max_length, seed=cfg.seed, shuffle=True, num_batches=steps)
                plain.append(plain_loop(loaded, plan, batches))
            else:
                trainer.append(trainer_loop(loaded, plan, task, steps))
            last = (plain if arm == "plain" else trainer)[-1]
            print(f"  {'warm-up ' if rep == 0 else ''}{arm:8s} median {1000 * statistics.median(last):7.1f} ms/step, "
                  f"mean {1000 * statistics.mean(last):7.1f}", flush=True)
    # median over all steps but each run's first (allocation warm-up), pooled over the repeats
    p = statistics.median([t for run in plain for t in run[1:]])
    t = statistics.median([t for run in trainer for t in run[1:]])
    return {"plain_ms": 1000 * p, "trainer_ms": 1000 * t, "overhead_pct": 100 * (t / p - 1)}


def default_run(placement: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "intrinsic.cli", "train", "minilm", "rotten-tomatoes", "--placement", placement,
               "--out", str(Path(tmp) / "run"), "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"default run failed:\n{proc.stderr[-2000:]}")
        run = json.loads(proc.stdout)
        probe_file = Path(tmp) / "run" / "probe" / "probe.json"
        probe_s = sum(json.loads(probe_file.read_text()).get("timings", {}).values()) if probe_file.is_file() else 0.0
    return {"wall_s": wall, "probe_s": probe_s, **{k: run[k] for k in (
        "score", "baseline_score", "trainable_params", "trainable_pct", "train_time_s", "time_per_step_s",
        "eval_time_s", "tokens_per_s", "peak_memory_mb", "adapter_bytes")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--placement", default="auto")
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for (1); 1 resists other sessions' load")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    if not args.skip_overhead:
        import torch

        torch.set_num_threads(args.threads)
        print(f"(1) trainer vs plain PEFT loop, MiniLM all@8, {args.steps} steps x {args.repeats} repeats, "
              f"{args.threads} thread(s)")
        o = overhead(args.steps, args.repeats)
        rows += [("plain PEFT + AdamW, ms/step (median)", f"{o['plain_ms']:.1f}"),
                 ("intrinsic.training.train, ms/step (median)", f"{o['trainer_ms']:.1f}"),
                 ("trainer overhead", f"{o['overhead_pct']:+.1f}%")]
    if not args.skip_default:
        print(f"(2) intrinsic train minilm rotten-tomatoes --placement {args.placement} (defaults)")
        d = default_run(args.placement)
        rows += [(f"default run ({args.placement}) wall time, s", f"{d['wall_s']:.0f}"),
                 ("  of which probe, s", f"{d['probe_s']:.0f}"),
                 ("  training (excl. eval), s", f"{d['train_time_s']:.0f} ({1000 * d['time_per_step_s']:.0f} ms/step)"),
                 ("  evaluation, s", f"{d['eval_time_s']:.0f}"),
                 ("accuracy (majority baseline)", f"{d['score']:.3f} ({d['baseline_score']:.3f})"),
                 ("trainable params (% of base)", f"{d['trainable_params']:,} ({d['trainable_pct']:.2f}%)"),
                 ("tokens/s, peak RSS growth MiB", f"{d['tokens_per_s']:.0f}, {d['peak_memory_mb']:.0f}"),
                 ("adapter on disk, KiB", f"{d['adapter_bytes'] / 1024:.0f}")]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
