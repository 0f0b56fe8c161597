"""The trainer's pure parts: the learning-rate schedule against hand-computed values, the run's
subsample against the task loader's, the documented config/result schema, and a stdlib-only import."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from intrinsic.fields import field_help
from intrinsic.tasks import load_task
from intrinsic.training import RunResult, TrainConfig, lr_at
from intrinsic.training.data import subset_task
from intrinsic.training.schedule import lr_multiplier


def test_lr_at_warmup_peak_and_linear_decay_by_hand():
    at = [lr_at(s, peak=0.1, warmup_steps=2, total_steps=10) for s in range(12)]
    # warmup ramp (step + 1) / (warmup + 1): 1/3, 2/3 of the peak
    assert at[0] == pytest.approx(0.1 / 3, rel=1e-15) and at[1] == pytest.approx(0.2 / 3, rel=1e-15)
    assert at[2] == 0.1  # the peak at the end of warmup
    # linear decay (total - step) / (total - warmup): 7/8, 6/8, ..., 1/8 at the last step (9), 0 after it
    for s in range(3, 10):
        assert at[s] == pytest.approx(0.1 * (10 - s) / 8, rel=1e-15)
    assert at[9] == pytest.approx(0.0125, rel=1e-15)
    assert at[10] == 0.0 and at[11] == 0.0  # never negative
    assert all(a < b for a, b in zip(at[:3], at[1:3], strict=False))  # increasing in warmup
    assert all(a > b for a, b in zip(at[2:10], at[3:11], strict=True))  # decreasing afterwards


def test_lr_at_without_warmup_starts_at_the_peak():
    assert lr_at(0, peak=1e-3, warmup_steps=0, total_steps=4) == 1e-3
    assert [lr_multiplier(s, warmup_steps=0, total_steps=4) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert TrainConfig().warmup_steps() == 12  # 6% of 200 steps


def test_subset_task_draws_the_loaders_subsample(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\n" + "".join(f"example number {i},{'pos' if i % 3 else 'neg'}\n" for i in range(90)))
    full = load_task(str(csv), seed=3)
    capped = load_task(str(csv), seed=3, max_examples=17, max_eval_examples=5)
    config = TrainConfig(seed=3, max_examples=17, max_eval_examples=5)
    sub = subset_task(full, config)
    assert len(sub.train_texts) == 17 and len(sub.test_texts) == 5
    assert sub.train_texts != full.train_texts[:17]  # a real random subsample, not the head
    assert sub == capped
    assert subset_task(capped, config) == capped  # a pre-capped task is unchanged
    other = subset_task(full, dataclasses.replace(config, seed=4))
    assert other.train_texts != sub.train_texts  # the seed drives it


def test_config_and_result_fields_are_documented():
    assert set(field_help(TrainConfig)) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(field_help(RunResult)) == {f.name for f in dataclasses.fields(RunResult)}
    assert "1e-4 for full fine-tuning" in field_help(TrainConfig)["lr"]


def test_training_imports_no_torch():
    code = "import sys, intrinsic.training; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
