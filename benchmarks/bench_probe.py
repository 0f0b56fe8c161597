"""Benchmark: `probe(minilm, rotten-tomatoes)` with default settings, phase by phase, against plain
forward+backward on the same batches.

The probe's own overhead is what it adds on top of the forward+backward passes any gradient
needs: accumulating three float32 sums, the NaN checks, and the SVDs and estimators. It is
measured as (gradient + noise + spectra) / (plain fwd+bwd over the same 2N batches) - 1, with
the plain passes run under the same requires_grad setting (only the probed weights), i.e. the
cheapest backward that yields these gradients. Target: < 25 %. Whole probe target: < 3 min.

Run: python benchmarks/bench_probe.py [--batches N] [--update-steps K] [--threads T] [--out DIR]

Spectra modes side by side (`probe_modes.compare`: plain fwd+bwd vs the probe in exact and top-k mode on
the same batches, their agreement, the per-example energy's cost), writing JSON under benchmarks/results/:
  python benchmarks/bench_probe.py --compare                       # MiniLM on Rotten Tomatoes, CPU
  python benchmarks/bench_probe.py --shape llama-1b --device cuda --dtype bfloat16   # H200: ~2-3 min
`--shape` builds a random-init model (llama-1b: the Llama-3.2-1B config with vocabulary 30,522; llama-8b: the
Llama-3-8B config, same vocabulary, 2 x 512; llama-tiny: a 2-layer toy for the CPU smoke test) and feeds it --batches (default 32) batches of --batch-size x --seq
random tokens (1B: 8 x 512); the gradient probe only (`--no-update` in CLI terms).
`--sketch K` adds sketch mode (run first, so its peak memory holds no exact sums; its agreement with exact mode),
`--sketch-only` runs plain and sketch mode only, e.g. on the H200:
  python benchmarks/bench_probe.py --shape llama-1b --device cuda --dtype bfloat16 --sketch 128
  python benchmarks/bench_probe.py --shape llama-8b --device cuda --dtype bfloat16 --sketch 128 --sketch-only
The numbers are wall-clock (and process CPU) on whatever machine runs it; on a shared box they
are noisy. There, --threads 1 is much faster than 2 threads for torch and numpy's OpenBLAS alike
(threads spin-waiting for a descheduled partner), so it sets OPENBLAS_NUM_THREADS too.
"""

from __future__ import annotations

import argparse
import os
import time


def plain_fwd_bwd(model, refs, batches, *, probed_only: bool) -> tuple[float, float]:
    """(wall, CPU) seconds for forward+backward over `batches`, gradients discarded."""
    import torch

    from intrinsic.probes.gradient import only_probed_weights_trainable

    params = list(model.parameters())
    start, cpu = time.perf_counter(), time.process_time()
    if probed_only:
        with torch.enable_grad(), only_probed_weights_trainable(model, refs):
            for b in batches:
                model(**b).loss.backward()
                for p in params:
                    p.grad = None
    else:
        model.eval()
        for b in batches:
            model(**b).loss.backward()
            for p in params:
                p.grad = None
    return time.perf_counter() - start, time.process_time() - cpu


SHAPES = {  # random-init configs of `--shape`: (LlamaConfig overrides, batch size, tokens per example)
    "llama-1b": (dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=64, rope_theta=500000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, max_position_embeddings=8192, vocab_size=30522), 8, 512),
    "llama-8b": (dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      max_position_embeddings=8192, vocab_size=30522), 2, 512),
    "llama-tiny": (dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=1000, max_position_embeddings=256), 2, 32),
}


