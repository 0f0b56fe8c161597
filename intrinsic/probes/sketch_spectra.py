"""Spectra of sketch mode: one `rank.Spectra` per row from its slot sketches (`sketch.SketchSums`).

Per row, the sketches of six means are linear combinations of the slot sketches: G, G_even, G_odd, G_shuffled,
(G_even - G_odd) / 2 and G - G_shuffled; each is reconstructed (`sketch_recon.reconstruct`), giving the top
k singular values (k the row's sketch size), the halves' top bases (split_half), sigma_1 of the half
difference (half_difference), the shuffled spectrum (noise_floor) and the estimated energies (grad, noise and
label norms). With folds, the fold sketches go to `Spectra.folds` as a `FoldSketches`, whose own sign-flip
test `rank.signflip.sign_flip_cached` runs. The record carries `energy` (the estimated ||G||_F^2) and
`sketch` = k, so the registry reads None for the estimators needing the tail of the spectrum; a row whose
min(m, n) is at most k is sketched exactly and gets a complete record, as in exact mode.
"""

from __future__ import annotations

import numpy as np
import torch

from ..rank import Spectra
from ..rank.floors import Basis, split_half_kmax
from .base import RowKey
from .sketch import SketchSums
from .sketch_recon import FoldSketches, reconstruct, svd_of
from .steps import Progress

PARTS = ("mean", "even", "odd", "noise")  # then (even - odd) / 2 and mean - noise


def measure_sketches(sums: SketchSums, tokens: int, seed: int, progress: Progress | None = None) -> dict[RowKey, Spectra]:
    """One Spectra per module and per role block of a fused module, from the sketches."""
    w = torch.stack([sums.weights(p) for p in PARTS])  # (4, S + 1)
    w = torch.cat([w, ((w[1] - w[2]) / 2)[None], (w[0] - w[3])[None]])  # (6, S + 1)
    fw = sums.fold_weights() if sums.folds else None  # (K, S + 1)
    out = {}
    for v, r in enumerate(sums.rows):
        out[r.key] = _row(r, w, fw, tokens, seed)
        if progress:
            progress("spectra", v + 1, len(sums.rows))
    return out


def _row(r, w: torch.Tensor, fw: torch.Tensor | None, tokens: int, seed: int) -> Spectra:
    dev = r.Y.device
    Y = torch.einsum("ps,smk->pmk", w.to(dev), r.Y.double())  # (6, m, k)
    W = torch.einsum("ps,sln->pln", w.to(dev), r.W.double())  # (6, l, n)
    Q, X, energy = reconstruct(Y, W, r.psi)
    S, U, V = svd_of(Q, X)  # (6, k), (6, m, k), (6, n, k)
    S, energy = S.cpu().numpy(), energy.cpu().numpy()
    K = min(split_half_kmax(r.shape), r.k)

    def basis(i: int) -> Basis:
        return Basis(S[i], U[i, :, :K].cpu().numpy(), V[i, :, :K].cpu().numpy())  # (k,), (m, K), (n, K)

    folds = None
    if fw is not None:
        folds = FoldSketches(torch.einsum("js,smk->jmk", fw.to(dev), r.Y.double()),
                             torch.einsum("js,sln->jln", fw.to(dev), r.W.double()), r.psi, r.shape)
    whole = r.k >= min(r.shape)  # the sketch holds the whole matrix: the reconstruction is exact
    return Spectra(
        sv=S[0], shape=r.shape, tokens=tokens, norm=float(np.sqrt(energy[0])), halves=(basis(1), basis(2)),
        noise_sv=S[3], noise_norm=float(np.sqrt(energy[3])), label_norm=float(np.sqrt(energy[5])),
        diff_top=float(S[4][0]), seed=seed, folds=folds,
        energy=None if whole else float(energy[0]), sketch=None if whole else r.k,
    )
