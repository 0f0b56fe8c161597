"""Rank as a calibrated test: the sign-flip (Rademacher) step-down test on K fold means.

The probe can keep K >= 8 fold means G_1..G_K of a module's gradient over disjoint batch sets
(`ProbeSettings.folds`); G = mean_k G_k. Under the null "no signal", each G_k is noise that is
symmetric about zero and independent across folds (disjoint batches), so the K-tuple
(G_1..G_K) has the same law as (s_1 G_1, .., s_K G_K) for any fixed signs s_k = +-1: every
M(s) = sum_k s_k G_k / K is an equally likely version of G. Drawing B random sign vectors gives
the null distribution of any statistic of G, with no model of the noise (anisotropy, heavy tails
and the fold-to-fold covariance included). This is a randomization test in the sense of
Fisher/Pitman; random sign flips were proposed for PCA rank selection by Hong, Sheng & Dobriban
(2023, "Selecting the number of components in PCA via random signflips"), and the p-value
p = (1 + #{b : T(s_b) >= T(1)}) / (B + 1) with B random draws is exact (Phipson & Smyth 2010). With K = 8 folds
there are only 2^7 - 1 = 127 other patterns up to a global sign, fewer than the default B = 199: then all of them
are used (`sign_patterns`), which is the exact randomization distribution itself, deterministic and cheaper.

Procedure (step-down, a fixed sequence of nested hypotheses H_k: "rank < k", k = 1, 2, ...):
1. Let U_{k-1}, V_{k-1} be the top k-1 singular vectors of G (exact SVD) and P = I - U U^T,
   Q = I - V V^T. The step-k statistic of a matrix M is T_k(M) = sigma_1(P M Q), so T_k(G) is the
   k-th singular value of G; the null is T_k(M(s_b)) for the same P, Q: noise with the k-1
   accepted directions deflated on both sides.
2. p_k = (1 + #{b : T_k(M(s_b)) >= T_k(G)}) / (B + 1); reject H_k if p_k <= alpha and go on,
   else stop. The rank is the number of rejections.
Fixed-sequence testing needs no multiplicity correction: a false claim "rank >= r+1" requires
rejecting the true H_{r+1} (Maurer, Hothorn & Lehmacher 1995). At k = 1 nothing is deflated and
the test is an exact randomization test, so P(rank >= 1 | no signal) <= alpha exactly (up to the
independence and symmetry of the folds). For k > 1 the deflating subspace is fitted to G itself,
which removes part of G's own noise but not of M(s)'s: T_k(G) is pushed down against its null,
which makes the later steps conservative, not liberal (checked by simulation in
tests/test_signflip.py and benchmarks/calibrate_signflip.py).

Cost: sigma_1 is computed on the m x m Gram matrices (m = the smaller side), with the fold Grams
A_jl = G_j G_l^T computed once (K^2 m^2 n flops), M(s) Q M(s)^T = sum_jl s_j s_l A_jl - w w^T
(w = sum_j s_j G_j V), then a fixed number of block power iterations from a fixed start (later
steps start from the same resample's block of the step before, deflated). The statistic is then
"this deterministic approximation of sigma_1", the same function for the observed and every
resampled matrix, so the test stays exact even where the approximation is loose. With K folds there are only 2^(K-1) distinct |statistics|, so alpha >= 2^(1-K) makes
sense (K = 8: alpha >= 1/128).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from ..spectra import batched_method, orthonormalize, small_svd

ALPHA = 0.05  # family-wise level of the claim "rank >= 1" (and of each step of the fixed sequence)
RESAMPLES = 199  # random sign vectors B (p-values multiples of 1/(B+1)), unless all 2^(K-1) - 1 patterns are fewer
MIN_FOLDS = 8  # fewer folds give too few distinct sign flips (2^(K-1)) for a 5% test
KMAX_CAP = 64  # largest rank the test will certify (steps)
BLOCK = 8  # block size of the power iterations
ITERS = 12  # block power iterations at the first step ...
WARM_ITERS = 4  # ... and at later steps, which start from the previous step's block (deflated)
CHUNK_BYTES = 256 * 2**20  # memory for the resampled Gram matrices at a time (CPU) ...
CACHE_BYTES = 2**30  # the resampled Gram matrices of every chunk are kept across steps when they fit in this (CPU) ...
GPU_BYTES = 4 * 2**30  # ... and both on a GPU, at most a quarter of its free memory: fewer, larger batched calls


@dataclass(frozen=True)
class SignFlipTest:
    """Outcome of the sign-flip step-down test (`sign_flip_test`)."""

    rank: int  # number of leading directions rejected at level alpha (steps before the first p > alpha)
    pvalues: tuple[float, ...]  # p_k for the steps made, k = 1..; the last one is > alpha unless kmax was hit
    stats: tuple[float, ...]  # T_k(G): the (approximate) k-th singular value of G
    null_q: tuple[float, ...]  # (1 - alpha) quantile of the step's null statistics
    null_ms: tuple[float, ...]  # mean of the squared null statistics per step: the noise energy of direction k
    alpha: float
    resamples: int
    folds: int


def rademacher(resamples: int, folds: int, seed: int) -> np.ndarray:
    """(resamples, folds) random signs +-1, seeded."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(resamples, folds)) * 2.0 - 1.0


