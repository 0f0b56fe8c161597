"""Prompt/completion tasks: reading the columns, formatting an example for a tokenizer, and the batches.

A completion task (`TaskData.kind == "completion"`) pairs each prompt (`train_texts`) with the text the
model must produce (`train_completions`). A prompt is a string, or, for chat data, a tuple of
(role, content) turns before the final assistant turn.

Formatting (`encode_pair`): with a tokenizer that has a chat template, the prompt is rendered as the
user turn(s) with the generation prompt, and the completion is what the template adds for the assistant
turn (e.g. "sport<|im_end|>"), trailing whitespace removed. Without a template: "PROMPT\n" then the
completion (chat turns as "role: content" lines ending in "assistant:"), BOS first when the tokenizer
has one distinct from EOS. EOS is appended to the completion unless it already ends with it.

Batches (`completion_batches`): input = prompt + completion tokens, right-padded; labels are -100 on
prompt tokens and padding, so the causal-LM loss covers completion tokens (+ EOS) only. A prompt too
long for max_length loses tokens from the left (counted by `count_truncated`); a completion that does
not fit beside at least one prompt token is refused. The shuffled-label control of the gradient probe
pairs each prompt with another example's completion (one seeded permutation over the split).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, MissingColumnError

if TYPE_CHECKING:
    from .registry import TaskData

PROMPT_COLUMNS = ("prompt", "instruction", "question", "input", "query")  # detected in this order
COMPLETION_COLUMNS = ("completion", "response", "answer", "output", "target")
MESSAGE_COLUMNS = ("messages", "conversations", "conversation")
PLAIN_FORMAT = 'no chat template: "PROMPT\\n" + completion + EOS'  # how a template-less tokenizer is fed


def pick_columns(columns: Sequence[str], prompt_column: str | None, completion_column: str | None,
                 source: str) -> tuple[str, str] | tuple[str]:
    """(prompt, completion) column names, or (messages,) for chat data; one line naming the columns found."""
    for what, given in (("prompt", prompt_column), ("completion", completion_column)):
        if given is not None and given not in columns:
            raise MissingColumnError(f"{what} column {given!r} not in {source}; available columns: {', '.join(columns)}")
    lower = {c.lower(): c for c in columns}
    pcol = prompt_column or next((lower[c] for c in PROMPT_COLUMNS if c in lower), None)
    ccol = completion_column or next((lower[c] for c in COMPLETION_COLUMNS if c in lower), None)
    if pcol and ccol:
        return pcol, ccol
    mcol = next((lower[c] for c in MESSAGE_COLUMNS if c in lower), None)
    if mcol and prompt_column is None and completion_column is None:
        return (mcol,)
    raise MissingColumnError(
        f"No prompt/completion or messages columns in {source} (looked for prompt: {', '.join(PROMPT_COLUMNS)}; "
        f"completion: {', '.join(COMPLETION_COLUMNS)}; messages: {', '.join(MESSAGE_COLUMNS)}) and no text column; "
        f"available columns: {', '.join(columns)}. Name them with --prompt-column/--completion-column, or use NAME:lm for plain text."
    )


def _turn(m) -> tuple[str, str]:
    if isinstance(m, dict):
        return str(m.get("role", m.get("from", ""))), str(m.get("content", m.get("value", "")))
    raise ConfigError(f"A chat message must be a dict with role and content, got {type(m).__name__}")


def split_messages(messages) -> tuple[tuple, str] | None:
    """(prompt turns, final assistant content) of one conversation, None if it has no final assistant turn."""
    if messages is None or isinstance(messages, float) or len(messages) < 2:
        return None
    turns = [_turn(m) for m in messages]
    if turns[-1][0] not in ("assistant", "gpt"):
        return None
    return tuple(turns[:-1]), turns[-1][1]


def pairs_of(rows: dict[str, list], cols: tuple) -> tuple[list, list]:
    """(prompts, completions) of the rows, dropping a row with a missing/blank prompt or completion."""
    from .split import _is_missing

    prompts, completions = [], []
    if len(cols) == 1:
        raw = [split_messages(m) for m in rows[cols[0]]]
    else:
        raw = [(None if _is_missing(p) else str(p), None if _is_missing(c) else str(c))
               for p, c in zip(rows[cols[0]], rows[cols[1]])]
    for pair in raw:
        if pair is None or pair[0] is None or pair[1] is None or not pair[1].strip() or not pair[0]:
            continue
        if isinstance(pair[0], str) and not pair[0].strip():
            continue
        prompts.append(pair[0])
        completions.append(pair[1])
    return prompts, completions


def _has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_texts(tokenizer, prompt, completion: str) -> tuple[str, str]:
    """(prompt text, completion text) as the model sees them (module docstring)."""
    turns = (("user", prompt),) if isinstance(prompt, str) else prompt
    if _has_template(tokenizer):
        msgs = [{"role": r, "content": c} for r, c in turns]
        head = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": completion}], tokenize=False)
        if full.startswith(head):
            return head, full[len(head):].rstrip()
        return head, completion  # a template that rewrites earlier turns: the bare completion
    if isinstance(prompt, str):
        return prompt + "\n", completion
    return "\n".join(f"{r}: {c}" for r, c in turns) + "\nassistant:\n", completion


def encode_pair(tokenizer, prompt, completion: str, char_cap: int = 0) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids incl. EOS); `char_cap` pre-cuts a huge prompt text from the left."""
    head, tail = format_texts(tokenizer, prompt, completion)
    if char_cap and len(head) > char_cap:
        head = head[-char_cap:]
    p = tokenizer(head, add_special_tokens=False)["input_ids"]
    c = tokenizer(tail, add_special_tokens=False)["input_ids"]
    if not _has_template(tokenizer) and tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id:
        p = [tokenizer.bos_token_id] + p
    if not c:
        raise ConfigError(f"Completion {completion!r} tokenizes to nothing; every completion (label name) "
                          "needs at least one token.")
    if tokenizer.eos_token_id is not None and c[-1] != tokenizer.eos_token_id:
        c = c + [tokenizer.eos_token_id]
    return p, c


