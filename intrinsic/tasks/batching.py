"""Batching: a task's texts as tokenized, length-capped batches, and the label shuffling of the noise floor.

`make_batches` is the one place examples become tensors, for the probes and the trainer alike:
seeded example order (`example_order`: cycled or truncated to `num_batches`), padding to the longest example of
each batch, and, for the gradient probe's noise floor, labels permuted with their own generator
so the example order does not depend on whether labels are shuffled. The caller's tokenizer is
not changed: a tokenizer without a pad token pads with its EOS token for the call only.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError, EmptyDatasetError

if TYPE_CHECKING:
    from .registry import TaskData


@contextlib.contextmanager
def _pads_with_eos(tokenizer):
    """Within the block the tokenizer pads (with EOS, as `load_model` sets it) if it had no pad token;
    afterwards its pad token is None again, so the caller's tokenizer is left as it was."""
    if tokenizer.pad_token is not None:
        yield
        return
    tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.pad_token = None


def make_batches(
    data: TaskData,
    tokenizer,
    *,
    split: str = "train",
    batch_size: int = 16,
    max_length: int = 128,
    seed: int = 0,
    shuffle: bool = True,
    num_batches: int | None = None,
    shuffle_labels: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Tokenized batches, padded to the longest example of each batch and capped at max_length.

    `shuffle_labels` builds the noise floor of the gradient probe: classification labels are
    permuted over the whole split, lm target tokens within each sequence, completions across prompts
    (all seeded). Completion tasks: see `completion.completion_batches` (loss on completion tokens only).
    `num_batches` cycles (fresh seeded order per pass) or truncates to exactly that many.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', not {split!r}")
    for field, value in (("batch_size", batch_size), ("max_length", max_length), ("num_batches", num_batches)):
        if value is not None and value < 1:
            raise ConfigError(f"{field} must be at least 1, got {value}")
    texts = data.train_texts if split == "train" else data.test_texts
    labels = np.asarray(data.train_labels if split == "train" else data.test_labels, dtype=np.int64)
    n = len(texts)
    if n == 0:
        raise EmptyDatasetError(f"Task {data.name!r} has no {split} examples")
    noise_rng = np.random.default_rng([seed, 7])  # label noise, independent of the order
    if shuffle_labels and data.kind == "classification":
        labels = labels[noise_rng.permutation(n)]

    order = example_order(n, seed=seed, batch_size=batch_size, num_batches=num_batches, shuffle=shuffle)
    if data.kind == "completion":
        from .completion import completion_batches

        with _pads_with_eos(tokenizer):
            return completion_batches(data, tokenizer, order, split=split, batch_size=batch_size,
                                      max_length=max_length, noise_rng=noise_rng if shuffle_labels else None)
    char_cap = 64 * max_length  # pre-cut huge documents; far more characters than max_length tokens need

    batches = []
    with _pads_with_eos(tokenizer):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i][:char_cap] for i in idx],
                truncation=True,
                max_length=max_length,
                padding="longest",
                return_tensors="pt",
                return_token_type_ids=None if data.kind == "classification" else False,
            )
            batch = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            if data.kind == "classification":
                batch["labels"] = torch.as_tensor(labels[idx], dtype=torch.long)  # (B,)
            else:
                batch["labels"] = _lm_targets(batch, noise_rng if shuffle_labels else None)  # (B, T)
            batches.append(batch)
    return batches


def example_order(n: int, *, seed: int = 0, batch_size: int = 16, num_batches: int | None = None,
                  shuffle: bool = True) -> np.ndarray:
    """Indices of the examples `make_batches` draws, in order: a seeded permutation of the n examples
    (or 0..n-1 unshuffled); with `num_batches`, exactly num_batches * batch_size of them, a fresh seeded
    permutation per pass, so an example repeats only when the slots outnumber the examples."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.arange(n)
    if num_batches is not None:
        passes = [order]
        while sum(map(len, passes)) < num_batches * batch_size:
            passes.append(rng.permutation(n) if shuffle else np.arange(n))
        order = np.concatenate(passes)[: num_batches * batch_size]
    return order


def _lm_targets(batch: dict[str, torch.Tensor], noise_rng: np.random.Generator | None) -> torch.Tensor:
    """Causal-LM targets (B, T): the input ids, -100 on padding; with `noise_rng`, each row's real
    tokens permuted within the row (the shuffled-label control), one permutation per row in order."""
    target = batch["input_ids"].clone()  # (B, T)
    mask = batch["attention_mask"].bool()  # (B, T)
    if noise_rng is not None:
        for row in range(target.shape[0]):
            pos = mask[row].nonzero().squeeze(1)  # (n_real,)
            perm = torch.as_tensor(noise_rng.permutation(len(pos)))
            target[row, pos] = target[row, pos[perm]]
    target[~mask] = -100
    return target


def count_tokens(batches) -> int:
    """Number of real (non-padding) tokens in the batches."""
    return int(sum(int(b["attention_mask"].sum()) for b in batches))
