"""Singular values and singular subspaces of one matrix: exact or randomized top-k.

Every function takes a 2-D `torch.Tensor` (any device) or `np.ndarray` in the (out, in)
orientation and returns NumPy float64 arrays on the CPU, singular values in descending
order. Computation runs in the input's precision (float16/bfloat16 are upcast to float32;
float64 stays float64), on the input's device.

Methods:
- "exact": `torch.linalg.svdvals` / `torch.linalg.svd(full_matrices=False)`; singular
  vectors are only computed when asked for.
- "randomized": Halko, Martinsson & Tropp (2011), "Finding structure with randomness",
  Alg. 4.4 (randomized range finder with `power_iters` re-orthonormalized power
  iterations) followed by an exact SVD of the small projected matrix. Accurate for the
  top k when the spectrum decays; error ~ (s_{k+p+1}/s_k)^(2q+1) relative.
- "auto": randomized when k is given, 4k < min(m, n) and min(m, n) > 1024; exact otherwise.
- `spectrum` (what the probes use): the head of a spectrum, through the float64 Gram matrix for
  matrices with min(m, n) <= GRAM_MAX_DIM, randomized top-k above.

Non-finite input raises `NonFiniteSpectrumError` (an `IntrinsicError` and a `ValueError`).
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import NonFiniteError

OVERSAMPLE = 10  # extra random directions in the range finder (HMT recommend 5-10)
POWER_ITERS = 3  # power iterations; each costs two products with M (HMT recommend 1-3)
AUTO_MIN_DIM = 1024  # "auto" goes randomized only when min(m, n) exceeds this ...
AUTO_K_FRACTION = 4  # ... and k * AUTO_K_FRACTION < min(m, n)
METHODS = ("auto", "exact", "randomized")
GRAM_MAX_DIM = 1024  # `spectrum` of matrices with min(m, n) up to this goes through the float64 Gram matrix


class NonFiniteSpectrumError(NonFiniteError, ValueError):
    """A matrix or spectrum with NaN or inf entries."""


def as_matrix(M: torch.Tensor | np.ndarray) -> torch.Tensor:
    """`M` as a detached 2-D floating tensor (float32 or float64); rejects NaN/inf."""
    if torch.is_tensor(M):
        t = M.detach()
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(M)))
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(t.shape)}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise NonFiniteSpectrumError(f"matrix of shape {tuple(t.shape)} has NaN or inf entries")
    return t


def choose_method(shape: tuple[int, int], k: int | None, method: str = "auto") -> str:
    """Resolve `method` ("auto" | "exact" | "randomized") for a matrix of `shape`."""
    if method not in METHODS:
        raise ValueError(f"unknown SVD method {method!r}; choose one of {', '.join(METHODS)}")
    p = min(shape)
    if method == "randomized" and k is None:
        raise ValueError("method='randomized' needs k")
    if method != "auto":
        return method
    if k is not None and k * AUTO_K_FRACTION < p and p > AUTO_MIN_DIM:
        return "randomized"
    return "exact"


def _check_k(k: int | None, p: int) -> int:
    if k is None:
        return p
    if int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    return min(int(k), p)


def _range_finder(A: torch.Tensor, ell: int, power_iters: int, seed: int) -> torch.Tensor:
    """Orthonormal Q (m, ell) whose span approximates the top-ell left singular subspace of A (m, n)."""
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(A.shape[1], ell, generator=gen, dtype=A.dtype).to(A.device)  # (n, ell)
    Q = torch.linalg.qr(A @ omega).Q  # (m, ell)
    for _ in range(power_iters):
        Z = torch.linalg.qr(A.mT @ Q).Q  # (n, ell)
        Q = torch.linalg.qr(A @ Z).Q  # (m, ell)
    return Q


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def singular_values(
    M: torch.Tensor | np.ndarray,
    k: int | None = None,
    *,
    method: str = "auto",
    seed: int = 0,
    power_iters: int = POWER_ITERS,
) -> np.ndarray:
    """The top `k` (default: all min(m, n)) singular values of M, float64, descending."""
    A = as_matrix(M)  # (m, n)
    p = min(A.shape)
    how = choose_method(tuple(A.shape), k, method)
    k = _check_k(k, p)
    if k == 0 or p == 0:
        return np.zeros(0)
    if k == p:  # the whole spectrum: the exact path is both cheaper and exact
        how = "exact"
    if how == "exact":
        s = torch.linalg.svdvals(A)  # (p,)
    else:
        ell = min(k + OVERSAMPLE, p)
        Q = _range_finder(A, ell, power_iters, seed)  # (m, ell)
        s = torch.linalg.svdvals(Q.mT @ A)  # (ell,)
    return _to_numpy(s[:k])


def svd_topk(
    M: torch.Tensor | np.ndarray,
    k: int | None = None,
    *,
    method: str = "auto",
    seed: int = 0,
    power_iters: int = POWER_ITERS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truncated SVD (U (m, k), S (k,), Vh (k, n)) of M, float64, S descending."""
    A = as_matrix(M)  # (m, n)
    m, n = A.shape
    p = min(m, n)
    how = choose_method((m, n), k, method)
    k = _check_k(k, p)
    if k == 0 or p == 0:
        return np.zeros((m, 0)), np.zeros(0), np.zeros((0, n))
    if k == p:
        how = "exact"
    if how == "exact":
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)  # (m, p), (p,), (p, n)
    else:
        ell = min(k + OVERSAMPLE, p)
        Q = _range_finder(A, ell, power_iters, seed)  # (m, ell)
        Ub, S, Vh = torch.linalg.svd(Q.mT @ A, full_matrices=False)  # (ell, ell), (ell,), (ell, n)
        U = Q @ Ub  # (m, ell)
    return _to_numpy(U[:, :k]), _to_numpy(S[:k]), _to_numpy(Vh[:k])