def fit(p: list[int], c: list[int], max_length: int, where: str) -> tuple[list[int], bool]:
    """The prompt cut from the left so prompt + completion fit max_length (and whether it was cut)."""
    keep = max_length - len(c)
    if keep < 1:
        raise ConfigError(f"The completion of {where} has {len(c)} tokens (with EOS): no room for the prompt "
                          f"within --max-length {max_length}; raise --max-length.")
    return (p[-keep:], True) if len(p) > keep else (p, False)


def pairs(data: TaskData, split: str) -> tuple[tuple, tuple[str, ...]]:
    """(prompts, completions) of a completion task's split."""
    if split == "train":
        return data.train_texts, data.train_completions
    return data.test_texts, data.test_completions


def count_truncated(data: TaskData, tokenizer, *, split: str, max_length: int) -> int:
    """How many prompts of the split lose tokens from the left at max_length."""
    prompts, comps = pairs(data, split)
    cut = 0
    for i, (p, c) in enumerate(zip(prompts, comps)):
        cut += fit(*encode_pair(tokenizer, p, c, 64 * max_length), max_length, f"{split} example {i}")[1]
    return cut


def completion_batches(data: TaskData, tokenizer, order: np.ndarray, *, split: str, batch_size: int,
                       max_length: int, noise_rng: np.random.Generator | None) -> list[dict]:
    """Right-padded batches with completion-only labels (module docstring); `noise_rng` shuffles completions."""
    import torch

    prompts, comps = pairs(data, split)
    if noise_rng is not None:
        comps = tuple(comps[j] for j in noise_rng.permutation(len(comps)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cache: dict[int, tuple[list[int], list[int]]] = {}
    batches = []
    for start in range(0, len(order), batch_size):
        rows = []
        for i in order[start:start + batch_size]:
            if i not in cache:
                p, c = encode_pair(tokenizer, prompts[i], comps[i], 64 * max_length)
                cache[i] = (fit(p, c, max_length, f"{split} example {i}")[0], c)
            rows.append(cache[i])
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for r, (p, c) in enumerate(rows):
            n = len(p) + len(c)
            ids[r, :n] = torch.as_tensor(p + c)
            labels[r, len(p):n] = torch.as_tensor(c)
            mask[r, :n] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def generation_prompts(data: TaskData, tokenizer, *, max_length: int, max_new_tokens: int) -> list[list[int]]:
    """Prompt ids of the test split for greedy generation, cut from the left to leave room for the answer."""
    out = []
    for i, (p, c) in enumerate(zip(data.test_texts, data.test_completions)):
        ids, _ = encode_pair(tokenizer, p, c, 64 * max_length)
        keep = max(1, max_length - max_new_tokens)
        out.append(ids[-keep:])
    return out
