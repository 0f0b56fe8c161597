"""Sketch mode (`--sketch K`): hooks' sketches against sketches of the exact gradients, the reconstruction and its
energy estimate against scipy on planted matrices, the sign-flip test on fold sketches, the probe and the CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import scipy.linalg
import torch
from typer.testing import CliRunner

from intrinsic.arch import discover
from intrinsic.cli.app import app
from intrinsic.errors import ConfigError
from intrinsic.probes import ProbeSettings, probe
from intrinsic.probes import sketch as SK
from intrinsic.probes.gradient import accumulate_gradients
from intrinsic.probes.sketch import accumulate_sketches, sketch_sizes, gaussian_maps
from intrinsic.probes.sketch_recon import FoldSketches, deflate_left, reconstruct, svd_of
from intrinsic.rank.signflip import sign_flip_test
from intrinsic.tasks import TaskData, make_batches
from intrinsic.testing import build_tiny_model


def _planted(m: int, n: int, sigma, tail: float, rng, square_tail: bool = False) -> np.ndarray:
    """Rank-len(sigma) matrix with values sigma plus a tail: Gaussian of Frobenius norm ~tail, or tail * I."""
    r = len(sigma)
    U = np.linalg.qr(rng.standard_normal((m, r)))[0]
    V = np.linalg.qr(rng.standard_normal((n, r)))[0]
    noise = tail * np.eye(m) if square_tail else rng.standard_normal((m, n)) * tail / np.sqrt(m * n)
    return (U * np.asarray(sigma)) @ V.T + noise, U, V


def _sketch(G: np.ndarray, k: int, seed: int):
    m, n = G.shape
    kk, ll = sketch_sizes((m, n), k)
    omega, psi = gaussian_maps(m, n, kk, ll, seed, "cpu")
    Gt = torch.tensor(G, dtype=torch.float32)
    return (Gt @ omega)[None], (psi @ Gt)[None], psi  # (1, m, k), (1, l, n), (l, m)


@pytest.mark.parametrize("m,n", [(120, 80), (60, 150)])
def test_reconstruction_within_tropps_bound_and_exact_at_low_rank(m, n):
    rng, k, sigma = np.random.default_rng(0), 16, [10.0, 7.0, 5.0, 3.0]
    for tail in (0.0, 1.0, 3.0):
        G, U0, V0 = _planted(m, n, sigma, tail, rng)
        Q, X, energy = reconstruct(*_sketch(G, k, seed=1))
        S, U, V = svd_of(Q, X)
        exact = scipy.linalg.svdvals(G)
        r = len(sigma)
        # Tropp et al. 2017 Thm 4.3 (l = 2k + 1): E||G - G_hat||_F^2 <= 2 (1 + r / (k - r - 1)) tau_{r+1}^2, and by
        # Mirsky the singular values move by at most ||G - G_hat||_F together; 3x margin over the expectation
        tau = np.sqrt(np.sum(exact[r:] ** 2))
        bound = 3 * np.sqrt(2 * (1 + r / (k - r - 1))) * tau + 1e-5 * exact[0]
        assert np.sqrt(np.sum((S[0, :r].numpy() - exact[:r]) ** 2)) <= bound, tail
        assert np.all(np.abs(S[0, :r].numpy() - exact[:r]) / exact[:r] <= bound / exact[:r])
        # the bases point at the planted directions (left and right, not swapped)
        cos_u = np.linalg.svd(U0.T @ U[0, :, :r].numpy(), compute_uv=False)
        cos_v = np.linalg.svd(V0.T @ V[0, :, :r].numpy(), compute_uv=False)
        assert cos_u.min() > 1 - (bound / exact[r - 1]) and cos_v.min() > 1 - (bound / exact[r - 1]), tail
        if tail == 0.0:  # rank <= k: the sketch holds the matrix, the reconstruction is exact
            np.testing.assert_allclose(S[0, :r].numpy(), exact[:r], rtol=1e-5)
            assert float(energy[0]) == pytest.approx(np.sum(G ** 2), rel=1e-5)


@pytest.mark.parametrize("square", [False, True])
def test_energy_estimate_is_unbiased_with_a_heavy_tail(square):
    """||G||_F^2 from the sketches: mean relative error over seeds near 0, each draw within 30%. The square case
    (low rank + a multiple of I) fails when Psi is not independent of Omega (e.g. drawn with the same seed)."""
    rng, errs = np.random.default_rng(1), []
    for seed in range(12):
        G, _, _ = _planted(96, 96 if square else 64, [8.0, 6.0, 4.0, 2.0], 1.0 if square else 9.0, rng, square_tail=square)
        _, _, energy = reconstruct(*_sketch(G, 12, seed))
        errs.append(float(energy[0]) / np.sum(G ** 2) - 1)
    assert abs(np.mean(errs)) < 0.05 and max(abs(e) for e in errs) < 0.3, np.round(errs, 3)


def _texts(n: int, seed: int = 0) -> tuple[str, ...]:
    rng = random.Random(seed)  # lengths 4-20 characters: every batch has padding
    return tuple("".join(rng.choice("abcdefghij ") for _ in range(rng.randrange(4, 21))) for _ in range(n))


def _data(kind: str, n: int = 64) -> TaskData:
    texts = _texts(n)
    if kind == "lm":
        return TaskData("t", "lm", (), texts, (), (), ())
    return TaskData("t", "classification", ("no", "yes"), texts, tuple(int("a" in t) for t in texts), (), ())


@pytest.mark.parametrize("arch,kind", [("bert", "classification"), ("gpt2", "lm"), ("llama", "lm")])
def test_hook_sketches_equal_sketches_of_the_exact_gradients_and_no_grad_is_formed(arch, kind):
    """Every slot's sketches (one fold per batch, the noise slot) equal Omega/Psi applied to the exact gradient sums
    (GPT-2: Conv1D and fused q/k/v blocks; BERT: padding); the weights never require grad nor get a .grad."""
    tiny = build_tiny_model(arch, task_kind=kind)
    model, refs = tiny.model, discover(tiny.model)
    data = _data(kind)
    real = make_batches(data, tiny.tokenizer, batch_size=4, num_batches=8, seed=0)
    shuffled = make_batches(data, tiny.tokenizer, batch_size=4, num_batches=8, seed=0, shuffle_labels=True)
    exact = accumulate_gradients(model, refs, real, shuffled, folds=8)
    seen = []  # requires_grad of every probed weight, seen during the forward passes
    hooks = [model.get_submodule(r.name).register_forward_hook(
        lambda mod, i, o: seen.append(any(p.requires_grad for p in mod.parameters()))) for r in refs]
    flags = [p.requires_grad for p in model.parameters()]
    sums, _ = accumulate_sketches(model, refs, real, shuffled, k=8, folds=8, seed=3)
    for h in hooks:
        h.remove()
    assert seen and not any(seen) and all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert sums.counts == [1] * 8 and sums.n_noise == 8
    index = {r.name: i for i, r in enumerate(refs)}
    for r in sums.rows:
        i = index[r.key.name]
        want = [exact.folds[i][j][r.rows] for j in range(8)] + [exact.noise[i][r.rows]]  # (m, n) per slot
        for slot, G in enumerate(want):
            assert _rel(r.Y[slot], G @ r.omega) < 1e-4 and _rel(r.W[slot], r.psi @ G) < 1e-4, (r.key, slot)
        # the linear combinations: mean, halves, fold means
        G, _, Go, _ = exact.means(i, r.rows)
        assert _rel(torch.einsum("s,smk->mk", sums.weights("mean").float(), r.Y), G @ r.omega) < 1e-4
        assert _rel(torch.einsum("s,sln->ln", sums.weights("odd").float(), r.W), r.psi @ Go) < 1e-4
        F = exact.folds[i][:, r.rows]
        assert _rel(torch.einsum("js,smk->jmk", sums.fold_weights().float(), r.Y), F @ r.omega) < 1e-4


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _fold_sketches(F: np.ndarray, k: int, seed: int, dtype: torch.dtype = torch.float64) -> FoldSketches:
    """The fold sketches of fold means F (K, m, n) at sketch size k, the probe's maps seeded `seed`, in `dtype`."""
    _, m, n = F.shape
    kk, ll = sketch_sizes((m, n), k)
    omega, psi = gaussian_maps(m, n, kk, ll, seed, "cpu")
    Ft = torch.tensor(F, dtype=dtype)
    return FoldSketches(Ft @ omega.to(dtype), psi.to(dtype) @ Ft, psi, (m, n))


