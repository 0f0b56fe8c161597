"""Top-k spectra: `spectra.topk_batched` against scipy, the registry on top-k records, and the probe in topk mode."""

from __future__ import annotations

import random

import numpy as np
import pytest
import scipy.linalg
import torch

from intrinsic.arch import ModuleRef
from intrinsic.errors import ConfigError
from intrinsic.probes import ProbeSettings, probe
from intrinsic.probes.gradient import GradientSums, measure_sums
from intrinsic.probes.topk import measure_sums_topk
from intrinsic.rank import Spectra, estimate
from intrinsic.rank.registry import EXACT_ONLY
from intrinsic.spectra import TOPK_OVERSAMPLE, topk_batched, topk_error_bound
from intrinsic.tasks import TaskData


def _with_spectrum(m: int, n: int, sigma: np.ndarray, seed: int) -> np.ndarray:
    """An m x n matrix with singular values `sigma` (descending) and random singular vectors."""
    rng = np.random.default_rng(seed)
    p = len(sigma)
    U = np.linalg.qr(rng.standard_normal((m, p)))[0]
    V = np.linalg.qr(rng.standard_normal((n, p)))[0]
    return (U * sigma) @ V.T


def _decaying(p: int, rate: float) -> np.ndarray:
    return np.exp(-rate * np.arange(p))


@pytest.mark.parametrize("m,n", [(300, 200), (120, 400)])
def test_topk_values_on_known_rank_and_decaying_spectra_are_within_the_bound(m, n):
    p, k = min(m, n), 24
    known = np.r_[np.linspace(10, 1, 6), np.zeros(p - 6)]  # rank 6
    cases = [known, _decaying(p, 0.05), _decaying(p, 0.01), 1.0 / np.arange(1, p + 1)]
    A = torch.tensor(np.stack([_with_spectrum(m, n, s, seed=i) for i, s in enumerate(cases)]), dtype=torch.float32)
    S = topk_batched(A, k)  # (4, k)
    assert S.shape == (4, k)
    ell = k + TOPK_OVERSAMPLE
    for i in range(len(cases)):
        exact = scipy.linalg.svdvals(A[i].double().numpy())  # (p,) of the float32 matrix
        assert np.all(np.diff(S[i]) <= 0)
        for j in range(1, k + 1):
            if exact[j - 1] > 1e-4 * exact[0]:
                rel = abs(S[i, j - 1] - exact[j - 1]) / exact[j - 1]
                assert rel <= topk_error_bound(exact, j, ell, max(m, n)), (i, j, rel)
            else:  # past the known rank: round-off of the largest value
                assert S[i, j - 1] <= 1e-5 * exact[0]
        if i == 2:  # exp(-0.01 j) is nearly flat over l values: only the bound above holds for it
            continue
        live = exact[:8] > 1e-4 * exact[0]
        top8 = np.abs(S[i, :8] - exact[:8])[live] / exact[:8][live]
        assert top8.max() < 1e-4  # the head every test reads: float32 round-off


def test_topk_bound_is_not_vacuous_on_a_flat_spectrum():
    """On a flat spectrum the bound allows large errors past the head, and the method does make them there:
    the comparison above is a real one (the values at j near k are the approximate ones)."""
    m, n, k = 300, 300, 24
    s = _decaying(m, 0.002)
    A = torch.tensor(_with_spectrum(m, n, s, seed=0)[None], dtype=torch.float32)
    S = topk_batched(A, k, power_iters=0)[0]
    exact = scipy.linalg.svdvals(A[0].double().numpy())
    assert abs(S[-1] - exact[k - 1]) / exact[k - 1] > 1e-3  # one pass, flat spectrum: visibly approximate
    assert topk_error_bound(exact, k, k + TOPK_OVERSAMPLE, n, power_iters=0) > 1e-3


def test_batched_equals_one_at_a_time_and_vectors_match():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(5, 80, 50, generator=g) @ torch.diag(torch.tensor(_decaying(50, 0.2), dtype=torch.float32))
    S, U, V = topk_batched(A, 10, vectors=4, seed=3)
    assert S.shape == (5, 10) and U.shape == (5, 80, 4) and V.shape == (5, 50, 4)
    for i in range(5):
        s1, u1, v1 = topk_batched(A[i:i + 1], 10, vectors=4, seed=3)
        np.testing.assert_allclose(S[i], s1[0], rtol=1e-5)
        np.testing.assert_allclose(np.abs(U[i]), np.abs(u1[0]), atol=1e-4)
        Ue, Se, Vhe = scipy.linalg.svd(A[i].double().numpy(), full_matrices=False)
        np.testing.assert_allclose(np.abs(np.sum(U[i] * Ue[:, :4], axis=0)), 1.0, atol=1e-4)  # same directions
        np.testing.assert_allclose(np.abs(np.sum(V[i] * Vhe[:4].T, axis=0)), 1.0, atol=1e-4)


