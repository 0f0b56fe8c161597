"""Tests for intrinsic/rank/ (descriptive estimators, noise floors, the registry): estimators on clean and planted-rank spectra, against references."""

from __future__ import annotations

import math
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny LAPACK calls; threads only spin on a busy box

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats

from intrinsic.rank import DESCRIPTIVE, ESTIMATORS, Spectra, estimate
from intrinsic.rank import descriptive as D
from intrinsic.rank import floors as F
from intrinsic.errors import IntrinsicError
from intrinsic.spectra import svd_topk


def estimate_all(sigma, shape):
    """The descriptive estimators through the registry (a Spectra with only sv and shape)."""
    return estimate(Spectra(sigma, shape))


def planted(m, n, r, *, strength=2.0, noise=1.0, seed=0, equal=False):
    """(signal, noise) m x n: signal of rank r with singular values strength x the noise bulk edge."""
    rng = np.random.default_rng(seed)
    N = noise * rng.standard_normal((m, n))
    if r == 0:
        return np.zeros((m, n)), N
    U = np.linalg.qr(rng.standard_normal((m, r)))[0]  # (m, r)
    V = np.linalg.qr(rng.standard_normal((n, r)))[0]  # (n, r)
    edge = noise * (math.sqrt(m) + math.sqrt(n))
    s = np.full(r, strength * edge) if equal else strength * edge * np.linspace(2.0, 1.0, r)
    return (U * s) @ V.T, N


def svals(M):
    return scipy.linalg.svdvals(M)


# ---------------------------------------------------------------- exact values on clean spectra


@pytest.mark.parametrize("r", [1, 2, 5, 10, 20])
def test_equal_singular_values_give_r(r):
    s = np.r_[np.full(r, 3.7), np.zeros(7)]
    assert D.stable_rank(s) == pytest.approx(r)
    assert D.entropy_rank(s) == pytest.approx(r)
    assert D.participation_ratio(s) == pytest.approx(r)
    assert D.energy_rank(s, 0.9) == math.ceil(0.9 * r)
    assert D.energy_rank(s, 0.99) == math.ceil(0.99 * r)
    assert D.energy_rank(s, 1.0) == r


def test_against_reference_formulas():
    rng = np.random.default_rng(0)
    for _ in range(5):
        s = np.sort(rng.gamma(0.5, size=50))[::-1]
        assert D.entropy_rank(s) == pytest.approx(np.exp(scipy.stats.entropy(s)), rel=1e-12)
        assert D.stable_rank(s) == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-12)
        assert D.participation_ratio(s) == pytest.approx(np.sum(s**2) ** 2 / np.sum(s**4), rel=1e-12)
        for tau in (0.5, 0.9, 0.99):
            frac = np.cumsum(s**2) / np.sum(s**2)
            assert D.energy_rank(s, tau) == 1 + next(i for i, f in enumerate(frac) if f >= tau)
    s = rng.random(30)  # unsorted input is sorted
    assert D.stable_rank(s) == pytest.approx(np.sum(s**2) / s.max() ** 2)


def test_zero_single_and_bad_spectra():
    zero = estimate_all(np.zeros(10), (20, 10))
    assert set(zero) == set(DESCRIPTIVE) and all(v == 0.0 for v in zero.values())
    one = estimate_all(np.r_[5.0, np.zeros(9)], (20, 10))
    assert all(v == 1.0 for v in one.values()), one
    assert estimate_all(np.zeros(0), (3, 3))["stable_rank"] == 0.0
    with pytest.raises(ValueError):
        D.stable_rank([1.0, np.nan])
    with pytest.raises(IntrinsicError):
        estimate_all([1.0, np.inf], (5, 5))
    with pytest.raises(ValueError):
        D.energy_rank([1.0, -0.5], 0.9)
    with pytest.raises(ValueError):
        D.energy_rank([1.0], 1.5)
    with pytest.raises(ValueError):
        D.gavish_donoho_rank(np.ones(6), (5, 8))  # more values than min(m, n)
    with pytest.raises(ValueError):
        D.stable_rank(np.ones((2, 2)))


