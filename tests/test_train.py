"""Trainer tests on a tiny random-init BERT and a toy task a tiny model learns in a few steps.

Covers: the loss goes down; PEFT ranks equal the plan (mixed ranks via rank_pattern); the saved
adapter reloads with PeftModel.from_pretrained and reproduces the score exactly; run.json
round-trips; CPU determinism; full fine-tuning; NaN loss -> NonFiniteError naming the step;
out-dir refusal / overwrite / resume; causal LM; memory, Pareto and metric helpers.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from intrinsic.arch import discover
from intrinsic.errors import ConfigError, NonFiniteError
from intrinsic.testing import build_tiny_model
from intrinsic.placement import actual_adapters, auto_plan, fixed_plan
from intrinsic.results import to_dict
from intrinsic.tasks import TaskData, make_batches
from intrinsic.training import RunResult, TrainConfig, train
from intrinsic.training.data import make_eval_batches
from intrinsic.training.evaluation import evaluate, macro_f1, majority_baseline

FAST = dict(batch_size=8, max_length=16, eval_batch_size=32)




def toy_task(n_train: int = 160, n_test: int = 48, seed: int = 0) -> TaskData:
    """Label 1: letters from 'abcde'; label 0: from 'vwxyz' (learnable by a random tiny model)."""
    rng = random.Random(seed)

    def split(n):
        texts, labels = [], []
        for _ in range(n):
            y = rng.randint(0, 1)
            texts.append("".join(rng.choice("abcde" if y else "vwxyz") for _ in range(8)))
            labels.append(y)
        return tuple(texts), tuple(labels)

    tr, trl = split(n_train)
    te, tel = split(n_test)
    return TaskData("toy", "classification", ("neg", "pos"), tr, trl, te, tel)


def mixed_plan(model):
    """An auto plan with different ranks per module (exercises PEFT's rank_pattern)."""
    refs = discover(model)
    gains = {r.name: np.array([4.0, 2.0, 1.0, 0.5]) * (1 + i % 3) for i, r in enumerate(refs)}
    return auto_plan(refs, gains, budget=sum(r.shape[0] + r.shape[1] for r in refs) * 2, max_rank=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    loaded = build_tiny_model("bert")
    plan = mixed_plan(loaded.model)
    config = TrainConfig(steps=30, lr=2e-2, eval_every=15, **FAST)
    t0 = time.perf_counter()
    result = train(loaded, toy_task(), plan, config, out)
    return loaded, plan, config, result, out, time.perf_counter() - t0


def test_tiny_run_learns_and_records_metrics(trained):
    loaded, plan, config, r, out, wall = trained
    assert r.status == "complete" and r.steps == 30 and len(r.loss_curve) == 30
    assert np.mean(r.loss_curve[-5:]) < np.mean(r.loss_curve[:5]) - 0.1
    assert r.score > 0.8 > r.baseline_score
    assert [e["step"] for e in r.eval_curve] == [15, 30]
    assert r.lora_params == plan.params and r.trainable_params == r.lora_params + r.head_params
    assert r.head_params > 0 and 0 < r.trainable_pct < 100
    assert r.adapter_bytes > 0 and r.tokens_per_s > 0
    # the clocks: steps and evaluations are timed apart, both inside the call, and the rates derive from them
    assert 0 < r.train_time_s and 0 < r.eval_time_s and r.train_time_s + r.eval_time_s < wall
    assert r.time_per_step_s == pytest.approx(r.train_time_s / 30, rel=1e-12)
    assert r.tokens_per_s == pytest.approx(r.train_tokens / r.train_time_s, rel=1e-12)
    batches = make_batches(toy_task(), loaded.tokenizer, split="train", batch_size=8, max_length=16, seed=0,
                           shuffle=True, num_batches=30)
    assert r.train_tokens == sum(int(b["attention_mask"].sum()) for b in batches)
    assert r.memory_kind == "rss"  # peak_memory_mb is checked against a planted allocation below
    assert r.config["lr"] == 2e-2 and r.env["torch"]


def test_peft_ranks_equal_plan(trained):
    loaded, plan, *_ = trained
    actual = {name.removeprefix("base_model.model."): rank for name, (rank, _) in actual_adapters(loaded.model).items()}
    assert actual == plan.ranks
    assert len(set(plan.ranks.values())) > 1  # the plan really mixes ranks


def test_adapter_reloads_and_reproduces_score(trained):
    from peft import PeftModel

    _, _, config, r, out, _ = trained
    base = build_tiny_model("bert")  # same seed: same backbone; the trained head comes from the adapter
    from intrinsic.training.model import quiet_peft

    with quiet_peft():
        model = PeftModel.from_pretrained(base.model, str(out / "adapter"))
    metrics = evaluate(model, make_eval_batches(toy_task(), base.tokenizer, config), task_kind="classification")
    assert metrics["accuracy"] == r.metrics["accuracy"]
    assert metrics["loss"] == pytest.approx(r.metrics["loss"], abs=1e-6)


def test_run_json_round_trips(trained):
    *_, r, out, _ = trained
    loaded = RunResult.load(out)
    assert to_dict(loaded) == to_dict(r)
    assert RunResult.load(out / "run.json").plan["strategy"] == "auto"


def test_cpu_training_is_deterministic():
    task = toy_task(64, 16)

    def curve(seed):
        loaded = build_tiny_model("bert")
        plan = fixed_plan(discover(loaded.model), "attention", 2)
        return train(loaded, task, plan, TrainConfig(steps=6, lr=1e-2, seed=seed, **FAST)).loss_curve

    a, b, c = curve(0), curve(0), curve(1)
    assert a == b
    assert a != c


def test_full_fine_tuning(tmp_path):
    loaded = build_tiny_model("bert")
    total = sum(p.numel() for p in loaded.model.parameters())
    r = train(loaded, toy_task(), "full", TrainConfig(steps=20, lr=3e-3, **FAST), tmp_path)
    assert r.placement == "full" and r.plan is None
    assert r.trainable_params == total and r.lora_params == 0
    assert r.adapter_bytes == 0 and r.adapter_dir is None and not (tmp_path / "adapter").exists()
    assert np.mean(r.loss_curve[-5:]) < np.mean(r.loss_curve[:5])


def test_non_finite_loss_names_the_step_and_keeps_the_checkpoint(tmp_path):
    import torch

    loaded = build_tiny_model("bert")
    plan = fixed_plan(discover(loaded.model), "all", 2)

    def poison(event):  # after step 3, NaN in every lora_B: step 4's loss is NaN
        if event["event"] == "step" and event["step"] == 3:
            with torch.no_grad():
                for name, p in loaded.model.named_parameters():
                    if "lora_B" in name:
                        p.fill_(float("nan"))

    config = TrainConfig(steps=8, lr=1e-2, eval_every=2, **FAST)
    with pytest.raises(NonFiniteError, match=r"at step 4 .*last good checkpoint \(step 2\)"):
        train(loaded, toy_task(64, 16), plan, config, tmp_path, callback=poison)
    failed = RunResult.load(tmp_path)
    assert failed.status == "failed" and "at step 4" in failed.error and failed.steps == 3
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_exploding_lr_stops_with_non_finite_error():
    loaded = build_tiny_model("bert")
    plan = fixed_plan(discover(loaded.model), "all", 2)
    with pytest.raises(NonFiniteError, match=r"at step \d+ \(lr 1e\+30\).*smaller --lr"):
        train(loaded, toy_task(32, 8), plan, TrainConfig(steps=8, lr=1e30, **FAST))


def test_out_of_memory_names_the_batch_size(tmp_path):
    import torch

    from intrinsic.training import TrainingOOMError

    loaded = build_tiny_model("bert")
    plan = fixed_plan(discover(loaded.model), "all", 2)

    def oom(event):
        if event["event"] == "step" and event["step"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(TrainingOOMError, match=r"batch size 8 .*--batch-size 4"):
        train(loaded, toy_task(32, 8), plan, TrainConfig(steps=4, **FAST), tmp_path, callback=oom)
    assert RunResult.load(tmp_path).status == "failed"


def test_existing_out_dir_is_refused_unless_overwrite_or_resume(tmp_path):
    task = toy_task(32, 8)
    config = TrainConfig(steps=2, **FAST)

    def run(**kw):
        loaded = build_tiny_model("bert")
        return train(loaded, task, fixed_plan(discover(loaded.model), "q,v", 2), config, tmp_path, **kw)

    first = run()
    with pytest.raises(ConfigError, match="--overwrite"):
        run()
    assert run(resume=True).created == first.created  # complete run returned, not retrained
    with pytest.raises(ConfigError, match=r"holds a run with other settings: steps 2 \(asked: 3\)"):
        train(build_tiny_model("bert"), task, fixed_plan(discover(build_tiny_model("bert").model), "q,v", 2),
              TrainConfig(steps=3, **FAST), tmp_path, resume=True)
    with pytest.raises(ConfigError, match=r"plan: 4 module\(s\) differ, e.g. .*: rank 2 \(asked: 3\)"):
        loaded = build_tiny_model("bert")
        train(loaded, task, fixed_plan(discover(loaded.model), "q,v", 3), config, tmp_path, resume=True)
    assert run(overwrite=True).status == "complete"


def test_causal_lm_perplexity():
    loaded = build_tiny_model("llama", task_kind="lm")
    texts = tuple("the cat sat on the mat. " * 3 for _ in range(24))
    task = TaskData("toy:lm", "lm", (), texts, (), texts[:8], ())
    plan = fixed_plan(discover(loaded.model), "all", 2)
    r = train(loaded, task, plan, TrainConfig(steps=8, lr=1e-2, batch_size=4, max_length=32))
    assert r.baseline_kind == "untrained" and r.untrained_score is not None
    assert r.score == -r.metrics["perplexity"] and r.score > r.untrained_score
    assert r.head_params == 0


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match=r"`steps` must be a positive integer, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    assert TrainConfig().effective_lr(full=True) < TrainConfig().effective_lr(full=False)


def test_metric_helpers():
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx((2 / 3 + 0.8) / 2)
    task = TaskData("t", "classification", ("a", "b"), ("x",) * 3, (1, 1, 0), ("y",) * 4, (1, 0, 0, 0))
    assert majority_baseline(task) == 0.25


def test_pareto_front():
    from intrinsic.pareto import pareto_front

    pts = [(0.80, 100.0), (0.70, 50.0), (0.75, 200.0), (0.80, 100.0), (0.60, 50.0), (float("nan"), 1.0)]
    assert pareto_front(pts) == [0, 1, 3]
    assert pareto_front([(1.0, 1.0), (2.0, 2.0)], maximize=(True, True)) == [1]


def test_peak_memory_sees_an_allocation():
    from intrinsic.training.memory import PeakMemory

    with PeakMemory("cpu") as pm:
        block = np.ones(40 * 2**20 // 8)  # 40 MiB, touched
        block += 1
        import time

        time.sleep(0.05)
        del block
        with pm.paused():
            np.ones(200 * 2**20 // 8).sum()  # left out of the peak
    assert pm.kind == "rss" and 30 < pm.peak_mb < 150


def test_trainer_follows_the_schedule():
    """The rate every optimizer step really ran at is lr_at(step), warmup and decay included."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from intrinsic.training import lr_at

    applied, reported = [], []
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: applied.append(opt.param_groups[0]["lr"]))
    try:
        loaded = build_tiny_model("bert")
        plan = fixed_plan(discover(loaded.model), "q,v", 2)
        config = TrainConfig(steps=10, lr=1e-2, warmup_ratio=0.3, **FAST)
        train(loaded, toy_task(32, 8), plan, config,
              callback=lambda e: reported.append(e["lr"]) if e["event"] == "step" else None)
    finally:
        hook.remove()
    expected = [lr_at(s, peak=1e-2, warmup_steps=3, total_steps=10) for s in range(11)]
    assert applied == expected[:10]  # step s (0-based) runs at lr_at(s)
    assert reported == expected[1:]  # the step event reports the rate of the next step
    assert applied[3] == 1e-2 and applied[0] < applied[1] < applied[2] < applied[3] > applied[9] > 0


def test_peak_memory_of_a_run_counts_training_not_evaluation():
    """A 48 MiB block held during a training step shows in peak_memory_mb; 200 MiB during evaluation does not."""
    loaded = build_tiny_model("bert")
    plan = fixed_plan(discover(loaded.model), "q,v", 2)

    def hold(mib):
        block = np.ones(mib * 2**20 // 8)
        block += 1  # touched: resident
        time.sleep(0.05)  # several samples of the 10 ms sampler

    def planted(event):
        if event["event"] == "step" and event["step"] == 2:
            hold(48)
        elif event["event"] == "eval":
            hold(200)

    r = train(loaded, toy_task(32, 8), plan, TrainConfig(steps=4, eval_every=2, **FAST), callback=planted)
    assert r.memory_kind == "rss" and 40 < r.peak_memory_mb < 150


def test_memory_estimate_refuses_before_adapters_are_built(monkeypatch):
    import intrinsic.training.memory as memory
    from intrinsic.training import TrainingOOMError

    loaded = build_tiny_model("bert")
    plan = fixed_plan(discover(loaded.model), "all", 4)
    config = TrainConfig(steps=1, **FAST)
    parts = memory.estimate_run_bytes(loaded.model, plan, config)
    assert parts["adapters"] == 4 * plan.params and parts["gradients and optimizer state"] == 12 * plan.params
    assert parts["activations"] == 8 * 16 * 32 * 2 * memory.ACTIVATION_FLOATS * 4  # batch, length, hidden, layers
    monkeypatch.setattr(memory, "available_bytes", lambda device: sum(parts.values()) - 1)
    with pytest.raises(TrainingOOMError, match="--batch-size"):
        train(loaded, toy_task(), plan, config)
    assert not actual_adapters(loaded.model)  # refused before PEFT touched the model


# ----------------------------------------------------------------------------- the Python API (issue 15.14)


def test_second_train_on_the_same_loaded_model_is_refused_clearly():
    loaded = build_tiny_model("bert")
    plan = fixed_plan(discover(loaded.model), "q,v", 2)
    config = TrainConfig(steps=1, **FAST)
    train(loaded, toy_task(16, 8), plan, config)
    with pytest.raises(ConfigError, match="already carries LoRA adapters.*copy_per_use"):
        train(loaded, toy_task(16, 8), plan, config)


def test_building_the_peft_model_leaks_no_future_warning():
    import warnings

    from intrinsic.training.model import build_model

    loaded = build_tiny_model("bert")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        build_model(loaded, fixed_plan(discover(loaded.model), "q,v", 2))
