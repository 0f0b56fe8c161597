"""One LoRA training step, side by side in one process: plain forward+backward, HF Trainer + PEFT, a plain
PEFT loop, and `intrinsic.training.train` (default and fast options), on the same random-init model, batches
and LoRA config. Prints s/step, tokens/s, peak memory and MFU (against a bf16 matmul rate measured here) and
writes JSON to benchmarks/results/<name>/bench_lora_step.json (and to $OUT/<name>/ when $OUT is set).

Usage (GPU machine, after `bash scripts/gpu_env.sh`; no download: models are random-init from a config):
    python benchmarks/bench_lora_step.py --shape llama-1b --device cuda
    python benchmarks/bench_lora_step.py --shape smollm2 --device cuda
    python benchmarks/bench_lora_step.py --shape tiny --steps 2     # CPU smoke (tests/test_bench_lora_step.py)

Shapes: llama-1b = Llama-3.2-1B's config (vocabulary 30,522), batch 8 x 512, LoRA r=16 on every linear layer,
bf16 weights; llama-8b = Llama-3-8B's config, batch 2 x 512, LoRA r=16 (PEFT loop and intrinsic train: the
reference of the 8B probe's peak memory); smollm2 = SmolLM2-135M's config, batch 16 x 64 (short texts), LoRA all@8 against a full
fine-tuning step; tiny = a 2-layer Llama for the CPU. Every arm builds the model afresh with the same seed;
weights are bf16 on CUDA (float32 on CPU), products under bf16 autocast on CUDA.

Arms: plain (forward + backward, gradients of every linear weight, no optimizer), trainer (transformers.Trainer
+ PEFT, bf16=True, its default optimizer), peft (get_peft_model + AdamW loop under autocast), intrinsic
(train(), defaults), fast (train(fast=True)), fast-compile (fast + compile), full and full-fast (train() with
placement full, without and with fast). peft+nocast, peft+fused, peft+fused+lce: the PEFT loop with the fast
path's pieces added one at a time (attribution). peft+graph (CUDA only): the PEFT loop's whole step captured in
one CUDA graph and replayed, the step's cost without Python and kernel-launch overhead.
Step times: median over the steps after --warmup (device synchronized at each step's end); the trainer's are the
gaps between its on_step_end callbacks, intrinsic's the gaps between its step events (everything a step does).
Peak memory: torch.cuda.max_memory_allocated over the training steps (the arm's evaluation excluded); on CPU
not measured. MFU = model FLOPs per token (intrinsic.training.flops) x tokens/s / measured matmul rate.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    "llama-1b": dict(config=dict(vocab_size=30522, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                 num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                 max_position_embeddings=2048, rope_theta=500000.0, tie_word_embeddings=True),
                     batch=8, seq=512, rank=16,
                     arms="plain,trainer,peft,peft+nocast,peft+fused,peft+fused+lce,intrinsic,fast"),
    "smollm2": dict(config=dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                                max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True),
                    batch=16, seq=64, rank=8,
                    arms="plain,full,full-fast,trainer,peft,peft+graph,intrinsic,fast,fast-compile"),
    "llama-8b": dict(config=dict(vocab_size=30522, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                 max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False),
                     batch=2, seq=512, rank=16, arms="peft,intrinsic"),  # the 8B probe's memory reference (issue 10)
    "tiny": dict(config=dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                             tie_word_embeddings=True),
                 batch=2, seq=32, rank=4, arms="plain,full,trainer,peft,intrinsic,fast"),
}


def word_tokenizer(vocab: int):
    """A whitespace word-level tokenizer: word 'wN' is token N (0 = [PAD]); a text of k words is k tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, vocab)}}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[PAD]")


