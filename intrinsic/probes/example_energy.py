"""Per-example gradient energy of each probed module: sum over examples i of ||G_i||_F^2, without forming G_i.

A linear layer's batch gradient is G = sum_i G_i with G_i = Delta_i^T X_i (example i's inputs X_i, T x in,
and backprops Delta_i = dL/d(output), T x out, tokens of example i summed). Then

    ||G_i||_F^2 = <X_i X_i^T, Delta_i Delta_i^T>          (the "ghost norm" of Opacus; Goodfellow 2015)

costs 2 T^2 (in + out) per example instead of 2 T in out; when T^2 > in * out the G_i are formed instead
(`_energies`), whichever is cheaper. Hooks on the module (a forward hook keeps X, a tensor hook on the
output sees Delta) do it for Linear, GPT-2's Conv1D (its input and output are (.., in) and (.., out) like a
Linear's) and fused modules (a role block uses the block's columns of Delta). Padding tokens are masked out
of X (their backprops are zero anyway when the loss ignores them). G_i is example i's contribution to
the batch gradient dL/dW with the model's own loss reduction (a mean over the batch), so sum_i G_i = G.
A module called twice in one forward pass counts each call separately.

This is the statistic "LoRA Without Regret" (Thinking Machines 2025) points to: the modules dominating
per-example gradient dot products (the empirical NTK) dominate learning. Opt-in (`ProbeSettings.example_energy`,
+~10-20% of the gradient phase on CPU, see README).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..arch import ModuleRef
from ..arch.access import base_layer, get_module
from .base import RowKey, row_views


def _energies(X: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """sum over examples b of ||D_b^T X_b||_F^2 for X (B, T, in), D (B, T, out): a 0-d float32 tensor."""
    T, n_in, n_out = X.shape[1], X.shape[2], D.shape[2]
    if T * T <= n_in * n_out:
        A = X @ X.mT  # (B, T, T)
        C = D @ D.mT  # (B, T, T)
        return (A * C).sum()
    return (D.mT @ X).square().sum()  # (B, out, in) per-example gradients


class ExampleEnergy:
    """Hooks on the probed modules accumulating sum_i ||G_i||_F^2 per row (module and role block).

    Use as a context manager around the batches to measure; set `mask` to the batch's attention mask
    (B, T) before each forward pass (None: every token counts). `totals()` gives {RowKey: float}.
    """

    def __init__(self, model, refs: Sequence[ModuleRef]) -> None:
        self.model, self.refs = model, list(refs)
        self.mask: torch.Tensor | None = None
        self._acc: dict[RowKey, torch.Tensor] = {}  # row -> 0-d float32 on the model's device
        self._handles: list = []

    def __enter__(self) -> ExampleEnergy:
        for ref in self.refs:
            views = [(key, sel) for key, _, sel in row_views([ref])]
            mod = base_layer(get_module(self.model, ref))
            self._handles.append(mod.register_forward_hook(self._forward_hook(views)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _forward_hook(self, views):
        def hook(_mod, inputs, output):
            if not (torch.is_tensor(output) and output.requires_grad):
                return
            X = inputs[0].detach()
            mask = self.mask
            output.register_hook(lambda g: self._add(views, X, g, mask))
        return hook

    def _add(self, views, X: torch.Tensor, D: torch.Tensor, mask) -> None:
        X, D = X.float(), D.detach().float()
        if X.ndim == 2:  # (B, in): one token per example
            X, D = X[:, None], D[:, None]
        X, D = X.reshape(X.shape[0], -1, X.shape[-1]), D.reshape(D.shape[0], -1, D.shape[-1])  # (B, T, in|out)
        if mask is not None and tuple(mask.shape) == tuple(X.shape[:2]):
            X = X * mask.to(X.device, X.dtype)[..., None]
        for key, sel in views:
            cols = D if isinstance(sel, slice) and sel == slice(None) else D[..., sel]  # (B, T, rows)
            e = _energies(X, cols)
            self._acc[key] = e if key not in self._acc else self._acc[key] + e

    def totals(self) -> dict[RowKey, float]:
        """{row: sum over the measured batches and their examples of ||G_i||_F^2}."""
        return {key: float(v) for key, v in self._acc.items()}
