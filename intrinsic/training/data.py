"""The data a run sees: the task capped to the run's example limits (the same subsample as
`tasks.load_task`), the test split sharded across processes, and the held-out batches.

With `TrainConfig.eval_split = "validation"` the run never sees the test split: `validation_carve`
holds out a fixed, stratified share of the train split (seeded by `VALIDATION_SEED`, never by the
run's seed, so every seed and every learning rate is scored on the same examples), the run trains
on the rest and is scored on the carve. Copies of one text stay on one side, and the carve comes
from the train split only, so it is disjoint from the test split and from what is trained on.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .config import TrainConfig

VALIDATION_SEED = 20261128  # seeds the validation carve of every task; changing it changes every validation set
VALIDATION_STREAM = 2  # random stream of the validation subsample (max_eval_examples) under VALIDATION_SEED


def validation_carve(texts, labels, fraction: float, cap: int | None) -> tuple[list[int], list[int]]:
    """(train indices, validation indices) of a train split: per class (all one class when unlabeled)
    round(n_class * f) distinct texts held out, f = min(fraction, cap / distinct texts); copies of a text
    follow its first occurrence. Fixed seed, input order kept in both lists; at least one text is held
    out when the split has two or more distinct texts."""
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    n = len(first)
    f = fraction if cap is None else min(fraction, cap / max(n, 1))
    groups: dict[str, list[int]] = {}
    for i in sorted(first.values()):
        groups.setdefault(str(labels[i]) if labels else "", []).append(i)
    rng = np.random.default_rng(VALIDATION_SEED)
    held: set[str] = set()
    for key in sorted(groups):
        idx = rng.permutation(groups[key])
        held.update(texts[i] for i in idx[: round(len(idx) * f)])
    if not held and n >= 2 and f > 0:
        held.add(texts[sorted(first.values())[int(rng.integers(n))]])
    val = [i for i, t in enumerate(texts) if t in held]
    train = [i for i, t in enumerate(texts) if t not in held]
    return train, val


def split_for_eval(task, config: TrainConfig):
    """The task as the run sees it before capping: unchanged for eval_split "test"; for "validation",
    train = train minus the carve and test = the carve (capped at max_eval_examples with the fixed
    validation seed, so every run seed is scored on the same validation examples)."""
    if config.eval_split == "test":
        return task
    from ..tasks import subsample

    tr, va = validation_carve(task.train_texts, task.train_labels, config.validation_fraction,
                              config.max_validation_examples)
    pick = lambda seq, idx: tuple(seq[i] for i in idx) if seq else ()  # noqa: E731
    val_t, val_l = subsample(pick(task.train_texts, va), pick(task.train_labels, va), config.max_eval_examples,
                             seed=VALIDATION_SEED, stream=VALIDATION_STREAM)
    completions = getattr(task, "train_completions", ())
    extra = {}
    if completions:  # completion tasks have no labels: the same draw as the prompts'
        extra = dict(train_completions=pick(completions, tr), test_completions=subsample(
            pick(completions, va), (), config.max_eval_examples, seed=VALIDATION_SEED, stream=VALIDATION_STREAM)[0])
    return dataclasses.replace(task, train_texts=pick(task.train_texts, tr), train_labels=pick(task.train_labels, tr),
                               test_texts=val_t, test_labels=val_l, **extra)


def subset_task(task, config: TrainConfig):
    """The task with its splits capped at config.max_examples / max_eval_examples.

    Uses `tasks.subsample`, the subsampler of `tasks.load_task(seed=config.seed, max_examples=...)`,
    so capping here or at loading gives the same examples (and a pre-capped task is unchanged).
    With eval_split "validation" the held-out split is the validation carve (`split_for_eval`).
    """
    from ..tasks.registry import subsample_data

    if config.eval_split != "test":  # the held-out split is the validation carve, already capped
        return subsample_data(split_for_eval(task, config), config.max_examples, None, seed=config.seed)
    return subsample_data(task, config.max_examples, config.max_eval_examples, seed=config.seed)


def shard_task(task, rank: int, world: int):
    """Every world-th test example starting at rank (evaluation sharding across processes)."""
    if world == 1:
        return task
    return dataclasses.replace(task, test_texts=task.test_texts[rank::world],
                               test_labels=task.test_labels[rank::world] if task.test_labels else (),
                               test_completions=task.test_completions[rank::world])


def make_eval_batches(task, tokenizer, config: TrainConfig, *, rank: int = 0, world: int = 1) -> list[dict]:
    """The held-out batches `train` evaluates on (this process's shard), for re-scoring a saved adapter."""
    from ..tasks import make_batches

    data = subset_task(task, config)
    return make_batches(shard_task(data, rank, world), tokenizer, split="test", batch_size=config.eval_batch_size,
                        max_length=config.max_length, seed=config.seed, shuffle=False)