class Setup:
    """The shape, device and the pieces every arm shares (config, tokenizer, task, batches, plan)."""

    def __init__(self, shape: str, device: str, steps: int, warmup: int):
        import random

        import torch
        from transformers import LlamaConfig

        from intrinsic.tasks import TaskData, make_batches

        s = SHAPES[shape]
        self.shape, self.device, self.steps, self.warmup = shape, device, steps, warmup
        self.batch, self.seq, self.rank = s["batch"], s["seq"], s["rank"]
        self.cuda = device.startswith("cuda")
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.config = LlamaConfig(**s["config"])
        self.tokenizer = word_tokenizer(self.config.vocab_size)
        rng = random.Random(0)
        n = self.batch * (steps + warmup)
        texts = tuple(" ".join(f"w{rng.randrange(2, self.config.vocab_size)}" for _ in range(self.seq))
                      for _ in range(n))
        self.task = TaskData("random-words", "lm", (), texts, (), texts[:self.batch], ())
        self.batches = make_batches(self.task, self.tokenizer, split="train", batch_size=self.batch,
                                    max_length=self.seq, seed=0, shuffle=True, num_batches=steps + warmup)
        self.tokens = self.batch * self.seq

    def model(self):
        """A fresh random-init model (same seed every time) on the device, in the weights' dtype."""
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        with torch.device(self.device):
            return AutoModelForCausalLM.from_config(self.config, dtype=self.dtype)

    def loaded(self):
        from intrinsic.models import LoadedModel

        return LoadedModel(model=self.model(), tokenizer=self.tokenizer, name=f"random-{self.shape}", source="tiny",
                           model_type="llama", task_kind="lm", path="")

    def plan(self, model):
        from intrinsic.arch import discover
        from intrinsic.models import base_param_count
        from intrinsic.placement import fixed_plan

        return fixed_plan(discover(model), "all", self.rank, base_params=base_param_count(model))

    def sync(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self):
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda)

    def on_device(self, batch):
        return {k: v.to(self.device) for k, v in batch.items()}


PROFILE: dict = {"arms": (), "tables": {}}  # --profile: arms whose last 3 steps run under torch.profiler


def _timed_loop(setup: Setup, step, arm: str = "") -> list[float]:
    """Seconds of each call step(batch) over all batches, synchronized at each end."""
    import contextlib

    times, prof = [], None
    for i, batch in enumerate(setup.batches):
        if arm in PROFILE["arms"] and i == len(setup.batches) - 3:
            import torch.profiler as tp

            prof = tp.profile(activities=[tp.ProfilerActivity.CPU] + ([tp.ProfilerActivity.CUDA] if setup.cuda else []))
            prof.__enter__()
        t0 = time.perf_counter()
        step(setup.on_device(batch))
        setup.sync()
        times.append(time.perf_counter() - t0)
    if prof is not None:
        prof.__exit__(None, None, None)
        key = "self_device_time_total" if setup.cuda else "self_cpu_time_total"
        with contextlib.suppress(Exception):  # a profiler API change must not cost the timings
            averages = prof.key_averages()
            PROFILE["tables"][arm] = averages.table(sort_by=key, row_limit=25)
            top = sorted(averages, key=lambda e: -getattr(e, key))[:6]
            print("    top ops (3 steps):", "; ".join(f"{e.key[:40]} {getattr(e, key) / 3000:.1f} ms" for e in top))
    return times


def arm_plain(setup: Setup):
    import torch

    model = setup.model()
    for m in model.modules():
        for p in m.parameters(recurse=False):
            p.requires_grad_(isinstance(m, torch.nn.Linear))
    model.train()

    def step(batch):
        with setup.autocast():
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return model, _timed_loop(setup, step, "plain")


def _peft(setup: Setup):
    from peft import get_peft_model

    from intrinsic.training.model import quiet_peft

    model = setup.model()
    config = setup.plan(model).to_peft_config("CAUSAL_LM")
    with quiet_peft():
        return get_peft_model(model, config)


def arm_peft(setup: Setup, nocast: bool = False, fused: bool = False, lce: bool = False, arm: str = "peft"):
    """The plain PEFT loop, optionally with the fast path's pieces applied one by one (for attribution)."""
    import torch

    from intrinsic.training.fast import causal_lm_loss, make_optimizer, no_input_cast
    from intrinsic.training.fused_lora import fuse_lora

    model = _peft(setup)
    model.train()
    if nocast and setup.cuda:
        no_input_cast(model)
    if fused:
        fuse_lora(model)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0, fused=lce)

    def step(batch):
        with setup.autocast():
            loss = causal_lm_loss(model, batch) if lce else model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, _timed_loop(setup, step, arm)


def arm_peft_graph(setup: Setup):
    """The plain PEFT loop with the whole step (forward, backward, AdamW) captured once in a CUDA graph and
    replayed per batch (PyTorch's whole-network capture: static input buffers, warm-up on a side stream,
    capturable AdamW, autocast without its cast cache). CUDA only. What a step costs without Python and launch
    overhead: the upper bound of what CUDA graphs would give `intrinsic train` (not built into it)."""
    import torch

    if not setup.cuda:
        raise RuntimeError("peft+graph needs CUDA")
    model = _peft(setup)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, capturable=True)
    static = {k: v.clone() for k, v in setup.on_device(setup.batches[0]).items()}
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]

    def forward_backward_step():
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = model(**static).loss
        loss.backward()
        opt.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside the graph (allocator, cuBLAS workspaces, optimizer state)
            opt.zero_grad(set_to_none=True)
            forward_backward_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)  # grads are allocated in the graph's pool and overwritten at each replay
    with torch.cuda.graph(graph):
        static_loss = forward_backward_step()

    def step(batch):
        for k, v in batch.items():
            if v.shape != static[k].shape:
                raise RuntimeError(f"peft+graph needs equal batch shapes; {k} {tuple(v.shape)} vs "
                                   f"{tuple(static[k].shape)}")
            static[k].copy_(v)
        graph.replay()

    times = _timed_loop(setup, step, "peft+graph")
    if not torch.isfinite(static_loss).item() or not any(bool(b.abs().sum() > 0) for b in lora_b):
        raise RuntimeError("peft+graph: the replayed steps did not train (loss not finite or lora_B still 0)")
    return model, times


