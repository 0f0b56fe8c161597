"""Weight-update probe: K steps of full fine-tuning, then the spectrum of dW = W_K - W_0 per module.

The fine-tuning runs on a deep copy of the model, so the caller's model (weights, flags, mode)
is untouched. Every parameter trains except the embedding tables (transformer blocks, norms,
biases and the task head, as in full fine-tuning); only the probed modules are reported.
Choices, each made so that dW shows the task's update at a probe's cost:

- Embeddings frozen: they are not reported, and on a small model they are half the parameters
  (MiniLM: 11.7 M of 22.7 M), so training them would double the optimizer's work for nothing.
- AdamW with weight_decay = 0: decay would add -lr*wd*W, a full-rank component that is not
  learned from the task.
- Constant learning rate (default 5e-5, the usual BERT fine-tuning rate), no warmup, gradient
  norm clipped at 1.0, eval mode (no dropout noise), batches seeded like the gradient probe.
- At every step in `checkpoints` the spectrum of W_step - W_0 is taken (estimators are applied by
  the caller), so the growth of the update's rank over training is visible.

`UpdateProbe.measure` returns one `rank.Spectra` per row: `sv` of the last step, `by_step` every
checkpoint; the training losses and the SVD time stay on the probe object (`losses`, `svd_seconds`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..arch import ModuleRef, weight_of
from ..errors import ConfigError
from ..rank import Spectra
from ..spectra import spectrum
from .base import ProbeBatches, RowKey, row_views
from .steps import Progress, check_finite, fits, forward_loss

CLIP_NORM = 1.0  # max global gradient norm, as in standard fine-tuning recipes


@dataclass
class UpdateResult:
    """Spectra of dW = W_step - W_0 for every module and role block, at every checkpoint step."""

    spectra: dict[RowKey, dict[int, np.ndarray]]  # row -> step -> singular values (descending, float64)
    losses: list[float]  # training loss per step
    svd_seconds: float  # time spent on the checkpoint SVDs (part of the update phase)
    shapes: dict[RowKey, tuple[int, int]] = field(default_factory=dict)  # row -> (rows, in) of its dW
    norms: dict[RowKey, dict[int, float]] = field(default_factory=dict)  # row -> step -> ||dW||_F (the spectra
    # keep the head only: max(max_sv, half) values)


def update_probe(
    model,
    refs: Sequence[ModuleRef],
    batches: Sequence[dict[str, torch.Tensor]],
    *,
    lr: float,
    checkpoints: Sequence[int],
    max_sv: int = 512,
    seed: int = 0,
    progress: Progress | None = None,
) -> UpdateResult:
    """Fine-tune a copy of `model` for len(batches) steps; spectra of dW per module and role block.

    Rows keyed by `RowKey` (a module, or a role block of a fused module). The caller's model is not touched.
    """
    steps = len(batches)
    if steps < 1:
        raise ConfigError("update_steps must be at least 1 (use update_steps=None / --no-update to skip).")
    bad = [c for c in checkpoints if not 1 <= c <= steps]
    if bad:
        raise ConfigError(f"update_checkpoints must lie in 1..{steps} (the update steps), got {bad}")
    marks = sorted(set(checkpoints) | {steps})
    torch.manual_seed(seed)
    work = copy.deepcopy(model)
    work.eval()
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    for mod in work.modules():  # embeddings stay fixed (see the module docstring)
        if isinstance(mod, torch.nn.Embedding):
            mod.weight.requires_grad_(False)
    w0 = [weight_of(work, r).detach().to(torch.float32).clone() for r in refs]  # (out, in) each
    trainable = [p for p in work.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    out = UpdateResult({}, [], 0.0)
    with torch.enable_grad():
        for step in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            loss = forward_loss(work, batches[step - 1], "update", step - 1)
            loss.backward()
            check_finite(work, refs, "update", step - 1)
            out.losses.append(float(loss.detach()))
            torch.nn.utils.clip_grad_norm_(trainable, CLIP_NORM)
            opt.step()
            if progress:
                progress("update", step, steps)
            if step in marks:
                _record(work, refs, w0, step, max_sv, seed, out)
    del work, opt
    return out


FIT_FRACTION = 0.9  # the update probe's estimate (activations not included) must stay below this share of free memory


def update_bytes(model, refs: Sequence[ModuleRef]) -> int:
    """Bytes `update_probe` allocates beyond the loaded model, activations of one batch not included: the copy of
    the model, the gradients and AdamW's two states of every trainable parameter (embedding tables stay frozen),
    all in the parameters' dtype, and W_0 of every probed weight in float32."""
    params = list(model.parameters())
    frozen = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    copy_bytes = sum(p.numel() * p.element_size() for p in params)
    train_bytes = sum(p.numel() * p.element_size() for p in params if id(p) not in frozen)
    w0_bytes = 4 * sum(int(r.shape[0]) * int(r.shape[1]) for r in refs)
    return copy_bytes + 3 * train_bytes + w0_bytes


def check_update_fits(need: int, free: int | None, device: str) -> None:
    """Refuse, before any probing, an update probe whose `update_bytes` exceed FIT_FRACTION of `free` (None:
    unknown, no check), with the estimate and what helps."""
    if fits(need, free, FIT_FRACTION):
        return
    raise ConfigError(f"The update probe would need about {need / 1e9:.1f} GB on {device} (a copy of the model, its "
                      f"gradients and AdamW's two states, W_0 of the probed weights in float32; activations not "
                      f"counted), more than {FIT_FRACTION:.0%} of the {free / 1e9:.1f} GB free: skip it (--no-update, "
                      "update_steps=0), probe fewer modules (--roles, --layers), or use a device with more memory.")


def _record(work, refs, w0, step: int, max_sv: int, seed: int, out: UpdateResult) -> None:
    start = time.perf_counter()
    with torch.no_grad():
        for ref, base in zip(refs, w0):
            dw = weight_of(work, ref).detach().to(torch.float32) - base  # (out, in)
            for key, _, rows in row_views([ref]):
                m = dw[rows] if isinstance(rows, slice) else dw[torch.as_tensor(rows)]  # (rows, in)
                out.spectra.setdefault(key, {})[step] = spectrum(m, max_sv, seed)
                out.norms.setdefault(key, {})[step] = float(torch.linalg.vector_norm(m, dtype=torch.float64))
                out.shapes[key] = (int(m.shape[0]), int(m.shape[1]))
    out.svd_seconds += time.perf_counter() - start


class UpdateProbe:
    """The update probe as a `Probe` (phase "update"); `losses` and `svd_seconds` are set by `measure`."""

    name = "update"

    def __init__(self) -> None:
        self.losses: list[float] = []  # training loss per step of the last measure
        self.svd_seconds = 0.0  # time of the checkpoint SVDs within it

    def measure(self, model, refs: Sequence[ModuleRef], batches: ProbeBatches, settings,
                progress: Progress | None = None) -> dict[RowKey, Spectra]:
        result = update_probe(model, refs, batches.update, lr=settings.update_lr, checkpoints=settings.checkpoints,
                              max_sv=settings.max_sv, seed=settings.seed, progress=progress)
        self.losses, self.svd_seconds = result.losses, result.svd_seconds
        return {key: Spectra(sv=by_step[max(by_step)], shape=result.shapes[key], by_step=dict(sorted(by_step.items())),
                             norm=result.norms.get(key, {}).get(max(by_step)))
                for key, by_step in result.spectra.items()}