def test_registry_on_a_topk_record():
    """Energy and stable ranks from the head plus the total energy equal the exact ones; the estimators that
    need the whole spectrum read None; an energy rank beyond the head reads None."""
    sv = np.r_[np.linspace(10, 2, 10), np.full(190, 0.3)]  # (200,)
    shape = (200, 300)
    exact = estimate(Spectra(sv, shape))
    head = estimate(Spectra(sv[:64], shape, energy=float(np.sum(sv ** 2))))
    assert head["stable_rank"] == pytest.approx(exact["stable_rank"], rel=1e-12)
    assert head["energy_90"] == exact["energy_90"] <= 64
    assert exact["energy_99"] > 64 and head["energy_99"] is None
    assert all(head[name] is None for name in EXACT_ONLY) and len(EXACT_ONLY) == 4
    assert all(exact[name] is not None for name in EXACT_ONLY)


def _sums(shapes, rank: int, seed: int = 0, batches: int = 8) -> GradientSums:
    """GradientSums of planted rank-`rank` signal plus noise per batch, for modules of the given shapes."""
    g = torch.Generator().manual_seed(seed)
    refs, acc = [], {"even": [], "odd": [], "noise": []}
    for i, (m, n) in enumerate(shapes):
        refs.append(ModuleRef(f"layers.{i}.w", i, "attention", "q", (m, n), m * n))
        signal = torch.randn(m, rank, generator=g) @ torch.randn(rank, n, generator=g) * 0.3  # (m, n)
        per = [signal + torch.randn(m, n, generator=g) * 0.05 for _ in range(batches)]
        acc["even"].append(sum(per[0::2]))
        acc["odd"].append(sum(per[1::2]))
        acc["noise"].append(sum(torch.randn(m, n, generator=g) * 0.05 for _ in range(batches)))
    return GradientSums(refs, acc["even"], acc["odd"], acc["noise"], batches // 2, batches // 2, batches)


def test_topk_probe_spectra_agree_with_exact_on_planted_ranks():
    shapes = [(160, 96), (160, 96), (96, 200), (40, 48)]  # two share a shape (one batch); the last is below k
    sums = _sums(shapes, rank=3)
    exact = measure_sums(sums, tokens=10_000, max_sv=512, seed=0)
    top = measure_sums_topk(sums, tokens=10_000, k=64, seed=0)
    assert list(top) == list(exact)
    for key, e in exact.items():
        t, est_e = top[key], estimate(exact[key])
        est_t = estimate(t)
        assert len(t.sv) == min(64, *e.shape)
        np.testing.assert_allclose(t.sv[:8], e.sv[:8], rtol=1e-4)
        assert t.diff_top == pytest.approx(e.diff_top, rel=1e-4)
        assert (t.norm, t.noise_norm, t.label_norm) == pytest.approx((e.norm, e.noise_norm, e.label_norm), rel=1e-5)
        np.testing.assert_allclose(t.noise_sv[:8], e.noise_sv[:8], rtol=1e-4)
        for name in ("half_difference", "noise_floor", "split_half", "energy_90", "stable_rank"):
            assert est_t[name] == pytest.approx(est_e[name], rel=1e-4), (key, name)
        assert est_t["half_difference"] >= 3  # the planted directions (and what the noise adds, in both modes)
        assert (t.energy is None) == (min(e.shape) <= 64)


def _task(n: int = 64) -> TaskData:
    rng = random.Random(0)
    texts = tuple("".join(rng.choice("abcdefghijz") for _ in range(12)) for _ in range(n))
    return TaskData("t", "classification", ("no", "yes"), texts, tuple(int("z" in t) for t in texts), (), ())


def test_designated_ranks_of_a_tiny_probe_agree_between_modes(tiny_bert):
    settings = dict(batches=4, batch_size=8, max_length=24, update_steps=None)
    exact = probe(tiny_bert, _task(), **settings)
    top = probe(tiny_bert, _task(), **settings, spectra="topk", topk=64)
    assert [m.intrinsic_rank for m in exact.modules] == [m.intrinsic_rank for m in top.modules]
    for a, b in zip(exact.modules, top.modules):
        np.testing.assert_allclose(b.grad_sv[:8], a.grad_sv[:8], rtol=1e-3, atol=1e-7 * a.grad_sv[0])
    assert "spectra" not in exact.settings and top.settings["spectra"] == "topk" and top.settings["topk"] == 64


@pytest.mark.parametrize("kw,match", [
    (dict(spectra="top"), "(?i)did you mean: topk"),
    (dict(spectra="topk", topk=16), "topk"),
    (dict(spectra="topk", rank_estimator="gavish_donoho"), "whole spectrum"),
])
def test_topk_settings_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        ProbeSettings(**kw)


def test_gram_method_matches_qr_and_is_orthonormal():
    """The GPU path ("gram": shifted CholeskyQR3 and the small SVD through B B^T), run here on the CPU, gives the
    values and bases of the QR path; its bases are orthonormal, also for rank-deficient and zero blocks."""
    from intrinsic.spectra import orthonormalize

    gen = torch.Generator().manual_seed(5)
    A = torch.randn(3, 300, 12, generator=gen) @ torch.randn(3, 12, 200, generator=gen)  # rank 12
    A += 1e-3 * torch.randn(3, 300, 200, generator=gen)
    s_qr, u_qr, v_qr = topk_batched(A, 20, vectors=4, seed=1, method="qr")
    s_g, u_g, v_g = topk_batched(A, 20, vectors=4, seed=1, method="gram")
    np.testing.assert_allclose(s_g, s_qr, rtol=1e-4, atol=1e-6 * s_qr[:, :1].max())
    for a, b in ((u_g, u_qr), (v_g, v_qr)):  # vectors up to sign
        np.testing.assert_allclose(np.abs((a * b).sum(1)), 1.0, atol=1e-4)
    X = torch.randn(4, 500, 30, generator=gen, dtype=torch.float64)
    X[1] = X[1] @ torch.diag(torch.logspace(0, -6, 30, dtype=torch.float64))  # ill-conditioned
    X[2, :, 5:] = X[2, :, :1]  # rank deficient: QR fallback
    X[3] = 0
    for x in (X[:2], X[:3], X[3:]):
        Q = orthonormalize(x, "gram")
        assert Q.shape == x.shape and bool(torch.isfinite(Q).all())
    for wait in (True, False):  # wait=False: every pass shifted, no host check
        Q = orthonormalize(X[:2], "gram", wait=wait)
        np.testing.assert_allclose((Q.mT @ Q).numpy(), np.broadcast_to(np.eye(30), (2, 30, 30)), atol=1e-10)
    Z = orthonormalize(X, "gram", wait=False)  # rank-deficient and zero blocks: finite, no fallback needed
    assert bool(torch.isfinite(Z).all()) and float(Z[3].abs().max()) == 0.0
    np.testing.assert_allclose((Q @ Q.mT @ X[:2]).numpy(), X[:2].numpy(), atol=1e-9)  # spans X's columns


def test_spectra_auto_resolves_by_device():
    """The default spectra mode "auto": top-k off the CPU, exact on the CPU, exact when the estimator needs the whole
    spectrum or in sketch mode; an explicit mode is kept; --topk with --sketch is refused."""
    from intrinsic.errors import ConfigError
    from intrinsic.probes.settings import ProbeSettings

    s = ProbeSettings()
    assert s.spectra == "auto"
    assert s.spectra_for("cuda") == "topk" and s.spectra_for("cpu") == "exact"
    assert ProbeSettings(rank_estimator="gavish_donoho").spectra_for("cuda") == "exact"
    assert ProbeSettings(sketch=16).spectra_for("cuda") == "exact"
    assert ProbeSettings(spectra="exact").spectra_for("cuda") == "exact"
    assert ProbeSettings(spectra="topk").spectra_for("cpu") == "topk"
    with pytest.raises(ConfigError):
        ProbeSettings(spectra="topk", sketch=16)


def test_batched_method_keeps_qr_on_the_cpu():
    """"auto" is QR on the CPU (CPU results unchanged) and the Gram path elsewhere; a bad name is refused."""
    from intrinsic.spectra import batched_method

    x = torch.zeros(2, 3, 2)
    assert batched_method(x, "auto") == "qr" and batched_method(x, "gram") == "gram"
    assert batched_method(x.to("meta"), "auto") == "gram"
    with pytest.raises(ValueError):
        batched_method(x, "svd")
