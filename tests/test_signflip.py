"""Calibration of the sign-flip step-down rank test (`intrinsic.rank.signflip`) on small matrices.

Null: pure noise fold means (isotropic, anisotropic with random row and column covariances,
Student-t with 5 df); the false-positive rate of "rank >= 1" must be at most alpha + 2 binomial
standard errors, and not zero. Power: planted rank-r signal with strong SNR is found exactly
most of the time. The null rank does not grow with the number of folds or of batches per fold.
The last tests break the procedure on purpose and check that these checks catch it.
"""

from __future__ import annotations

import numpy as np
import pytest

from intrinsic.rank import ESTIMATORS, Spectra, estimate
from intrinsic.rank import signflip as SF
from intrinsic.rank.signflip import sign_flip_test

ALPHA = 0.05
REPS = 160  # null replicates per noise type


def _cov_root(d: int, rng) -> np.ndarray:
    """A random covariance root with eigenvalues 1/i (strongly anisotropic)."""
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return Q * (1.0 / np.sqrt(np.arange(1, d + 1)))


def noise_folds(kind: str, K: int, m: int, n: int, rng, per_fold: int = 1) -> np.ndarray:
    """(K, m, n) fold means of `per_fold` pure-noise batch matrices each."""
    shape = (K, per_fold, m, n)
    if kind == "t5":
        E = rng.standard_t(5, size=shape)
    else:
        E = rng.standard_normal(shape)
    if kind == "aniso":
        E = _cov_root(m, rng) @ E @ _cov_root(n, rng).T
    return E.mean(1)


def planted_folds(K: int, m: int, n: int, r: int, snr: float, rng, spread: float = 0.7) -> np.ndarray:
    """Rank-r signal (singular values snr * detection scale, from 1 down to `spread`) plus isotropic noise."""
    U = np.linalg.qr(rng.standard_normal((m, r)))[0]
    V = np.linalg.qr(rng.standard_normal((n, r)))[0]
    scale = (m * n) ** 0.25 / np.sqrt(K)  # the BBP detection threshold of the mean's noise (sd 1/sqrt(K))
    S = U @ np.diag(snr * scale * np.linspace(1.0, spread, r)) @ V.T
    return S[None] + rng.standard_normal((K, m, n))


def null_ranks(kind: str, K: int, m: int, n: int, reps: int, seed: int, per_fold: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([sign_flip_test(noise_folds(kind, K, m, n, rng, per_fold), seed=i).rank for i in range(reps)])


def fpr_ok(ranks: np.ndarray, alpha: float = ALPHA) -> bool:
    se = np.sqrt(alpha * (1 - alpha) / len(ranks))
    return float(np.mean(ranks >= 1)) <= alpha + 2 * se


def power(K, m, n, r, snr, reps, seed, spread=0.7) -> float:
    rng = np.random.default_rng(seed)
    ranks = [sign_flip_test(planted_folds(K, m, n, r, snr, rng, spread), seed=i).rank for i in range(reps)]
    return float(np.mean(np.array(ranks) == r))


@pytest.mark.parametrize("kind,K,shape,seed", [("iso", 8, (16, 12), 1), ("aniso", 8, (16, 12), 2), ("t5", 12, (12, 16), 3)])
def test_false_positive_rate_on_pure_noise(kind, K, shape, seed):
    ranks = null_ranks(kind, K, *shape, REPS, seed=seed)
    assert fpr_ok(ranks), f"{kind}: FPR {np.mean(ranks >= 1):.3f} > {ALPHA} + 2 SE"


def test_false_positive_rate_is_not_absurdly_conservative():
    ranks = np.concatenate([null_ranks(kind, 8, 16, 12, REPS, seed=7 + i) for i, kind in enumerate(("iso", "aniso"))])
    assert 0.01 <= np.mean(ranks >= 1) <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / len(ranks))


def test_finds_a_planted_rank_with_strong_signal():
    assert power(8, 40, 24, 3, snr=4.0, reps=25, seed=3) >= 0.8
    assert power(16, 16, 12, 2, snr=4.0, reps=25, seed=4) >= 0.8


def test_finds_weaker_directions_after_a_strong_one():
    """Signal strengths 1 : 0.3 (both far above the noise): the deflated step finds the weaker one."""
    assert power(8, 40, 24, 2, snr=12.0, reps=25, seed=5, spread=0.3) >= 0.8


@pytest.mark.parametrize("K,per_fold", [(8, 1), (8, 8), (16, 4)])
def test_null_rank_does_not_grow_with_folds_or_batches(K, per_fold):
    ranks = null_ranks("t5", K, 16, 12, 100, seed=11 + K + per_fold, per_fold=per_fold)
    assert fpr_ok(ranks) and ranks.max() <= 2