def test_sign_flip_on_fold_sketches_finds_planted_rank_and_holds_its_level():
    rng, (m, n), K = np.random.default_rng(3), (60, 40), 8  # seed 2: a 4th (noise) step at p = 6/128 (5%-level chance)
    signal, _, _ = _planted(m, n, [6.0, 4.0, 3.0], 0.0, rng)

    def folds(with_signal: bool) -> np.ndarray:
        return np.stack([(signal if with_signal else 0) + rng.standard_normal((m, n)) * 0.15 for _ in range(K)])

    def sketched(F: np.ndarray, seed: int) -> FoldSketches:
        return _fold_sketches(F, 12, seed, torch.float32)

    F = folds(True)
    assert sign_flip_test(F).rank == 3 and sketched(F, 0).sign_flip_test().rank == 3
    false = sum(sketched(folds(False), s).sign_flip_test(seed=s).rank >= 1 for s in range(12))
    assert false <= 2  # level 5%: P(>= 3 of 12) ~ 2%



@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sign_flip_on_fold_sketches_keeps_a_planted_rank_8_as_exact_mode_does(seed):
    """Rank-8 signal (values 12 .. 6.5) in 8 folds of noise with a decaying spectrum (column scales 1 .. 0.05), the
    weakest directions at ~1.6x the noise's sigma_1: the step-down test on K = 24 sketches (3x the rank) must reach
    rank 8 like the exact test. A worse reconstruction (tail leakage, a lost basis) drops the last directions."""
    rng, (m, n), K = np.random.default_rng(seed), (120, 80), 8
    signal, _, _ = _planted(m, n, [12.0, 11.0, 10.0, 9.0, 8.0, 7.5, 7.0, 6.5], 0.0, rng)
    F = np.stack([signal + rng.standard_normal((m, n)) * np.geomspace(1.0, 0.05, n) for _ in range(K)])
    exact, sketched = sign_flip_test(F), _fold_sketches(F, 24, seed, torch.float32).sign_flip_test()
    assert exact.rank == 8 and sketched.rank == 8, (exact.pvalues, sketched.pvalues)


