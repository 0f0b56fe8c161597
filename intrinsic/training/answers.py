"""Exact-match accuracy of a completion task's answers, by batched greedy generation.

Each held-out prompt (formatted as in training, `tasks.completion.encode_pair`) is left-padded into
batches; the model generates greedily up to `max_new_tokens` = the longest reference answer in tokens
(EOS included), stopping at EOS. The generated text is cut at the first newline and compared with the
reference after `normalize` (lower case, whitespace collapsed, surrounding whitespace and final
punctuation . ! removed). Exact match = matches / prompts.
"""

from __future__ import annotations

import re


def normalize(text: str) -> str:
    """The form answers are compared in: first line, lower case, single spaces, no trailing . or !."""
    first = text.split("\n", 1)[0]
    return re.sub(r"\s+", " ", first).strip().rstrip(".!").strip().lower()


def answer_budget(data, tokenizer, max_length: int) -> int:
    """max_new_tokens: tokens of the longest test completion (with EOS)."""
    from ..tasks.completion import encode_pair

    return max(len(encode_pair(tokenizer, p, c, 64 * max_length)[1])
               for p, c in zip(data.test_texts, data.test_completions))


def greedy_answers(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, batch_size: int,
                   device) -> list[str]:
    """Greedy continuations (decoded, special tokens dropped) of prompt id lists, left-padded in batches."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = prompts[start:start + batch_size]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T) left-padded
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for r, p in enumerate(rows):
            ids[r, width - len(p):] = torch.as_tensor(p)
            mask[r, width - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)  # (B,)
        new = []
        past: dict = {}
        step_ids, positions = ids, (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        for _ in range(max_new_tokens):
            res = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True, **past)
            past = _cache_kwargs(res)
            nxt = res.logits[:, -1].argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            new.append(nxt)
            done |= nxt == eos
            if bool(done.all()):
                break
            step_ids = nxt[:, None]  # (B, 1)
            positions = positions[:, -1:] + 1  # (B, 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        gen = torch.stack(new, dim=1).cpu()  # (B, N)
        for r in range(len(rows)):
            toks = gen[r].tolist()
            toks = toks[: toks.index(eos)] if eos in toks else toks
            out.append(tokenizer.decode(toks, skip_special_tokens=True))
    return out


def _cache_kwargs(res) -> dict:
    """The KV cache of a forward output as the keyword the next call takes (`cache` in transformers 5,
    `past_key_values` before)."""
    if getattr(res, "cache", None) is not None:
        return {"cache": res.cache}
    return {"past_key_values": res.past_key_values}


def exact_match(model, tokenizer, data, *, max_length: int, batch_size: int, device) -> tuple[int, int]:
    """(matches, prompts) of greedy answers on `data`'s test split (module docstring)."""
    import torch

    from ..tasks.completion import generation_prompts

    if not data.test_texts:
        return 0, 0
    budget = answer_budget(data, tokenizer, max_length)
    prompts = generation_prompts(data, tokenizer, max_length=max_length, max_new_tokens=budget)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        answers = greedy_answers(model, tokenizer, prompts, max_new_tokens=budget, batch_size=batch_size,
                                 device=device)
    model.train(was_training)
    hits = sum(normalize(a) == normalize(ref) for a, ref in zip(answers, data.test_completions))
    return hits, len(answers)
