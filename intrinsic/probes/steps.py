"""Step helpers every probe shares: one forward pass with its loss checked, a finiteness check of the
probed gradients, and the progress callback type."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..arch import ModuleRef, grad_of
from ..errors import ConfigError, NonFiniteError

Progress = Callable[[str, int, int], None]  # (phase, done, total); the library never draws anything itself


def fits(need: int, free: int | None, fraction: float) -> bool:
    """Whether `need` bytes fit in `fraction` of `free` (None: unknown, taken as fitting: no check)."""
    return free is None or need <= fraction * free


def device_of(model) -> torch.device:
    """The device of the model's (first) parameters."""
    return next(model.parameters()).device


def forward_loss(model, batch: dict[str, torch.Tensor], phase: str, index: int) -> torch.Tensor:
    """The model's loss on one batch (moved to the model's device); NonFiniteError if NaN/inf."""
    dev = device_of(model)
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
