"""The fast path of the trainer (`TrainConfig.fast`), each piece numerically equal to the plain one
within rounding (tests/test_train_fast.py checks losses and gradients on tiny models):

- `no_input_cast`: PEFT casts every adapted layer's input to the adapters' float32 before the LoRA
  product. Under autocast (mixed precision) that product runs in bf16/fp16 anyway, so the cast is a
  round trip (exact) that costs a B x T x d copy per adapted layer, kept for the backward pass.
  Turned off only under mixed precision; the adapters themselves stay float32 (master weights).
- `fused_lora.fuse_lora`: each LoRA layer's base and low-rank products in one autograd node (its own module).
- `make_optimizer`: AdamW with `fused=True` (one kernel for all parameters instead of a loop).
- `linear_cross_entropy` / `causal_lm_loss`: the causal-LM loss computed from the last hidden
  states in chunks of tokens, with the gradient of each chunk's logits formed in the forward pass,
  so the B x T x V logits (and their float32 copy and gradient) are never stored at once. Plain
  PyTorch; for architectures whose head is a plain linear layer without logit scaling or soft-capping
  (`LCE_TYPES`); others fall back to the model's own loss (`lce_unsupported` says why).
"""

from __future__ import annotations

import functools
from typing import Any

LCE_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")  # head = one nn.Linear on the decoder's output
CHUNK_ELEMENTS = 1 << 25  # logits per chunk (x 4 bytes x ~2 live copies: ~256 MiB)


def enable_fast(model, loaded, mixed_precision: str, processes: int, emit) -> bool:
    """Switch on the fast path's pieces for `model` (built from `loaded`); whether the chunked loss replaces
    the model's own (`emit` gets a "note" event when it cannot)."""
    from .fused_lora import fuse_lora

    if mixed_precision != "no":  # under autocast the float32 input cast is a round trip
        no_input_cast(model)
    if hasattr(model, "peft_config"):
        fuse_lora(model)
    if loaded.task_kind != "lm":
        return False
    why = lce_unsupported(model, loaded.model_type, processes)
    if why:
        emit({"event": "note", "message": f"fast: the model's own loss is used ({why})"})
    return why is None


def no_input_cast(model) -> int:
    """Stop PEFT's float32 cast of the inputs of every LoRA layer of `model` (use under autocast only)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.cast_input_dtype_enabled = False
    return len(layers)


def make_optimizer(params, *, lr: float, weight_decay: float, fused: bool):
    """AdamW over `params`; `fused` selects PyTorch's single-kernel implementation."""
    import torch

    if fused:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def lce_unsupported(model, model_type: str, processes: int) -> str | None:
    """Why the chunked loss cannot replace the model's own (None: it can)."""
    import torch

    base = base_model(model)
    if model_type not in LCE_TYPES:
        return f"the chunked loss supports {', '.join(LCE_TYPES)}, not {model_type}"
    if processes > 1:
        return "the chunked loss runs on one process only (it bypasses the DDP forward)"
    head = base.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return "the output head is not a plain linear layer (adapted or with a bias)"
    return None


def base_model(model):
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def causal_lm_loss(model, batch: dict[str, Any]):
    """Mean next-token cross-entropy of a causal LM on `batch` (input_ids, attention_mask, labels with
    -100 on ignored positions), as the model's own `.loss`, without storing the logits."""
    base = base_model(model)
    hidden, targets = shifted_hidden(base, batch, batch["labels"])
    return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), base.get_output_embeddings().weight,
                                targets.reshape(-1))


def shifted_hidden(base, batch: dict[str, Any], labels):
    """(the decoder's last hidden states (B, T-1, H), the tokens they predict (B, T-1)) of a transformers causal
    LM `base` on `batch`: position t predicts token t + 1, -100 where `labels` ignore it."""
    hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    return hidden.last_hidden_state[:, :-1], labels[:, 1:]


def linear_cross_entropy(hidden, weight, targets, chunk: int | None = None):
    """mean_i CE(hidden_i @ weight.T, targets_i) over targets != -100, in chunks of `chunk` rows.

    hidden (N, H), weight (V, H), targets (N,). Logits are formed like `nn.Linear` would (under autocast
    in the compute dtype) and the softmax in float32, as transformers' loss does."""
    chunk = chunk or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _linear_ce().apply(hidden, weight, targets, chunk)


@functools.cache
def _linear_ce():
    """The autograd Function (built on first use: this module imports without torch)."""
    import torch
    import torch.nn.functional as F

    class LinearCE(torch.autograd.Function):
        """Loss and its gradients in one pass over chunks; backward only scales them."""

        @staticmethod
        def forward(ctx, hidden, weight, targets, chunk):  # runs under the caller's autocast, if any
            count = (targets != -100).sum().clamp(min=1)
            grad_h = torch.empty_like(hidden)
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for i in range(0, hidden.shape[0], chunk):
                h, y = hidden[i:i + chunk], targets[i:i + chunk]
                low = F.linear(h, weight)  # (n, V) in the compute dtype
                logits = low.float()
                total += F.cross_entropy(logits, y, ignore_index=-100, reduction="sum")
                g = logits.softmax(-1)  # d(sum CE)/d logits = softmax - onehot, 0 on ignored rows
                valid = y != -100
                g[valid, y[valid]] -= 1
                g[~valid] = 0
                g = g.to(low.dtype)  # as autograd casts the gradient back through .float()
                del low, logits
                grad_h[i:i + chunk] = (g @ weight.to(g.dtype)).to(hidden.dtype)
                if grad_w is not None:
                    grad_w += (g.t() @ h.to(g.dtype)).float()
            ctx.weight_dtype = weight.dtype
            ctx.save_for_backward(grad_h, count, *(() if grad_w is None else (grad_w,)))
            return total / count

        @staticmethod
        def backward(ctx, grad_out):
            grad_h, count, *rest = ctx.saved_tensors
            scale = grad_out / count
            grad_w = (rest[0] * scale).to(ctx.weight_dtype) if rest else None
            return grad_h * scale.to(grad_h.dtype), grad_w, None, None

    return LinearCE