def spectrum_size(shape: tuple[int, int], max_sv: int) -> int:
    """Singular values `spectrum` keeps: max_sv, but at least the top half (the median-based estimators need it)."""
    p = min(shape)
    return min(p, max(max_sv, p // 2 + 1))


def spectrum(M: torch.Tensor, max_sv: int, seed: int = 0, vectors: int = 0):
    """Singular values of M (m, n), descending float64, and optionally top `vectors` singular bases.

    Matrices with min(m, n) <= GRAM_MAX_DIM go through the float64 Gram matrix: eigh of the p x p
    Gram (p = min(m, n)) is about twice as fast as an SVD of M on a CPU, and float64 keeps every
    singular value above ~1e-8 * sigma_1, far below float32 round-off of the gradient itself (the
    estimators ignore values under sigma_1 * max(m, n) * eps32 anyway); checked against
    `scipy.linalg.svdvals` in the tests. Larger matrices use `singular_values`/`svd_topk` (randomized top-k).
    Returns sv (`spectrum_size` values), or (sv, U (m, vectors), V (n, vectors)) when vectors > 0.
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
    if not np.isfinite(out).all():  # the probe's sums were checked batch by batch; this catches an overflow
        raise NonFiniteError(f"Non-finite spectrum of a {m}x{n} matrix; nothing was written.")
    if not vectors:
        return out
    scale = torch.where(sv[:vectors] > 0, 1.0 / sv[:vectors].clamp_min(1e-300), torch.zeros_like(sv[:vectors]))
    other = (A @ W if tall else A.mT @ W) * scale  # (m or n, vectors): the other side's vectors
    U, V = (other, W) if tall else (W, other)
    return out, U.contiguous().cpu().numpy(), V.contiguous().cpu().numpy()  # contiguous: numpy's BLAS path


# ---------------------------------------------------------------------- batched top-k (the probe's "topk" mode)

TOPK_OVERSAMPLE = 16  # extra random directions of `topk_batched` beyond max(k, vectors)
TOPK_POWER_ITERS = 4  # its power iterations q


def batched_method(X: torch.Tensor, method: str) -> str:
    """"auto" -> "qr" on the CPU (LAPACK's Householder QR and SVD are fast there, and CPU results stay what they
    were), "gram" on other devices (batched Gram-matrix factorizations: one call per batch, not per matrix)."""
    if method not in ("auto", "qr", "gram"):
        raise ValueError(f"unknown method {method!r}; choose auto, qr or gram")
    return ("qr" if X.device.type == "cpu" else "gram") if method == "auto" else method


def orthonormalize(X: torch.Tensor, method: str = "auto", *, wait: bool = True) -> torch.Tensor:
    """Orthonormal bases (b, m, l) of the columns of X (b, m, l), m >= l, in X's dtype. "qr": Householder QR;
    "gram" (the default off the CPU, `batched_method`): shifted CholeskyQR3
    (Fukaya, Kannan, Nakatsukasa, Zhang & Yamamoto 2020), with the Gram matrices and triangular solves in float64.
    The first pass adds a shift of 11 (m l + l (l + 1)) u ||X||_F^2 to the Gram matrix, so it is positive definite
    for any X of condition number below 1/u; the two unshifted passes after it restore orthogonality to round-off.
    Batched QR is one cuSOLVER call per matrix on the GPU (milliseconds each: most of the top-k spectra's time);
    batched Cholesky and triangular solves are single calls. A batch whose Cholesky fails (X numerically rank
    deficient, e.g. a matrix of rank below l) falls back to Householder QR. `wait=False` never looks at the result
    on the host (no device synchronization: the sign-flip test's thousands of small blocks): every pass is shifted,
    so nothing fails, and a rank-deficient block keeps its deficient columns near zero instead of filling them with
    round-off directions as QR does."""
    if batched_method(X, method) == "qr":
        return torch.linalg.qr(X).Q
    b, m, l = X.shape
    Y = X.to(torch.float64)
    eye = torch.eye(l, dtype=torch.float64, device=X.device)
    shift_scale = 11 * (m * l + l * (l + 1)) * torch.finfo(torch.float64).eps
    for i in range(3):
        C = Y.mT @ Y  # (b, l, l)
        if i == 0 or not wait:
            shift = (shift_scale * C.diagonal(dim1=-2, dim2=-1).sum(-1)).clamp_min(torch.finfo(torch.float64).tiny)
            C = C + shift[:, None, None] * eye
        R, info = torch.linalg.cholesky_ex(C, upper=True)  # C = R^T R
        if wait and bool((info != 0).any()):
            return torch.linalg.qr(X).Q
        Y = torch.linalg.solve_triangular(R, Y, upper=True, left=False)  # (b, m, l): Y R^-1
    return Y.to(X.dtype)


def small_svd(B: torch.Tensor, vectors: int, method: str = "auto", *, host: bool = True):
    """Singular values S (b, l) of the short, wide B (b, l, n), descending, and with `vectors` > 0 the top left
    vectors Ub (b, l, vectors) and right vectors V (b, n, vectors) (else None, None). "qr" (`batched_method`):
    `torch.linalg.svd`; "gram": the float64 eigenpairs of B B^T (l x l; a batched SVD of B is one cuSOLVER call
    per matrix on the GPU), on the CPU (`host`, cheap for small l) or on B's device (large l), V = B^T Ub / S on
    B's device (0 where S = 0)."""
    if batched_method(B, method) == "qr":
        Ub, S, Vh = torch.linalg.svd(B, full_matrices=False)  # (b, l, l), (b, l), (b, l, n)
        return (S, None, None) if not vectors else (S, Ub[:, :, :vectors], Vh[:, :vectors].mT)
    C = B.to(torch.float64) @ B.to(torch.float64).mT  # (b, l, l)
    ev, vec = torch.linalg.eigh(((C + C.mT) / 2).cpu() if host else (C + C.mT) / 2)  # ascending
    S = ev.flip(-1).clamp_min(0).sqrt()  # (b, l) descending
    if not vectors:
        return S, None, None
    Ub = vec.flip(-1)[:, :, :vectors].to(B.device)  # (b, l, vectors)
    s = S[:, :vectors].to(B.device)
    V = (B.to(torch.float64).mT @ Ub) / torch.where(s > 0, s, 1.0)[:, None, :]  # (b, n, vectors)
    return S, Ub, V


def topk_batched(A: torch.Tensor, k: int, *, vectors: int = 0, seed: int = 0,
                 oversample: int = TOPK_OVERSAMPLE, power_iters: int = TOPK_POWER_ITERS, method: str = "auto"):
    """Top-k singular values (and top `vectors` singular bases) of a batch of equal-shape matrices A (b, m, n).

    Randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4): one Gaussian test matrix
    Omega (n, l), l = min(max(k, vectors) + oversample, m, n), shared by the batch and seeded; Q = orth(A Omega),
    then q power iterations Q = orth(A orth(A^T Q)); S, U, V from the exact SVD of the small Q^T A (b, l, n).
    Runs in float32 (float64 stays float64) on A's device. The computed values never exceed the true ones,
    and (Gu 2015, "Subspace iteration randomization and singular value problems", Thm 4.3) with high
    probability, for j <= k,

        sigma_j >= s_j >= sigma_j / sqrt(1 + C^2 (sigma_{l+1} / sigma_j)^(4q+2)),   C = O(sqrt(n l)),

    so the relative error of s_j is at most C^2 (sigma_{l+1}/sigma_j)^(4q+2) / 2 (`topk_error_bound`):
    negligible for the head of a decaying spectrum, at most the spectrum's own flatness for values near
    sigma_{l+1} (there the ranks that read them compare against floors measured the same way). When
    l = min(m, n) the result is exact up to round-off. `method` ("auto", "qr", "gram"): how the bases are
    orthonormalized and the small SVD taken (`orthonormalize`, `small_svd`). Returns float64 NumPy arrays on the CPU:
    S (b, k) descending, and with vectors > 0 also U (b, m, vectors), V (b, n, vectors).
    """
    if A.ndim != 3:
        raise ValueError(f"expected a batch of matrices (b, m, n), got shape {tuple(A.shape)}")
    A = A.detach()
    if A.dtype != torch.float64:
        A = A.to(torch.float32)
    b, m, n = A.shape
    p = min(m, n)
    k, vectors = min(int(k), p), min(int(vectors), p)
    ell = min(max(k, vectors) + int(oversample), p)
    if ell == p:  # the test matrix spans everything: an exact SVD is cheaper and exact
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)  # (b, m, p), (b, p), (b, p, n)
    else:
        gen = torch.Generator().manual_seed(seed)
        omega = torch.randn(n, ell, generator=gen, dtype=A.dtype).to(A.device)  # (n, l)
        Q = orthonormalize(A @ omega, method)  # (b, m, l)
        for _ in range(power_iters):
            Z = orthonormalize(A.mT @ Q, method)  # (b, n, l)
            Q = orthonormalize(A @ Z, method)  # (b, m, l)
        S, Ub, V = small_svd(Q.mT @ A, vectors, method)  # (b, l), (b, l, vectors), (b, n, vectors)
        if vectors:
            U = Q.to(torch.float64) @ Ub.to(torch.float64)  # (b, m, vectors)
            Vh = V.mT
    if not bool(torch.isfinite(S).all()):
        raise NonFiniteSpectrumError(f"Non-finite spectrum in a batch of {b} {m}x{n} matrices; nothing was written.")
    out = _to_numpy(S[:, :k])
    if not vectors:
        return out
    return out, _to_numpy(U[:, :, :vectors]), _to_numpy(Vh[:, :vectors].mT)


def topk_error_bound(sigma: np.ndarray, j: int, ell: int, n: int, power_iters: int = TOPK_POWER_ITERS,
                     c2: float | None = None) -> float:
    """Relative error bound C^2 (sigma_{l+1}/sigma_j)^(4q+2) / 2 of `topk_batched`'s j-th value (1-based),
    from the true spectrum `sigma` (descending); C^2 defaults to 10 n l (Gu 2015's constant, generously)."""
    if ell >= len(sigma) or sigma[j - 1] <= 0:
        return 1e-5  # exact path: float32 round-off only
    c2 = 10.0 * n * ell if c2 is None else c2
    return 0.5 * c2 * float(sigma[ell] / sigma[j - 1]) ** (4 * power_iters + 2) + 1e-5
