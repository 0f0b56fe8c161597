"""Side-by-side timing of the gradient probe's spectra modes, used by `bench_probe.py --compare` / `--shape`.

On the same calibration batches, in one process: (1) plain forward+backward over the 2N batches (real and
shuffled) with only the probed weights requiring grad (the cheapest backward that yields these gradients);
(2) the probe's accumulation (gradient + noise phases), without and with the per-example gradient energy
hooks; (3) from the same sums, the spectra in exact and in top-k mode, each followed by the estimators.
A mode's probe time is accumulation + its spectra + its estimators. Also the agreement of the modes: the
designated rank (sign_flip; half_difference without folds) and every test estimator per row, and the relative error of the top-8
singular values of each mean gradient (values above 1e-6 sigma_1). Peak device memory per step on CUDA.
With `sketch` k, sketch mode too (hooks and streaming sketches, no dL/dW: its time, peak memory, sketch state and
agreement with exact mode, also within one); `sketch_only` skips the exact accumulators (for shapes they do not fit).
With folds, exact mode's sign-flip ranks are also recomputed with resampling seed + 1 (`exact_reseeded`): how far the
test's own Monte Carlo noise moves them, the yardstick for the sketch's agreement.
On a CPU shared with other work, wall-clock ratios are noisy; the process CPU seconds (`cpu` keys, all threads
of this process) are what to compare there.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from intrinsic.probes.gradient import accumulate_gradients, measure_sums, only_probed_weights_trainable
from intrinsic.probes.rows import gradient_rows
from intrinsic.probes.sketch import accumulate_sketches
from intrinsic.probes.sketch_spectra import measure_sketches
from intrinsic.probes.topk import measure_sums_topk
from intrinsic.rank import TESTS


class Clock:
    """Wall-clock laps with a device sync before each reading; peak CUDA memory per lap."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.cpu: dict[str, float] = {}  # lap name -> process CPU seconds

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def run(self, fn, name: str = ""):
        """(result, wall seconds, peak GB or None) of fn(); its process CPU seconds go to self.cpu[name]."""
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.sync()
        peak = torch.cuda.max_memory_allocated() / 1e9 if self.cuda else None
        self.cpu[name] = time.process_time() - cpu
        return out, time.perf_counter() - start, peak


def plain_fwd_bwd(model, refs, batches, device) -> None:
    """Forward+backward over `batches`, only the probed weights requiring grad, gradients discarded."""
    params = list(model.parameters())
    with torch.enable_grad(), only_probed_weights_trainable(model, refs):
        for b in batches:
            model(**{k: v.to(device) for k, v in b.items()}).loss.backward()
            for p in params:
                p.grad = None


def _top8_error(exact_rows, top_rows, floor: float = 1e-6) -> list[float]:
    out = []
    for e, t in zip(exact_rows, top_rows):
        a, b = np.asarray(e.grad_sv[:8]), np.asarray(t.grad_sv[:8])
        live = a > floor * a[0] if len(a) and a[0] > 0 else np.zeros(len(a), bool)
        out.append(float(np.max(np.abs(a[live] - b[live]) / a[live])) if live.any() else 0.0)
    return out


def sketch_arm(model, refs, real, shuffled, clock: Clock, res: dict, *, k: int, tokens: int, seed: int, folds: int,
               designated: str, log=print) -> list:
    """Sketch mode (`--sketch K`) on the same batches: hooks + sketches, their spectra, the estimators; its rows."""
    sums, t_acc, peak = clock.run(lambda: accumulate_sketches(model, refs, real, shuffled, k=k, folds=folds,
                                                              seed=seed)[0], "sketch_accumulate")
    state = sum(r.Y.numel() + r.W.numel() for r in sums.rows) * 4 / 1e9
    spec, t_spec, spec_peak = clock.run(lambda: measure_sketches(sums, tokens, seed), "sketch_spectra")
    rows, t_est, _ = clock.run(lambda: gradient_rows(refs, spec, designated), "sketch_estimate")
    total = t_acc + t_spec + t_est
    cpu = clock.cpu["sketch_accumulate"] + clock.cpu["sketch_spectra"] + clock.cpu["sketch_estimate"]
    res["sketch"] = {"k": k, "accumulate_s": t_acc, "accumulate_peak_gb": peak, "state_gb": state,
                     "spectra_s": t_spec, "estimate_s": t_est, "spectra_peak_gb": spec_peak, "probe_s": total,
                     "probe_over_plain": total / res["plain_s"], "probe_over_plain_cpu": cpu / clock.cpu["plain"]}
    log(f"sketch (k={k}): accumulate {t_acc:.2f} s (sketch state {state:.3f} GB), spectra {t_spec:.2f} s, estimators "
        f"{t_est:.2f} s; probe {total:.2f} s = {total / res['plain_s']:.2f}x plain (CPU: {cpu / clock.cpu['plain']:.2f}x)"
        + (f"; peak {peak:.2f} GB (plain {res['plain_peak_gb']:.2f} GB)" if peak is not None else ""))
    return rows


