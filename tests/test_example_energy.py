"""Per-example gradient energy (ghost norms from hooks) against explicit per-example gradients (autograd per example)."""

from __future__ import annotations

import random

import pytest
import torch

from intrinsic.arch import discover, weight_of
from intrinsic.probes import probe
from intrinsic.probes.base import row_views
from intrinsic.probes.example_energy import ExampleEnergy, _energies
from intrinsic.probes.gradient import only_probed_weights_trainable
from intrinsic.tasks import TaskData, make_batches
from intrinsic.testing import build_tiny_model


def _texts(n: int, seed: int = 0) -> tuple[str, ...]:
    rng = random.Random(seed)  # lengths 4-20 characters: every batch has padding
    return tuple("".join(rng.choice("abcdefghij ") for _ in range(rng.randrange(4, 21))) for _ in range(n))


def _data(kind: str) -> TaskData:
    texts = _texts(32)
    if kind == "lm":
        return TaskData("t", "lm", (), texts, (), (), ())
    return TaskData("t", "classification", ("no", "yes"), texts, tuple(i % 2 for i in range(32)), (), ())


def _per_example_losses(model, batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(l_i (B,), the model's own batch loss): l_i is example i's share of the loss, so sum_i l_i = loss."""
    out = model(**batch)
    if kind == "classification":
        ce = torch.nn.functional.cross_entropy(out.logits, batch["labels"], reduction="none")  # (B,)
        return ce / len(ce), out.loss
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]  # (B, T-1, V), (B, T-1): HF's causal shift
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none", ignore_index=-100)
    return ce.view(labels.shape).sum(1) / (labels != -100).sum(), out.loss


@pytest.mark.parametrize("arch,kind", [("bert", "classification"), ("llama", "lm"), ("gpt2", "lm")])
def test_ghost_norms_equal_explicit_per_example_gradients(arch, kind):
    tiny = build_tiny_model(arch, task_kind=kind)
    model, refs = tiny.model, discover(tiny.model)
    batch = make_batches(_data(kind), tiny.tokenizer, batch_size=6, num_batches=1)[0]
    assert (batch["attention_mask"] == 0).any()  # padding is exercised
    with torch.enable_grad(), only_probed_weights_trainable(model, refs):
        with ExampleEnergy(model, refs) as energy:  # the hooks, on one batch
            energy.mask = batch["attention_mask"]
            model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
        got = energy.totals()
        losses, loss = _per_example_losses(model, batch, kind)
        torch.testing.assert_close(losses.sum(), loss)  # the reference splits the model's own loss
        weights = [weight_of(model, r) for r in refs]  # (out, in) views (Conv1D: transposed)
        want = {key: 0.0 for key, _, _ in row_views(refs)}
        for li in losses:  # explicit: one autograd pass per example
            grads = torch.autograd.grad(li, [w._base if w._base is not None else w for w in weights], retain_graph=True)
            for ref, w, g in zip(refs, weights, grads):
                g = g.T if ref.transposed else g  # (out, in)
                for key, _, sel in row_views([ref]):
                    want[key] += float(g[sel].square().sum())
    assert set(got) == set(want)
    assert any(key.block for key in want) == (arch == "gpt2")  # fused blocks covered
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-12), key


def test_both_ways_of_computing_the_energy_agree():
    """<X X^T, D D^T> (ghost norm, T^2 <= in*out) and ||D^T X||^2 (explicit, otherwise) against a brute loop."""
    g = torch.Generator().manual_seed(0)
    for T, n_in, n_out in ((3, 8, 6), (40, 4, 5)):  # the first takes the ghost branch, the second the explicit one
        X, D = torch.randn(5, T, n_in, generator=g), torch.randn(5, T, n_out, generator=g)
        brute = sum(float((D[b].T @ X[b]).square().sum()) for b in range(5))
        assert float(_energies(X, D)) == pytest.approx(brute, rel=1e-5)


def test_probe_reports_example_energy_only_when_asked(tiny_bert):
    data = _data("classification")
    settings = dict(batches=2, batch_size=8, max_length=24, update_steps=None)
    off = probe(tiny_bert, data, **settings)
    on = probe(tiny_bert, data, **settings, example_energy=True)
    assert "example_energy" not in off.to_json()["modules"][0]
    assert "example_energy_share" not in off.summary["by_kind"]["ffn"]
    assert [m.grad_sv for m in off.modules] == [m.grad_sv for m in on.modules]  # additive: nothing else changes
    top = on.top_level()
    assert sum(m.example_energy_share for m in top) == pytest.approx(1.0)
    assert all(m.example_energy > 0 for m in top)
    kinds = on.summary["by_kind"]
    assert sum(k["example_energy_share"] for k in kinds.values()) == pytest.approx(1.0)
    assert on.settings["example_energy"] is True and "example_energy" not in off.settings
