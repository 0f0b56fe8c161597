"""Access: a discovered module's layer, its (out, in) weight and gradient, role rows, and PEFT names.

Every accessor takes the `ModuleRef` that `discover` returned. `weight_of`/`grad_of` return the
(out, in) view whatever the storage (Conv1D: the transpose) and, under PEFT, the base layer's
tensors; `roles_of` gives the rows of each role of a fused weight; `peft_target_name` strips
PEFT's `base_model.model.` prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .table import PEFT_PREFIX, ModuleRef

if TYPE_CHECKING:
    import torch


def base_layer(module: torch.nn.Module) -> torch.nn.Module:
    """The wrapped layer of a PEFT tuner layer (LoRA etc.), else the module itself."""
    import torch

    if isinstance(getattr(module, "base_layer", None), torch.nn.Module) and hasattr(module, "get_base_layer"):
        return module.get_base_layer()
    return module


def get_module(model, ref: ModuleRef) -> torch.nn.Module:
    """The module named by `ref` (for PEFT: the LoRA wrapper, not its base layer)."""
    try:
        return model.get_submodule(ref.name)
    except AttributeError:
        raise ConfigError(f"Module '{ref.name}' is not in this model (was it discovered on another one?).") from None


def weight_of(model, ref: ModuleRef) -> torch.Tensor:
    """The (out, in) view of the module's weight (Conv1D: its transpose; PEFT: the base layer's)."""
    w = base_layer(get_module(model, ref)).weight  # (out, in), or (in, out) for Conv1D
    return w.T if ref.transposed else w


def grad_of(model, ref: ModuleRef) -> torch.Tensor | None:
    """The (out, in) view of the weight's gradient, or None when there is none."""
    g = base_layer(get_module(model, ref)).weight.grad
    if g is None:
        return None
    return g.T if ref.transposed else g


def roles_of(ref: ModuleRef) -> list[tuple[str, slice | list[int]]]:
    """[(role, rows)] of a fused module's role blocks; [(ref.role, slice(None))] for an unfused one.

    `rows` is a slice when the role's rows are contiguous, else (GPT-NeoX) a sorted list of row
    indices; either indexes the first dimension: `weight_of(model, ref)[rows]` is that role's matrix.
    """
    if not ref.blocks:
        return [(ref.role, slice(None))]
    out = []
    for role in dict.fromkeys(b.role for b in ref.blocks):  # roles in order of first appearance
        mine = [b for b in ref.blocks if b.role == role]
        if len(mine) == 1:
            out.append((role, slice(mine[0].start, mine[0].stop)))
        else:
            out.append((role, [i for b in mine for i in range(b.start, b.stop)]))
    return out


def peft_target_name(name: str) -> str:
    """A module name as PEFT's `target_modules` sees it: without the `base_model.model.` prefix."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
