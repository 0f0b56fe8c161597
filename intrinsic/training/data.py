"""The data a run sees: the task capped to the run's example limits (the same subsample as
`tasks.load_task`), the test split sharded across processes, and the held-out batches."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig


def subset_task(task, config: TrainConfig):
    """The task with its splits capped at config.max_examples / max_eval_examples.

    Uses `tasks.subsample`, the subsampler of `tasks.load_task(seed=config.seed, max_examples=...)`,
    so capping here or at loading gives the same examples (and a pre-capped task is unchanged).
    """
    from ..tasks import TEST_STREAM, TRAIN_STREAM, subsample

    train_t, train_l = subsample(task.train_texts, task.train_labels, config.max_examples, seed=config.seed,
                                 stream=TRAIN_STREAM)
    test_t, test_l = subsample(task.test_texts, task.test_labels, config.max_eval_examples, seed=config.seed,
                               stream=TEST_STREAM)
    return dataclasses.replace(task, train_texts=train_t, train_labels=train_l, test_texts=test_t, test_labels=test_l)


def shard_task(task, rank: int, world: int):
    """Every world-th test example starting at rank (evaluation sharding across processes)."""
    if world == 1:
        return task
    return dataclasses.replace(task, test_texts=task.test_texts[rank::world],
                               test_labels=task.test_labels[rank::world] if task.test_labels else ())


def make_eval_batches(task, tokenizer, config: TrainConfig, *, rank: int = 0, world: int = 1) -> list[dict]:
    """The held-out batches `train` evaluates on (this process's shard), for re-scoring a saved adapter."""
    from ..tasks import make_batches

    data = subset_task(task, config)
    return make_batches(shard_task(data, rank, world), tokenizer, split="test", batch_size=config.eval_batch_size,
                        max_length=config.max_length, seed=config.seed, shuffle=False)
