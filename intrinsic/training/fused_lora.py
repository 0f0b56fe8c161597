"""A fused LoRA linear layer for the fast path: y = x W^T + b + s (x A^T) B^T in one autograd node.

PEFT's LoRA layer runs the base layer, casts the input, runs lora_A, lora_B, scales and adds, each a
separate kernel with its own saved tensors in both directions. Here the scaled low-rank product is
added inside the base product's output buffer (`addmm_` with alpha = s: one GEMM epilogue, no
elementwise passes), and the backward pass forms dX = g W + s (g B) A the same way, with
dA = s (g B)^T x and dB = s g^T (x A^T). Saved for backward: the input (the tensor the base layer
keeps anyway) and x A^T (N x r). Products run in the autocast dtype under mixed precision (as PEFT's
do there), the adapters' float32 master weights receive float32 gradients.

`fuse_lora(model)` switches every eligible PEFT `lora.Linear` (one adapter, no dropout, no DoRA or
other variant, a plain `nn.Linear` base) to it; the modules, their parameters and the saved adapter
stay PEFT's own. Any call it cannot serve (adapters disabled or merged, inputs whose dtypes do not
match without autocast) falls back to PEFT's forward. Equal to PEFT within rounding:
tests/test_train_fast.py (float32, and bf16 autocast on the CPU; per-module ranks, skipped modules).
"""

from __future__ import annotations

import functools
import types

_FUNCTION = None  # the autograd Function, set by fuse_lora


def fuse_lora(model) -> int:
    """Route the forward of every eligible LoRA layer of `model` through the fused product; their count."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear

    global _FUNCTION
    _FUNCTION = _fused()  # built here, outside any compiled region (torch.compile traces _forward)
    count = 0
    for m in model.modules():
        if not isinstance(m, LoraLinear) or list(m.lora_A) != ["default"] or getattr(m, "lora_variant", None):
            continue
        if type(m.base_layer) is not torch.nn.Linear or not isinstance(m.lora_dropout["default"], torch.nn.Identity):
            continue
        m.forward = types.MethodType(_forward, m)
        count += 1
    return count


def _forward(self, x, *args, **kwargs):
    """The fused forward of a PEFT lora.Linear (`self`), or PEFT's own where it does not apply."""
    import torch

    base, a, b = self.base_layer, self.lora_A["default"], self.lora_B["default"]
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    if (self.disable_adapters or self.merged or args or kwargs or self.active_adapters != ["default"]
            or not (autocast or x.dtype == base.weight.dtype == a.weight.dtype)):
        return type(self).forward(self, x, *args, **kwargs)
    dtype = torch.get_autocast_dtype(device) if autocast else x.dtype
    return _FUNCTION.apply(x, base.weight, base.bias, a.weight, b.weight, float(self.scaling["default"]), dtype)


@functools.cache
def _fused():
    """The autograd Function (built on first use: this module imports without torch)."""
    import torch

    class FusedLoraLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, bias, a, b, scaling, dtype):
            with torch.autocast(x.device.type, enabled=False):
                x2 = x.reshape(-1, x.shape[-1]).to(dtype)
                wc, ac, bc = w.to(dtype), a.to(dtype), b.to(dtype)
                xa = x2 @ ac.t()  # (N, r)
                out = x2 @ wc.t() if bias is None else torch.addmm(bias.to(dtype), x2, wc.t())
                out.addmm_(xa, bc.t(), alpha=scaling)  # + s (x A^T) B^T, accumulated in the GEMM
            ctx.save_for_backward(x2, w, a, b, xa)
            ctx.meta = (scaling, dtype, x.shape, x.dtype, bias is not None)
            return out.reshape(*x.shape[:-1], w.shape[0])

        @staticmethod
        def backward(ctx, grad):
            x2, w, a, b, xa = ctx.saved_tensors
            scaling, dtype, shape, in_dtype, has_bias = ctx.meta
            with torch.autocast(x2.device.type, enabled=False):
                g = grad.reshape(-1, grad.shape[-1]).to(dtype)
                wc, ac, bc = w.to(dtype), a.to(dtype), b.to(dtype)
                gb = g @ bc  # (N, r)
                grad_x = grad_w = grad_bias = None
                if ctx.needs_input_grad[0]:
                    grad_x = (g @ wc).addmm_(gb, ac, alpha=scaling).reshape(shape).to(in_dtype)
                if ctx.needs_input_grad[1]:
                    grad_w = (g.t() @ x2).to(w.dtype)
                if has_bias and ctx.needs_input_grad[2]:
                    grad_bias = g.sum(0).to(w.dtype)
                grad_a = (gb.t() @ x2).mul_(scaling).to(a.dtype)
                grad_b = (g.t() @ xa).mul_(scaling).to(b.dtype)
            return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None

    return FusedLoraLinear