def arm_trainer(setup: Setup):
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    model = _peft(setup)
    examples = [{k: v[i] for k, v in b.items()} for b in setup.batches for i in range(len(b["input_ids"]))]
    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            setup.sync()
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=setup.batch, max_steps=len(setup.batches),
                                 learning_rate=1e-4, bf16=setup.cuda, use_cpu=not setup.cuda, logging_steps=10**6,
                                 save_strategy="no", report_to=[], dataloader_num_workers=0,
                                 remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=default_data_collator,
                          callbacks=[Stamp()])
        setup.sync()
        stamps.append(time.perf_counter())
        trainer.train()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    del trainer
    torch.manual_seed(0)
    return model, [b - a for a, b in zip(stamps, stamps[1:])]


def arm_intrinsic(setup: Setup, full: bool = False, **options):
    import torch

    from intrinsic.training import TrainConfig, train

    loaded = setup.loaded()
    plan = "full" if full else setup.plan(loaded.model)
    stamps, peaks = [], []

    def on_event(ev):
        if ev["event"] in ("start", "step"):
            setup.sync()
            stamps.append(time.perf_counter())
            if ev["event"] == "step" and setup.cuda:
                peaks.append(torch.cuda.max_memory_allocated())
        elif ev["event"] == "note":
            print(f"    note: {ev['message']}")

    config = TrainConfig(steps=len(setup.batches), batch_size=setup.batch, max_length=setup.seq,
                         mixed_precision="bf16" if setup.cuda else "no", eval_at_start=False,
                         max_eval_examples=setup.batch, eval_batch_size=setup.batch, lr=1e-4, save_adapter=False,
                         **options)
    train(loaded, setup.task, plan, config, callback=on_event)
    arm_intrinsic.peak = max(peaks) if peaks else None
    return loaded.model, [b - a for a, b in zip(stamps, stamps[1:])]


ARMS = {
    "plain": ("plain forward+backward, all linear-weight grads", arm_plain),
    "full": ("intrinsic train, full fine-tuning", lambda s: arm_intrinsic(s, full=True)),
    "full-fast": ("intrinsic train --fast, full fine-tuning", lambda s: arm_intrinsic(s, full=True, fast=True)),
    "trainer": ("HF Trainer + PEFT", arm_trainer),
    "peft": ("plain PEFT + AdamW loop", arm_peft),
    "peft+nocast": ("PEFT loop, no fp32 input cast", lambda s: arm_peft(s, nocast=True, arm="peft+nocast")),
    "peft+fused": ("PEFT loop, no cast + fused LoRA", lambda s: arm_peft(s, nocast=True, fused=True, arm="peft+fused")),
    "peft+fused+lce": ("PEFT loop, + chunked loss, fused AdamW",
                       lambda s: arm_peft(s, nocast=True, fused=True, lce=True, arm="peft+fused+lce")),
    "peft+graph": ("PEFT loop, the whole step in one CUDA graph (CUDA only)", arm_peft_graph),
    "intrinsic": ("intrinsic train (defaults)", arm_intrinsic),
    "fast": ("intrinsic train --fast", lambda s: arm_intrinsic(s, fast=True)),
    "fast-compile": ("intrinsic train --fast --compile", lambda s: arm_intrinsic(s, fast=True, compile=True)),
}


def cpu_matmul_tflops(size: int = 512, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times) / 1e12


