"""Tasks: the data a probe or a run learns from, by name, and its tokenized batches.

    from intrinsic.tasks import load_task, make_batches
    data = load_task("rotten-tomatoes", max_examples=2000)
    batches = make_batches(data, tokenizer, batch_size=16, max_length=128)

Files: `registry.py` (names -> `TaskData`, `list_tasks`, `subsample`), `builtin.py` (offline
data sets from pinned packages), `external.py` (local files, Hugging Face data sets), `split.py`
(cleaning, the fixed seeded split, label ids), `batching.py` (`make_batches`, `count_tokens`).
"""

from .batching import count_tokens, example_order, make_batches
from .registry import (
    TEST_STREAM, TRAIN_STREAM, TaskData, TaskInfo, check_classes, describe_summary, list_tasks, load_task, subsample,
)

__all__ = [
    "TEST_STREAM", "TRAIN_STREAM", "TaskData", "TaskInfo",
    "check_classes", "count_tokens", "describe_summary", "example_order", "list_tasks", "load_task",
    "make_batches", "subsample",
]
