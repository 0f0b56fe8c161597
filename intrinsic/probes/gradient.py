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

import numpy as np
import torch

from .. import rank
from ..arch import ModuleRef, grad_of, roles_of, weight_of
from ..errors import ConfigError, NonFiniteError
from ..spectra import singular_values, svd_topk

Progress = Callable[[str, int, int], None]  # (phase, done, total)
GRAM_MAX_DIM = 1024  # spectra of matrices with min(m, n) up to this go through the float64 Gram matrix


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


# ---------------------------------------------------------------------- spectra and estimators


def spectrum_size(shape: tuple[int, int], max_sv: int) -> int:
    """Singular values to compute: max_sv, but at least the top half (the median-based estimators need it)."""
    p = min(shape)
    return min(p, max(max_sv, p // 2 + 1))


def spectrum(M: torch.Tensor, max_sv: int, seed: int = 0, vectors: int = 0):
    """Singular values of M (m, n), descending float64, and optionally top `vectors` singular bases.

    Matrices with min(m, n) <= GRAM_MAX_DIM go through the float64 Gram matrix: eigh of the p x p
    Gram (p = min(m, n)) is about twice as fast as an SVD of M on a CPU, and float64 keeps every
    singular value above ~1e-8 * sigma_1, far below float32 round-off of the gradient itself (the
    estimators ignore values under sigma_1 * max(m, n) * eps32 anyway); checked against
    `spectra.singular_values` in the tests. Larger matrices use `spectra` (randomized top-k).
    Returns sv, or (sv, U (m, vectors), V (n, vectors)) when vectors > 0.
    """
    m, n = M.shape
    p = min(m, n)
    k = spectrum_size((m, n), max_sv)
    if p > GRAM_MAX_DIM:
        if not vectors:
            return singular_values(M, k, seed=seed)
        U, S, Vh = svd_topk(M, max(k, vectors), seed=seed)
        return S[:k], U[:, :vectors], Vh[:vectors].T
    A = M.detach().to(torch.float64)
    tall = m >= n
    C = A.mT @ A if tall else A @ A.mT  # (p, p) Gram
    if vectors:
        evals, evecs = torch.linalg.eigh(C)  # ascending
        W = evecs.flip(1)[:, :vectors]  # (p, vectors): top right (tall) or left (wide) singular vectors
    else:
        evals = torch.linalg.eigvalsh(C)
    sv = evals.flip(0).clamp_min(0).sqrt()  # (p,) descending
    out = sv[:k].cpu().numpy()
    if not np.isfinite(out).all():  # the sums were checked batch by batch; this catches an overflow
        raise NonFiniteError(f"Non-finite spectrum of a {m}x{n} matrix; nothing was written.")
    if not vectors:
        return out
    scale = torch.where(sv[:vectors] > 0, 1.0 / sv[:vectors].clamp_min(1e-300), torch.zeros_like(sv[:vectors]))
    other = (A @ W if tall else A.mT @ W) * scale  # (m or n, vectors): the other side's vectors
    U, V = (other, W) if tall else (W, other)
    return out, U.contiguous().cpu().numpy(), V.contiguous().cpu().numpy()  # contiguous: numpy's BLAS path


def split_half(G_even: torch.Tensor, G_odd: torch.Tensor, max_sv: int, seed: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(split-half rank, spectrum of G_even, spectrum of G_odd), one decomposition per half.

    The test of `rank.split_half_test` (kmax = min(64, p // 4), alpha = 0.01, k's beyond either
    half's numerical rank skipped) on bases from `spectrum`, which also yields the halves' spectra.
    """
    shape = tuple(G_even.shape)
    K = min(rank.KMAX_CAP, min(shape) // 4)
    if K < 1:
        return 0, spectrum(G_even, max_sv, seed), spectrum(G_odd, max_sv, seed)
    sa, Ua, Va = spectrum(G_even, max_sv, seed, vectors=K)
    sb, Ub, Vb = spectrum(G_odd, max_sv, seed + 1, vectors=K)
    res = rank.split_half_from_bases(Ua, Va, Ub, Vb, seed=seed)
    live = min(rank.numerical_rank(sa, shape), rank.numerical_rank(sb, shape))  # skip round-off directions
    return max((min(a, b) for k, a, b in zip(res.ks, res.left, res.right) if k <= live), default=0), sa, sb


def gradient_ranks(G, G_even, G_odd, noise_sv: np.ndarray, max_sv: int, seed: int):
    """(ranks, sv, even_sv, odd_sv): every estimator on the mean gradient's spectrum plus the data floors.

    split_half and noise_floor as in rank.py; half_difference = noise_floor_rank of sv against the top
    singular value of (G_even - G_odd) / 2 (rank.half_difference_rank, reusing sv).
    """
    shape = tuple(G.shape)
    sv = spectrum(G, max_sv, seed)
    ranks = rank.estimate_all(sv, shape)
    split, even_sv, odd_sv = split_half(G_even, G_odd, max_sv, seed)
    ranks["split_half"] = float(split)
    ranks["noise_floor"] = float(rank.noise_floor_rank(sv, noise_sv, shape=shape))
    diff_top = spectrum((G_even - G_odd) / 2, 1, seed)[:1]
    ranks["half_difference"] = float(rank.noise_floor_rank(sv, diff_top, shape=shape))
    return ranks, sv, even_sv, odd_sv


def analyze_gradients(sums: GradientSums, tokens: int, settings, progress: Progress | None = None) -> list[dict]:
    """One row (ModuleProbe fields as a dict) per module and per role block of a fused module."""
    views = list(sums.views())
    index = {id(r): i for i, r in enumerate(sums.refs)}
    rows = []
    for v, (ref, block_of, role, sel) in enumerate(views):
        G, Ge, Go, Gn = sums.means(index[id(ref)], sel)  # (rows, in) each
        shape = (int(G.shape[0]), int(G.shape[1]))
        noise_sv = spectrum(Gn, settings.max_sv, settings.seed)
        ranks, sv, even_sv, odd_sv = gradient_ranks(G, Ge, Go, noise_sv, settings.max_sv, settings.seed)
        rows.append(dict(
            name=ref.name if block_of is None else f"{ref.name}:{role}", layer=ref.layer, kind=ref.kind, role=role,
            shape=shape, params=shape[0] * shape[1], block_of=block_of, rank_cap=rank.token_cap(tokens, shape),
            grad_norm=float(torch.linalg.vector_norm(G)), grad_sv=_tup(sv), noise_sv=_tup(noise_sv),
            even_sv=_tup(even_sv), odd_sv=_tup(odd_sv), grad_ranks=ranks,
            intrinsic_rank=int(round(ranks[settings.rank_estimator])),
            update_sv=None, update_ranks=None, update_checkpoints={}, update_checkpoint_sv={}, energy_share=0.0,
        ))
        if progress:
            progress("spectra", v + 1, len(views))
    total = sum(r["grad_norm"] ** 2 for r in rows if r["block_of"] is None)
    for r in rows:
        r["energy_share"] = r["grad_norm"] ** 2 / total if total > 0 else 0.0
    return rows


def _tup(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in a)
