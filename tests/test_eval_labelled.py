"""Held-out log-loss of causal LMs from the labelled positions only (training.evaluation.labelled_nll): equal to
the sum over the model's own B x T x V logits on tiny random-init models (LoRA, padding and completion prompts
ignored), the head's module never run on the whole batch, the fallback for heads it does not cover, and
`evaluate` giving the same loss either way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from intrinsic.placement import fixed_plan
from intrinsic.arch import discover
from intrinsic.tasks import make_batches
from intrinsic.testing import build_tiny_model
from intrinsic.training.evaluation import evaluate, labelled_nll
from intrinsic.training.model import build_model

from test_train_fast import lm_task


def full_logits_nll(model, batch):
    """The reference: the model's own logits, shifted, every labelled position."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits.float()
    y = batch["labels"][:, 1:].reshape(-1)
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), y, ignore_index=-100, reduction="sum")
    return nll.double(), (y != -100).sum()


def adapted(model_type: str):
    loaded = build_tiny_model(model_type, "lm")
    model = build_model(loaded, fixed_plan(discover(loaded.model), "all", 2), seed=0)
    for p in model.parameters():  # LoRA B starts at 0: give every adapter a non-zero product
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    return loaded, model.eval()


def batches(tokenizer):
    return make_batches(lm_task(), tokenizer, split="test", batch_size=3, max_length=24, seed=0, shuffle=False)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_labelled_nll_equals_the_full_logits_without_running_the_head(model_type):
    loaded, model = adapted(model_type)
    batch = batches(loaded.tokenizer)[0]
    labels = batch["labels"].clone()
    labels[:, :5] = -100  # a completion's prompt: not scored
    assert (batch["labels"] == -100).any()  # and padding
    head_calls = []
    hook = model.get_base_model().get_output_embeddings().register_forward_hook(lambda *a: head_calls.append(1))
    with torch.no_grad():
        got = labelled_nll(model, {k: v for k, v in batch.items() if k != "labels"}, labels)
        hook.remove()
        want = full_logits_nll(model, dict(batch, labels=labels))
    assert head_calls == []  # the B x T x V logits were never formed
    assert int(got[1]) == int(want[1]) > 0
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5)


def test_labelled_nll_chunks_and_reads_the_model_through_an_accelerator(monkeypatch):
    import intrinsic.training.fast as fast

    loaded, model = adapted("llama")
    batch = batches(loaded.tokenizer)[0]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        want = full_logits_nll(model, batch)
        monkeypatch.setattr(fast, "CHUNK_ELEMENTS", 7 * len(loaded.tokenizer))  # 7 rows per chunk, the last short

        class Wrapped(torch.nn.Module):  # as DDP: no get_base_model, the model behind unwrap_model
            def __init__(self, inner):
                super().__init__()
                self.module = inner

        class Acc:
            def unwrap_model(self, m):
                return m.module

        got = labelled_nll(Wrapped(model), inputs, batch["labels"], Acc())
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5)


def test_heads_it_does_not_cover_fall_back_to_the_model_logits():
    loaded, model = adapted("gpt2")  # not in fast.LCE_TYPES
    batch = batches(loaded.tokenizer)[0]
    assert labelled_nll(model, {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]) is None
    got = evaluate(model, batches(loaded.tokenizer), task_kind="lm")
    with torch.no_grad():
        sums = [full_logits_nll(model, b) for b in batches(loaded.tokenizer)]
    assert got["loss"] == pytest.approx(float(sum(s[0] for s in sums) / sum(s[1] for s in sums)), rel=1e-6)


def test_evaluate_gives_the_loss_of_the_full_logits():
    loaded, model = adapted("llama")
    got = evaluate(model, batches(loaded.tokenizer), task_kind="lm")
    with torch.no_grad():
        sums = [full_logits_nll(model, b) for b in batches(loaded.tokenizer)]
    loss = float(sum(s[0] for s in sums) / sum(s[1] for s in sums))
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["perplexity"] == pytest.approx(torch.tensor(loss).exp().item(), rel=1e-5)