def sign_patterns(resamples: int, folds: int, seed: int, exhaustive: bool | None = None) -> np.ndarray:
    """The sign vectors of the test, (1 + B, folds), the observed all-ones vector first. When the 2^(K-1) - 1
    patterns that differ from it (up to a global sign, which leaves every statistic unchanged: M(-s) = -M(s)) number
    at most `resamples` (K = 8 folds: 127 <= 199), all of them (`exhaustive` None or True): the exact randomization
    distribution, so p-values are deterministic multiples of 2^(1-K) and carry no Monte Carlo noise (with 199 random
    draws the designated rank of 3-6 of 36 MiniLM modules moved with the resampling seed,
    benchmarks/sketch_agreement.py). Else `resamples` random vectors, seeded."""
    if exhaustive is None:
        exhaustive = 2 ** (folds - 1) - 1 <= resamples
    if not exhaustive:
        return np.vstack([np.ones((1, folds)), rademacher(resamples, folds, seed)])
    codes = np.arange(2 ** (folds - 1))[:, None] >> np.arange(folds - 1)[None, :] & 1  # (2^(K-1), K-1) bits
    return np.hstack([np.ones((len(codes), 1)), 1.0 - 2.0 * codes])  # first sign +1; code 0: all ones


def _orth(X: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """An orthonormal basis of the columns of each X (b, m, p), p small: `spectra.orthonormalize` with
    wait=False, so the ~1,200 blocks of a 1B module's test never wait for the device (an eigh or a failure check
    does). The result is a deterministic function of X either way, which is all the test needs to stay exact."""
    return orthonormalize(X, method, wait=False)


def _svd(G: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U (m, m), S (m,), Vh (m, n) of G (m, n), m <= n. "qr": `torch.linalg.svd`; "gram" (off the CPU):
    `spectra.small_svd` on the device, from the eigenpairs of G G^T (a full SVD of a 2048 x 8192 float64 matrix
    takes 0.35 s on an H200; the deflating directions are the head, where the Gram route loses nothing)."""
    if method == "qr":
        return torch.linalg.svd(G, full_matrices=False)
    S, U, V = small_svd(G[None], G.shape[0], "gram", host=False)  # (1, m), (1, m, m), (1, n, m)
    return U[0], S[0], V[0].mT


def _budget(device: torch.device) -> tuple[int, int]:
    """(chunk bytes, cache bytes) of the resampled Gram matrices on `device`."""
    if device.type != "cuda":
        return CHUNK_BYTES, CACHE_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return (min(GPU_BYTES, free // 4),) * 2


def _split_tf32(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """X (float64) as hi + lo, both float32 with TF32's 10-bit mantissa (the low 13 bits of hi cleared), so a
    TF32 tensor-core product of the parts loses nothing to the rounding of its inputs."""
    hi = (X.to(torch.float32).view(torch.int32) & -8192).view(torch.float32)
    lo = (X - hi.to(torch.float64)).to(torch.float32)
    return hi, (lo.view(torch.int32) & -8192).view(torch.float32)


def _tf32_product(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A B^T (float64) from the split parts a = (hi, lo) of A and b of B (`_split_tf32`): three TF32
    tensor-core products (hi hi + hi lo + lo hi: the "3xTF32" scheme, float32-level accuracy, relative error
    ~1e-6 of |A| |B|, several times faster than float64 on an H200). The TF32 switch is restored afterwards."""
    (ah, al), (bh, bl) = a, b
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        C = ah @ bh.mT + (ah @ bl.mT + al @ bh.mT)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return C.to(torch.float64)


def fold_grams(F: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """The fold Gram matrices A (K, K, m, m), A_jl = G_j G_l^T, of the fold means F (K, m, n), float64.
    Only the K (K + 1) / 2 blocks j <= l are multiplied (A_lj = A_jl^T). On an H200 this took a 2048 x 8192
    module's whole test from 0.118 to 0.099 s (benchmarks/results/linalg-cuda-grams.json): the Grams were a
    smaller part of the test than their flop count suggested. "float64": float64 products; "tf32": `_tf32_product` (CUDA
    tensor cores); "auto": tf32 on a CUDA device, else float64. Either way each block is the same function of
    (G_j, G_l), and flipping a fold's sign is exact in floating point, so A(s * F) = s s^T * A(F) holds exactly
    and the test built on A stays an exact randomization test; tf32 only moves statistics by ~1e-6 relative."""
    if method not in ("auto", "float64", "tf32"):
        raise ValueError(f"unknown grams method {method!r}; choose auto, float64 or tf32")
    if method == "auto":
        method = "tf32" if F.device.type == "cuda" else "float64"
    K, m, n = F.shape
    if method == "tf32":
        hi, lo = _split_tf32(F)

        def product(j):  # G_j [G_j .. G_K-1]^T: one GEMM, (m, (K - j) m)
            return _tf32_product((hi[j], lo[j]), (hi[j:].reshape(-1, n), lo[j:].reshape(-1, n)))
    else:
        def product(j):
            return F[j] @ F[j:].reshape(-1, n).mT
    A = F.new_empty(K, K, m, m)
    for j in range(K):
        P = product(j).reshape(m, K - j, m).transpose(0, 1)  # (K - j, m, m): A_jl for l >= j
        A[j, j:] = P
        A[j + 1:, j] = P[1:].mT
    return A


def _top_sv(apply, X: torch.Tensor, iters: int, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt of the top eigenvalue of a batch of PSD operators `apply` (b, m, p) -> (b, m, p): block power
    iteration from X (b, m, p), then Rayleigh-Ritz; also the final block (a warm start for the next step).
    Deterministic given the operators and X."""
    X = _orth(X, method)  # (b, m, p)
    for _ in range(iters):
        X = _orth(apply(X), method)  # (b, m, p)
    R = X.mT @ apply(X)  # (b, p, p)
    ev = torch.linalg.eigvalsh((R + R.mT) / 2)[:, -1]  # (b,)
    return ev.clamp_min(0).sqrt(), X


def sign_flip_test(folds, *, alpha: float = ALPHA, resamples: int = RESAMPLES, seed: int = 0,
                   kmax: int | None = None, deflate: bool = True, method: str = "auto",
                   exhaustive: bool | None = None, grams: str = "auto") -> SignFlipTest:
    """The sign-flip step-down rank test on fold means `folds` (K, m, n); see the module docstring.

    `deflate=False` compares every s_k(G) against the null of sigma_1 of the undeflated M(s)
    (the max-statistic variant: valid, more conservative after the first direction). `method`: how the power
    iterations orthonormalize (`_orth`; "auto": QR on the CPU, shifted CholeskyQR on a GPU). `exhaustive`: every
    sign pattern instead of `resamples` random ones (`sign_patterns`; None: when they are at most `resamples`).
    `grams`: how the fold Gram matrices are computed (`fold_grams`).
    """
    F = torch.as_tensor(np.asarray(folds) if not torch.is_tensor(folds) else folds).detach()
    if F.ndim != 3:
        raise ValueError(f"folds must be (K, m, n), got shape {tuple(F.shape)}")
    K = int(F.shape[0])
    if K < 2:
        raise ValueError(f"the sign-flip test needs at least 2 folds, got {K}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    F = F.to(torch.float64)
    if not bool(torch.isfinite(F).all()):
        raise ValueError("folds contain NaN or inf")
    if F.shape[1] > F.shape[2]:
        F = F.mT  # (K, m, n) with m <= n: Gram matrices are m x m
    _, m, n = F.shape
    kmax = min(KMAX_CAP, m - 1) if kmax is None else min(int(kmax), m - 1)
    G = F.mean(0)  # (m, n)
    U, S, Vh = _svd(G, batched_method(G, method))  # (m, m), (m,), (m, n)
    signs = torch.from_numpy(sign_patterns(resamples, K, seed, exhaustive)).to(F)  # (1+B, K), observed first
    A = fold_grams(F, grams)  # (K, K, m, m): A_jl = G_j G_l^T
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(m, min(BLOCK, m), generator=gen, dtype=torch.float64).to(F.device)  # (m, p)
    chunk_bytes, cache_bytes = _budget(F.device)
    chunk = max(1, chunk_bytes // (8 * m * m))
    tol = float(S[0]) * max(m, n) * 1e-7 if len(S) else 0.0  # below float32 round-off: not a direction
    pvals, stats, quants, ms = [], [], [], []
    starts = list(range(0, len(signs), chunk))
    cache = {}  # chunk start -> (b, m, m) sum_jl s_j s_l A_jl, kept across steps when all fit in CACHE_BYTES
    keep = len(starts) == 1 or len(signs) * m * m * F.element_size() <= cache_bytes
    blocks = {i: start.expand(min(chunk, len(signs) - i), -1, -1) for i in starts}  # warm starts (b, m, p)
    for k in range(1, kmax + 1):
        r = k - 1 if deflate else 0
        Uk, Vk = U[:, :r], Vh[:r].mT  # (m, r), (n, r)
        W = F @ Vk  # (K, m, r): G_j V

        def proj(X):
            return X - Uk @ (Uk.mT @ X)  # (b, m, p): P X

        t = []
        for i in starts:
            s = signs[i:i + chunk]  # (b, K)
            H = cache.get(i)
            if H is None:
                H = torch.einsum("bj,bl,jlac->bac", s, s, A)  # (b, m, m): K^2 M(s) M(s)^T
                if keep:  # the same H at every step: computing it once changes no number
                    cache[i] = H
            w = torch.einsum("bj,jar->bar", s, W)  # (b, m, r): K M(s) V

            def apply(X, H=H, w=w):
                return proj(H @ X - w @ (w.mT @ X))  # K^2 P M(s) Q M(s)^T P X

            top, blocks[i] = _top_sv(apply, proj(blocks[i]), ITERS if k == 1 else WARM_ITERS, method)
            t.append(top / K)
        T = torch.cat(t).cpu().numpy()  # (1+B,): observed first
        obs, null = float(T[0]), T[1:]
        if not deflate:
            obs = float(S[k - 1])
        p = (1.0 + float(np.sum(null >= obs))) / (len(null) + 1.0) if obs > tol else 1.0
        pvals.append(p)
        stats.append(obs)
        quants.append(float(np.quantile(null, 1.0 - alpha)))
        ms.append(float(np.mean(null.astype(np.float64) ** 2)))
        if p > alpha:
            break
    rank = sum(1 for _ in _leading(pvals, alpha))
    return SignFlipTest(rank, tuple(pvals), tuple(stats), tuple(quants), tuple(ms), alpha, len(signs) - 1, K)


def _leading(pvals, alpha):
    for p in pvals:
        if p > alpha:
            return
        yield p


_LAST: list = []  # [(weakref to folds, seed, result)]: the last default test, for `sign_flip_cached`


def sign_flip_cached(folds, seed: int = 0) -> SignFlipTest:
    """`sign_flip_test(folds, seed=seed)` with the defaults, reusing the last result for the same folds object
    (the probe asks for the rank through the registry, then for the p-values of the same row). An object with a
    `sign_flip_test(seed=)` method (`probes.sketch_recon.FoldSketches`) runs that instead."""
    if _LAST and _LAST[0][0]() is folds and _LAST[0][1] == seed:
        return _LAST[0][2]
    own = getattr(folds, "sign_flip_test", None)  # sketch mode's fold sketches run their own version of the test
    res = own(seed=seed) if own is not None else sign_flip_test(folds, seed=seed)
    try:
        _LAST[:] = [(weakref.ref(folds), seed, res)]
    except TypeError:  # not weak-referenceable (a list): no caching
        _LAST.clear()
    return res


def sign_flip_rank(folds, **kw) -> int:
    """Number of directions of mean(folds) the sign-flip step-down test keeps (`sign_flip_test`)."""
    return sign_flip_test(folds, **kw).rank
