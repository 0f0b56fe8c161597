"""The validation carve (`training.data.validation_carve`, `TrainConfig.eval_split`): disjoint from the test
split and from the examples trained on, stratified, the same for every seed, and the default
("test") leaves the run's data untouched."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from intrinsic.errors import ConfigError
from intrinsic.tasks import load_task
from intrinsic.training import TrainConfig
from intrinsic.training.data import subset_task, validation_carve


def test_carve_is_stratified_fixed_and_keeps_copies_together():
    texts = [f"t{i}" for i in range(200)] + ["t3", "t3"]  # copies of t3 must stay on one side
    labels = [i % 4 == 0 for i in range(200)] + [False, False]
    tr, va = validation_carve(texts, labels, 0.1, None)
    assert set(tr) | set(va) == set(range(len(texts))) and not set(tr) & set(va)
    vt = {texts[i] for i in va}
    assert not vt & {texts[i] for i in tr}  # no text on both sides
    counts = Counter(labels[i] for i in va if texts[i] != "t3" or i == 3)
    assert counts == Counter({False: 15, True: 5})  # 10% of 150 and of 50: stratified
    assert validation_carve(texts, labels, 0.1, None) == (tr, va)  # fixed: no seed argument at all
    tr2, va2 = validation_carve(texts, labels, 0.1, 8)  # the cap wins: 4% of each class
    assert len({texts[i] for i in va2}) == 8


def test_validation_run_never_sees_test_and_trains_without_the_carve(tiny_csv):
    task = load_task(str(tiny_csv))
    test_texts = set(task.test_texts)
    carves = []
    for seed in (0, 1, 2):
        cfg = TrainConfig(seed=seed, eval_split="validation", validation_fraction=0.2, max_eval_examples=None)
        data = subset_task(task, cfg)
        val, trained = set(data.test_texts), set(data.train_texts)
        assert val and not val & test_texts and not val & trained
        assert val <= set(task.train_texts)
        per_class = Counter(task.train_labels)
        assert sorted(Counter(data.test_labels).values()) == sorted(round(0.2 * n) for n in per_class.values())
        carves.append(data.test_texts)
    assert carves[0] == carves[1] == carves[2]  # the same carve, in the same order, for every seed
    capped = [subset_task(task, TrainConfig(seed=s, eval_split="validation", validation_fraction=0.2,
                                            max_eval_examples=10)).test_texts for s in (0, 1)]
    assert capped[0] == capped[1] and len(capped[0]) == 10  # the eval cap is seed-independent too


def test_default_test_split_is_unchanged(tiny_csv):
    task = load_task(str(tiny_csv))
    cfg = TrainConfig(seed=1, max_eval_examples=10, max_examples=50)
    data = subset_task(task, cfg)
    same = subset_task(task, dataclasses.replace(cfg, validation_fraction=0.5))
    assert data == same and set(data.test_texts) <= set(task.test_texts) and len(data.train_texts) == 50


@pytest.mark.parametrize("kw", [{"eval_split": "valid"}, {"validation_fraction": 1.0}, {"max_validation_examples": 0}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        TrainConfig(**kw)


def test_validation_carve_of_a_completion_task_keeps_each_prompt_with_its_completion():
    from intrinsic.tasks import TaskData
    from intrinsic.training import TrainConfig
    from intrinsic.training.data import subset_task

    prompts = tuple(f"what is {i} + {i}?" for i in range(60))
    answers = {p: str(2 * i) for i, p in enumerate(prompts)}
    task = TaskData(name="add", kind="completion", labels=(), train_texts=prompts, train_labels=(),
                    test_texts=("what is 100 + 100?",), test_labels=(), train_completions=tuple(answers.values()),
                    test_completions=("200",))
    cfg = TrainConfig(eval_split="validation", max_eval_examples=4, max_examples=20)
    run = subset_task(task, cfg)
    assert len(run.test_texts) == len(run.test_completions) == 4
    assert len(run.train_texts) == len(run.train_completions) == 20
    for p, c in zip(run.test_texts + run.train_texts, run.test_completions + run.train_completions):
        assert answers[p] == c  # never a prompt paired with another's answer
    assert not set(run.test_texts) & set(run.train_texts) and "what is 100 + 100?" not in run.test_texts
