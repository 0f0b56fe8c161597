"""Benchmark: `probe(minilm, rotten-tomatoes)` with default settings, phase by phase, against plain
forward+backward on the same batches.

The probe's own overhead is what it adds on top of the forward+backward passes any gradient
needs: accumulating three float32 sums, the NaN checks, and the SVDs and estimators. It is
measured as (gradient + noise + spectra) / (plain fwd+bwd over the same 2N batches) - 1, with
the plain passes run under the same requires_grad setting (only the probed weights), i.e. the
cheapest backward that yields these gradients. Target: < 25 %. Whole probe target: < 3 min.

Run: python benchmarks/bench_probe.py [--batches N] [--update-steps K] [--threads T]
The numbers are wall-clock on whatever machine runs it; on a shared box they are noisy.
"""

from __future__ import annotations

import argparse
import time

import torch


def plain_fwd_bwd(model, refs, batches, *, probed_only: bool) -> float:
    """Seconds for forward+backward over `batches`, gradients discarded."""
    from intrinsic.probes.gradient import only_probed_weights_trainable

    params = list(model.parameters())
    start = time.perf_counter()
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
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--task", default="rotten-tomatoes")
    ap.add_argument("--batches", type=int, default=None, help="override the default N")
    ap.add_argument("--update-steps", type=int, default=None, help="override the default K")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
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

    t0 = time.perf_counter()
    report = probe(loaded, data, **overrides)
    total = time.perf_counter() - t0

    refs = discover(loaded.model)
    common = dict(batch_size=s.batch_size, max_length=s.max_length, seed=s.seed, num_batches=s.batches)
    batches = make_batches(data, loaded.tokenizer, **common) + make_batches(
        data, loaded.tokenizer, shuffle_labels=True, **common
    )
    plain = plain_fwd_bwd(loaded.model, refs, batches, probed_only=True)
    plain_all = plain_fwd_bwd(loaded.model, refs, batches, probed_only=False)

    t = report.timings
    grad_phase = t.get("gradient", 0) + t.get("noise", 0)
    overhead = (grad_phase + t.get("spectra", 0)) / plain - 1
    print(f"probe {args.model} on {args.task}: N={s.batches} batches x {s.batch_size}, max_length {s.max_length}, "
          f"K={s.update_steps} update steps, {report.tokens:,} tokens, {len(report.modules)} rows, "
          f"{torch.get_num_threads()} threads")
    print(f"{'phase':<34}{'seconds':>9}")
    print(f"{'load model + task (outside probe)':<34}{load_s:>9.2f}")
    for phase, sec in t.items():
        print(f"{phase:<34}{sec:>9.2f}")
    print(f"{'probe total':<34}{total:>9.2f}")
    print(f"{'plain fwd+bwd, 2N batches (probed)':<34}{plain:>9.2f}")
    print(f"{'plain fwd+bwd, 2N batches (all)':<34}{plain_all:>9.2f}")
    print(f"overhead of accumulation + checks + SVD/estimators over plain fwd+bwd: {100 * overhead:+.1f}% "
          f"(accumulation alone {100 * (grad_phase / plain - 1):+.1f}%); target < 25%")
    print(f"total probe {total:.1f} s; target < 180 s: {'met' if total < 180 else 'MISSED'}")
    kinds = report.summary["by_kind"]
    print("median intrinsic rank (" + report.estimator + "): " + ", ".join(
        f"{k} {v['median_rank']:g} (energy {100 * v['energy_share']:.0f}%)" for k, v in kinds.items()))


if __name__ == "__main__":
    main()
