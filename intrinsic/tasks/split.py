"""From parsed rows to a task's fixed split: cleaning, the seeded train/test split, label ids, columns.

Every source (built-in packages, local files, Hugging Face data sets) ends here: `clean` drops
unusable rows, `fixed_split` holds out a stratified test split seeded by `_SPLIT_SEED` (never by
the caller, so a test set never changes between runs), `encode` turns label names into ids and
returns a `Raw` record, and `pick_column` finds the text and label columns of a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import EmptyDatasetError, MissingColumnError

_SPLIT_SEED = 20240601  # seeds every fixed train/test split; changing it changes every test set
_TEST_FRACTION = 0.2  # share of each class held out where a data set ships no test split
FIXED_SPLIT = (f"fixed split: {_TEST_FRACTION:.0%} of each class held out for testing, stratified, "
               f"seed {_SPLIT_SEED}")  # how `fixed_split` splits, as TaskData.split states it


@dataclass(frozen=True)
class Raw:
    """Parsed data of one task before subsampling."""

    labels: tuple[str, ...]  # class names; () when unlabeled
    train_texts: tuple[str, ...]  # texts of the fixed train split, in source order
    train_labels: tuple[int, ...]  # label ids aligned with train_texts; () when unlabeled
    test_texts: tuple[str, ...]  # texts of the fixed test split, in source order
    test_labels: tuple[int, ...]  # label ids aligned with test_texts; () when unlabeled
    split: str = FIXED_SPLIT  # how the test split came about
    dropped: int = 0  # source rows dropped for a missing or blank text or a missing label
    train_completions: tuple[str, ...] = ()  # completion task: the answer to each train prompt (train_texts)
    test_completions: tuple[str, ...] = ()  # completion task: the answer to each test prompt
    columns: str = ""  # completion task: the columns read, e.g. "prompt=question completion=answer"


def fixed_split(texts: list[str], names: list | None) -> tuple:
    """Stratified seeded split (per class `_TEST_FRACTION` held out); order of the input kept.

    Copies of one text always land in the same split, so duplicates never leak into the test set.
    """
    n = len(texts)
    keys = names if names is not None else [0] * n
    first: dict[str, int] = {}  # text -> index of its first occurrence
    for i, text in enumerate(texts):
        first.setdefault(text, i)
    rng = np.random.default_rng(_SPLIT_SEED)
    groups: dict[str, list[int]] = {}
    for i in sorted(first.values()):
        groups.setdefault(str(keys[i]), []).append(i)
    held: list[int] = []
    for key in sorted(groups):
        idx = rng.permutation(groups[key])
        held += idx[: round(len(idx) * _TEST_FRACTION)].tolist()
    if not held and len(first) >= 2:  # tiny data sets: hold out at least one example
        held = [sorted(first.values())[int(rng.integers(len(first)))]]
    held_texts = {texts[i] for i in held}
    tr = [i for i in range(n) if texts[i] not in held_texts]
    te = [i for i in range(n) if texts[i] in held_texts]
    pick = lambda seq, idx: [seq[i] for i in idx]  # noqa: E731
    if names is None:
        return pick(texts, tr), None, pick(texts, te), None
    return pick(texts, tr), pick(names, tr), pick(texts, te), pick(names, te)


def split_pairs(prompts: list, completions: list) -> tuple[list, list, list, list]:
    """`fixed_split` of prompt/completion pairs (a pair is one example; duplicates stay in one split)."""
    tr, _, te, _ = fixed_split(list(zip(prompts, completions)), None)
    return [p for p, _ in tr], [c for _, c in tr], [p for p, _ in te], [c for _, c in te]


def _is_missing(value) -> bool:
    """None, NaN or pandas NA."""
    if value is None:
        return True
    try:
        return bool(value != value)  # only NaN differs from itself
    except TypeError:  # pd.NA refuses bool()
        return True


def clean(texts: Sequence, names: Sequence | None, bad_label=None) -> tuple[list[str], list | None]:
    """Drop rows whose text is missing or blank, or whose label is missing (or equals bad_label)."""
    keep_t, keep_n = [], []
    for i, text in enumerate(texts):
        if _is_missing(text) or not str(text).strip():
            continue
        if names is not None:
            label = names[i]
            if _is_missing(label) or (bad_label is not None and label == bad_label):
                continue
            if isinstance(label, float) and label.is_integer():
                label = int(label)  # ints that pandas widened to float around a NaN
            keep_n.append(label)
        keep_t.append(str(text))
    return keep_t, (keep_n if names is not None else None)


def encode(name, train_t, train_n, test_t, test_n, class_names: Sequence[str] | None = None, *,
           split: str = FIXED_SPLIT, dropped: int = 0) -> Raw:
    """Label names -> ids (sorted order, or the given class_names order for ints); empty checks.
    `split` and `dropped` are recorded as they are (see `Raw`)."""
    for part, texts in (("train", train_t), ("test", test_t)):
        if not texts:
            raise EmptyDatasetError(
                f"Task {name!r} has no usable {part} examples (after dropping empty texts and labels)"
            )
    if train_n is None:
        return Raw((), tuple(train_t), (), tuple(test_t), (), split, dropped)
    if class_names is not None:
        as_ids = lambda values: tuple(int(v) for v in values)  # noqa: E731
        return Raw(tuple(map(str, class_names)), tuple(train_t), as_ids(train_n), tuple(test_t), as_ids(test_n),
                   split, dropped)
    values = set(train_n) | set(test_n)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        ordered = sorted(values)  # numeric labels sort numerically
    else:
        ordered = sorted(values, key=str)
    ids = {v: i for i, v in enumerate(ordered)}
    return Raw(
        tuple(str(v) for v in ordered),
        tuple(train_t), tuple(ids[v] for v in train_n),
        tuple(test_t), tuple(ids[v] for v in test_n), split, dropped,
    )


def pick_column(columns: Sequence[str], given: str | None, defaults: tuple[str, ...], what: str, source: str) -> str:
    if given is not None:
        if given not in columns:
            raise MissingColumnError(
                f"{what} column {given!r} not in {source}; available columns: {', '.join(columns)}"
            )
        return given
    lower = {c.lower(): c for c in columns}
    for cand in defaults:
        if cand in lower:
            return lower[cand]
    raise MissingColumnError(
        f"No {what} column in {source} (looked for {', '.join(defaults)}); available columns: "
        f"{', '.join(columns)}. Name it with `{what}_column`."
    )

