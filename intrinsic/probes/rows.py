"""Typed probe rows from measured spectra: `ModuleProbe` per module and role block, estimators applied.

`gradient_rows` turns the gradient probe's `Spectra` into rows (every estimator of
`rank.estimate`, the designated one as `intrinsic_rank`, energy shares over the modules);
`with_update` adds the update probe's spectra and estimates to those rows with
`dataclasses.replace` (rows are frozen; nothing is mutated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..arch import ModuleRef
from ..rank import Spectra, estimate
from ..rank.descriptive import token_cap
from ..rank.signflip import sign_flip_cached
from .base import RowKey, row_views
from .distributed import gather_shares, my_share
from .schema import ModuleProbe
from .steps import Progress


def _tup(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in a)


def gradient_rows(refs: Sequence[ModuleRef], spectra: dict[RowKey, Spectra], rank_estimator: str,
                  progress: Progress | None = None, noise_norm: bool = False,
                  example_energy: dict[RowKey, float] | None = None) -> list[ModuleProbe]:
    """One row per module and role block (in `row_views` order) with every estimator of its Spectra;
    `noise_norm` also records ||G_shuffled||_F per row (for the label contrast); `example_energy` (per-example
    gradient energy by row, when measured) fills `example_energy` and its share over the modules. Several
    processes (`distributed`) each estimate every world-th row and share them: the estimators (the sign-flip test)
    are most of the probe's time at LLM scale."""
    views = list(row_views(refs))
    rows = []
    share = my_share(len(views))
    for done, v in enumerate(share, 1):
        key, ref, _ = views[v]
        s = spectra[key]
        ranks = estimate(s)
        rows.append(ModuleProbe(
            name=key.row_name, layer=ref.layer, kind=ref.kind, role=key.block or ref.role, shape=s.shape,
            params=s.shape[0] * s.shape[1], block_of=None if key.block is None else ref.name,
            rank_cap=token_cap(s.tokens, s.shape), grad_norm=s.norm, grad_sv=_tup(s.sv), noise_sv=_tup(s.noise_sv),
            even_sv=_tup(s.halves[0].sv), odd_sv=_tup(s.halves[1].sv), grad_ranks=ranks,
            intrinsic_rank=int(round(ranks[rank_estimator])), update_sv=None, update_ranks=None,
            update_checkpoints={}, update_checkpoint_sv={}, energy_share=0.0,
            noise_norm=s.noise_norm if noise_norm else None,
            label_norm=s.label_norm if noise_norm else None,
            sign_flip_p=None if s.folds is None else sign_flip_cached(s.folds, s.seed).pvalues,
            sign_flip_null=None if s.folds is None else sign_flip_cached(s.folds, s.seed).null_ms,
            example_energy=None if example_energy is None else example_energy.get(key, 0.0),
        ))
        if progress:
            progress("estimate", done, len(share))
    rows = gather_shares(rows, len(views))
    total = sum(r.grad_norm ** 2 for r in rows if r.block_of is None)
    rows = [replace(r, energy_share=r.grad_norm ** 2 / total if total > 0 else 0.0) for r in rows]
    if example_energy is None:
        return rows
    ex = sum(r.example_energy for r in rows if r.block_of is None)
    return [replace(r, example_energy_share=r.example_energy / ex if ex > 0 else 0.0) for r in rows]


def with_update(rows: list[ModuleProbe], spectra: dict[RowKey, Spectra]) -> list[ModuleProbe]:
    """Rows with update_sv / update_ranks (last step) and per-checkpoint ranks and spectra of W_step - W_0."""
    by_name = {key.row_name: s for key, s in spectra.items()}
    out = []
    for r in rows:
        s = by_name.get(r.name)
        if s is None:
            out.append(r)
            continue
        steps = s.by_step or {}
        out.append(replace(
            r, update_sv=_tup(s.sv), update_ranks=estimate(Spectra(s.sv, r.shape)),
            update_energy=None if s.norm is None else float(s.norm) ** 2,
            update_checkpoints={str(k): estimate(Spectra(sv, r.shape)) for k, sv in sorted(steps.items())},
            update_checkpoint_sv={str(k): _tup(sv) for k, sv in sorted(steps.items())},
        ))
    return out


def with_extras(rows: list[ModuleProbe], refs: Sequence[ModuleRef], model, batches, settings,
                progress: Progress | None = None, lap=None) -> list[ModuleProbe]:
    """Rows with the opt-in per-module statistics of `settings`: input-activation variance (`activations`,
    phase "activations") and the weight spectrum's power-law alpha (`weight_alpha`, phase "weight_alpha")."""
    if getattr(settings, "activations", False):
        from .activations import input_variance

        var = input_variance(model, refs, batches, max_sv=settings.max_sv, progress=progress)
        rows = [replace(r, act_var=var[_key(r)].total, act_eig=_tup(var[_key(r)].eig)) for r in rows]
        if lap:  # the eigendecompositions after the last batch count to this phase too
            lap("activations")
    if getattr(settings, "weight_alpha", False):
        from .weight_alpha import weight_alphas

        fits = weight_alphas(model, refs)
        rows = [replace(r, weight_alpha=fits[_key(r)].alpha, weight_alpha_tail=fits[_key(r)].n_tail) for r in rows]
        if lap:
            lap("weight_alpha")
    return rows


def _key(r: ModuleProbe) -> RowKey:
    return RowKey(r.name) if r.block_of is None else RowKey(r.block_of, r.role)