@pytest.mark.parametrize("kind,seed", [("iso", 21), ("aniso", 22), ("t5", 23)])
def test_projected_sketch_test_holds_its_level_on_pure_noise(kind, seed):
    """The projection statistic's false-positive rate of "rank >= 1" on pure-noise folds, l = 17 < m = 48 (a real
    projection): at most alpha + 2 binomial SE over 160 replicates, as the exact test (tests/test_signflip.py)."""
    from test_signflip import REPS, fpr_ok, noise_folds
    rng = np.random.default_rng(seed)
    ranks = np.array([_fold_sketches(noise_folds(kind, 8, 48, 40, rng), 8, i).sign_flip_test(seed=i).rank
                      for i in range(REPS)])
    assert fpr_ok(ranks), f"{kind}: FPR {np.mean(ranks >= 1):.3f}"


def test_projected_sketch_test_is_the_exact_test_when_the_co_range_holds_the_side():
    """l = 2k + 1 >= m: the projected folds are a rotation of the fold means, so ranks, p-values and statistics
    (singular values of G) are the exact test's."""
    rng = np.random.default_rng(8)
    signal, _, _ = _planted(30, 50, [5.0, 3.0, 2.0], 0.0, rng)
    F = np.stack([signal + rng.standard_normal((30, 50)) * 0.3 for _ in range(8)])
    exact, sk = sign_flip_test(F), _fold_sketches(F, 16, 0).sign_flip_test()  # l = 33 >= m = 30
    assert exact.rank == sk.rank == 3 and exact.pvalues == sk.pvalues
    np.testing.assert_allclose(sk.stats, exact.stats, rtol=1e-6)
    np.testing.assert_allclose(sk.null_ms, exact.null_ms, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projected_sketch_statistics_are_in_full_space_units(seed):
    """One strong direction, m = 200 > l = 33: the projection keeps ~l/m of its energy; the reported first statistic
    (rescaled by sqrt(m / l)) is sigma_1(G) within 35%, where the unscaled one would be ~0.4 sigma_1."""
    rng = np.random.default_rng(seed)
    signal, _, _ = _planted(200, 100, [50.0], 0.0, rng)
    F = np.stack([signal + rng.standard_normal((200, 100)) * 0.1 for _ in range(8)])
    got = _fold_sketches(F, 16, seed).sign_flip_test().stats[0]
    assert got == pytest.approx(np.linalg.svd(F.mean(0), compute_uv=False)[0], rel=0.35)


def test_projected_sketch_test_keeps_the_power_the_reconstruction_loses():
    """A decaying signal (sigma_i ~ i^-0.7, 24 directions) in 8 folds of noise, m x n = 96 x 192, K = 16 (l = 33):
    the exact test certifies ~10 directions; the projection statistic keeps most of them, the reconstruction
    statistic finds about none (its resamples' tails fill the null). Statistics are in full-space units: the first
    is within 35% of sigma_1(G)."""
    from test_signflip import planted_folds
    rng = np.random.default_rng(5)
    rows = []
    for i in range(4):
        F = planted_folds(8, 96, 192, 24, 6.0, rng, spread=24 ** -0.7)
        fs = _fold_sketches(F, 16, i)
        proj = fs.sign_flip_test(seed=i)
        recon = fs.sign_flip_test(seed=i, statistic="reconstruction")
        rows.append((sign_flip_test(F, seed=i).rank, proj.rank, recon.rank))
        assert proj.stats[0] == pytest.approx(np.linalg.svd(F.mean(0), compute_uv=False)[0], rel=0.35)
        P, scale = fs.projected_folds()  # the null energies are in the same units as the statistics
        raw = sign_flip_test(P, seed=i)
        assert P.shape == (8, 33, 192) and scale == pytest.approx(96 / 33)
        np.testing.assert_allclose(proj.null_ms, np.asarray(raw.null_ms) * scale, rtol=1e-12)
    exact, proj, recon = np.mean(rows, axis=0)
    assert exact >= 8 and proj >= 0.6 * exact and recon <= 2, rows


def test_sketch_test_refuses_an_unknown_statistic():
    with pytest.raises(ValueError, match="projection"):
        _fold_sketches(np.zeros((8, 6, 5)), 2, 0).sign_flip_test(statistic="core")


def test_left_deflation_equals_the_square_root_of_the_projected_gram():
    """deflate_left's rank-2r update equals H M H with H = (I - C^T C)^(1/2) from an eigendecomposition (scipy)."""
    rng = np.random.default_rng(4)
    m, k, r = 40, 12, 3
    Q = np.linalg.qr(rng.standard_normal((m, k)))[0]
    U = np.linalg.qr(np.column_stack([Q[:, :1], rng.standard_normal((m, r - 1))]))[0]  # one direction inside span Q
    X = rng.standard_normal((k, 30))
    M, C = X @ X.T, U.T @ Q  # (k, k), (r, k)
    H = np.real(scipy.linalg.sqrtm(np.eye(k) - C.T @ C))
    got = deflate_left(torch.tensor(M)[None], torch.tensor(C)[None])[0].numpy()
    np.testing.assert_allclose(got, H @ M @ H, rtol=1e-8, atol=1e-8 * np.abs(M).max())

def _task(n: int = 96) -> TaskData:
    rng = random.Random(0)
    texts = tuple("".join(rng.choice("abcdefghijz") for _ in range(12)) for _ in range(n))
    return TaskData("t", "classification", ("no", "yes"), texts, tuple(int("z" in t) for t in texts), (), ())


def test_sketch_probe_agrees_with_exact_on_a_tiny_model(tiny_bert):
    settings = dict(batches=8, batch_size=8, max_length=24, update_steps=None, fit_head=False)
    exact = probe(tiny_bert, _task(), **settings)
    sk = probe(tiny_bert, _task(), **settings, sketch=12)
    assert sk.settings["sketch"] == 12 and "sketch" not in exact.settings
    assert any("clamped" in n for n in sk.notes) is False  # 12 < min(m, n) = 32 everywhere
    same = [a.intrinsic_rank == b.intrinsic_rank for a, b in zip(exact.modules, sk.modules)]
    assert np.mean(same) >= 0.9, [(a.intrinsic_rank, b.intrinsic_rank) for a, b in zip(exact.modules, sk.modules)]
    for a, b in zip(exact.modules, sk.modules):
        assert a.name == b.name and b.grad_ranks["energy_90"] is None and b.grad_ranks["gavish_donoho"] is None
        assert b.energy_share == pytest.approx(a.energy_share, abs=0.02)
        live = np.asarray(a.grad_sv[:2]) > 0.05 * a.grad_sv[0]
        np.testing.assert_allclose(np.asarray(b.grad_sv[:2])[live], np.asarray(a.grad_sv[:2])[live], rtol=0.1)


def test_auto_choice_notes_sketch_mode_when_exact_accumulators_do_not_fit(tiny_bert, monkeypatch):
    refs = discover(tiny_bert.model)
    need = SK.exact_bytes(refs, 8, 4)
    monkeypatch.setattr(SK, "free_bytes", lambda device: need)  # a device with room for the model only
    with pytest.raises(ConfigError, match="fits in no mode.*sketch mode .* would need more"):  # K = 128 > 32: the
        probe(tiny_bert, _task(), batches=8, batch_size=4, max_length=16, update_steps=None, fit_head=False)  # whole
    monkeypatch.setattr(SK, "AUTO_SKETCH", 4)  # a sketch smaller than the 32 x 32 matrices: sketch mode fits
    rep = probe(tiny_bert, _task(), batches=8, batch_size=4, max_length=16, update_steps=None, fit_head=False)
    assert rep.settings["sketch"] == 4
    assert any("sketch mode (--sketch 4) chosen" in n for n in rep.notes)
    with pytest.raises(ConfigError, match="would need .* and `rank_estimator` energy_90 needs the tail"):
        probe(tiny_bert, _task(), batches=8, batch_size=4, max_length=16, update_steps=None, fit_head=False,
              rank_estimator="energy_90")
    monkeypatch.setattr(SK, "free_bytes", lambda device: 3 * need)
    assert SK.auto_sketch(tiny_bert.model, refs, 8) == (None, None)


@pytest.mark.parametrize("kw,match", [
    (dict(sketch=1), "sketch"),
    (dict(sketch=16, rank_estimator="energy_90"), "tail of the spectrum"),
    (dict(sketch=16, spectra="topk"), "replaces"),
])
def test_sketch_settings_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        ProbeSettings(**kw)


def test_cli_sketch_json_clamps_and_rejects_topk(tiny_bert_dir, tiny_csv, tmp_path):
    runner = CliRunner()
    fast = ["--batches", "8", "--batch-size", "2", "--max-length", "16", "--no-update"]
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(tmp_path / "p"), *fast,
                              "--sketch", "1000", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["sketch"] == 1000
    assert any("--sketch 1000 exceeds min(m, n)" in n and "clamped" in n for n in data["notes"])
    assert all(m["grad_ranks"]["sign_flip"] is not None for m in data["modules"])
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(tmp_path / "q"), *fast,
                              "--sketch", "8", "--topk", "64"])
    assert res.exit_code == 2 and "--sketch replaces" in " ".join(res.output.split()) and "Traceback" not in res.output


