"""Gradient probe: the mean gradient of each probed weight over calibration batches, without training.

For every probed module W (out x in) and N calibration batches, this accumulates in float32

    S_even = sum over even batches b of dL_b/dW      S_odd = sum over odd batches
    S_noise = sum over N shuffled-label batches of dL_b/dW

so the mean gradient is G = (S_even + S_odd) / N, the split halves are S_even / N_even and
S_odd / N_odd, and the noise floor is S_noise / N. Keeping the two half sums (not "total and
even") costs the same memory and one add per batch instead of one and a half.

With `folds` K > 0 (opt-in, `ProbeSettings.folds`) it also keeps K fold means over disjoint batch
sets, batch b in fold b % K (N a multiple of K), for the sign-flip rank test (`rank.signflip`):
one (K, out, in) float32 tensor per module, 4K more bytes per probed parameter. The half sums
are accumulated exactly as without folds, so every other number of the probe is unchanged.

Memory: three float32 accumulators per probed parameter (12 bytes) plus one gradient buffer
(the weight's own .grad, 4 bytes in float32), e.g. 10.6 M probed weights of MiniLM -> ~170 MB.
Probe a subset (`roles`, `layers`) to cut it. Only the probed weights require grad while the
probe runs (gradients still flow through every activation); the caller's flags come back after.

Several processes (`torch.distributed` initialized, `probes.distributed`) split the batches and sum the
accumulators before the spectra. The model runs in eval mode with gradients enabled: dropout would only add noise to the
measurement, and eval mode makes a probe deterministic for a given seed. A NaN or inf loss or
gradient stops the probe with `NonFiniteError` naming the phase, batch and module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..arch import ModuleRef, grad_of, weight_of
from ..errors import ConfigError
from ..rank import Spectra
from ..rank.floors import Basis, split_half_kmax
from ..spectra import spectrum
from .base import ProbeBatches, RowKey, row_views
from .distributed import my_batches, sum_across, sum_values
from .example_energy import ExampleEnergy
from .steps import Progress, check_finite, device_of, forward_loss


@dataclass
class GradientSums:
    """The float32 sums the gradient probe accumulates, one (out, in) tensor per probed module."""

    refs: list[ModuleRef]  # probed modules, in order
    even: list[torch.Tensor]  # (out, in) sum of gradients over batches 0, 2, 4, ...
    odd: list[torch.Tensor]  # (out, in) sum over batches 1, 3, 5, ...
    noise: list[torch.Tensor]  # (out, in) sum over the shuffled-label batches
    n_even: int  # number of even batches
    n_odd: int  # number of odd batches
    n_noise: int  # number of shuffled-label batches
    folds: list[torch.Tensor] | None = None  # (K, out, in) fold means, batch b in fold b % K; None: not kept
    n_fold: int = 0  # batches per fold
    example_energy: dict | None = None  # RowKey -> mean over batches of sum_i ||G_i||_F^2 (None: not measured)

    @property
    def n(self) -> int:
        return self.n_even + self.n_odd

    def means(self, i: int, rows=slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(G, G_even, G_odd, G_noise) of module i, restricted to `rows` (a slice or index list)."""
        idx = rows if isinstance(rows, slice) else torch.as_tensor(rows, device=self.even[i].device)
        e, o, z = self.even[i][idx], self.odd[i][idx], self.noise[i][idx]  # (rows, in)
        return (e + o) / self.n, e / max(self.n_even, 1), o / max(self.n_odd, 1), z / max(self.n_noise, 1)

    def fold_means(self, i: int, rows=slice(None)) -> torch.Tensor | None:
        """(K, rows, in) fold means of module i (a view for a slice of rows), None when folds were not kept."""
        if self.folds is None:
            return None
        idx = rows if isinstance(rows, slice) else torch.as_tensor(rows, device=self.folds[i].device)
        return self.folds[i][:, idx]


