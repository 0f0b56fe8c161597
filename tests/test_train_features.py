"""Trainer features on a tiny random-init BERT: resume from a mid-run checkpoint (same final numbers as an
uninterrupted run, refusal on other settings), gradient accumulation (gradients of the micro-batches' mean
loss), gradient checkpointing (same losses; refusal on a model without it), FLOPs per token and MFU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from intrinsic.arch import discover
from intrinsic.errors import ConfigError
from intrinsic.placement import fixed_plan
from intrinsic.testing import build_tiny_model
from intrinsic.training import TrainConfig, train
from intrinsic.training.rundir import CHECKPOINT_DIR
from test_train import FAST, toy_task


class Interrupt(Exception):
    """Stands for a killed process: raised from the progress callback after a given step."""


def plan_of(loaded, rank: int = 4):
    return fixed_plan(discover(loaded.model), "all", rank)


def run(out, config, *, stop_after: int | None = None, resume: bool = False):
    loaded = build_tiny_model("bert")

    def on_event(ev):
        if stop_after is not None and ev["event"] == "step" and ev["step"] == stop_after:
            raise Interrupt

    return train(loaded, toy_task(), plan_of(loaded), config, out, resume=resume, callback=on_event)


def test_resume_from_mid_run_checkpoint_gives_the_uninterrupted_numbers(tmp_path):
    config = TrainConfig(steps=10, lr=2e-2, eval_every=4, checkpoint_every=3, **FAST)
    whole = run(tmp_path / "whole", config)
    assert whole.resumed_from == 0 and not (tmp_path / "whole" / CHECKPOINT_DIR).exists()  # removed when complete
    with pytest.raises(Interrupt):
        run(tmp_path / "cut", config, stop_after=7)  # checkpoints at 3, 4 (eval) and 6
    assert (tmp_path / "cut" / CHECKPOINT_DIR).is_dir() and not (tmp_path / "cut" / "run.json").exists()
    resumed = run(tmp_path / "cut", config, resume=True)
    assert resumed.resumed_from == 6 and resumed.steps == 10
    assert resumed.loss_curve == whole.loss_curve  # bit for bit on the CPU: data position, RNG, optimizer
    assert resumed.eval_curve == whole.eval_curve and resumed.metrics == whole.metrics
    assert resumed.train_tokens == whole.train_tokens
    assert not (tmp_path / "cut" / CHECKPOINT_DIR).exists()


def test_resume_with_other_settings_is_refused_naming_them(tmp_path):
    config = TrainConfig(steps=6, lr=2e-2, checkpoint_every=2, **FAST)
    with pytest.raises(Interrupt):
        run(tmp_path, config, stop_after=3)
    with pytest.raises(ConfigError, match=r"lr 0.02 \(asked: 0.01\)"):
        run(tmp_path, dataclasses.replace(config, lr=1e-2), resume=True)
    with pytest.raises(ConfigError, match="grad_accum 1 .asked: 2."):
        run(tmp_path, dataclasses.replace(config, grad_accum=2), resume=True)
    assert run(tmp_path, config, resume=True).resumed_from == 2


def test_grad_accum_leaves_the_gradient_of_the_mean_micro_batch_loss():
    from intrinsic.training.loop import _setup
    from intrinsic.training.step import accumulate

    config = TrainConfig(steps=2, lr=2e-2, grad_accum=3, **{**FAST, "batch_size": 4})
    loaded = build_tiny_model("bert")
    r = _setup(loaded, toy_task(), plan_of(loaded), config, None, lambda ev: None)
    assert len(r.batches) == 6 and r.tokens_per_step[1] == sum(int(b["attention_mask"].sum()) for b in r.batches[3:])
    r.model.eval()  # no dropout: the same forward twice
    loss = accumulate(r, 2)  # step 2: micro-batches 3, 4, 5
    got = [p.grad.clone() for p in r.params]
    r.optimizer.zero_grad(set_to_none=True)
    losses = [r.model(**b).loss for b in r.batches[3:]]
    want = torch.autograd.grad(sum(losses) / 3, r.params)
    assert loss.item() == pytest.approx(sum(x.item() for x in losses) / 3, rel=1e-6)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


def test_grad_accum_run_counts_optimizer_steps_and_all_tokens():
    loaded = build_tiny_model("bert")
    r = train(loaded, toy_task(), plan_of(loaded), TrainConfig(steps=3, lr=2e-2, grad_accum=2, **FAST))
    assert r.steps == 3 and len(r.loss_curve) == 3
    from intrinsic.tasks import make_batches

    batches = make_batches(toy_task(), loaded.tokenizer, split="train", batch_size=8, max_length=16, seed=0,
                           shuffle=True, num_batches=6)
    assert r.train_tokens == sum(int(b["attention_mask"].sum()) for b in batches)


def test_gradient_checkpointing_same_losses_and_refusal():
    curves = []
    for gc in (False, True):
        loaded = build_tiny_model("llama")
        config = TrainConfig(steps=4, lr=2e-2, gradient_checkpointing=gc, **FAST)
        curves.append(train(loaded, toy_task(), plan_of(loaded), config).loss_curve)
        assert loaded.model.is_gradient_checkpointing is gc
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)
    loaded = build_tiny_model("llama")
    loaded.model.supports_gradient_checkpointing = False  # as an architecture without it declares
    with pytest.raises(ConfigError, match="does not support gradient checkpointing"):
        train(loaded, toy_task(), plan_of(loaded), TrainConfig(steps=1, gradient_checkpointing=True, **FAST))


def test_flops_per_token_and_mfu():
    from intrinsic.training.flops import flops_per_token

    loaded = build_tiny_model("bert")
    linears = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    n_all = sum(m.weight.numel() for m in linears)
    r = train(loaded, toy_task(), plan_of(loaded, rank=2), TrainConfig(steps=2, peak_tflops=0.5, **FAST))
    # frozen base linears: forward + input gradient (4n); LoRA matrices and the trained head copy: 6n
    head = sum(m.weight.numel() for n, m in loaded.model.named_modules()
               if isinstance(m, torch.nn.Linear) and "modules_to_save" in n)  # the trained copy of the classifier
    assert r.flops_per_token == 4 * n_all + 6 * (r.lora_params + head)
    assert r.peak_tflops == 0.5 and r.mfu == pytest.approx(r.flops_per_token * r.tokens_per_s / 0.5e12)
    full = build_tiny_model("bert")
    for p in full.model.parameters():
        p.requires_grad_(True)
    assert flops_per_token(full.model) == 6 * n_all
    assert TrainConfig().peak_tflops is None  # on the CPU no MFU unless a peak is given
    r2 = train(build_tiny_model("bert"), toy_task(), plan_of(loaded), TrainConfig(steps=1, **FAST))
    assert r2.mfu is None and r2.peak_tflops is None and r2.flops_per_token > 0


def test_bad_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="`grad_accum` must be a positive integer, got 0"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=-1)
    with pytest.raises(ConfigError, match="peak_tflops"):
        TrainConfig(peak_tflops=0)