def test_result_fields_and_pvalues():
    rng = np.random.default_rng(0)
    res = sign_flip_test(planted_folds(8, 40, 24, 2, 6.0, rng), seed=1)
    assert res.rank == 2 and len(res.pvalues) == 3 and res.pvalues[-1] > ALPHA
    assert all(p <= ALPHA for p in res.pvalues[:2]) and all(1 / 200 <= p <= 1 for p in res.pvalues)
    G = planted_folds(8, 40, 24, 2, 6.0, np.random.default_rng(0)).mean(0)
    s = np.linalg.svd(G, compute_uv=False)
    np.testing.assert_allclose(res.stats, s[:3], rtol=2e-2)  # T_k(G) approximates s_k(G)
    assert res.folds == 8 and res.resamples == 127  # every sign pattern up to a global sign: 2^7 - 1 < RESAMPLES
    # scale- and transpose-invariant, deterministic for a seed
    F = planted_folds(8, 40, 24, 2, 6.0, np.random.default_rng(0))
    assert sign_flip_test(F * 1e-6, seed=1).pvalues == res.pvalues
    assert sign_flip_test(F.transpose(0, 2, 1), seed=1).rank == 2


def test_registry_entry_needs_folds():
    e = ESTIMATORS["sign_flip"]
    assert e.kind == "test" and e.needs == ("folds",)
    F = planted_folds(8, 40, 24, 2, 6.0, np.random.default_rng(0))
    sv = np.linalg.svd(F.mean(0), compute_uv=False)
    assert "sign_flip" not in estimate(Spectra(sv, (40, 24)))
    assert estimate(Spectra(sv, (40, 24), folds=F))["sign_flip"] == 2.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="folds must be"):
        sign_flip_test(np.zeros((8, 4)))
    with pytest.raises(ValueError, match="alpha"):
        sign_flip_test(np.ones((8, 4, 3)), alpha=1.5)


# ------------------------------------------------------------------ breaking it on purpose


def test_checks_catch_signs_not_flipped(monkeypatch):
    """Without sign flips the 'null' is G itself: p = 1 always, the power check fails."""
    monkeypatch.setattr(SF, "sign_patterns", lambda b, k, seed, exhaustive=None: np.ones((1 + b, k)))
    assert power(8, 40, 24, 3, snr=4.0, reps=10, seed=3) < 0.8


def test_checks_catch_no_deflation():
    """Without deflation every s_k(G) faces the null of s_1, which carries part of the strongest
    signal (sign flips with a non-zero mean): the weaker direction is lost."""
    rng = np.random.default_rng(5)
    ranks = [sign_flip_test(planted_folds(8, 40, 24, 2, 12.0, rng, 0.3), seed=i, deflate=False).rank for i in range(10)]
    assert np.mean(np.array(ranks) == 2) < 0.8


def test_checks_catch_the_wrong_quantile():
    """A test run at a level above the one claimed (here the null's median) fails the FPR check."""
    rng = np.random.default_rng(9)
    ranks = np.array([sign_flip_test(noise_folds("iso", 8, 16, 12, rng), alpha=0.5, seed=i).rank for i in range(60)])
    assert not fpr_ok(ranks)


