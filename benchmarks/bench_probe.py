"""Benchmark: `probe(minilm, rotten-tomatoes)` with default settings, phase by phase, against plain
forward+backward on the same batches.

The probe's own overhead is what it adds on top of the forward+backward passes any gradient
needs: accumulating three float32 sums, the NaN checks, and the SVDs and estimators. It is
measured as (gradient + noise + spectra) / (plain fwd+bwd over the same 2N batches) - 1, with
the plain passes run under the same requires_grad setting (only the probed weights), i.e. the
cheapest backward that yields these gradients. Target: < 25 %. Whole probe target: < 3 min.

Run: python benchmarks/bench_probe.py [--batches N] [--update-steps K] [--threads T] [--out DIR]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--task", default="rotten-tomatoes")
    ap.add_argument("--batches", type=int, default=None, help="override the default N")
    ap.add_argument("--update-steps", type=int, default=None, help="override the default K")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="also save the report (probe.json, spectra, plots) here")
    args = ap.parse_args()
    if args.threads:
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # before numpy loads OpenBLAS
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from intrinsic.arch import discover
    from intrinsic.models import load_model
    from intrinsic.probes import ProbeSettings, probe
    from intrinsic.tasks import load_task, make_batches

    overrides = {k: v for k, v in (("batches", args.batches), ("update_steps", args.update_steps)) if v is not None}
    s = ProbeSettings(**overrides)
    t0 = time.perf_counter()
    data = load_task(args.task, seed=s.seed)
    loaded = load_model(args.model, num_labels=data.num_labels, seed=s.seed)
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