def _sketch_agreement(ex, sk) -> dict:
    """Sketch vs exact rows: designated ranks, every test, top-8 values above 1% of sigma_1, energies."""
    top = [(a, b) for a, b in zip(ex, sk) if a.block_of is None]
    err = _top8_error(ex, sk, floor=1e-2)
    return {"designated": float(np.mean([a.intrinsic_rank == b.intrinsic_rank for a, b in zip(ex, sk)])),
            "designated_within_1": float(np.mean([abs(a.intrinsic_rank - b.intrinsic_rank) <= 1 for a, b in zip(ex, sk)])),
            "by_estimator": {name: float(np.mean([a.grad_ranks.get(name) == b.grad_ranks.get(name) for a, b in zip(ex, sk)]))
                             for name in TESTS if name in ex[0].grad_ranks},
            "rows": len(ex), "top8_rel_err_max": max(err), "top8_rel_err_median": float(np.median(err)),
            "energy_rel_err_max": max(abs(b.grad_norm ** 2 / a.grad_norm ** 2 - 1) for a, b in zip(ex, sk) if a.grad_norm > 0),
            "energy_share_abs_err_max": max(abs(a.energy_share - b.energy_share) for a, b in top),
            "ranks": {"exact": [a.intrinsic_rank for a in ex], "sketch": [b.intrinsic_rank for b in sk]}}


def _reseeded(refs, spec, rows, seed: int) -> dict:
    """The exact sign-flip ranks again with another resampling seed: how far the test's own Monte Carlo noise (199
    random sign vectors, p-values near alpha) moves the designated rank, the yardstick for sketch-vs-exact agreement."""
    from intrinsic.probes.base import row_views
    from intrinsic.rank.signflip import sign_flip_test

    ranks = [sign_flip_test(spec[key].folds, seed=seed).rank for key, _, _ in row_views(refs)]
    same = [a.intrinsic_rank == r for a, r in zip(rows, ranks)]
    return {"seed": seed, "designated": float(np.mean(same)), "ranks": ranks}


