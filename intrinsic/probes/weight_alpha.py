"""Weight-only heavy-tail metric of each probed module: the power-law exponent alpha of the eigenvalue
spectrum of W^T W (WeightWatcher, Martin & Mahoney 2021; AlphaLoRA, Qing et al. 2024).

The eigenvalues of W^T W are lambda_i = sigma_i(W)^2. Their tail is fitted by a continuous power law
p(lambda) ~ lambda^-alpha for lambda >= xmin, as WeightWatcher does (through the `powerlaw` package,
Clauset, Shalizi & Newman 2009):

- for a given xmin, the maximum-likelihood exponent over the n eigenvalues >= xmin is the Hill estimator
  alpha = 1 + n / sum_i ln(lambda_i / xmin)  (= 1 + scipy.stats.pareto's MLE shape with scale xmin);
- xmin is the candidate (each eigenvalue, keeping a tail of at least `MIN_TAIL` values) whose fit has the
  smallest Kolmogorov-Smirnov distance D = sup |F_empirical - F_fit| over the tail (= scipy.stats.kstest's
  statistic against that Pareto law); ties go to the smaller xmin (the longer tail).

Eigenvalues below 1e-12 of the largest are dropped (numerically zero). Small alpha (2-4) marks a
heavy-tailed, "well-trained" layer; AlphaLoRA gives layers with larger alpha more adapter capacity,
so the predictor reads larger alpha as more need. Needs no data: the base model's weights alone.
Opt-in (`ProbeSettings.weight_alpha`): one float64 SVD per module and role block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_TAIL = 5  # fewest eigenvalues a fitted tail may hold (fewer give no usable MLE or KS distance)
ZERO = 1e-12  # eigenvalues below ZERO * the largest are numerically zero and dropped


@dataclass(frozen=True)
class AlphaFit:
    """A power-law fit of a spectrum's tail."""

    alpha: float  # fitted exponent of p(lambda) ~ lambda^-alpha (nan: too few eigenvalues to fit)
    xmin: float  # start of the fitted tail
    n_tail: int  # eigenvalues >= xmin in the fit
    ks: float  # Kolmogorov-Smirnov distance of the fit over the tail


def hill_alpha(tail: np.ndarray, xmin: float) -> float:
    """Continuous power-law MLE of the exponent over `tail` (every value >= xmin): 1 + n / sum ln(x / xmin)."""
    logs = np.log(np.asarray(tail, dtype=np.float64) / xmin)  # (n,)
    s = float(logs.sum())
    return 1.0 + len(logs) / s if s > 0 else float("inf")


def ks_distance(tail: np.ndarray, xmin: float, alpha: float) -> float:
    """sup |F_n - F| of the sorted `tail` against the Pareto CDF F(x) = 1 - (x / xmin)^(1 - alpha),
    taken on both sides of every step of the empirical CDF (as scipy.stats.kstest)."""
    x = np.sort(np.asarray(tail, dtype=np.float64))  # (n,)
    n = len(x)
    F = 1.0 - (x / xmin) ** (1.0 - alpha)  # (n,)
    k = np.arange(1, n + 1)
    return float(max(np.max(k / n - F), np.max(F - (k - 1) / n)))


def fit_power_law(eigenvalues: Sequence[float], min_tail: int = MIN_TAIL) -> AlphaFit:
    """The power-law fit of a spectrum's tail, xmin chosen by the smallest KS distance (module docstring)."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))  # (m,) ascending
    lam = lam[lam > ZERO * lam[-1]] if len(lam) and lam[-1] > 0 else lam[:0]
    m = len(lam)
    if m < min_tail:
        return AlphaFit(float("nan"), float("nan"), m, float("nan"))
    best: AlphaFit | None = None
    for k in range(m - min_tail + 1):  # candidate xmin = lam[k], tail lam[k:]
        if k and lam[k] == lam[k - 1]:
            continue  # the same xmin as the candidate before
        tail = lam[k:]
        alpha = hill_alpha(tail, lam[k])
        if not np.isfinite(alpha):
            continue
        d = ks_distance(tail, lam[k], alpha)
        if best is None or d < best.ks:
            best = AlphaFit(float(alpha), float(lam[k]), len(tail), d)
    return best if best is not None else AlphaFit(float("nan"), float("nan"), m, float("nan"))


def weight_alphas(model, refs) -> dict:
    """{RowKey: AlphaFit} of every probed module and role block: the fit of sigma(W)^2, W its (rows, in) weight."""
    import torch

    from ..arch import weight_of
    from .base import row_views

    out = {}
    with torch.no_grad():
        for ref in refs:
            w = weight_of(model, ref).detach().to("cpu", torch.float64)  # (out, in)
            for key, _, rows in row_views([ref]):
                m = w[rows] if isinstance(rows, slice) else w[torch.as_tensor(rows)]  # (rows, in)
                out[key] = fit_power_law(torch.linalg.svdvals(m).square().numpy())
    return out
