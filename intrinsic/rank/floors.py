"""Rank as a test: how many directions of a mean gradient beat a noise floor measured on the same data.

Gradients are not i.i.d. noise, so these compare the spectrum against the data's own noise
instead of a formula:
- `split_half_rank`: subspaces of two disjoint halves of the batches that agree beyond
  random subspaces (principal-angle test, both sides). `split_half_of` is the test on
  precomputed bases of the halves: the one implementation used by `split_half_test` (bases
  from a truncated SVD) and by the probe (bases from its own spectra).
- `noise_floor_rank`: singular values above those of the shuffled-label probe;
  `half_difference_rank` gets a noise floor for free from the half difference.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..spectra import NonFiniteSpectrumError, as_matrix, singular_values, svd_topk
from .descriptive import _sigma, numerical_rank, numerical_tolerance

NULL_SAMPLES = 1000  # Monte-Carlo draws for the split-half random-subspace null
KMAX_CAP = 64  # default largest subspace size tested by split-half
ALPHA = 0.01  # default family-wise false-positive level of the split-half test, per side


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


def half_difference_floor(sigma, diff_top: float, shape) -> int:
    """noise_floor_rank of a mean's spectrum `sigma` against `diff_top`, the largest singular value
    of the half difference (M_a - M_b) / 2 (see `half_difference_rank`)."""
    return noise_floor_rank(sigma, np.asarray([diff_top], dtype=np.float64), shape=tuple(shape))


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
    return half_difference_floor(s, float(noise[0]) if len(noise) else 0.0, tuple(A.shape))


# ---------------------------------------------------------------- split-half agreement


class Basis(NamedTuple):
    """Top singular values and bases of one half's mean gradient (m, n)."""

    sv: np.ndarray  # (k,) singular values, descending (k >= the basis width; extra values are welcome)
    U: np.ndarray  # (m, K) top left singular vectors
    V: np.ndarray  # (n, K) top right singular vectors


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


def split_half_from_bases(U_a, V_a, U_b, V_b, *, alpha: float = ALPHA, seed: int = 0) -> SplitHalf:
    """The split-half test on given top singular bases U (m, K), V (n, K) of the two halves, calibrated over
    every k up to K (callers with spectra use `split_half_of`, which first cuts K to the numerical rank)."""
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


def split_half_kmax(shape) -> int:
    """Default largest subspace size of the split-half test: min(KMAX_CAP, min(m, n) // 4)."""
    return min(KMAX_CAP, min(int(x) for x in shape) // 4)


def split_half_of(a: Basis, b: Basis, shape, *, alpha: float = ALPHA, seed: int = 0) -> SplitHalf:
    """The split-half test on precomputed bases of the two halves: truncate, then calibrate.

    The bases are first cut to the numerical rank of either half (`numerical_rank` of its
    singular values): a direction below float32 round-off is an arbitrary vector of the null
    space, so a subspace that includes it is not a test that was made. The max-T null is then
    calibrated over the k grid of what is left (`split_half_from_bases`). The other order
    (calibrate over the full grid, then ignore the dead k's) pays a multiplicity cost, or
    gets a discount, for comparisons that were never made, so its false-positive level is
    not the stated alpha over the tests that count. This is the one place the order is decided.
    """
    K = min(a.U.shape[1], numerical_rank(a.sv, shape), numerical_rank(b.sv, shape))  # drop round-off directions
    if K < 1:
        return SplitHalf(0, (), (), (), (), (), alpha)
    return split_half_from_bases(a.U[:, :K], a.V[:, :K], b.U[:, :K], b.V[:, :K], alpha=alpha, seed=seed)


def split_half_test(M_a, M_b, *, kmax: int | None = None, alpha: float = ALPHA, seed: int = 0) -> SplitHalf:
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
    kmax defaults to min(64, min(m,n)//4) (`split_half_kmax`), is capped at min(m,n)//2,
    then at the numerical rank of either half before the null is calibrated (`split_half_of`).
    Cost: one truncated SVD per half plus a null per (dim, kmax), cached.
    Anisotropic noise (shared high-variance directions) also agrees beyond random subspaces
    and is counted: the test measures reproducibility; compare `half_difference_rank`.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    A, B = as_matrix(M_a), as_matrix(M_b)
    if A.shape != B.shape:
        raise ValueError(f"halves differ in shape: {tuple(A.shape)} vs {tuple(B.shape)}")
    m, n = A.shape
    K = split_half_kmax((m, n)) if kmax is None else min(int(kmax), min(m, n) // 2)
    if K < 1:
        return SplitHalf(0, (), (), (), (), (), alpha)
    U_a, s_a, Vh_a = svd_topk(A, K, seed=seed)  # (m, K), (K,), (K, n)
    U_b, s_b, Vh_b = svd_topk(B, K, seed=seed + 1)
    return split_half_of(Basis(s_a, U_a, Vh_a.T), Basis(s_b, U_b, Vh_b.T), (m, n), alpha=alpha, seed=seed)


def split_half_rank(M_a, M_b, *, kmax: int | None = None, alpha: float = ALPHA, seed: int = 0) -> int:
    """Number of leading directions reproduced by both halves of the batches (`split_half_test`)."""
    return split_half_test(M_a, M_b, kmax=kmax, alpha=alpha, seed=seed).rank