def compare(model, refs, real, shuffled, *, tokens: int, topk: int = 128, max_sv: int = 512, seed: int = 0,
            folds: int = 8, example_energy: bool = True, sketch: int | None = None, sketch_only: bool = False,
            modes: tuple[str, ...] = ("exact", "topk"), log=print) -> dict:
    """Everything the module docstring lists, as a JSON-able dict. With `folds` K (as the probe's default, when
    the batches are a multiple of K) the fold means are kept and sign_flip is the designated rank, else
    half_difference. With `sketch` k also sketch mode (run first, so its peak memory holds no exact sums) and its
    agreement with exact mode; `sketch_only`: plain and sketch mode only (shapes whose exact sums do not fit).
    `modes`: the spectra modes timed (("topk",) alone: its time only, no agreement with exact mode)."""
    folds = folds if folds and len(real) % folds == 0 else 0
    designated = "sign_flip" if folds else "half_difference"
    device = next(model.parameters()).device
    clock = Clock(device)
    plain_fwd_bwd(model, refs, real[:1], device)  # warm-up (CUDA context, kernels, allocator): not timed
    res: dict = {"batches": len(real), "tokens": tokens, "modules": len(refs), "topk_k": topk, "folds": folds,
                 "designated_estimator": designated}
    _, res["plain_s"], res["plain_peak_gb"] = clock.run(
        lambda: plain_fwd_bwd(model, refs, real + shuffled, device), "plain")
    log(f"plain fwd+bwd over {2 * len(real)} batches: {res['plain_s']:.2f} s")
    sketch_rows = None
    if sketch:
        sketch_rows = sketch_arm(model, refs, real, shuffled, clock, res, k=sketch, tokens=tokens, seed=seed,
                                 folds=folds, designated=designated, log=log)
        if sketch_only:
            res["cpu_s"] = dict(clock.cpu)
            return res
    sums, res["accumulate_s"], res["accumulate_peak_gb"] = clock.run(
        lambda: accumulate_gradients(model, refs, real, shuffled, folds=folds), "accumulate")
    log(f"probe accumulation (gradient + noise): {res['accumulate_s']:.2f} s")
    if example_energy:
        energy_sums, res["accumulate_energy_s"], res["accumulate_energy_peak_gb"] = clock.run(
            lambda: accumulate_gradients(model, refs, real, shuffled, folds=folds, example_energy=True),
            "accumulate_energy")
        per_example = energy_sums.example_energy
        del energy_sums  # its accumulators: a second copy of every sum on the device
        res["example_energy_overhead"] = res["accumulate_energy_s"] / res["accumulate_s"] - 1
        res["example_energy_overhead_cpu"] = clock.cpu["accumulate_energy"] / clock.cpu["accumulate"] - 1
        log(f"  with per-example energy: {res['accumulate_energy_s']:.2f} s "
            f"({100 * res['example_energy_overhead']:+.1f}% wall, {100 * res['example_energy_overhead_cpu']:+.1f}% CPU)")
    rows = {}
    for mode in modes:
        def spectra(mode=mode):
            if mode == "exact":
                return measure_sums(sums, tokens, max_sv, seed)
            return measure_sums_topk(sums, tokens, topk, seed)

        spec, t_spec, peak = clock.run(spectra, f"{mode}_spectra")
        got, t_est, _ = clock.run(lambda spec=spec: gradient_rows(
            refs, spec, designated, example_energy=per_example if example_energy else None),
            f"{mode}_estimate")
        rows[mode] = got
        if mode == "exact" and folds:
            res["exact_reseeded"] = _reseeded(refs, spec, got, seed + 1)
            log(f"exact mode against itself with resampling seed {seed + 1}: designated ranks agree on "
                f"{100 * res['exact_reseeded']['designated']:.1f}% of rows (the sign-flip test's Monte Carlo noise)")
        total = res["accumulate_s"] + t_spec + t_est
        res[mode] = {"spectra_s": t_spec, "estimate_s": t_est, "spectra_peak_gb": peak, "probe_s": total,
                     "probe_over_plain": total / res["plain_s"]}
        cpu = clock.cpu["accumulate"] + clock.cpu[f"{mode}_spectra"] + clock.cpu[f"{mode}_estimate"]
        res[mode]["probe_over_plain_cpu"] = cpu / clock.cpu["plain"]
        log(f"{mode:>5}: spectra {t_spec:.2f} s, estimators {t_est:.2f} s; probe {total:.2f} s = "
            f"{total / res['plain_s']:.2f}x plain (CPU: {cpu / clock.cpu['plain']:.2f}x)")
    if len(rows) < 2:
        res["cpu_s"] = dict(clock.cpu)
        return res
    ex, tk = rows["exact"], rows["topk"]
    agree = {name: float(np.mean([a.grad_ranks.get(name) == b.grad_ranks.get(name) for a, b in zip(ex, tk)]))
             for name in TESTS if name in ex[0].grad_ranks}
    err = _top8_error(ex, tk)
    res["agreement"] = {"designated": float(np.mean([a.intrinsic_rank == b.intrinsic_rank for a, b in zip(ex, tk)])),
                        "by_estimator": agree, "rows": len(ex), "top8_rel_err_max": max(err),
                        "top8_rel_err_median": float(np.median(err))}
    res["designated_ranks"] = {"exact": [a.intrinsic_rank for a in ex], "topk": [b.intrinsic_rank for b in tk]}
    if example_energy:
        top = [r for r in tk if r.block_of is None]
        res["example_energy_share_by_kind"] = {k: float(sum(r.example_energy_share for r in top if r.kind == k))
                                               for k in sorted({r.kind for r in top})}
        res["grad_energy_share_by_kind"] = {k: float(sum(r.energy_share for r in top if r.kind == k))
                                            for k in sorted({r.kind for r in top})}
    if sketch_rows is not None:
        res["sketch"]["agreement"] = b = _sketch_agreement(ex, sketch_rows)
        log(f"sketch vs exact: designated ranks {100 * b['designated']:.1f}% of {b['rows']} rows; top-8 values (> 1% "
            f"sigma_1) relative error max {b['top8_rel_err_max']:.2e}, median {b['top8_rel_err_median']:.2e}; energy "
            f"relative error max {b['energy_rel_err_max']:.2e}, energy share error max {b['energy_share_abs_err_max']:.2e}")
    res["cpu_s"] = dict(clock.cpu)
    a = res["agreement"]
    log(f"agreement: designated ranks {100 * a['designated']:.1f}% of {a['rows']} rows; top-8 singular values "
        f"relative error max {a['top8_rel_err_max']:.2e}, median {a['top8_rel_err_median']:.2e}")
    return res
