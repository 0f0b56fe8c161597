"""The opt-in per-module statistics of the probe: input-activation variance (as EVA) against numpy on the
captured inputs, and the weight spectrum's power-law alpha against scipy's Pareto MLE and KS test."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy import stats as sps

from intrinsic.arch import discover, weight_of
from intrinsic.arch.access import base_layer, get_module
from intrinsic.probes import probe
from intrinsic.probes.activations import input_variance
from intrinsic.probes.base import row_views
from intrinsic.probes.weight_alpha import MIN_TAIL, fit_power_law, hill_alpha, ks_distance, weight_alphas
from intrinsic.tasks import TaskData, make_batches
from intrinsic.testing import build_tiny_model


def _data(kind: str, n: int = 32) -> TaskData:
    rng = random.Random(0)  # lengths 4-20 characters: every batch has padding
    texts = tuple("".join(rng.choice("abcdefghij ") for _ in range(rng.randrange(4, 21))) for _ in range(n))
    if kind == "lm":
        return TaskData("t", "lm", (), texts, (), (), ())
    return TaskData("t", "classification", ("no", "yes"), texts, tuple(i % 2 for i in range(n)), (), ())


def _pareto_eigs(alpha: float, n: int, seed: int) -> np.ndarray:
    """n eigenvalues drawn from p(x) ~ x^-alpha, x >= 1 (scipy's pareto with shape b = alpha - 1)."""
    return sps.pareto(alpha - 1).rvs(size=n, random_state=np.random.default_rng(seed))


# ----------------------------------------------------------------------------- weight alpha


def test_hill_and_ks_equal_scipy_pareto_mle_and_kstest():
    tail = _pareto_eigs(3.0, 200, 0) * 2.5  # scale 2.5: xmin = its smallest value
    xmin = float(tail.min())
    b, _, scale = sps.pareto.fit(tail, floc=0, fscale=xmin)  # MLE of the shape with the scale fixed
    assert scale == xmin
    alpha = hill_alpha(tail, xmin)
    assert alpha == pytest.approx(b + 1, rel=1e-9)
    want = sps.kstest(tail, sps.pareto(alpha - 1, scale=xmin).cdf).statistic
    assert ks_distance(tail, xmin, alpha) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("alpha", [2.5, 3.5])
def test_fit_picks_the_xmin_of_smallest_ks_and_recovers_a_planted_alpha(alpha):
    """A matrix W = U diag(sqrt(lambda)) V^T with eigenvalues of W^T W power-law above a bulk: the fit picks the
    candidate xmin whose scipy kstest distance is smallest, and recovers the planted alpha."""
    rng = np.random.default_rng(1)
    m, n = 300, 400
    lam = np.concatenate([rng.uniform(0.05, 0.5, 100), _pareto_eigs(alpha, 200, 2)])  # bulk + tail from 1
    U = np.linalg.qr(rng.normal(size=(n, m)))[0]  # (n, m) orthonormal columns
    V = np.linalg.qr(rng.normal(size=(m, m)))[0]  # (m, m)
    W = V @ np.diag(np.sqrt(lam)) @ U.T  # (m, n): W^T W has eigenvalues lam (and zeros)
    eigs = np.linalg.svd(W, compute_uv=False) ** 2
    fit = fit_power_law(eigs)
    lam_sorted = np.sort(eigs)
    ks = []  # the reference: scipy's MLE and kstest at every candidate xmin
    for k in range(len(lam_sorted) - MIN_TAIL + 1):
        tail = lam_sorted[k:]
        b = sps.pareto.fit(tail, floc=0, fscale=tail[0])[0]
        ks.append((sps.kstest(tail, sps.pareto(b, scale=tail[0]).cdf).statistic, tail[0], b + 1))
    best = min(ks, key=lambda t: t[0])
    assert fit.xmin == pytest.approx(best[1]) and fit.alpha == pytest.approx(best[2], rel=1e-6)
    assert fit.ks == pytest.approx(best[0], rel=1e-6)
    assert abs(fit.alpha - alpha) < 0.35  # the planted exponent (Hill's sd here is about 0.15)
    assert fit.xmin >= 0.5  # the bulk is not in the tail


def test_fit_edge_cases():
    assert np.isnan(fit_power_law([1.0, 2.0, 3.0]).alpha)  # fewer than MIN_TAIL eigenvalues
    assert np.isnan(fit_power_law([0.0] * 10).alpha)  # all zero
    assert fit_power_law([1e-20] * 3 + list(_pareto_eigs(3.0, 50, 3))).n_tail <= 50  # zeros dropped


def test_weight_alphas_of_a_tiny_model_are_the_fits_of_numpy_spectra():
    tiny = build_tiny_model("gpt2", task_kind="lm")
    refs = discover(tiny.model)
    got = weight_alphas(tiny.model, refs)
    assert any(k.block for k in got)  # fused c_attn blocks covered
    for ref in refs:
        W = weight_of(tiny.model, ref).detach().double().numpy()  # (out, in)
        for key, _, sel in row_views([ref]):
            eigs = np.linalg.svd(W[sel], compute_uv=False) ** 2  # eigenvalues of W^T W
            want = fit_power_law(eigs)
            assert got[key].alpha == pytest.approx(want.alpha, rel=1e-8), key
            assert got[key].n_tail == want.n_tail


# ----------------------------------------------------------------------------- activation variance


def _captured_inputs(model, refs, batches) -> dict[str, list[np.ndarray]]:
    """The reference: every module's inputs at non-pad tokens, captured with plain hooks, one array per batch."""
    got: dict[str, list[np.ndarray]] = {r.name: [] for r in refs}
    mask = {}

    def hook_for(name):
        def hook(_m, inputs, _o):
            X = inputs[0].detach().double().reshape(-1, inputs[0].shape[-1]).numpy()
            got[name].append(X[mask["m"].reshape(-1).numpy().astype(bool)])
        return hook

    hs = [base_layer(get_module(model, r)).register_forward_hook(hook_for(r.name)) for r in refs]
    with torch.no_grad():
        for b in batches:
            mask["m"] = b["attention_mask"]
            model(**{k: v for k, v in b.items() if k != "labels"})
    for h in hs:
        h.remove()
    return got


@pytest.mark.parametrize("arch,kind", [("llama", "lm"), ("gpt2", "lm"), ("bert", "classification")])
def test_input_variance_equals_numpy_covariance_of_the_non_pad_inputs(arch, kind):
    tiny = build_tiny_model(arch, task_kind=kind)
    refs = discover(tiny.model)
    batches = make_batches(_data(kind), tiny.tokenizer, batch_size=6, num_batches=2)
    assert any((b["attention_mask"] == 0).any() for b in batches)  # padding is exercised
    got = input_variance(tiny.model, refs, batches, max_sv=512)
    ref_inputs = _captured_inputs(tiny.model, refs, batches)
    for ref in refs:
        X = np.concatenate(ref_inputs[ref.name])  # (tokens, in)
        C = np.cov(X, rowvar=False)  # (in, in), ddof 1
        eig = np.sort(np.linalg.eigvalsh(C))[::-1]
        for key, _, _ in row_views([ref]):
            assert got[key].tokens == len(X)
            assert got[key].total == pytest.approx(np.trace(C), rel=1e-9), key
            np.testing.assert_allclose(got[key].eig, np.clip(eig, 0, None), rtol=1e-7, atol=1e-10 * eig[0])
    if arch == "llama":  # q, k, v share one input stream (accumulated once) and so read the same
        layer0 = [r for r in refs if r.layer == 0 and r.role in ("q", "k", "v")]
        assert len({got[(r.name, None)].total for r in layer0}) == 1


def test_probe_reports_the_statistics_only_when_asked(tiny_bert):
    data = _data("classification")
    settings = dict(batches=2, batch_size=8, max_length=24, update_steps=None)
    off = probe(tiny_bert, data, **settings)
    on = probe(tiny_bert, data, **settings, activations=True, weight_alpha=True)
    row = off.to_json()["modules"][0]
    assert not {"act_var", "act_eig", "weight_alpha", "weight_alpha_tail"} & set(row)
    assert "activations" not in off.settings and "weight_alpha" not in off.settings
    assert on.settings["activations"] is True and on.settings["weight_alpha"] is True
    assert [m.grad_sv for m in off.modules] == [m.grad_sv for m in on.modules]  # additive: nothing else changes
    assert all(m.act_var > 0 and len(m.act_eig) and m.weight_alpha > 1 for m in on.top_level())
    assert sum(on.top_level()[0].act_eig) == pytest.approx(on.top_level()[0].act_var, rel=1e-9)
