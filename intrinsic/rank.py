"""Intrinsic-rank estimators: how many directions of a matrix carry signal.

Spectrum-only estimators are pure functions of the singular values `sigma` (any order;
sorted descending inside) and, where the noise model needs it, the matrix shape (m, n).
They never return NaN: an all-zero spectrum has every rank 0; NaN/inf input raises
`NonFiniteSpectrumError` (a `ValueError` and an `IntrinsicError`). `sigma` may be the top
part of a spectrum; the median-based estimators (Gavish-Donoho, Marchenko-Pastur with
unknown noise) need at least the top floor(p/2)+1 values, p = min(m, n).

Two data-driven estimators compare the spectrum against a noise floor measured on the
same data instead of a formula (gradients are not i.i.d. noise):
- `split_half_rank`: subspaces of two disjoint halves of the batches that agree beyond
  random subspaces (principal-angle test, both sides).
- `noise_floor_rank`: singular values above those of the shuffled-label probe;
  `half_difference_rank` gets a noise floor for free from the half difference.

A gradient summed over T tokens is a sum of T rank-one outer products, so its rank is at
most T: `token_cap` reports min(T, m, n), an upper bound on every estimate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate, optimize

from .spectra import NonFiniteSpectrumError, as_matrix, singular_values, svd_topk

EPS32 = float(np.finfo(np.float32).eps)  # gradients are float32: values below s1*max(m,n)*EPS32 are round-off
TW1_Q99 = 2.0234  # 99th percentile of the Tracy-Widom (beta=1) law (Tracy & Widom 1996, tables)
NULL_SAMPLES = 1000  # Monte-Carlo draws for the split-half random-subspace null
KMAX_CAP = 64  # default largest subspace size tested by split-half

SPECTRUM_ESTIMATORS = (
    "energy_90",  # energy_rank(sigma, 0.90)
    "energy_99",  # energy_rank(sigma, 0.99)
    "stable_rank",  # sum s^2 / s_1^2
    "entropy_rank",  # exp(entropy of s / sum s), Roy & Vetterli 2007
    "participation_ratio",  # (sum s^2)^2 / sum s^4
    "gavish_donoho",  # optimal hard threshold, unknown noise (Gavish & Donoho 2014)
    "mp_spikes",  # values above the Marchenko-Pastur bulk edge + Tracy-Widom margin
)
DATA_ESTIMATORS = (
    "split_half",  # split_half_rank(M_a, M_b)
    "noise_floor",  # noise_floor_rank(sigma, sigma_shuffled_labels)
    "half_difference",  # half_difference_rank(M_a, M_b)
)
ESTIMATORS = SPECTRUM_ESTIMATORS + DATA_ESTIMATORS


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


def estimate_all(sigma, shape) -> dict[str, float]:
    """Every spectrum-only estimator, keyed by `SPECTRUM_ESTIMATORS`."""
    s = _sigma(sigma)
    shape = _shape(shape, s)
    return {
        "energy_90": float(energy_rank(s, 0.90)),
        "energy_99": float(energy_rank(s, 0.99)),
        "stable_rank": stable_rank(s),
        "entropy_rank": entropy_rank(s),
        "participation_ratio": participation_ratio(s),
        "gavish_donoho": float(gavish_donoho_rank(s, shape)),
        "mp_spikes": float(mp_spike_count(s, shape)),
    }


# ---------------------------------------------------------------- noise floors from data


def noise_floor_rank(sigma, sigma_noise, *, mode: str = "max", shape=None) -> int:
    """Number of leading s_i that beat the spectrum of a pure-noise version of the same probe.

    sigma_noise: the singular values of the shuffled-label mean gradient (same batches, same
    batch count N, so the same 1/sqrt(N) noise scale), 1-D, or 2-D (runs, values) for
    several independent noise runs.
    - mode "max" (default): count of s_i > max over runs of s_noise_1. The classic
      permutation max-statistic: a direction is signal if it beats the strongest direction
      pure noise produced. With R noise runs a pure-noise matrix scores >= 1 with
      probability 1/(R + 1) (1/2 for one run): one run is a screen, not a 5% test.
    - mode "parallel": number of leading i with s_i > max over runs of s_noise_i (Horn's
      parallel analysis, 1965; past the end of a shorter noise spectrum its last value
      serves as threshold); less conservative, known to over-extract when a strong
      signal inflates the real spectrum's order statistics.
    Shuffled labels keep label-independent structure (e.g. the marginal label or unigram
    statistics), which lifts s_noise_1 above pure noise: the estimate leans conservative.
    `shape` (optional) floors the threshold at the float32 round-off tolerance.
    """
    if mode not in ("max", "parallel"):
        raise ValueError(f"mode must be 'max' or 'parallel', got {mode!r}")
    s = _sigma(sigma)
    noise = np.asarray(sigma_noise, dtype=np.float64)
    noise = noise[None, :] if noise.ndim == 1 else noise
    if noise.ndim != 2:
        raise ValueError(f"sigma_noise must be 1-D or 2-D, got shape {noise.shape}")
    if not np.all(np.isfinite(noise)):
        raise NonFiniteSpectrumError("noise singular values contain NaN or inf")
    noise = -np.sort(-np.abs(noise), axis=1)  # (runs, k) descending
    if len(s) == 0 or s[0] == 0:
        return 0
    tol = numerical_tolerance(s, shape) if shape is not None else 0.0
    if mode == "max":
        thr = float(noise[:, 0].max()) if noise.shape[1] else 0.0
        return int(np.sum(s > max(thr, tol)))
    per_index = noise.max(axis=0) if noise.shape[1] else np.zeros(1)  # (k,)
    thr = np.full(len(s), per_index[-1])  # past the noise spectrum's end: its last value (conservative)
    k = min(len(s), len(per_index))
    thr[:k] = per_index[:k]
    above = s > np.maximum(thr, tol)
    return int(len(s)) if above.all() else int(np.argmin(above))


def half_difference_rank(M_a, M_b) -> int:
    """noise_floor_rank of the half mean (M_a + M_b)/2 against the half difference (M_a - M_b)/2.

    With equal-size halves, M_a = G + E_a and M_b = G + E_b with E_a, E_b independent with
    the same law, (E_a - E_b)/2 has the covariance of (E_a + E_b)/2 (the same law when
    Gaussian, which batch means approach) while G cancels: the difference is a noise-only
    copy of the full mean gradient, at no extra cost, and keeps the noise's anisotropy.
    """
    A, B = as_matrix(M_a), as_matrix(M_b)
    if A.shape != B.shape:
        raise ValueError(f"halves differ in shape: {tuple(A.shape)} vs {tuple(B.shape)}")
    s = singular_values((A + B) / 2, method="exact")
    noise = singular_values((A - B) / 2, k=1, method="exact")
    return noise_floor_rank(s, noise, shape=tuple(A.shape))


# ---------------------------------------------------------------- split-half agreement


@dataclass(frozen=True)
class SplitHalf:
    """Outcome of the split-half principal-angle test (see `split_half_test`)."""

    rank: int  # max over k of min(left[k], right[k])
    ks: tuple[int, ...]  # subspace sizes tested (grid up to kmax)
    left: tuple[int, ...]  # per k: left principal cosines above the threshold
    right: tuple[int, ...]  # per k: right principal cosines above the threshold
    threshold_left: tuple[float, ...]  # per k: null cosine threshold in R^m
    threshold_right: tuple[float, ...]  # per k: null cosine threshold in R^n
    alpha: float  # family-wise false-positive level per side


def k_grid(kmax: int) -> tuple[int, ...]:
    """Subspace sizes tested: every k <= 8, then 12, 16, 24, 32, 48, 64, ... (2^j and 3*2^(j-1)), and kmax."""
    ks = set(range(1, min(kmax, 8) + 1)) | {kmax}
    j = 3
    while 2**j < kmax:
        ks |= {k for k in (2**j, 3 * 2 ** (j - 1)) if k <= kmax}
        j += 1
    return tuple(sorted(ks))


@functools.lru_cache(maxsize=64)
def _null_thresholds(dim: int, kmax: int, alpha: float, seed: int) -> tuple[float, ...]:
    """Per-k thresholds q_k on the largest principal cosine between random nested subspaces.

    Monte Carlo: A_k = span(e_1..e_k) and B_k = span of the first k columns of an m x kmax
    Gaussian G (a uniformly random nested flag). Only the top kmax rows of G's Q factor are
    needed: Q_1 = G_top R^-1 with R^T R = G_top^T G_top + W, W ~ Wishart_kmax(dim - kmax, I)
    drawn by the Bartlett decomposition, and cos(A_k, B_k) = svdvals(Q_1[:k, :k]).
    Max-T calibration (Westfall & Young 1993): z_k = (c_k - mean_k) / sd_k, T = max_k z_k,
    q_k = mean_k + quantile_{1-alpha}(T) sd_k, so P(any k has c_k > q_k) = alpha under the null.
    """
    K = kmax
    ks = k_grid(K)
    rng = np.random.default_rng(seed)
    S = NULL_SAMPLES
    G = torch.from_numpy(rng.standard_normal((S, K, K)))  # (S, K, K): the top K rows of G
    L = torch.from_numpy(rng.standard_normal((S, K, K))).tril(-1)  # (S, K, K)
    chi2 = rng.chisquare(dim - K - np.arange(K), size=(S, K))  # (S, K) Bartlett diagonal^2
    L = L + torch.diag_embed(torch.from_numpy(np.sqrt(chi2)))  # W = L L^T ~ Wishart_K(dim - K, I)
    C = torch.linalg.cholesky(G.mT @ G + L @ L.mT)  # (S, K, K) lower, R = C^T
    Q1 = torch.linalg.solve_triangular(C, G.mT, upper=False).mT  # (S, K, K) = G R^-1
    c = torch.stack([torch.linalg.eigvalsh(Q1[:, :k, :k].mT @ Q1[:, :k, :k])[:, -1] for k in ks], 1)
    c = c.clamp_min(0).sqrt().numpy()  # (S, len(ks)) largest cosines
    mean, sd = c.mean(0), c.std(0) + 1e-12
    t = np.quantile(((c - mean) / sd).max(1), 1.0 - alpha)
    return tuple(float(x) for x in np.minimum(mean + t * sd, 1.0))


def split_half_from_bases(U_a, V_a, U_b, V_b, *, alpha: float = 0.01, seed: int = 0) -> SplitHalf:
    """The split-half test on given top singular bases U (m, K), V (n, K) of the two halves."""
    U_a, U_b, V_a, V_b = (np.asarray(x, dtype=np.float64) for x in (U_a, U_b, V_a, V_b))
    if U_a.shape != U_b.shape or V_a.shape != V_b.shape or U_a.shape[1] != V_a.shape[1]:
        raise ValueError(f"basis shapes disagree: {U_a.shape}, {U_b.shape}, {V_a.shape}, {V_b.shape}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    (m, K), n = U_a.shape, V_a.shape[0]
    if K == 0:
        return SplitHalf(0, (), (), (), (), (), alpha)
    if 2 * K > min(m, n):
        raise ValueError(f"split-half takes at most min(m, n) // 2 = {min(m, n) // 2} basis columns, got {K}")
    ks = k_grid(K)
    q_l, q_r = _null_thresholds(m, K, alpha, seed), _null_thresholds(n, K, alpha, seed)  # cached by dim
    cl = torch.from_numpy(U_a.T @ U_b)  # (K, K) left cosine matrix
    cr = torch.from_numpy(V_a.T @ V_b)  # (K, K) right cosine matrix
    left = tuple(int((torch.linalg.svdvals(cl[:k, :k]) > q).sum()) for k, q in zip(ks, q_l))
    right = tuple(int((torch.linalg.svdvals(cr[:k, :k]) > q).sum()) for k, q in zip(ks, q_r))
    rank = max(min(a, b) for a, b in zip(left, right))
    return SplitHalf(rank, ks, left, right, q_l, q_r, alpha)


def split_half_test(M_a, M_b, *, kmax: int | None = None, alpha: float = 0.01, seed: int = 0) -> SplitHalf:
    """Split-half reproducibility test of the leading singular directions of a mean gradient.

    M_a, M_b (m, n): mean gradients of two disjoint halves of the batches. Let A_k, B_k be
    the top-k left singular bases of M_a, M_b, and cos_1 >= ... >= cos_k the cosines of the
    principal angles between them (singular values of A_k^T B_k). Null: the halves share
    nothing and their noise is isotropic, so A_k, B_k are independent uniformly random
    nested subspaces. For each k in a grid up to kmax, q_k is the null threshold on cos_1
    calibrated jointly over k (max-T, seeded Monte Carlo, `_null_thresholds`), so pure noise
    exceeds some q_k with probability alpha. d_k^left = #{i : cos_i > q_k}: the number of
    directions the two top-k subspaces share beyond chance (the q_k of the largest cosine
    is conservative for the later ones). The same on the right (input) side with V_k in R^n.
    Rank = max_k min(d_k^left, d_k^right): a direction counts only if it is reproduced in
    both its output and input space. Comparing subspaces, not single vectors, keeps the test
    valid when signal singular values are close (their vectors rotate within the subspace);
    taking the max over k lets a direction that swaps places across halves still count.
    kmax defaults to min(64, min(m,n)//4), is capped at min(m,n)//2 and at the numerical
    rank of either half. Cost: one truncated SVD per half plus a null per (dim, kmax), cached.
    Anisotropic noise (shared high-variance directions) also agrees beyond random subspaces
    and is counted: the test measures reproducibility; compare `half_difference_rank`.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    A, B = as_matrix(M_a), as_matrix(M_b)
    if A.shape != B.shape:
        raise ValueError(f"halves differ in shape: {tuple(A.shape)} vs {tuple(B.shape)}")
    m, n = A.shape
    p = min(m, n)
    K = min(KMAX_CAP, p // 4) if kmax is None else min(int(kmax), p // 2)
    if K < 1:
        return SplitHalf(0, (), (), (), (), (), alpha)
    U_a, s_a, Vh_a = svd_topk(A, K, seed=seed)  # (m, K), (K,), (K, n)
    U_b, s_b, Vh_b = svd_topk(B, K, seed=seed + 1)
    K = min(K, numerical_rank(s_a, (m, n)), numerical_rank(s_b, (m, n)))  # drop round-off directions
    if K < 1:
        return SplitHalf(0, (), (), (), (), (), alpha)
    return split_half_from_bases(U_a[:, :K], Vh_a[:K].T, U_b[:, :K], Vh_b[:K].T, alpha=alpha, seed=seed)


def split_half_rank(M_a, M_b, *, kmax: int | None = None, alpha: float = 0.01, seed: int = 0) -> int:
    """Number of leading directions reproduced by both halves of the batches (`split_half_test`)."""
    return split_half_test(M_a, M_b, kmax=kmax, alpha=alpha, seed=seed).rank
