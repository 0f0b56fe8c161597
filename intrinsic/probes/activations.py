"""Input-activation variance of each probed linear module, as EVA (Paischer et al. 2024, PEFT's `eva.py`).

EVA initialises LoRA's A matrices with the top right-singular vectors of a module's inputs and gives
ranks to the directions that explain most of the input variance (its explained variance ratio, an
incremental PCA over the non-pad tokens). Here, from forward hooks over the probe's calibration batches
(`no_grad`, eval mode), per module with inputs x (in,) at every non-pad token t = 1..n:

    C = (sum_t x_t x_t^T - n mu mu^T) / (n - 1),   mu = mean_t x_t        (in x in, float64)

`act_var` = trace(C), the total input variance; `act_eig` = eigenvalues of C, descending (the PCA's
explained variances, top `max_sv`); act_eig[:r].sum() / act_var is the share explained by the top r
directions. A role block of a fused module shares its module's input, so gets the same values.

Modules that receive the very same input tensor in a forward pass (q, k, v of a Llama layer; gate and
up) are accumulated once (as EVA's hash of equal inputs). Memory: 8 * in^2 bytes per distinct input
(SmolLM2-135M: about 0.8 GB). Padding is masked with the batch's attention mask, as EVA does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..arch import ModuleRef
from ..arch.access import base_layer, get_module
from .base import RowKey, row_views
from .steps import Progress, device_of


@dataclass(frozen=True)
class InputVariance:
    """One module's input covariance, summarised."""

    total: float  # trace of the input covariance: the total variance of the module's inputs
    eig: np.ndarray  # eigenvalues of the covariance, descending (float64, top max_sv)
    tokens: int  # tokens the covariance was estimated on


class _Moments:
    """Running sums of one input stream: count, sum x (in,), sum x x^T (in, in), float64."""

    def __init__(self, n_in: int, device) -> None:
        self.n = 0
        self.s1 = torch.zeros(n_in, dtype=torch.float64, device=device)
        self.s2 = torch.zeros(n_in, n_in, dtype=torch.float64, device=device)

    def add(self, X: torch.Tensor) -> None:  # X (tokens, in)
        X = X.to(torch.float64)
        self.n += X.shape[0]
        self.s1 += X.sum(0)
        self.s2 += X.mT @ X

    def summary(self, max_sv: int) -> InputVariance:
        if self.n < 2:
            return InputVariance(0.0, np.zeros(0), self.n)
        mu = self.s1 / self.n
        C = (self.s2 - self.n * torch.outer(mu, mu)) / (self.n - 1)  # (in, in)
        eig = torch.linalg.eigvalsh(C).flip(0).clamp_min(0.0).cpu().numpy()  # (in,) descending
        return InputVariance(float(torch.trace(C)), eig[:max_sv], self.n)


def input_variance(model, refs: Sequence[ModuleRef], batches: Sequence[dict], *, max_sv: int = 512,
                   progress: Progress | None = None) -> dict[RowKey, InputVariance]:
    """{RowKey: InputVariance} of every probed module and role block over `batches` (no gradients)."""
    dev = device_of(model)
    mods = [base_layer(get_module(model, ref)) for ref in refs]
    owner: dict[int, int] = {}  # module index -> index of the module whose stream it shares (batch 0)
    moments: dict[int, _Moments] = {}
    state = {"batch": 0, "mask": None, "seen": {}}  # seen: input tensor id -> (tensor, module index)

    def hook_for(i: int):
        def hook(_mod, inputs, _out):
            X = inputs[0].detach()
            seen = state["seen"]
            if state["batch"] == 0:
                first = seen.get(id(X))
                if first is not None and first[0] is X:
                    owner[i] = first[1]
                    return
                seen[id(X)] = (X, i)
                owner[i] = i
            elif owner.get(i, i) != i:
                return
            flat = X.reshape(-1, X.shape[-1])  # (B*T, in)
            mask = state["mask"]
            if mask is not None and mask.numel() == flat.shape[0]:
                flat = flat[mask.reshape(-1).to(flat.device).bool()]
            if i not in moments:
                moments[i] = _Moments(flat.shape[-1], flat.device)
            moments[i].add(flat)
        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(mods)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b, batch in enumerate(batches):
                batch = {k: v.to(dev) for k, v in batch.items()}
                state["batch"], state["mask"], state["seen"] = b, batch.get("attention_mask"), {}
                model(**{k: v for k, v in batch.items() if k != "labels"})
                if progress:
                    progress("activations", b + 1, len(batches))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    summaries = {i: m.summary(max_sv) for i, m in moments.items()}
    out = {}
    for i, ref in enumerate(refs):
        s = summaries.get(owner.get(i, i), InputVariance(0.0, np.zeros(0), 0))
        for key, _, _ in row_views([ref]):
            out[key] = s
    return out