@pytest.mark.parametrize("chunk_bytes", [8 * 20 * 20 * 7, 8 * 20 * 20 * 200])  # several chunks, and one
def test_resampled_grams_kept_across_steps_change_no_number(monkeypatch, chunk_bytes):
    """Keeping every chunk's resampled Gram matrices across the steps (CACHE_BYTES) gives exactly the numbers
    of recomputing them at every step, with several chunks (the sizes above) as with one."""
    folds = planted_folds(8, 20, 30, 3, snr=4.0, rng=np.random.default_rng(5))
    monkeypatch.setattr(SF, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(SF, "CACHE_BYTES", 0)  # recompute at every step (one chunk is kept regardless)
    fresh = sign_flip_test(folds, seed=1)
    monkeypatch.setattr(SF, "CACHE_BYTES", 2**30)
    kept = sign_flip_test(folds, seed=1)
    assert fresh.rank == kept.rank >= 3 and len(kept.pvalues) > 3
    assert fresh == kept  # every p-value, statistic, quantile and null mean square


def test_gram_orthonormalization_gives_the_qr_result():
    """The GPU default ("gram": batched eigh of the block Gram matrices), run on the CPU, gives the QR path's
    ranks, p-values and statistics on a planted rank-2 signal, and rank 0 on zero folds."""
    rng = np.random.default_rng(3)
    F = rng.standard_normal((8, 40, 90))
    F += 6.0 * (rng.standard_normal((40, 2)) @ rng.standard_normal((2, 90)))[None] / np.sqrt(90)
    a, b = sign_flip_test(F, method="qr"), sign_flip_test(F, method="gram")
    assert a.rank == b.rank == 2
    assert a.pvalues == b.pvalues
    np.testing.assert_allclose(b.stats[:2], a.stats[:2], rtol=1e-8)
    assert sign_flip_test(np.zeros((8, 5, 7)), method="gram").rank == 0
    c, d = sign_flip_test(F, method="qr", deflate=False), sign_flip_test(F, method="gram", deflate=False)
    np.testing.assert_allclose(d.stats, c.stats, rtol=1e-8)  # s_k(G) from the Gram eigenpairs, in order


def test_sign_patterns_enumerate_when_few():
    """With K = 8 folds all 2^7 sign patterns with a first sign of +1 are used, the observed all-ones first, each
    once (the exact randomization distribution; a global sign changes no statistic); with more folds than the
    resamples can enumerate, the random draws; p-values of the exhaustive test are multiples of 1/128 and do not
    depend on the seed."""
    P = SF.sign_patterns(199, 8, seed=0)
    assert P.shape == (128, 8) and (P[0] == 1).all() and (P[:, 0] == 1).all()
    assert len({tuple(r) for r in P}) == 128 and set(np.unique(P)) == {-1.0, 1.0}
    R = SF.sign_patterns(199, 10, seed=0)
    assert R.shape == (200, 10) and (R[0] == 1).all()
    assert SF.sign_patterns(50, 8, seed=0).shape == (51, 8)  # fewer resamples than patterns: random draws
    F = planted_folds(8, 30, 20, 1, 3.0, np.random.default_rng(4))
    a, b = sign_flip_test(F, seed=0), sign_flip_test(F, seed=7)
    assert a.pvalues == b.pvalues and all(abs(p * 128 - round(p * 128)) < 1e-9 for p in a.pvalues)


@pytest.mark.parametrize("method", ["float64", "tf32"])
@pytest.mark.parametrize("shape", [(8, 12, 30), (9, 30, 12)])  # m < n, and m > n (the test transposes)
def test_fold_grams_match_every_product_and_flip_exactly(method, shape):
    """`fold_grams` gives A_jl = G_j G_l^T for every pair (the blocks j > l filled from the transposes of j < l):
    exactly the full einsum in float64, to float32 round-off with the split-TF32 route (on the CPU its parts are
    multiplied in float32). Flipping fold signs flips the blocks exactly (A(s F) = s s^T A(F), bit for bit),
    which is what keeps the test an exact randomization test with either route."""
    import torch
    F = torch.from_numpy(np.random.default_rng(8).standard_normal(shape))
    full = torch.einsum("jab,lcb->jlac", F, F)
    A = SF.fold_grams(F, method)
    if method == "float64":
        assert torch.equal(A, full)
    else:
        assert 0 < float((A - full).abs().max()) <= 1e-5 * float(full.abs().max())
    s = torch.from_numpy(SF.rademacher(1, shape[0], seed=2)[0])
    assert torch.equal(SF.fold_grams(s[:, None, None] * F, method), s[:, None, None, None] * s[None, :, None, None] * A)


def test_tf32_grams_keep_ranks_and_pvalues():
    """The GPU's split-TF32 fold Grams give the float64 route's rank and p-values on a planted rank-3 signal and
    on pure noise (statistics within 1e-5 relative); an unknown route is refused."""
    rng = np.random.default_rng(11)
    for F in (planted_folds(8, 24, 50, 3, snr=4.0, rng=rng), noise_folds("aniso", 8, 24, 50, rng)):
        a, b = sign_flip_test(F, grams="float64"), sign_flip_test(F, grams="tf32")
        assert a.rank == b.rank and a.pvalues == b.pvalues
        np.testing.assert_allclose(b.stats, a.stats, rtol=1e-5)
    with pytest.raises(ValueError, match="grams"):
        sign_flip_test(F, grams="bf16")


def test_tf32_split_parts_are_exact_in_tf32():
    """Both parts of `_split_tf32` carry at most TF32's 10 mantissa bits (a tensor core rounds nothing more
    away), and hi + lo reproduces the float64 input to ~2^-21 relative."""
    import torch
    X = torch.from_numpy(np.random.default_rng(1).standard_normal((50, 40)) * 10.0 ** np.arange(-3, 3, 0.15)[None])
    hi, lo = SF._split_tf32(X)
    for part in (hi, lo):
        assert part.dtype == torch.float32 and int((part.view(torch.int32) & 8191).abs().max()) == 0
    err = ((hi.double() + lo.double()) - X).abs() / X.abs()
    assert float(err.max()) < 2.0**-19 and float((lo != 0).float().mean()) > 0.9
