"""The trainer's fast path (training.fast) against the plain path on tiny random-init models: the chunked
linear + cross-entropy against transformers' own loss (values and gradients, per-module ranks, skipped
modules), PEFT without its input cast under autocast against PEFT with it, fused AdamW runs against the
default, and the adapter of a fast run reloading with PeftModel.from_pretrained at the planned ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intrinsic.arch import discover
from intrinsic.placement import actual_adapters, fixed_plan
from intrinsic.tasks import TaskData, make_batches
from intrinsic.testing import build_tiny_model
from intrinsic.training import TrainConfig, train
from intrinsic.training.fast import causal_lm_loss, linear_cross_entropy, no_input_cast
from intrinsic.training.model import build_model

FAST = dict(batch_size=4, max_length=24, eval_batch_size=16, max_eval_examples=16)


def lm_task() -> TaskData:
    rng = np.random.default_rng(0)
    texts = tuple("".join(rng.choice(list("abcdefgh "), size=int(rng.integers(6, 20)))) for _ in range(48))
    return TaskData("toy-lm", "lm", (), texts[:40], (), texts[40:], ())


def mixed_ranks_plan(model, skip: str = "v_proj"):
    """Per-module ranks (1..3 by layer and role) on every linear but `skip` (skipped modules)."""
    import dataclasses

    plan = fixed_plan(discover(model), "all", 2)
    entries = tuple(dataclasses.replace(e, rank=1 + (i % 3), alpha=2 * (1 + (i % 3)))
                    for i, e in enumerate(plan.entries) if skip not in e.name)
    return dataclasses.replace(plan, entries=entries, params=sum(e.rank * sum(e.shape) for e in entries))


def lm_batch(tokenizer):
    return make_batches(lm_task(), tokenizer, split="train", batch_size=5, max_length=24, seed=0, shuffle=True,
                        num_batches=1)[0]


def test_linear_cross_entropy_matches_plain_in_float64():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(37, 8, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(11, 8, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 11, (37,), generator=g)
    y[[3, 10, 36]] = -100
    loss = linear_cross_entropy(h, w, y, chunk=5)  # 8 chunks, the last one short
    ref = torch.nn.functional.cross_entropy(h @ w.T, y, ignore_index=-100)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    got, want = torch.autograd.grad(3 * loss, (h, w)), torch.autograd.grad(3 * ref, (h, w))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_chunked_loss_matches_model_loss_and_gradients_with_per_module_ranks(model_type):
    loaded = build_tiny_model(model_type, "lm")
    plan = mixed_ranks_plan(loaded.model)
    model = build_model(loaded, plan, seed=0)
    assert not any("v_proj" in n for n in actual_adapters(model))  # skipped modules stay unadapted
    for p in model.parameters():  # LoRA B starts at 0: give every adapter a non-zero product
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    batch = lm_batch(loaded.tokenizer)
    assert (batch["labels"] == -100).any()  # padding is ignored by both
    params = [p for p in model.parameters() if p.requires_grad]
    ref = model(**batch).loss
    ref_grads = torch.autograd.grad(ref, params)
    loss = causal_lm_loss(model, batch)
    grads = torch.autograd.grad(loss, params)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_no_input_cast_is_exact_under_autocast():
    loaded = build_tiny_model("llama", "lm")
    model = build_model(loaded, mixed_ranks_plan(loaded.model), seed=0)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    batch = lm_batch(loaded.tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        return loss.detach(), torch.autograd.grad(loss, params)

    ref, ref_grads = loss_and_grads()
    assert no_input_cast(model) == len(actual_adapters(model))
    loss, grads = loss_and_grads()
    assert torch.equal(loss, ref)  # bf16 -> float32 -> bf16 is a round trip
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b)


def test_fast_run_follows_default_run_and_adapter_reloads(tmp_path):
    from peft import PeftModel

    runs = {}
    for fast in (False, True):
        loaded = build_tiny_model("llama", "lm")
        plan = mixed_ranks_plan(loaded.model)
        config = TrainConfig(steps=6, lr=1e-2, fast=fast, **FAST)
        runs[fast] = train(loaded, lm_task(), plan, config, tmp_path / f"fast{fast}")
    a, b = np.array(runs[False].loss_curve), np.array(runs[True].loss_curve)
    assert np.allclose(a, b, rtol=2e-4) and a[0] == pytest.approx(b[0], rel=1e-5)
    assert runs[True].score == pytest.approx(runs[False].score, rel=1e-3)
    # the adapter of the fast run is standard PEFT with the planned ranks
    from intrinsic.placement import verify_peft_model
    from intrinsic.training.data import make_eval_batches
    from intrinsic.training.evaluation import evaluate
    from intrinsic.training.model import quiet_peft

    fresh = build_tiny_model("llama", "lm")
    with quiet_peft():
        reloaded = PeftModel.from_pretrained(fresh.model, runs[True].adapter_dir)
    verify_peft_model(reloaded, plan)  # ConfigError unless every module has exactly its planned rank
    assert sorted(r for r, _ in actual_adapters(reloaded).values()) == sorted(e.rank for e in plan.entries)
    metrics = evaluate(reloaded, make_eval_batches(lm_task(), fresh.tokenizer, config), task_kind="lm")
    assert metrics["loss"] == pytest.approx(runs[True].metrics["loss"], abs=1e-6)


def _lora_model(model_type: str, dtype=torch.float32):
    loaded = build_tiny_model(model_type, "lm")
    loaded.model.to(dtype)
    model = build_model(loaded, mixed_ranks_plan(loaded.model, skip="value" if model_type == "bert" else "v_proj"))
    model.eval()  # no dropout: the same function twice
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    return loaded, model


def _loss_grads(model, batch, autocast: bool = False):
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    return loss.detach(), torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


@pytest.mark.parametrize("model_type", ["llama", "bert"])
def test_fused_lora_equals_peft_in_float64(model_type):
    from intrinsic.training.fused_lora import fuse_lora

    loaded, model = _lora_model(model_type, torch.float64)
    batch = lm_batch(loaded.tokenizer)
    ref, ref_g = _loss_grads(model, batch)
    assert fuse_lora(model) == len(actual_adapters(model))  # every adapted module, none of the skipped ones
    loss, g = _loss_grads(model, batch)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(g, ref_g, rtol=1e-10, atol=1e-13)


def test_fused_lora_under_bf16_autocast_is_as_close_to_float32_as_peft():
    from intrinsic.training.fused_lora import fuse_lora

    loaded, model = _lora_model("llama")
    batch = lm_batch(loaded.tokenizer)
    _, exact = _loss_grads(model, batch)
    peft_loss, peft_g = _loss_grads(model, batch, autocast=True)
    fuse_lora(model)
    loss, g = _loss_grads(model, batch, autocast=True)
    err = ((g - exact).norm() / exact.norm()).item()
    peft_err = ((peft_g - exact).norm() / exact.norm()).item()
    assert err < 2 * peft_err + 1e-3 and err < 0.1, (err, peft_err)  # bf16 rounding, not a different function
    assert loss.item() == pytest.approx(peft_loss.item(), rel=1e-3)


def test_chunked_loss_under_bf16_autocast_is_as_close_to_float32_as_the_model_loss():
    loaded, model = _lora_model("llama")
    batch = lm_batch(loaded.tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    exact_loss, exact = _loss_grads(model, batch)
    ref_loss, ref = _loss_grads(model, batch, autocast=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = causal_lm_loss(model, batch)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, params)])
    err, ref_err = ((g - exact).norm() / exact.norm()).item(), ((ref - exact).norm() / exact.norm()).item()
    assert err < 2 * ref_err + 1e-3 and err < 0.1, (err, ref_err)
    assert abs(loss.item() - exact_loss.item()) < 2 * abs(ref_loss.item() - exact_loss.item()) + 1e-3


def test_fast_full_fine_tuning_follows_the_default_with_a_trained_head():
    curves = []
    for fast in (False, True):
        loaded = build_tiny_model("llama", "lm")
        r = train(loaded, lm_task(), "full", TrainConfig(steps=4, lr=1e-3, fast=fast, **FAST))
        curves.append(r.loss_curve)
    assert np.allclose(curves[0], curves[1], rtol=2e-4)  # the head's gradient comes from the chunked loss


def test_fast_reads_each_loss_one_step_late_and_still_stops_at_the_non_finite_step(tmp_path):
    """--fast reads step k's loss during step k+1 (no host-device sync between steps): the loss curve is the
    default path's, and an exploding lr is stopped naming the same step, with the same finite curve before it."""
    from intrinsic.errors import NonFiniteError
    from intrinsic.training import RunResult

    out = {}
    for fast in (False, True):
        loaded = build_tiny_model("llama", "lm")
        config = TrainConfig(steps=8, lr=1e30, fast=fast, **FAST)
        with pytest.raises(NonFiniteError, match=r"at step (\d+)") as err:
            train(loaded, lm_task(), fixed_plan(discover(loaded.model), "all", 2), config, tmp_path / str(fast))
        out[fast] = (str(err.value).split(" (lr")[0], RunResult.load(tmp_path / str(fast)))
    (msg_a, a), (msg_b, b) = out[False], out[True]
    assert msg_a == msg_b and a.steps == b.steps and a.loss_curve == b.loss_curve and len(a.loss_curve) == a.steps
    assert all(np.isfinite(a.loss_curve))