def test_token_cap_and_numerical_rank():
    assert D.token_cap(100, (384, 1536)) == 100
    assert D.token_cap(10_000, (384, 1536)) == 384
    rng = np.random.default_rng(1)
    M = rng.standard_normal((60, 3)) @ rng.standard_normal((3, 40))  # rank 3
    assert D.numerical_rank(svals(M.astype(np.float32)), M.shape) == 3
    assert D.numerical_rank(np.zeros(4), (4, 4)) == 0


def test_estimate_all_keys_and_names():
    s = svals(np.random.default_rng(2).standard_normal((40, 30)))
    est = estimate_all(s, (40, 30))
    assert tuple(est) == DESCRIPTIVE
    assert all(isinstance(v, float) and math.isfinite(v) for v in est.values())
    assert set(ESTIMATORS) == set(DESCRIPTIVE) | {"split_half", "noise_floor", "half_difference", "sign_flip"}


# ---------------------------------------------------------------- random-matrix thresholds


def reference_mp_median(beta: float) -> float:
    """MP median by the cosine substitution t = c - h cos(phi) (smooth integrand) and trapezoids."""
    a, b = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2
    c, h = (a + b) / 2, (b - a) / 2
    phi = np.linspace(0.0, math.pi, 200_001)
    t = c - h * np.cos(phi)
    integrand = np.zeros_like(phi)
    ok = t > 0
    integrand[ok] = (h * np.sin(phi[ok])) ** 2 / (2 * math.pi * beta * t[ok])
    if beta == 1.0:  # a = 0: at phi = 0, t ~ h phi^2 / 2 and (h sin phi)^2 ~ h^2 phi^2
        integrand[0] = h / math.pi
    cdf = scipy.integrate.cumulative_trapezoid(integrand, phi, initial=0.0)
    assert cdf[-1] == pytest.approx(1.0, abs=1e-6)
    return float(np.interp(0.5, cdf, t))


@pytest.mark.parametrize("beta", [0.05, 0.25, 0.5, 1.0])
def test_mp_median_against_reference(beta):
    assert D.mp_median(beta) == pytest.approx(reference_mp_median(beta), abs=1e-6)


def test_gavish_donoho_coefficients():
    assert D.gd_lambda(1.0) == pytest.approx(4 / math.sqrt(3))
    assert D.gd_omega(1.0) == pytest.approx(2.858, abs=1e-3)  # the paper's value
    for beta in np.linspace(0.02, 1.0, 25):
        assert abs(D.gd_omega(beta) - D.gd_omega_approx(beta)) < 0.02