def random_token_batches(n: int, batch: int, seq: int, vocab: int, seed: int, shuffled: bool = False) -> list:
    """n LM batches of random token ids (labels = the ids; shuffled: each row's labels permuted)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=g)  # (B, T)
        labels = torch.stack([row[torch.randperm(seq, generator=g)] for row in ids]) if shuffled else ids.clone()
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def run_compare(args) -> None:
    """`--compare` / `--shape`: the spectra modes side by side (probe_modes.compare), JSON under --json."""
    import json
    from pathlib import Path

    import torch

    from intrinsic.arch import discover
    from probe_modes import compare

    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if args.shape:
        from transformers import AutoModelForCausalLM, LlamaConfig

        overrides, batch, seq = SHAPES[args.shape]
        batch, seq = args.batch_size or batch, args.seq or seq
        n = args.batches or 32
        torch.manual_seed(0)
        with device:
            model = AutoModelForCausalLM.from_config(LlamaConfig(**overrides), dtype=dtype).eval()
        vocab = overrides["vocab_size"]
        real = random_token_batches(n, batch, seq, vocab, seed=1)
        shuffled = random_token_batches(n, batch, seq, vocab, seed=2, shuffled=True)
        name, tokens = args.shape, n * batch * seq
    else:
        from intrinsic.models import load_model
        from intrinsic.probes import ProbeSettings
        from intrinsic.tasks import count_tokens, load_task, make_batches

        s = ProbeSettings(**({"batches": args.batches} if args.batches else {}))
        data = load_task(args.task, seed=s.seed)
        loaded = load_model(args.model, task_kind=data.kind, num_labels=max(2, data.num_labels), seed=s.seed,
                            device=args.device, dtype=args.dtype)
        model = loaded.model
        common = dict(batch_size=s.batch_size, max_length=s.max_length, seed=s.seed, num_batches=s.batches)
        real = make_batches(data, loaded.tokenizer, **common)
        shuffled = make_batches(data, loaded.tokenizer, shuffle_labels=True, **common)
        name, tokens = f"{args.model}-{args.task}", count_tokens(real)
    refs = discover(model)
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params / 1e6:.1f} M parameters, {len(refs)} probed modules, {len(real)} batches, "
          f"{tokens:,} tokens, {args.device} {args.dtype}, {torch.get_num_threads()} threads")
    res = compare(model, refs, real, shuffled, tokens=tokens, topk=args.topk, folds=args.folds, sketch=args.sketch,
                  sketch_only=args.sketch_only, modes=tuple(args.modes.split(",")))
    res.update(name=name, params=params, device=args.device, dtype=args.dtype,
               device_name=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               threads=torch.get_num_threads())
    out = Path(args.json or f"benchmarks/results/probe-modes-{name}-{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--task", default="rotten-tomatoes")
    ap.add_argument("--batches", type=int, default=None, help="override the default N")
    ap.add_argument("--update-steps", type=int, default=None, help="override the default K")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="also save the report (probe.json, spectra, plots) here")
    ap.add_argument("--compare", action="store_true", help="spectra modes side by side on --model/--task")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="random-init model (implies --compare)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--batch-size", type=int, default=None, help="--shape: examples per batch")
    ap.add_argument("--seq", type=int, default=None, help="--shape: tokens per example")
    ap.add_argument("--topk", type=int, default=128, help="values per spectrum in top-k mode")
    ap.add_argument("--folds", type=int, default=8, help="fold means for sign_flip (0: off, half_difference designated)")
    ap.add_argument("--sketch", type=int, default=None, help="also sketch mode with this sketch size K")
    ap.add_argument("--sketch-only", action="store_true", help="with --sketch: plain and sketch mode only (shapes whose "
                                                               "exact accumulators do not fit)")
    ap.add_argument("--modes", default="exact,topk", help="spectra modes timed, comma-separated (topk alone: no "
                                                          "agreement with exact mode)")
    ap.add_argument("--json", default=None, help="where --compare writes its JSON")
    args = ap.parse_args()
    if args.threads:
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # before numpy loads OpenBLAS
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare or args.shape:
        run_compare(args)
        return

    from intrinsic.arch import discover
    from intrinsic.models import load_model
    from intrinsic.probes import ProbeSettings, probe
    from intrinsic.tasks import load_task, make_batches

    overrides = {k: v for k, v in (("batches", args.batches), ("update_steps", args.update_steps)) if v is not None}
    s = ProbeSettings(**overrides)
    t0 = time.perf_counter()
    data = load_task(args.task, seed=s.seed)
    loaded = load_model(args.model, task_kind=data.kind, num_labels=max(2, data.num_labels), seed=s.seed)
    load_s = time.perf_counter() - t0

    cpu: dict[str, float] = {}  # phase -> CPU seconds (all threads), robust to other load on the box
    mark = [time.process_time()]

    def on_progress(phase: str, done: int, total: int) -> None:
        if done == total:
            now = time.process_time()
            cpu[phase] = cpu.get(phase, 0.0) + now - mark[0]
            mark[0] = now

    t0 = time.perf_counter()
    report = probe(loaded, data, s, progress=on_progress)
    total = time.perf_counter() - t0
    if args.out:
        from intrinsic.report.plots import write_plots

        report.save(args.out)
        write_plots(report, args.out)

    refs = discover(loaded.model)
    common = dict(batch_size=s.batch_size, max_length=s.max_length, seed=s.seed, num_batches=s.batches)
    batches = make_batches(data, loaded.tokenizer, **common) + make_batches(
        data, loaded.tokenizer, shuffle_labels=True, **common
    )
    plain, plain_cpu = plain_fwd_bwd(loaded.model, refs, batches, probed_only=True)
    plain_all, plain_all_cpu = plain_fwd_bwd(loaded.model, refs, batches, probed_only=False)

    t = report.timings
    grad_phase = t.get("gradient", 0) + t.get("noise", 0)
    overhead = (grad_phase + t.get("spectra", 0) + t.get("estimate", 0)) / plain - 1
    grad_cpu = cpu.get("gradient", 0) + cpu.get("noise", 0)
    overhead_cpu = (grad_cpu + cpu.get("spectra", 0) + cpu.get("estimate", 0)) / plain_cpu - 1
    print(f"probe {args.model} on {args.task}: N={s.batches} batches x {s.batch_size}, max_length {s.max_length}, "
          f"K={s.update_steps} update steps, {report.tokens:,} tokens, {len(report.modules)} rows, "
          f"{torch.get_num_threads()} threads")
    print(f"{'phase':<36}{'wall s':>9}{'CPU s':>9}")
    print(f"{'load model + task (outside probe)':<36}{load_s:>9.2f}")
    for phase, sec in t.items():
        c = cpu.get(phase)
        print(f"{phase:<36}{sec:>9.2f}" + (f"{c:>9.2f}" if c is not None and phase != "update_spectra" else ""))
    print(f"{'probe total':<36}{total:>9.2f}")
    print(f"{'plain fwd+bwd, 2N batches (probed)':<36}{plain:>9.2f}{plain_cpu:>9.2f}")
    print(f"{'plain fwd+bwd, 2N batches (all)':<36}{plain_all:>9.2f}{plain_all_cpu:>9.2f}")
    print(f"overhead (accumulation + checks + SVD/estimators) over plain fwd+bwd: wall {100 * overhead:+.1f}%, "
          f"CPU {100 * overhead_cpu:+.1f}% (accumulation alone: wall {100 * (grad_phase / plain - 1):+.1f}%, "
          f"CPU {100 * (grad_cpu / plain_cpu - 1):+.1f}%); target < 25%")
    print(f"total probe {total:.1f} s; target < 180 s: {'met' if total < 180 else 'MISSED'}")
    kinds = report.summary["by_kind"]
    print("median intrinsic rank (" + report.estimator + "): " + ", ".join(
        f"{k} {v['median_rank']:g} (energy {100 * v['energy_share']:.0f}%)" for k, v in kinds.items()))


if __name__ == "__main__":
    main()
