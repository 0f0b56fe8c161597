"""Tests for intrinsic/spectra.py: exact and randomized singular values and subspaces vs scipy."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny LAPACK calls; threads only spin on a busy box

import numpy as np
import pytest
import scipy.linalg
import torch

from intrinsic.errors import IntrinsicError
from intrinsic.spectra import (
    NonFiniteSpectrumError,
    choose_method,
    singular_values,
    svd_topk,
)


def decaying(m: int, n: int, decay: str, seed: int = 0) -> np.ndarray:
    """An m x n float64 matrix with a prescribed decaying spectrum and random singular vectors."""
    rng = np.random.default_rng(seed)
    p = min(m, n)
    U = np.linalg.qr(rng.standard_normal((m, p)))[0]  # (m, p)
    V = np.linalg.qr(rng.standard_normal((n, p)))[0]  # (n, p)
    i = np.arange(p)
    s = np.exp(-i / 8) if decay == "exp" else 1.0 / (i + 1) ** 2
    return (U * s) @ V.T


@pytest.mark.parametrize("shape", [(40, 40), (120, 30), (30, 120)])
def test_exact_matches_scipy(shape):
    M = np.random.default_rng(1).standard_normal(shape)
    s = singular_values(M)
    assert s.dtype == np.float64 and s.shape == (min(shape),)
    assert np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(s, scipy.linalg.svdvals(M), rtol=1e-10)
    np.testing.assert_allclose(singular_values(M, 5), s[:5], rtol=1e-12)


def test_float32_torch_input_and_half_precision():
    M = np.random.default_rng(2).standard_normal((64, 48))
    ref = scipy.linalg.svdvals(M)
    s32 = singular_values(torch.tensor(M, dtype=torch.float32))
    np.testing.assert_allclose(s32, ref, atol=1e-5 * ref[0])
    sbf = singular_values(torch.tensor(M, dtype=torch.bfloat16))  # upcast, not an error
    np.testing.assert_allclose(sbf, ref, rtol=0.05, atol=0.02 * ref[0])


@pytest.mark.parametrize("shape", [(400, 200), (200, 400)])
@pytest.mark.parametrize("decay", ["exp", "pow"])
def test_randomized_matches_exact_on_decaying_spectra(shape, decay):
    M = decaying(*shape, decay)
    ref = scipy.linalg.svdvals(M)[:10]
    s = singular_values(M, 10, method="randomized")
    np.testing.assert_allclose(s, ref, rtol=1e-7)
    s32 = singular_values(torch.tensor(M, dtype=torch.float32), 10, method="randomized")
    np.testing.assert_allclose(s32, ref, rtol=1e-5)


def test_randomized_is_seeded():
    M = np.random.default_rng(3).standard_normal((200, 150))
    a = singular_values(M, 5, method="randomized", seed=4)
    b = singular_values(M, 5, method="randomized", seed=4)
    np.testing.assert_array_equal(a, b)


def test_choose_method():
    assert choose_method((2048, 1536), 64) == "randomized"
    assert choose_method((2048, 1536), None) == "exact"
    assert choose_method((2048, 1536), 400) == "exact"  # 4k >= min(m, n)
    assert choose_method((1536, 384), 16) == "exact"  # min(m, n) <= 1024
    assert choose_method((1536, 384), 16, "randomized") == "randomized"
    with pytest.raises(ValueError):
        choose_method((10, 10), None, "randomized")
    with pytest.raises(ValueError):
        choose_method((10, 10), 2, "lanczos")


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_svd_topk_is_the_best_rank_k_approximation(method):
    M = decaying(300, 200, "exp", seed=5)
    U, S, Vh = svd_topk(M, 8, method=method)
    assert U.shape == (300, 8) and S.shape == (8,) and Vh.shape == (8, 200)
    np.testing.assert_allclose(U.T @ U, np.eye(8), atol=1e-10)
    np.testing.assert_allclose(Vh @ Vh.T, np.eye(8), atol=1e-10)
    Ue, Se, Vhe = np.linalg.svd(M, full_matrices=False)
    best = (Ue[:, :8] * Se[:8]) @ Vhe[:8]
    tol = 1e-10 if method == "exact" else 1e-5  # vectors converge slower than values
    np.testing.assert_allclose((U * S) @ Vh, best, atol=tol * Se[0])


def test_svd_topk_vectors_find_a_planted_direction():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal(50), rng.standard_normal(30)
    M = np.outer(a, b) + 1e-3 * rng.standard_normal((50, 30))
    U, _, Vh = svd_topk(M, 1)
    left, right = U, Vh.T  # top left (m, 1) and right (n, 1) singular vectors
    assert left.shape == (50, 1) and right.shape == (30, 1)
    assert abs(left[:, 0] @ a) / np.linalg.norm(a) > 0.999
    assert abs(right[:, 0] @ b) / np.linalg.norm(b) > 0.999


def test_bad_inputs():
    M = np.ones((4, 3))
    M[1, 1] = np.nan
    with pytest.raises(NonFiniteSpectrumError):
        singular_values(M)
    assert issubclass(NonFiniteSpectrumError, ValueError)
    assert issubclass(NonFiniteSpectrumError, IntrinsicError)
    with pytest.raises(NonFiniteSpectrumError):
        singular_values(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError):
        singular_values(np.ones(5))
    with pytest.raises(ValueError):
        singular_values(np.ones((4, 3)), -1)
    assert singular_values(np.ones((4, 3)), 0).shape == (0,)
    np.testing.assert_allclose(singular_values(np.zeros((4, 3))), np.zeros(3))