SHAPES = [(300, 300), (400, 100), (100, 400)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("r", [1, 5, 20])
@pytest.mark.parametrize("noise", [0.01, 1.0])
def test_gd_and_mp_recover_planted_rank(shape, r, noise):
    S, N = planted(*shape, r, noise=noise, seed=r)
    s = svals(S + N)
    assert D.gavish_donoho_rank(s, shape) == r
    assert D.gavish_donoho_rank(s, shape, noise_sigma=noise) == r
    assert D.mp_spike_count(s, shape, noise_sigma=noise) == r
    assert D.mp_spike_count(s, shape) == r
    rel = 0.03 + 0.5 * r / min(shape)  # spikes lift the median a little
    assert D.mp_noise_sigma(s, shape) == pytest.approx(noise, rel=rel)


@pytest.mark.parametrize("shape", SHAPES)
def test_gd_and_mp_on_pure_noise(shape):
    for seed in range(3):
        s = svals(np.random.default_rng(seed).standard_normal(shape))
        assert D.gavish_donoho_rank(s, shape) == 0
        assert D.mp_spike_count(s, shape) == 0
        assert D.mp_spike_count(s, shape, noise_sigma=1.0) == 0


def test_median_from_a_truncated_spectrum():
    S, N = planted(200, 100, 5, seed=3)
    s = svals(S + N)
    assert D.gavish_donoho_rank(s[:51], (200, 100)) == D.gavish_donoho_rank(s, (200, 100)) == 5
    with pytest.raises(ValueError):
        D.gavish_donoho_rank(s[:50], (200, 100))
    assert D.mp_edge((100, 100), 1.0, tw_margin=False) == pytest.approx(20.0)
    assert D.mp_edge((100, 100), 1.0) > 20.0


# ---------------------------------------------------------------- split-half rank


def test_null_thresholds_are_calibrated():
    """The Monte-Carlo null (Bartlett shortcut) matches a direct QR simulation of random flags."""
    dim, K, alpha = 60, 8, 0.05
    q = np.array(F._null_thresholds(dim, K, alpha, 0))
    ks = F.k_grid(K)
    Q = np.linalg.qr(np.random.default_rng(123).standard_normal((4000, dim, K)))[0]  # (S, dim, K)
    c = np.stack([np.linalg.svd(Q[:, :k, :k], compute_uv=False)[:, 0] for k in ks], 1)  # (S, len(ks))
    rate = np.mean((c > q).any(axis=1))
    assert 0.025 < rate < 0.08, rate


@pytest.mark.parametrize("shape", [(200, 100), (100, 200)])
@pytest.mark.parametrize("r", [1, 5])
def test_split_half_recovers_shared_signal(shape, r):
    S, Na = planted(*shape, r, strength=1.5, seed=10 + r)
    Nb = np.random.default_rng(99).standard_normal(shape)
    res = F.split_half_test(S + Na, S + Nb, kmax=16)
    assert res.rank == r, res
    assert len(res.ks) == len(res.left) == len(res.threshold_right)


def test_split_half_rank_20_and_equal_values():
    S, Na = planted(300, 150, 20, strength=1.5, seed=4)
    Nb = np.random.default_rng(5).standard_normal((300, 150))
    assert F.split_half_rank(S + Na, S + Nb, kmax=32) == 20
    S, Na = planted(150, 120, 5, strength=1.5, seed=6, equal=True)  # degenerate: vectors rotate
    Nb = np.random.default_rng(7).standard_normal((150, 120))
    assert F.split_half_rank(S + Na, S + Nb, kmax=16) == 5


def test_split_half_is_zero_without_shared_signal():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        assert F.split_half_rank(rng.standard_normal((120, 90)), rng.standard_normal((120, 90)), kmax=16) == 0
    Sa, Na = planted(120, 90, 5, seed=20)  # strong but different signals in the two halves
    Sb, Nb = planted(120, 90, 5, seed=21)
    assert F.split_half_rank(Sa + Na, Sb + Nb, kmax=16) == 0


def test_split_half_edge_cases():
    rng = np.random.default_rng(8)
    low = rng.standard_normal((80, 3)) @ rng.standard_normal((3, 60))  # exact rank 3, no noise
    assert F.split_half_rank(low, low + 1e-3 * rng.standard_normal((80, 60))) == 3
    assert F.split_half_rank(np.ones((1, 50)), np.ones((1, 50))) == 0  # no room for a test
    res = F.split_half_test(low, low, kmax=1000)  # capped at min(m, n) // 2, then numerical rank
    assert res.rank == 3 and max(res.ks) <= 3
    with pytest.raises(ValueError):
        F.split_half_rank(np.ones((4, 4)), np.ones((4, 5)))
    U = np.linalg.qr(rng.standard_normal((10, 6)))[0]
    with pytest.raises(ValueError):
        F.split_half_from_bases(U, U, U, U)  # 6 > 10 // 2


# ---------------------------------------------------------------- noise floors


@pytest.mark.parametrize("shape", [(200, 100), (100, 200)])
@pytest.mark.parametrize("r", [1, 5, 20])
def test_noise_floor_recovers_planted_rank(shape, r):
    S, N = planted(*shape, r, strength=1.5, seed=30 + r)
    noise = svals(np.random.default_rng(31).standard_normal(shape))
    assert F.noise_floor_rank(svals(S + N), noise) == r
    assert F.noise_floor_rank(svals(S + N), noise, mode="parallel") >= r


def test_noise_floor_on_pure_noise():
    """Pure noise vs R noise runs beats them all with probability 1/(R + 1) (exchangeability)."""
    shape = (100, 60)
    draws = np.stack([svals(np.random.default_rng(40 + i).standard_normal(shape)) for i in range(40)])
    one_run = [F.noise_floor_rank(draws[i], draws[i + 1]) for i in range(0, 40, 2)]
    nine_runs = [F.noise_floor_rank(draws[i], draws[i + 1 : i + 10]) for i in range(0, 40, 10)]
    assert np.mean(one_run) < 1.0 and max(one_run) <= 3, one_run
    assert sum(nine_runs) <= 1, nine_runs
    assert F.noise_floor_rank(np.zeros(5), draws[0][:5]) == 0
    assert F.noise_floor_rank([3.0, 2.0, 1.0], [2.5, 2.4]) == 1
    assert F.noise_floor_rank([3.0, 2.0, 1.0], [2.5, 1.5], mode="parallel") == 2
    with pytest.raises(ValueError):
        F.noise_floor_rank([1.0], [np.nan])
    with pytest.raises(ValueError):
        F.noise_floor_rank([1.0], [0.5], mode="min")


@pytest.mark.parametrize("r", [0, 1, 5])
def test_half_difference_rank(r):
    S, Na = planted(200, 100, r, strength=1.5, seed=50 + r)
    Nb = np.random.default_rng(1000 + r).standard_normal((200, 100))
    assert r <= F.half_difference_rank(S + Na, S + Nb) <= r + 1


def test_split_half_calibrates_only_the_live_directions():
    """Truncate, then calibrate: halves of numerical rank 5 in 64 x 64 (default kmax 16) are tested over
    k = 1..5 with the null calibrated for kmax = 5, never over the dead k's beyond the numerical rank."""
    rng = np.random.default_rng(3)
    S = rng.standard_normal((64, 5)) @ rng.standard_normal((5, 64))  # (64, 64), rank 5
    Ma = (S + 0.3 * rng.standard_normal((64, 5)) @ rng.standard_normal((5, 64))).astype(np.float32)
    Mb = (S + 0.3 * rng.standard_normal((64, 5)) @ rng.standard_normal((5, 64))).astype(np.float32)
    live = min(D.numerical_rank(svals(Ma), Ma.shape), D.numerical_rank(svals(Mb), Mb.shape))
    assert live < F.split_half_kmax(Ma.shape) == 16
    res = F.split_half_test(Ma, Mb)
    assert res.ks == F.k_grid(live)
    assert res.threshold_left == F._null_thresholds(64, live, F.ALPHA, 0)
    assert res.rank == 5


def test_estimate_applies_what_the_record_holds():
    rng = np.random.default_rng(4)
    S, N = planted(60, 48, 3, seed=5)
    Ma, Mb = S + N, S + rng.standard_normal(S.shape)
    sv = svals((Ma + Mb) / 2)
    assert tuple(estimate(Spectra(sv, (60, 48)))) == DESCRIPTIVE
    k = F.split_half_kmax((60, 48))
    halves = []
    for M, seed in ((Ma, 0), (Mb, 1)):
        U, s, Vh = svd_topk(M, k, seed=seed)
        halves.append(F.Basis(s, U, Vh.T))
    diff_top = svals((Ma - Mb) / 2)[0]
    noise = svals(rng.standard_normal((60, 48)))
    full = estimate(Spectra(sv, (60, 48), halves=tuple(halves), noise_sv=noise, diff_top=diff_top))
    assert tuple(full) == tuple(n for n in ESTIMATORS if n != "sign_flip")  # sign_flip needs fold means
    assert full["split_half"] == F.split_half_rank(Ma, Mb)
    assert full["half_difference"] == F.half_difference_rank(Ma, Mb)
    assert full["noise_floor"] == F.noise_floor_rank(sv, noise, shape=(60, 48))
    assert all(e.kind in ("descriptive", "test") and e.doc for e in ESTIMATORS.values())
