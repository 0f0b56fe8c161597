"""Gradient probe: the mean gradient of each probed weight over calibration batches, without training.

For every probed module W (out x in) and N calibration batches, this accumulates in float32

    S_even = sum over even batches b of dL_b/dW      S_odd = sum over odd batches
    S_noise = sum over N shuffled-label batches of dL_b/dW

so the mean gradient is G = (S_even + S_odd) / N, the split halves are S_even / N_even and
S_odd / N_odd, and the noise floor is S_noise / N. Keeping the two half sums (not "total and
even") costs the same memory and one add per batch instead of one and a half.

Memory: three float32 accumulators per probed parameter (12 bytes) plus one gradient buffer
(the weight's own .grad, 4 bytes in float32), e.g. 10.6 M probed weights of MiniLM -> ~170 MB.
Probe a subset (`roles`, `layers`) to cut it. Only the probed weights require grad while the
probe runs (gradients still flow through every activation); the caller's flags come back after.

The model runs in eval mode with gradients enabled: dropout would only add noise to the
measurement, and eval mode makes a probe deterministic for a given seed. A NaN or inf loss or
gradient stops the probe with `NonFiniteError` naming the phase, batch and module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..arch import ModuleRef, grad_of, roles_of, weight_of
from ..errors import ConfigError, NonFiniteError

Progress = Callable[[str, int, int], None]  # (phase, done, total)


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

    @property
    def n(self) -> int:
        return self.n_even + self.n_odd

    def views(self) -> Iterator[tuple[ModuleRef, str | None, str, object]]:
        """(ref, block_of, role, rows) for every module and every role block of a fused module."""
        for ref in self.refs:
            yield ref, None, ref.role, slice(None)
            if ref.blocks:
                for role, rows in roles_of(ref):
                    yield ref, ref.name, role, rows

    def means(self, i: int, rows=slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(G, G_even, G_odd, G_noise) of module i, restricted to `rows` (a slice or index list)."""
        idx = rows if isinstance(rows, slice) else torch.as_tensor(rows, device=self.even[i].device)
        e, o, z = self.even[i][idx], self.odd[i][idx], self.noise[i][idx]  # (rows, in)
        return (e + o) / self.n, e / max(self.n_even, 1), o / max(self.n_odd, 1), z / max(self.n_noise, 1)


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


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def forward_loss(model, batch: dict[str, torch.Tensor], phase: str, index: int) -> torch.Tensor:
    """The model's loss on one batch (moved to the model's device); NonFiniteError if NaN/inf."""
    dev = _device_of(model)
    out = model(**{k: v.to(dev) for k, v in batch.items()})
    loss = getattr(out, "loss", None)
    if loss is None:
        raise ConfigError("The model returned no loss: batches need a 'labels' entry matching its head.")
    if not bool(torch.isfinite(loss)):
        raise NonFiniteError(f"Non-finite loss ({loss.item()}) in {phase} batch {index}; nothing was written.")
    return loss


def check_finite(model, refs: Sequence[ModuleRef], phase: str, index: int) -> None:
    """Raise NonFiniteError naming the first module whose gradient has a NaN or inf."""
    grads = [grad_of(model, r) for r in refs]
    total = torch.stack([g.sum() for g in grads if g is not None]).sum() if any(g is not None for g in grads) else None
    if total is None or bool(torch.isfinite(total)):
        return
    for ref, g in zip(refs, grads):
        if g is not None and not bool(torch.isfinite(g).all()):
            raise NonFiniteError(f"Non-finite gradient in module {ref.name} at {phase} batch {index}; nothing was written.")
    raise NonFiniteError(f"Gradient sum overflowed at {phase} batch {index}; nothing was written.")


def _run(model, refs, batches, sums: list[list[torch.Tensor]], phase: str, progress: Progress | None) -> None:
    """Add each batch's gradient into sums[b % len(sums)]."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = len(batches)
    for b, batch in enumerate(batches):
        for p in params:
            p.grad = None
        loss = forward_loss(model, batch, phase, b)
        loss.backward()
        check_finite(model, refs, phase, b)
        acc = sums[b % len(sums)]
        for i, ref in enumerate(refs):
            g = grad_of(model, ref)  # (out, in)
            if g is not None:
                acc[i].add_(g)
        if progress:
            progress(phase, b + 1, total)
    for p in params:
        p.grad = None


def accumulate_gradients(
    model,
    refs: Sequence[ModuleRef],
    batches: Sequence[dict[str, torch.Tensor]],
    noise_batches: Sequence[dict[str, torch.Tensor]],
    *,
    progress: Progress | None = None,
) -> GradientSums:
    """Sum per-batch gradients of the probed weights: even/odd halves of `batches`, and `noise_batches`."""
    if len(batches) < 2:
        raise ConfigError(f"batches must be at least 2 (split halves need one batch each), got {len(batches)}")
    if not refs:
        raise ConfigError("No modules to probe.")
    dev = _device_of(model)

    def zeros():
        return [torch.zeros(r.shape, dtype=torch.float32, device=dev) for r in refs]  # (out, in) each

    even, odd, noise = zeros(), zeros(), zeros()
    with torch.enable_grad(), only_probed_weights_trainable(model, refs):
        _run(model, refs, batches, [even, odd], "gradient", progress)
        _run(model, refs, noise_batches, [noise], "noise", progress)
    n_even = (len(batches) + 1) // 2
    return GradientSums(list(refs), even, odd, noise, n_even, len(batches) - n_even, len(noise_batches))
