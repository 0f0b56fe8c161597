"""The estimator registry: what a probe measured for one row (`Spectra`), and every estimator by name.

A probe fills one `Spectra` per row (a module or a role block of a fused module); `estimate`
applies every estimator whose inputs the record holds and returns {name: value} in registry
order. The registry is the single list of estimator names: the probe's `rank_estimator`
validation, the report and CLI columns read it. Adding an estimator is one entry here.

Two kinds: "descriptive" estimators describe a spectrum's shape (energy, stable, entropy,
participation ratio, Gavish-Donoho, Marchenko-Pastur: `descriptive.py`); "test" estimators
count directions above a noise floor measured on the same data (split-half, shuffled-label,
half-difference: `floors.py`; the calibrated sign-flip step-down test on K fold means:
`signflip.py`, only when the probe kept folds, `ProbeSettings.folds`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from . import descriptive as D
from . import floors as F
from . import signflip as SF
from .floors import Basis


@dataclass(frozen=True)
class Spectra:
    """What a probe measured for one row: the spectrum of its matrix and the noise references."""

    sv: np.ndarray  # singular values of the measured matrix (mean gradient or dW), descending float64
    shape: tuple[int, int]  # (out, in) of the measured matrix (rows of the block for a fused block)
    tokens: int | None = None  # non-pad tokens the gradient was summed over (its rank is at most this)
    norm: float | None = None  # Frobenius norm of the measured matrix
    halves: tuple[Basis, Basis] | None = None  # (sv, U, V) of the even and odd half means, for split_half
    noise_sv: np.ndarray | None = None  # singular values of the shuffled-label mean gradient
    noise_norm: float | None = None  # Frobenius norm of the shuffled-label mean gradient
    label_norm: float | None = None  # Frobenius norm of G - G_shuffled: the label-dependent part of the gradient
    diff_top: float | None = None  # largest singular value of (G_even - G_odd) / 2
    seed: int = 0  # seed of the split-half null (Monte Carlo)
    by_step: dict[int, np.ndarray] | None = None  # update probe: spectrum of W_step - W_0 per checkpoint step
    folds: np.ndarray | None = None  # (K, out, in) fold means over disjoint batch sets (array or tensor), for sign_flip
    energy: float | None = None  # top-k mode: squared Frobenius norm of the whole matrix, sv being only its head;
    # None: sv is the whole spectrum (or its top half at least, exact mode)
    sketch: int | None = None  # sketch mode: the sketch size k, sv being the head of a reconstruction from sketches
    # (its values absorb part of the tail's energy); None: not a sketch


@dataclass(frozen=True)
class Estimator:
    """One named rank estimator."""

    name: str  # key in every ranks dict, column name in reports
    kind: str  # "descriptive" (a spectrum's shape) | "test" (above a noise floor measured on the data)
    needs: tuple[str, ...]  # Spectra fields it reads besides sv and shape (None there: not applicable)
    fn: Callable[[Spectra], float | None]  # the value on one row
    doc: str  # one line, for help and reports
    exact_only: bool = False  # needs the whole spectrum: None on a top-k record (Spectra.energy set)
    needs_tail: bool = False  # reads the spectrum beyond a sketch's head: None on a sketch record (Spectra.sketch set)


def _energy_rank(s: Spectra, tau: float) -> float | None:
    """energy_rank; on a top-k record against its total energy, None when the head holds less than tau of it."""
    if s.energy is None:
        return float(D.energy_rank(s.sv, tau))
    c = np.cumsum(s.sv ** 2)  # sv is sorted descending by `estimate`
    if s.energy <= 0 or not len(c):
        return 0.0
    k = int(np.searchsorted(c, tau * s.energy * (1.0 - 1e-12), side="left")) + 1
    return float(k) if k <= len(c) else None


def _stable_rank(s: Spectra) -> float:
    """stable_rank; on a top-k record sum s^2 is the total energy (exact either way)."""
    if s.energy is None or not len(s.sv) or s.sv[0] <= 0:
        return D.stable_rank(s.sv)
    return float(max(s.energy, float(np.sum(s.sv ** 2))) / s.sv[0] ** 2)


ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    Estimator("energy_90", "descriptive", (), lambda s: _energy_rank(s, 0.90),
       "smallest k keeping 90% of the squared Frobenius norm", needs_tail=True),
    Estimator("energy_99", "descriptive", (), lambda s: _energy_rank(s, 0.99),
       "smallest k keeping 99% of the squared Frobenius norm", needs_tail=True),
    Estimator("stable_rank", "descriptive", (), _stable_rank, "sum s^2 / s_1^2"),
    Estimator("entropy_rank", "descriptive", (), lambda s: D.entropy_rank(s.sv),
       "exp(entropy of s / sum s), Roy & Vetterli 2007", exact_only=True),
    Estimator("participation_ratio", "descriptive", (), lambda s: D.participation_ratio(s.sv), "(sum s^2)^2 / sum s^4",
       exact_only=True),
    Estimator("gavish_donoho", "descriptive", (), lambda s: float(D.gavish_donoho_rank(s.sv, s.shape)),
       "optimal hard threshold, unknown noise (Gavish & Donoho 2014)", exact_only=True),
    Estimator("mp_spikes", "descriptive", (), lambda s: float(D.mp_spike_count(s.sv, s.shape)),
       "values above the Marchenko-Pastur bulk edge + Tracy-Widom margin", exact_only=True),
    Estimator("split_half", "test", ("halves",), lambda s: float(F.split_half_of(*s.halves, s.shape, seed=s.seed).rank),
       "directions both halves of the batches reproduce beyond random subspaces"),
    Estimator("noise_floor", "test", ("noise_sv",), lambda s: float(F.noise_floor_rank(s.sv, s.noise_sv, shape=s.shape)),
       "singular values above the shuffled-label spectrum's largest"),
    Estimator("half_difference", "test", ("diff_top",), lambda s: float(F.half_difference_floor(s.sv, s.diff_top, s.shape)),
       "singular values above the largest of (G_even - G_odd) / 2"),
    Estimator("sign_flip", "test", ("folds",), lambda s: float(SF.sign_flip_cached(s.folds, s.seed).rank),
       f"step-down sign-flip test on K fold means, family-wise level {SF.ALPHA} (needs folds)"),
)}
DESCRIPTIVE = tuple(n for n, e in ESTIMATORS.items() if e.kind == "descriptive")  # spectrum-only names, in order
TESTS = tuple(n for n, e in ESTIMATORS.items() if e.kind == "test")  # noise-floor names, in order


EXACT_ONLY = tuple(n for n, e in ESTIMATORS.items() if e.exact_only)  # None on top-k records (whole spectrum needed)
NOT_SKETCH = tuple(n for n, e in ESTIMATORS.items() if e.exact_only or e.needs_tail)  # None on sketch records


def estimate(spectra: Spectra) -> dict[str, float | None]:
    """Every estimator whose inputs `spectra` holds, by name, in registry order. On a top-k record
    (`Spectra.energy` set) the `exact_only` ones are None, and energy ranks beyond the head are None; on a
    sketch record (`Spectra.sketch` set) those needing the tail (`NOT_SKETCH`) are None."""
    s = D._sigma(spectra.sv)
    shape = D._shape(spectra.shape, s)
    spectra = replace(spectra, sv=s, shape=shape)
    topk = spectra.energy is not None
    sketch = spectra.sketch is not None
    return {name: None if (topk and e.exact_only) or (sketch and name in NOT_SKETCH) else e.fn(spectra)
            for name, e in ESTIMATORS.items() if all(getattr(spectra, k) is not None for k in e.needs)}
