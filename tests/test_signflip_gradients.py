"""The sign-flip rank test on gradient-like noise from real batches: per-batch gradients of a tiny BERT on
examples with shuffled (text-independent) labels, made exact nulls by pairing. A pair's half difference
(g_a - g_b) / 2 of two batches drawn the same way has mean zero and is symmetric, with the gradients' own
anisotropy, heavy tails and token structure; eight disjoint pairs are eight fold means under the null.
The false-positive rate of "rank >= 1" must stay within alpha + 2 binomial standard errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intrinsic.arch import discover
from intrinsic.rank.signflip import ALPHA, sign_flip_test
from intrinsic.tasks import make_batches
from intrinsic.testing import build_tiny_model

from test_probe import _task

POOL = 64  # per-batch gradients drawn once
REPS = 80  # null fold sets drawn from the pool per module
K = 8


def per_batch_gradients(loaded, names, batches) -> dict[str, np.ndarray]:
    """{module name: (batches, out, in)} gradient of the mean loss of each batch."""
    model = loaded.model
    weights = [model.get_submodule(n).weight for n in names]
    out = {n: [] for n in names}
    for b in batches:
        loss = model(**b).loss
        for n, g in zip(names, torch.autograd.grad(loss, weights)):
            out[n].append(g.detach().double().numpy())
    return {n: np.stack(v) for n, v in out.items()}


@pytest.fixture(scope="module")
def pool():
    torch.manual_seed(0)
    tiny = build_tiny_model("bert")
    refs = discover(tiny.model)
    names = [refs[0].name, refs[3].name, refs[-1].name]  # q, o and down of different layers: three shapes/roles
    data = _task("random", n=POOL * 4, seed=1)
    batches = make_batches(data, tiny.tokenizer, num_batches=POOL, batch_size=4, max_length=16, seed=0)
    return per_batch_gradients(tiny, names, batches)


def null_folds(grads: np.ndarray, rng) -> np.ndarray:
    """(K, out, in): half differences of K disjoint pairs of distinct batches."""
    pick = rng.choice(len(grads), size=2 * K, replace=False)
    return (grads[pick[:K]] - grads[pick[K:]]) / 2


def test_false_positive_rate_on_real_gradient_noise(pool):
    rng = np.random.default_rng(0)
    ranks = np.array([sign_flip_test(null_folds(g, rng), seed=i).rank
                      for g in pool.values() for i in range(REPS)])
    fpr = float(np.mean(ranks >= 1))
    se = np.sqrt(ALPHA * (1 - ALPHA) / len(ranks))
    assert fpr <= ALPHA + 2 * se, fpr
    assert float(np.mean(ranks >= 2)) <= 0.02


def test_the_pool_is_gradient_like_not_isotropic(pool):
    """The noise this test calibrates on is strongly anisotropic (what breaks GD/MP-style thresholds):
    the top singular value of a batch gradient carries far more than its isotropic share of the energy."""
    for g in pool.values():
        s = np.linalg.svd(g[0], compute_uv=False)
        assert s[0] ** 2 / np.sum(s ** 2) > 3.0 / len(s)


def test_a_systematic_direction_is_found_in_the_same_noise(pool):
    """Power on the same noise: a rank-1 direction planted at 3x the typical top singular value of the null
    fold mean is found (rank >= 1) nearly always."""
    rng = np.random.default_rng(1)
    g = next(iter(pool.values()))
    scale = np.mean([np.linalg.svd(null_folds(g, rng).mean(0), compute_uv=False)[0] for _ in range(20)])
    u = rng.standard_normal((g.shape[1], 1))
    v = rng.standard_normal((1, g.shape[2]))
    plant = 3.0 * scale * (u / np.linalg.norm(u)) @ (v / np.linalg.norm(v))
    found = [sign_flip_test(null_folds(g, rng) + plant, seed=i).rank >= 1 for i in range(30)]
    assert np.mean(found) > 0.9
