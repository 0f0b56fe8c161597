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
    from ..tasks.registry import subsample_data

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