def check_accumulation(batches: Sequence, folds: int, refs: Sequence[ModuleRef]) -> None:
    """The inputs every accumulation (exact sums or sketches) needs: two batches at least (the split halves),
    a whole number of folds, modules to probe."""
    if len(batches) < 2:
        raise ConfigError(f"batches must be at least 2 (split halves need one batch each), got {len(batches)}")
    if folds and len(batches) % folds:
        raise ConfigError(f"batches ({len(batches)}) must be a multiple of folds ({folds})")
    if not refs:
        raise ConfigError("No modules to probe.")


@contextlib.contextmanager
def only_probed_weights_trainable(model, refs: Sequence[ModuleRef]) -> Iterator[list[torch.nn.Parameter]]:
    """Freeze every parameter except the probed weights; restore flags, grads and train/eval mode afterwards."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    probed = []
    seen = set()
    for ref in refs:
        w = weight_of(model, ref)
        base = w._base if w._base is not None else w  # Conv1D: weight_of returns a transposed view
        if id(base) not in seen:
            seen.add(id(base))
            probed.append(base)
    try:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        for p in probed:
            p.requires_grad_(True)
        model.eval()
        yield probed
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
            p.grad = None
        model.train(was_training)


def _run(model, refs, batches, sums: list[list[torch.Tensor]], phase: str, progress: Progress | None,
         folds: list[torch.Tensor] | None = None, energy: ExampleEnergy | None = None) -> None:
    """Add each batch's gradient into sums[b % len(sums)] (and into folds[i][b % K] when given); `energy`'s
    hooks (when given) see every batch with its attention mask."""
    params = [p for p in model.parameters() if p.requires_grad]
    mine = my_batches(batches)  # several processes: every world-th batch, global index kept
    for done, (b, batch) in enumerate(mine, 1):
        for p in params:
            p.grad = None
        if energy is not None:
            energy.mask = batch.get("attention_mask")
        loss = forward_loss(model, batch, phase, b)
        loss.backward()
        check_finite(model, refs, phase, b)
        acc = sums[b % len(sums)]
        for i, ref in enumerate(refs):
            g = grad_of(model, ref)  # (out, in)
            if g is not None:
                acc[i].add_(g)
                if folds is not None:
                    folds[i][b % folds[i].shape[0]].add_(g)
        if progress:
            progress(phase, done, len(mine))
    for p in params:
        p.grad = None


def accumulate_gradients(
    model,
    refs: Sequence[ModuleRef],
    batches: Sequence[dict[str, torch.Tensor]],
    noise_batches: Sequence[dict[str, torch.Tensor]],
    *,
    progress: Progress | None = None,
    folds: int = 0,
    example_energy: bool = False,
) -> GradientSums:
    """Sum per-batch gradients of the probed weights: even/odd halves of `batches`, and `noise_batches`;
    with `folds` K > 0 also the K fold means (batch b in fold b % K); with `example_energy` also the
    per-example gradient energy of every row over `batches` (`example_energy.ExampleEnergy`)."""
    check_accumulation(batches, folds, refs)
    dev = device_of(model)

    def zeros():
        return [torch.zeros(r.shape, dtype=torch.float32, device=dev) for r in refs]  # (out, in) each

    even, odd, noise = zeros(), zeros(), zeros()
    fold = [torch.zeros((folds, *r.shape), dtype=torch.float32, device=dev) for r in refs] if folds else None
    energy = ExampleEnergy(model, refs) if example_energy else None
    with torch.enable_grad(), only_probed_weights_trainable(model, refs):
        with energy or contextlib.nullcontext():
            _run(model, refs, batches, [even, odd], "gradient", progress, fold, energy)
        _run(model, refs, noise_batches, [noise], "noise", progress)
    sum_across(even + odd + noise + (fold or []))  # several processes: every one now holds the sums of all batches
    n_even = (len(batches) + 1) // 2
    n_fold = len(batches) // folds if folds else 0
    for f in fold or ():
        f.div_(n_fold)  # sums -> means, in place
    per_batch = None if energy is None else {k: v / len(batches) for k, v in sum_values(energy.totals(), dev).items()}
    return GradientSums(list(refs), even, odd, noise, n_even, len(batches) - n_even, len(noise_batches), fold, n_fold,
                        per_batch)


# ---------------------------------------------------------------------- spectra


def _halves(G_even: torch.Tensor, G_odd: torch.Tensor, max_sv: int, seed: int) -> tuple[Basis, Basis]:
    """Spectra and top bases (K = rank.floors.split_half_kmax columns, none if K < 1) of the two half means."""
    K = split_half_kmax(tuple(G_even.shape))
    if K < 1:
        m, n = G_even.shape
        return tuple(Basis(spectrum(G, max_sv, seed), np.zeros((m, 0)), np.zeros((n, 0)))
                     for G in (G_even, G_odd))  # no room for a test: split_half reads 0
    return Basis(*spectrum(G_even, max_sv, seed, vectors=K)), Basis(*spectrum(G_odd, max_sv, seed + 1, vectors=K))


def measure_sums(sums: GradientSums, tokens: int, max_sv: int, seed: int,
                 progress: Progress | None = None) -> dict[RowKey, Spectra]:
    """One Spectra per module and per role block of a fused module, from the accumulated sums."""
    views = list(row_views(sums.refs))
    index = {id(r): i for i, r in enumerate(sums.refs)}
    out = {}
    for v, (key, ref, sel) in enumerate(views):
        G, Ge, Go, Gn = sums.means(index[id(ref)], sel)  # (rows, in) each
        shape = (int(G.shape[0]), int(G.shape[1]))
        noise_sv = spectrum(Gn, max_sv, seed)
        sv = spectrum(G, max_sv, seed)
        halves = _halves(Ge, Go, max_sv, seed)
        diff_top = spectrum((Ge - Go) / 2, 1, seed)[0]  # sigma_1 of the half difference
        out[key] = Spectra(sv=sv, shape=shape, tokens=tokens, norm=float(torch.linalg.vector_norm(G)), halves=halves,
                           noise_sv=noise_sv, noise_norm=float(torch.linalg.vector_norm(Gn)),
                           label_norm=float(torch.linalg.vector_norm(G - Gn)), diff_top=float(diff_top), seed=seed,
                           folds=sums.fold_means(index[id(ref)], sel))  # (K, rows, in) or None
        if progress:
            progress("spectra", v + 1, len(views))
    return out


class GradientProbe:
    """The gradient probe as a `Probe`: accumulate, then measure the spectra (phases gradient, noise, spectra);
    exact (`measure_sums`) or top-k (`topk.measure_sums_topk`) by `settings.spectra`; with `settings.sketch`
    sketch mode instead (`sketch.accumulate_sketches`, `sketch_spectra.measure_sketches`). With
    `settings.example_energy`, `example_energy` holds {RowKey: mean over batches of sum_i ||G_i||_F^2} after."""

    name = "gradient"

    def __init__(self) -> None:
        self.example_energy: dict[RowKey, float] | None = None
        self.notes: list[str] = []  # what the report should say about the measurement (sketch clamps)

    def measure(self, model, refs: Sequence[ModuleRef], batches: ProbeBatches, settings,
                progress: Progress | None = None) -> dict[RowKey, Spectra]:
        if getattr(settings, "sketch", None):  # sketch mode: hooks and streaming sketches, no dL/dW
            from .sketch import accumulate_sketches, clamp_note
            from .sketch_spectra import measure_sketches

            sk, self.example_energy = accumulate_sketches(
                model, refs, batches.real, batches.shuffled, k=settings.sketch, folds=getattr(settings, "folds", 0),
                seed=settings.seed, progress=progress, example_energy=getattr(settings, "example_energy", False))
            self.notes = [n for n in (clamp_note(sk),) if n]
            return measure_sketches(sk, batches.tokens, settings.seed, progress)
        sums = accumulate_gradients(model, refs, batches.real, batches.shuffled, progress=progress,
                                    folds=getattr(settings, "folds", 0),
                                    example_energy=getattr(settings, "example_energy", False))
        self.example_energy = sums.example_energy
        if getattr(settings, "spectra", "exact") == "topk":
            from .topk import measure_sums_topk

            return measure_sums_topk(sums, batches.tokens, settings.topk, settings.seed, progress)
        return measure_sums(sums, batches.tokens, settings.max_sv, settings.seed, progress)
