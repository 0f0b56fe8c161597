"""Built-in generative tasks (kind "completion"), made offline from installed data or generated.

- `NAME-gen` for the built-in classification sets 20newsgroups, reuters-r8, bbc-news: classification as
  generation. Prompt: the text (its first `TEXT_CHARS` characters), then a question listing the label
  names; completion: the label name. Same fixed train/test split as NAME.
- `arithmetic:DIGITS` (1 to 9): "What is A + B?" with A, B uniform DIGITS-digit numbers, completion the
  sum. Problems are generated from a fixed seed (distinct, no download): `ARITH_TRAIN` train and
  `ARITH_TEST` test problems, disjoint. The dial: more digits, more to learn.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import ConfigError
from .split import Raw

GEN_SUFFIX = "-gen"
GEN_BASES = ("20newsgroups", "reuters-r8", "bbc-news")  # built-in classification sets with a -gen variant
TEXT_CHARS = 1500  # characters of the text kept in a -gen prompt (the prompt is cut from the left at max_length)
ARITH_PREFIX = "arithmetic:"
ARITH_TRAIN, ARITH_TEST = 4000, 500  # problems per split of arithmetic:DIGITS
_ARITH_SEED = 20240602  # the generator of every arithmetic problem set


def question(names: tuple[str, ...]) -> str:
    """The question a -gen prompt ends with."""
    return f"Question: which of these labels fits the text above? {', '.join(names)}\nAnswer with the label only."


def gen_prompt(text: str, names: tuple[str, ...]) -> str:
    return f"Text: {text[:TEXT_CHARS]}\n\n{question(names)}"


@functools.lru_cache(maxsize=None)
def gen_raw(base: str) -> Raw:
    """Classification as generation on built-in task `base` (same split; completions are label names)."""
    from .builtin import builtin_raw

    raw = builtin_raw(base)
    bad = [n for n in raw.labels if not n.strip()]
    if bad:
        raise ConfigError(f"Task {base + GEN_SUFFIX!r} has a blank label name; completions need text.")
    train = tuple(gen_prompt(t, raw.labels) for t in raw.train_texts)
    test = tuple(gen_prompt(t, raw.labels) for t in raw.test_texts)
    return Raw(raw.labels, train, raw.train_labels, test, raw.test_labels, raw.split, raw.dropped,
               tuple(raw.labels[i] for i in raw.train_labels), tuple(raw.labels[i] for i in raw.test_labels),
               "prompt=text+question completion=label name")


def arith_digits(name: str) -> int:
    """DIGITS of 'arithmetic:DIGITS' (one line on a bad value)."""
    tail = name[len(ARITH_PREFIX):]
    if not tail.isdigit() or not 1 <= int(tail) <= 9:
        raise ConfigError(f"Task {name!r}: DIGITS must be a whole number from 1 to 9, e.g. arithmetic:3")
    return int(tail)


@functools.lru_cache(maxsize=None)
def arithmetic_raw(digits: int) -> Raw:
    """ARITH_TRAIN + ARITH_TEST distinct addition problems of `digits`-digit numbers (fewer when digits
    is 1: only 100 distinct problems exist; then 20% of them are held out)."""
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits
    rng = np.random.default_rng([_ARITH_SEED, digits])
    total = min(ARITH_TRAIN + ARITH_TEST, (hi - lo) ** 2)
    seen: dict[tuple[int, int], None] = {}
    while len(seen) < total:
        a, b = (int(x) for x in rng.integers(lo, hi, size=2))
        seen.setdefault((a, b), None)
    probs = list(seen)
    n_test = ARITH_TEST if total == ARITH_TRAIN + ARITH_TEST else total // 5
    test, train = probs[:n_test], probs[n_test:]
    prompt = lambda ab: f"What is {ab[0]} + {ab[1]}?"  # noqa: E731
    how = f"generated: {len(train)} train / {len(test)} test distinct problems, seed {_ARITH_SEED}"
    return Raw((), tuple(map(prompt, train)), (), tuple(map(prompt, test)), (), how, 0,
               tuple(str(a + b) for a, b in train), tuple(str(a + b) for a, b in test), "generated")
