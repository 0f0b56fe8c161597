"""Descriptive rank estimators: pure functions of a spectrum (and, for the noise models, the shape).

Spectrum-only estimators take the singular values `sigma` (any order; sorted descending inside)
and, where the noise model needs it, the matrix shape (m, n). They never return NaN: an all-zero
spectrum has every rank 0; NaN/inf input raises `NonFiniteSpectrumError` (a `ValueError` and an
`IntrinsicError`). `sigma` may be the top part of a spectrum; the median-based estimators
(Gavish-Donoho, Marchenko-Pastur with unknown noise) need at least the top floor(p/2)+1 values,
p = min(m, n). They describe a spectrum's shape; none of them is a test against the data's own
noise (those are in `floors.py`).

A gradient summed over T tokens is a sum of T rank-one outer products, so its rank is at
most T: `token_cap` reports min(T, m, n), an upper bound on every estimate.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import integrate, optimize

from ..spectra import NonFiniteSpectrumError

EPS32 = float(np.finfo(np.float32).eps)  # gradients are float32: values below s1*max(m,n)*EPS32 are round-off
TW1_Q99 = 2.0234  # 99th percentile of the Tracy-Widom (beta=1) law (Tracy & Widom 1996, tables)


# ---------------------------------------------------------------- input checks


def _sigma(sigma) -> np.ndarray:
    """sigma as a float64 1-D array sorted descending; rejects NaN/inf and negatives."""
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"sigma must be 1-D, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise NonFiniteSpectrumError("singular values contain NaN or inf")
    if np.any(s < 0):
        raise ValueError("singular values must be non-negative")
    return np.sort(s)[::-1]


def _shape(shape, s: np.ndarray) -> tuple[int, int]:
    m, n = (int(x) for x in shape)
    if m < 1 or n < 1:
        raise ValueError(f"shape must be positive, got {tuple(shape)}")
    if len(s) > min(m, n):
        raise ValueError(f"{len(s)} singular values for a {m}x{n} matrix (at most {min(m, n)})")
    return m, n


def _normalized(s: np.ndarray) -> np.ndarray:
    """s / s_1 (so that powers neither overflow nor underflow); empty when s is all zero."""
    return s / s[0] if len(s) and s[0] > 0 else np.zeros(0)


def numerical_tolerance(sigma, shape) -> float:
    """s_1 * max(m, n) * eps(float32): values below it are round-off (the numpy.linalg.matrix_rank rule)."""
    s = _sigma(sigma)
    m, n = _shape(shape, s)
    return float(s[0]) * max(m, n) * EPS32 if len(s) else 0.0


def numerical_rank(sigma, shape) -> int:
    """Number of singular values above `numerical_tolerance`."""
    s = _sigma(sigma)
    return int(np.sum(s > numerical_tolerance(s, shape))) if len(s) and s[0] > 0 else 0


def token_cap(tokens: int, shape) -> int:
    """min(tokens, m, n): a gradient summed over T tokens is a sum of T outer products
    delta_t x_t^T, so its rank (and every rank estimate) is at most T."""
    m, n = (int(x) for x in shape)
    return int(min(int(tokens), m, n))


# ---------------------------------------------------------------- spectrum shape


def energy_rank(sigma, tau: float) -> int:
    """Smallest k with sum_{i<=k} s_i^2 >= tau * sum_i s_i^2 (0 for an all-zero spectrum).

    The rank of the best rank-k approximation (Eckart-Young) that keeps a fraction tau of
    the squared Frobenius norm. A relative slack of 1e-12 absorbs round-off, so r equal
    values give ceil(tau * r) exactly.
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must lie in (0, 1], got {tau}")
    t = _normalized(_sigma(sigma))
    if len(t) == 0:
        return 0
    c = np.cumsum(t**2)
    k = int(np.searchsorted(c, tau * c[-1] * (1.0 - 1e-12), side="left")) + 1
    return min(k, len(t))


def stable_rank(sigma) -> float:
    """Stable (numerical) rank ||M||_F^2 / ||M||_2^2 = sum s_i^2 / s_1^2 (Rudelson & Vershynin 2007)."""
    t = _normalized(_sigma(sigma))
    return float(np.sum(t**2)) if len(t) else 0.0


def entropy_rank(sigma) -> float:
    """Effective rank exp(-sum p_i ln p_i), p_i = s_i / sum_j s_j (Roy & Vetterli 2007, EUSIPCO).

    Shannon entropy of the normalized singular values (not their squares), exponentiated;
    0 ln 0 = 0. Equals r for r equal non-zero values.
    """
    t = _normalized(_sigma(sigma))
    if len(t) == 0:
        return 0.0
    p = t[t > 0] / np.sum(t)
    return float(np.exp(-np.sum(p * np.log(p))))


def participation_ratio(sigma) -> float:
    """Participation ratio (sum s_i^2)^2 / sum s_i^4 of the energy distribution s_i^2.

    The inverse Simpson index of p_i = s_i^2 / sum s^2; equals r for r equal values.
    """
    t = _normalized(_sigma(sigma))
    if len(t) == 0:
        return 0.0
    e = t**2
    return float(np.sum(e) ** 2 / np.sum(e**2))


# ---------------------------------------------------------------- random-matrix thresholds


