"""Low-rank reconstruction from two-sided sketches, its energy estimate, and the sign-flip test on fold sketches.

Reconstruction (Tropp, Yurtsever, Udell & Cevher 2017, eq. (4.3)): from Y = G Omega (m x k) and W = Psi G
(l x n), Q = orth(Y) and X = (Psi Q)^+ W (k x n) give G_hat = Q X. Its singular values are those of X; exact
when G has rank <= k (and always when k = min(m, n)); otherwise the head is accurate when the spectrum
decays past k, and X also carries part of the tail: with R = (I - Q Q^T) G,

    X = Q^T G + (Psi Q)^+ Psi R

Energy ||G||_F^2 (not streamable exactly: the cross terms between batches would need every X and D). Psi Q
and Psi R are independent Gaussian maps given Q (Q depends on Omega only), so with B = Psi Q:
    t = ||W - B X||_F^2 / (l - k)       is unbiased for ||R||_F^2 (the least-squares residual lies in the
                                        (l - k)-dimensional complement of range(B), Psi R independent of it);
    E||X||^2 = ||Q^T G||^2 + tr((B^T B)^-1) ||R||^2   given B;
so  energy = ||X||^2 + (1 - tr((B^T B)^-1)) t   is unbiased for ||G||_F^2 (`reconstruct`). Its error is the
fluctuation of the sketched tail, small when the tail is either small or spread over many directions
(measured in tests/test_sketch.py and by benchmarks/bench_probe.py --sketch).

Sign-flip test (`FoldSketches.sign_flip_test`, the sketch-mode counterpart of `rank.signflip`). Default
statistic "projection": the co-range sketches alone determine the fold means projected onto the span of Psi's
rows, P_j = Q^T G_j with Psi^T = Q R (Q: m x l', l' = min(l, m)), since W_j = Psi G_j = R^T Q^T G_j and R^T has
full column rank. The exact test (`rank.signflip.sign_flip_test`) runs on the P_j. A fixed linear map of the
folds keeps their independence and sign symmetry, so the test keeps the exact test's level; and E[P_j] = Q^T
E[G_j] has the rank of E[G_j] when that rank is below l' (Psi is Gaussian), so the hypotheses are the same.
What is lost is power: a direction keeps ~l'/m of its energy, while the noise of an l' x n matrix is smaller
than that of an m x n one, so the detection threshold rises from ~sqrt(m) + sqrt(n) noise units to
~sqrt(m) + sqrt(m n / l'); at l' = m (the sketch holds the whole side) P_j is a rotation of G_j and the ranks
are the exact test's. Its statistics are reported in full-space units (times sqrt(m / l'), the null energies
times m / l'), so that `gains("signal")`' sigma_i^2 - null_i compares like with like.
Statistic "reconstruction" (the first sketch test, kept for benchmarks/sketch_agreement.py): the sketch of
M(s) = sum_j s_j G_j / K is sum_j s_j (Y_j, W_j) / K, and T_k(s) = sigma_1(P G_hat(s) Q_V), G_hat(s)
reconstructed from it, P and Q_V the projections off the top k - 1 singular vectors of G_hat(1). Equally
valid, but far less powerful when k is small: the resamples M(s) are noise with a flat spectrum, which a rank-k
sketch captures poorly and whose tail the solve adds in (energy ~ k / (l - k - 1) times the tail's), so the null
quantiles grow more than the observed k-th values (SmolLM2: 40% of the exact ranks at K = 128).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..rank.signflip import ALPHA, KMAX_CAP, RESAMPLES, SignFlipTest, _leading, sign_flip_test, sign_patterns

CHUNK_BYTES = 256 * 2**20  # reconstructed sign-flip resamples held at a time
CACHE_BYTES = 2**30  # the reconstructions of every chunk are kept across the test's steps when they fit in this


def reconstruct(Y: torch.Tensor, W: torch.Tensor, psi: torch.Tensor, energy: bool = True,
                psi_y: torch.Tensor | None = None):
    """(Q (b, m, k), X (b, k, n), energy (b,)) from sketches Y (b, m, k), W (b, l, n) and Psi (l, m), in float64:
    G_hat = Q X, energy the unbiased estimate of ||G||_F^2 (module docstring; None when `energy` is False).
    `psi_y` (b, l, k) = Psi Y, when known, saves the (l, m) x (m, k) product: Psi Q = (Psi Y) R^-1 (Y = Q R), used
    where Y is well conditioned (|R_ii| > 1e-8 max |R_ii|), else Psi Q is formed."""
    Y, W, psi = Y.double(), W.double(), psi.double()
    k, l = Y.shape[-1], W.shape[-2]
    Q, R = torch.linalg.qr(Y)  # (b, m, k), (b, k, k)
    d = R.diagonal(dim1=-2, dim2=-1).abs()  # (b, k)
    if psi_y is not None and bool((d > 1e-8 * d.amax(-1, keepdim=True)).all()):
        B = torch.linalg.solve_triangular(R, psi_y.double(), upper=True, left=False)  # (b, l, k): (Psi Y) R^-1
    else:
        B = psi @ Q  # (b, l, k)
    Qb, Rb = torch.linalg.qr(B)  # B = Psi Q = Qb Rb
    X = torch.linalg.solve_triangular(Rb, Qb.mT @ W, upper=True)  # (b, k, n): least squares B X = W
    if not energy:
        return Q, X, None
    head = X.square().sum((-2, -1))  # (b,)
    resid = W - B @ X  # (b, l, n)
    t = resid.square().sum((-2, -1)) / (l - k)  # (b,) unbiased for ||(I - QQ^T) G||^2
    inv = torch.linalg.solve_triangular(Rb, torch.eye(k, dtype=Rb.dtype, device=Rb.device).expand_as(Rb), upper=True)
    trace = inv.square().sum((-2, -1))  # (b,) tr((B^T B)^-1) = ||Rb^-1||_F^2
    return Q, X, (head + (1.0 - trace) * t).clamp_min(0.0)


def svd_of(Q: torch.Tensor, X: torch.Tensor):
    """(S (b, k), U (b, m, k), V (b, n, k)) of G_hat = Q X."""
    Ux, S, Vh = torch.linalg.svd(X, full_matrices=False)  # (b, k, k), (b, k), (b, k, n)
    return S, Q @ Ux, Vh.mT


def deflate_left(M: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """H M H for symmetric M (b, k, k), H = (I - C^T C)^(1/2), C = Ur^T Q (b, r, k) with orthonormal Ur and Q:
    (P Q)^T (P Q) = I - C^T C, P = I - Ur Ur^T. From the SVD C = Uc diag(s) Vc^T, H = I - Vc diag(d) Vc^T with
    d = 1 - sqrt(1 - s^2): a rank-2r update, O(k^2 r), instead of an eigendecomposition of the k x k matrix."""
    _, sc, Vc = torch.linalg.svd(C, full_matrices=False)  # (b, r), (b, r, k)
    Vc = Vc.mT  # (b, k, r)
    d = 1.0 - (1.0 - sc.square()).clamp_min(0).sqrt()  # (b, r)
    A = M @ Vc  # (b, k, r)
    DA, DB = A * d[:, None, :], Vc * d[:, None, :]  # (b, k, r) each: A D, Vc D
    return M - DB @ A.mT - DA @ Vc.mT + DB @ (Vc.mT @ A) @ DB.mT


@dataclass(eq=False)
class FoldSketches:
    """Sketches of the K fold means of one row (what sketch mode keeps instead of `Spectra.folds`' (K, m, n))."""

    Y: torch.Tensor  # (K, m, k) range sketches of the fold means
    W: torch.Tensor  # (K, l, n) co-range sketches
    psi: torch.Tensor  # (l, m) the co-range test matrix
    shape: tuple[int, int]  # (m, n)

    def projected_folds(self) -> tuple[torch.Tensor, float]:
        """(P (K, l', n), m / l'): the fold means projected onto the span of Psi's rows, P_j = Q^T G_j, solved from
        the co-range sketches W_j = R^T P_j (Psi^T = Q R, l' = min(l, m)), and the energy scale back to R^m."""
        m = self.shape[0]
        _, R = torch.linalg.qr(self.psi.double().mT)  # (l', l): Psi^T = Q R, Q (m, l')
        P = torch.linalg.pinv(R.mT) @ self.W.double()  # (K, l', n): R^T has full column rank l'
        return P, m / R.shape[0]

    def sign_flip_test(self, *, alpha: float = ALPHA, resamples: int = RESAMPLES, seed: int = 0,
                       statistic: str = "projection") -> SignFlipTest:
        """The step-down sign-flip test on the fold sketches (module docstring): `statistic` "projection" (the exact
        test on the projected fold means) or "reconstruction" (on the reconstructions of the sign-flipped sums)."""
        if statistic == "projection":
            P, scale = self.projected_folds()
            res = sign_flip_test(P, alpha=alpha, resamples=resamples, seed=seed)
            root = float(np.sqrt(scale))
            return replace(res, stats=tuple(v * root for v in res.stats), null_q=tuple(v * root for v in res.null_q),
                           null_ms=tuple(v * scale for v in res.null_ms))
        if statistic != "reconstruction":
            raise ValueError(f"statistic must be 'projection' or 'reconstruction', got {statistic!r}")
        K, m, k = self.Y.shape
        n = self.W.shape[-1]
        kmax = min(KMAX_CAP, min(m, n) - 1, k)
        signs = torch.from_numpy(sign_patterns(resamples, K, seed)).to(self.Y.device)  # (1+B, K), observed first
        chunk = max(1, CHUNK_BYTES // (8 * k * (m + n)))
        starts = list(range(0, len(signs), chunk))
        cache: dict[int, tuple] = {}
        psi_y = self.psi.double() @ self.Y.double()  # (K, l, k): Psi Y_j
        keep = len(starts) == 1 or len(signs) * 8 * k * (m + n + k) <= CACHE_BYTES  # else rebuilt at every step

        def recon(i: int):
            if i in cache:
                return cache[i]
            s = signs[i:i + chunk] / K  # (c, K)
            Q, X, _ = reconstruct(torch.einsum("cj,jmk->cmk", s, self.Y.double()),
                                  torch.einsum("cj,jln->cln", s, self.W.double()), self.psi, energy=False,
                                  psi_y=torch.einsum("cj,jlk->clk", s, psi_y))  # Psi Y is linear in the signs
            out = (Q, X, X @ X.mT)  # (c, m, k), (c, k, n), (c, k, k)
            if keep:
                cache[i] = out
            return out

        Q0, X0, _ = recon(0)
        S, U, V = svd_of(Q0[:1], X0[:1])  # the observed G_hat = M(1)
        S, U, V = S[0], U[0], V[0]  # (k,), (m, k), (n, k)
        tol = float(S[0]) * max(m, n) * 1e-7 if len(S) else 0.0
        pvals, stats, quants, ms = [], [], [], []
        for step in range(1, kmax + 1):
            Ur, Vr = U[:, :step - 1], V[:, :step - 1]  # (m, r), (n, r)
            t = []
            for i in starts:
                Q, X, XX = recon(i)  # (c, m, k), (c, k, n), (c, k, k)
                Z = X @ Vr  # (c, k, r)
                M = XX - Z @ Z.mT  # (c, k, k): (X Q_V)(X Q_V)^T
                if step > 1:
                    M = deflate_left(M, Ur.mT @ Q)
                top = torch.linalg.eigvalsh(M)[:, -1]  # sigma_1(P Q X Q_V)^2
                t.append(top.clamp_min(0).sqrt())
            T = torch.cat(t).cpu().numpy()  # (1 + B,): observed first
            obs, null = float(T[0]), T[1:]
            p = (1.0 + float(np.sum(null >= obs))) / (len(null) + 1.0) if obs > tol else 1.0
            pvals.append(p)
            stats.append(obs)
            quants.append(float(np.quantile(null, 1.0 - alpha)))
            ms.append(float(np.mean(null ** 2)))
            if p > alpha:
                break
        rank = sum(1 for _ in _leading(pvals, alpha))
        return SignFlipTest(rank, tuple(pvals), tuple(stats), tuple(quants), tuple(ms), alpha, len(signs) - 1, K)
