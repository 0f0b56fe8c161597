"""Best rank-r approximations of a weight update: one SVD per matrix, a reconstruction per rank.

`LowRank.of(dW, max_rank)` takes the thin SVD of dW once (float32, on dW's device) and keeps the
leading `max_rank` factors; `LowRank.at(r)` is then SVD_r(dW) = U_r diag(S_r) V_r^T, the best
rank-r approximation in Frobenius and spectral norm (Eckart-Young), for any r <= max_rank. The
squared singular values are kept whole, so the share of ||dW||^2 that rank r keeps is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LowRank:
    """The leading singular triplets of one matrix dW (m x n)."""

    us: Any  # (m, k) torch float32: U[:, :k] * S[:k], k = min(max_rank, m, n)
    vh: Any  # (k, n) torch float32: the leading right singular vectors as rows
    sv2: tuple[float, ...]  # every squared singular value of dW, descending (min(m, n) of them)

    @classmethod
    def of(cls, dw, max_rank: int) -> LowRank:
        """Factor `dw` (any float dtype, any device) once; keep `max_rank` triplets (clamped to min(m, n))."""
        import torch

        u, s, vh = torch.linalg.svd(dw.float(), full_matrices=False)
        k = max(0, min(int(max_rank), s.numel()))
        return cls(us=u[:, :k] * s[:k], vh=vh[:k].contiguous(), sv2=tuple((s.double() ** 2).cpu().tolist()))

    @property
    def full_rank(self) -> int:
        """min(m, n): the largest rank an approximation of dW can need."""
        return len(self.sv2)

    def at(self, r: int):
        """SVD_r(dW) as an (m, n) float32 tensor; r is clamped to the kept factors."""
        k = max(0, min(int(r), self.us.shape[1]))
        return self.us[:, :k] @ self.vh[:k]

    def energy_kept(self, r: int) -> tuple[float, float]:
        """(sum of the r largest sigma^2, sum of all sigma^2) of dW."""
        return float(sum(self.sv2[:max(0, r)])), float(sum(self.sv2))


def truncated(dw, r: int):
    """SVD_r(dw): the best rank-r approximation of one matrix (float32)."""
    return LowRank.of(dw, r).at(r)