def run_arm(setup: Setup, key: str, peak_tflops: float) -> dict:
    import torch

    from intrinsic.training.flops import flops_per_token

    gc.collect()
    if setup.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    arm_intrinsic.peak = None
    model, times = ARMS[key][1](setup)
    kept = times[setup.warmup:] or times
    s_step = statistics.median(kept)
    peak = arm_intrinsic.peak if key in ("full", "full-fast", "intrinsic", "fast", "fast-compile") else \
        (torch.cuda.max_memory_allocated() if setup.cuda else None)
    flops = flops_per_token(model)
    tps = setup.tokens / s_step
    row = {"arm": key, "what": ARMS[key][0], "s_per_step": s_step, "tokens_per_s": tps,
           "peak_gb": peak / 1e9 if peak else None, "flops_per_token": flops,
           "mfu": flops * tps / (peak_tflops * 1e12), "step_times": times}
    del model
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per arm")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per arm (compilation, allocator)")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over all arms, round-robin; each arm's figures "
                                                          "are its median round (arms measured once each drift apart)")
    ap.add_argument("--arms", default=None, help=f"comma-separated, of {', '.join(ARMS)} [default: per shape]")
    ap.add_argument("--name", default=None, help="results folder name [default: lora-step-SHAPE-DEVICE]")
    ap.add_argument("--profile", default="", help="comma-separated loop arms (plain, peft, peft+...) whose last 3 "
                                                   "steps are profiled (top ops printed, tables in the JSON)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="where NAME/ goes")
    args = ap.parse_args()
    import torch

    from intrinsic.training.flops import measured_peak_tflops

    setup = Setup(args.shape, args.device, args.steps, args.warmup)
    peak = measured_peak_tflops(args.device, torch.bfloat16) if setup.cuda else cpu_matmul_tflops()
    arms = (args.arms or SHAPES[args.shape]["arms"]).split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    print(f"shape {args.shape}: batch {setup.batch} x {setup.seq}, LoRA r={setup.rank} all linear, "
          f"{setup.dtype}, device {args.device}; matmul peak {peak:.3g} TFLOP/s (measured)", flush=True)
    name = args.name or f"lora-step-{args.shape}-{args.device.split(':')[0]}"
    folders = [args.results / name] + ([Path(os.environ["OUT"]) / name] if os.environ.get("OUT") else [])
    meta = {"shape": args.shape, "device": args.device,
            "device_name": torch.cuda.get_device_name() if setup.cuda else platform.processor(),
            "batch": setup.batch, "seq": setup.seq, "rank": setup.rank, "dtype": str(setup.dtype),
            "steps": args.steps, "warmup": args.warmup, "matmul_peak_tflops": peak,
            "versions": {"torch": torch.__version__, **_versions()}}
    PROFILE["arms"] = tuple(a for a in args.profile.split(",") if a)
    meta["repeats"] = args.repeats
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    rows, failed = [], {}
    for rnd in range(args.repeats):  # round-robin: drift over the process's life hits every arm alike
        for key in arms:
            if key in failed:
                continue
            t0 = time.perf_counter()
            try:
                runs[key].append(run_arm(setup, key, peak))
            except Exception as e:  # one failing arm does not cost the others' figures
                failed[key] = f"{type(e).__name__}: {e}"[:500]
                print(f"  {key:15s} FAILED {failed[key]}", flush=True)
                continue
            finally:  # after every arm: a run stopped by a time limit keeps what it measured
                rows = [median_row(runs[k]) for k in arms if runs[k]]
                write_json(folders, {**meta, "rows": rows, "failed": failed, "profiles": PROFILE["tables"]})
            r = runs[key][-1]
            print(f"  {key:15s} {r['s_per_step']:.4f} s/step  ({time.perf_counter() - t0:.0f} s)"
                  + (f"  [round {rnd + 1}/{args.repeats}]" if args.repeats > 1 else ""), flush=True)
    print_table(rows)
    print(f"wrote {', '.join(str(f / 'bench_lora_step.json') for f in folders)}")


def median_row(results: list[dict]) -> dict:
    """The run with the median s/step among an arm's rounds (its other figures with it), and every round's s/step."""
    ordered = sorted(results, key=lambda r: r["s_per_step"])
    return {**ordered[(len(ordered) - 1) // 2], "s_per_step_runs": [r["s_per_step"] for r in results]}


def write_json(folders: list[Path], result: dict) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "bench_lora_step.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(folder / "bench_lora_step.json")


def print_table(rows: list[dict]) -> None:
    ref = {r["arm"]: r for r in rows}.get("trainer")
    print(f"\n{'arm':15s} {'s/step':>8s} {'tokens/s':>10s} {'peak GB':>8s} {'MFU':>6s} {'vs Trainer':>10s}  what")
    for r in rows:
        vs = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
        gb = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else "-"
        print(f"{r['arm']:15s} {r['s_per_step']:8.4f} {r['tokens_per_s']:10,.0f} {gb:>8s} {100 * r['mfu']:5.1f}% "
              f"{vs:>10s}  {r['what']}")


def _versions() -> dict:
    import peft
    import transformers

    return {"transformers": transformers.__version__, "peft": peft.__version__}


if __name__ == "__main__":
    main()
