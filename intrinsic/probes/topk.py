"""Top-k spectra of the gradient sums (`ProbeSettings.spectra = "topk"`): batched, float32, on the probe's device.

For every row (module or role block) the exact mode takes five float64 spectra: G, the shuffled copy, both
halves with their top bases (split_half), and sigma_1 of the half difference. Here the rows are grouped by
shape and each group goes, in chunks of at most CHUNK_BYTES of stacked matrices, through one call of
`spectra.topk_batched` for (G, G_shuffled, (G_even - G_odd)/2) and one for the two halves with their bases.
Each spectrum keeps its top k values (`ProbeSettings.topk`), plus its total energy from the Frobenius norm
(`Spectra.energy`), so energy and stable ranks stay exact (energy ranks beyond the head read None) and the
estimators that need the whole spectrum read None (`rank.registry.EXACT_ONLY`). A row whose smaller side
is at most k gets its whole spectrum (exact up to float32 round-off, `Spectra.energy` None).
What the tests read: half_difference (sv against sigma_1 of the difference), noise_floor (sv against the
shuffled sigma_1), split_half (bases of the halves, at most 64 columns) need only the head.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..rank import Spectra
from ..rank.floors import Basis, split_half_kmax
from ..spectra import topk_batched
from .base import RowKey, row_count, row_views
from .steps import Progress

CHUNK_BYTES = 2**30  # stacked float32 matrices per batched call (five per row)


def measure_sums_topk(sums, tokens: int, k: int, seed: int, progress: Progress | None = None) -> dict[RowKey, Spectra]:
    """One Spectra per module and per role block of a fused module, from `gradient.GradientSums`, top-k mode."""
    views = list(row_views(sums.refs))
    index = {id(r): i for i, r in enumerate(sums.refs)}
    groups: dict[tuple[int, int], list] = defaultdict(list)
    for key, ref, sel in views:
        groups[(row_count(ref, sel), int(ref.shape[1]))].append((key, index[id(ref)], sel))
    out: dict[RowKey, Spectra] = {}
    done = 0
    for shape, members in groups.items():
        per = max(1, CHUNK_BYTES // (5 * 4 * shape[0] * shape[1]))
        for c in range(0, len(members), per):
            chunk = members[c:c + per]
            out.update(_chunk(sums, chunk, shape, tokens, k, seed))
            done += len(chunk)
            if progress:
                progress("spectra", done, len(views))
    return {key: out[key] for key, _, _ in views}  # row_views order


def _chunk(sums, chunk, shape: tuple[int, int], tokens: int, k: int, seed: int) -> dict[RowKey, Spectra]:
    b = len(chunk)
    G, Ge, Go, Gn = (torch.stack(t) for t in zip(*(sums.means(i, sel) for _, i, sel in chunk)))  # (b, rows, in) each
    D = (Ge - Go) / 2  # (b, rows, in): the half difference
    heads = topk_batched(torch.cat([G, Gn, D]), k, seed=seed)  # (3b, k)
    K = split_half_kmax(shape)
    if K >= 1:
        hs, hu, hv = topk_batched(torch.cat([Ge, Go]), k, vectors=K, seed=seed + 1)  # (2b, k), (2b, m, K), (2b, n, K)
    else:
        hs = topk_batched(torch.cat([Ge, Go]), k, seed=seed + 1)
    whole = min(shape) <= k  # every singular value is there: the record is complete (exact mode's estimators apply)
    # (3b,) Frobenius norms: ||G||, ||G_shuffled||, ||G - G_shuffled|| (the label-dependent part)
    norms = torch.linalg.vector_norm(torch.cat([G, Gn, G - Gn]).flatten(1), dim=1).tolist()
    out = {}
    for j, (key, i, sel) in enumerate(chunk):
        def basis(h):
            if K < 1:
                m, n = shape
                return Basis(hs[h], np.zeros((m, 0)), np.zeros((n, 0)))  # no room for a test: split_half reads 0
            return Basis(hs[h], hu[h], hv[h])

        out[key] = Spectra(
            sv=heads[j], shape=shape, tokens=tokens, norm=norms[j], halves=(basis(j), basis(b + j)),
            noise_sv=heads[b + j], noise_norm=norms[b + j], label_norm=norms[2 * b + j],
            diff_top=float(heads[2 * b + j][0]), seed=seed,
            folds=sums.fold_means(i, sel), energy=None if whole else norms[j] ** 2,
        )
    return out