@pytest.mark.parametrize("k,folds", [(8, 8), (4, 3), (1000, 0)])
def test_sketch_bytes_counts_the_state_new_sums_allocates(tiny_bert, k, folds):
    refs = discover(tiny_bert.model)
    sums = SK.new_sums(refs, k, folds, 0, torch.device("cpu"))
    held = sum(t.numel() * t.element_size() for r in sums.rows for t in (r.Y, r.W))
    assert SK.sketch_bytes(refs, k, folds) == held


def test_probe_that_fits_in_no_mode_is_refused_in_one_line(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    from intrinsic.arch import discover as find
    from intrinsic.models import load_model

    refs = find(load_model(str(tiny_bert_dir), num_labels=2).model)
    need = SK.sketch_bytes(refs, 8, 8)
    monkeypatch.setattr(SK, "free_bytes", lambda device: need)  # the sketches alone would fill the device
    res = CliRunner().invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(tmp_path / "p"),
                                   "--batches", "8", "--batch-size", "2", "--max-length", "16", "--no-update",
                                   "--sketch", "8"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "fits in no mode" in out and "--roles, --layers" in out, res.output
    assert "Traceback" not in res.output and not (tmp_path / "p" / "probe.json").exists()
    monkeypatch.setattr(SK, "free_bytes", lambda device: 3 * need)
    SK.check_sketch_fits(refs, 8, 8, 3 * need, "cpu")  # room for the sketches and the activations: no refusal