@functools.lru_cache(maxsize=256)
def mp_median(beta: float) -> float:
    """Median of the Marchenko-Pastur law with aspect ratio beta in (0, 1] and unit variance.

    Density sqrt((b - t)(t - a)) / (2 pi beta t) on [a, b] = [(1 - sqrt beta)^2, (1 + sqrt beta)^2]
    (eigenvalues of X X^T / n for X p x n i.i.d. N(0, 1), beta = p/n); the median solves
    CDF(mu) = 1/2, with the CDF by adaptive quadrature and the root by Brent's method.
    """
    beta = float(beta)
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must lie in (0, 1], got {beta}")
    a, b = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2

    def density(t: float) -> float:
        return math.sqrt(max((b - t) * (t - a), 0.0)) / (2 * math.pi * beta * t)

    def cdf_minus_half(x: float) -> float:
        return integrate.quad(density, a, x, limit=200)[0] - 0.5

    return float(optimize.brentq(cdf_minus_half, a, b, xtol=1e-13))


def gd_lambda(beta: float) -> float:
    """lambda*(beta): Gavish-Donoho threshold coefficient for known noise, tau = lambda* sqrt(max(m,n)) sigma."""
    return math.sqrt(2 * (beta + 1) + 8 * beta / ((beta + 1) + math.sqrt(beta**2 + 14 * beta + 1)))


def gd_omega(beta: float) -> float:
    """omega(beta) = lambda*(beta) / sqrt(mu_beta), mu_beta the Marchenko-Pastur median (exact form)."""
    return gd_lambda(beta) / math.sqrt(mp_median(beta))


def gd_omega_approx(beta: float) -> float:
    """The paper's cubic fit omega(beta) ~ 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43."""
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


def _median_of_spectrum(s: np.ndarray, p: int) -> float:
    """Median of the full p-value spectrum from its top values (descending)."""
    need = p // 2 + 1
    if len(s) < need:
        raise ValueError(f"the median needs the top {need} of {p} singular values, got {len(s)}")
    if p % 2:
        return float(s[(p - 1) // 2])
    return float(0.5 * (s[p // 2 - 1] + s[p // 2]))


def mp_noise_sigma(sigma, shape) -> float:
    """Robust noise level sigma_hat = median(s) / sqrt(max(m, n) * mu_beta).

    For an m x n matrix of i.i.d. N(0, sigma^2) entries the median singular value is
    sqrt(max(m, n) * mu_beta) * sigma, with mu_beta the Marchenko-Pastur median (Gavish &
    Donoho 2014, Sec. III.C); a few low-rank spikes barely move the median.
    """
    s = _sigma(sigma)
    m, n = _shape(shape, s)
    p, q = min(m, n), max(m, n)
    return _median_of_spectrum(s, p) / math.sqrt(q * mp_median(p / q))


def gavish_donoho_rank(sigma, shape, noise_sigma: float | None = None) -> int:
    """Number of s_i above the Gavish-Donoho optimal hard threshold (IEEE Trans. IT 60(8), 2014).

    Unknown noise: tau = omega(beta) * median(s), beta = min(m,n) / max(m,n),
    omega(beta) = lambda*(beta) / sqrt(mu_beta) computed exactly (`gd_omega`; the cubic fit
    `gd_omega_approx` agrees within 0.02). Known noise: tau = lambda*(beta) * sqrt(max(m,n)) * sigma.
    The threshold is floored at the float32 round-off tolerance. Assumes a full-rank noise
    bulk: when the matrix's rank is below p/2 (e.g. fewer tokens than p/2) the median is ~0
    and the count degenerates to the numerical rank.
    """
    s = _sigma(sigma)
    m, n = _shape(shape, s)
    if len(s) == 0 or s[0] == 0:
        return 0
    p, q = min(m, n), max(m, n)
    beta = p / q
    if noise_sigma is None:
        tau = gd_omega(beta) * _median_of_spectrum(s, p)
    else:
        tau = gd_lambda(beta) * math.sqrt(q) * float(noise_sigma)
    return int(np.sum(s > max(tau, numerical_tolerance(s, (m, n)))))


def mp_edge(shape, noise_sigma: float, *, tw_margin: bool = True) -> float:
    """Largest singular value pure noise plausibly reaches: noise_sigma * (sqrt m + sqrt n),
    plus (tw_margin) the Tracy-Widom 99% fluctuation of the top eigenvalue (Johnstone 2001):
    noise_sigma * sqrt(mu + 2.02 s), mu = (sqrt m + sqrt n)^2, s = (sqrt m + sqrt n)(1/sqrt m + 1/sqrt n)^(1/3)
    (Johnstone's centering and scale, without his n - 1 finite-sample correction)."""
    m, n = (int(x) for x in shape)
    root = math.sqrt(m) + math.sqrt(n)
    if not tw_margin:
        return float(noise_sigma) * root
    scale = root * (1 / math.sqrt(m) + 1 / math.sqrt(n)) ** (1 / 3)
    return float(noise_sigma) * math.sqrt(root**2 + TW1_Q99 * scale)


def mp_spike_count(sigma, shape, noise_sigma: float | None = None, *, tw_margin: bool = True) -> int:
    """Number of s_i above the Marchenko-Pastur bulk edge of an m x n noise matrix.

    Edge: noise_sigma * (sqrt m + sqrt n) (Marchenko & Pastur 1967), raised by the 99th
    percentile of the Tracy-Widom fluctuation of the largest noise eigenvalue (`mp_edge`) so
    that pure noise yields 0 spikes 99% of the time. Unknown noise_sigma is estimated from
    the median singular value against the Marchenko-Pastur median (`mp_noise_sigma`).
    Like Gavish-Donoho, assumes an i.i.d. full-rank noise bulk.
    """
    s = _sigma(sigma)
    m, n = _shape(shape, s)
    if len(s) == 0 or s[0] == 0:
        return 0
    if noise_sigma is None:
        noise_sigma = mp_noise_sigma(s, (m, n))
    edge = mp_edge((m, n), noise_sigma, tw_margin=tw_margin)
    return int(np.sum(s > max(edge, numerical_tolerance(s, (m, n)))))
