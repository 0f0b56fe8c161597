"""Tasks from outside the package: local data files and Hugging Face data sets.

`read_file` reads a .csv, .jsonl or .parquet file with a text and (for classification) a label
column, detected by name unless given, and splits it with `split.fixed_split`. `read_hf` loads
`datasets.load_dataset(NAME, CONFIG)`: its train split, and the first usable evaluation split
of `_EVAL_SPLITS`, else a fixed split of train. Both return a `split.Raw`. Offline (HF_HUB_OFFLINE or
HF_DATASETS_OFFLINE set, or the Hub unreachable), `read_hf` reads the local cache only, as `load_model`
does for hub models, so a missing data set fails at once instead of after half a minute of retries.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError, EmptyDatasetError, MissingColumnError, UnknownTaskError
from .completion import pick_columns
from .split import FIXED_SPLIT, Raw, clean, encode, fixed_split, pick_column, split_pairs

_TEXT_COLUMNS = ("text", "sentence", "content", "review", "document")  # detected in this order
_LABEL_COLUMNS = ("label", "labels", "category", "class", "target")
_EVAL_SPLITS = ("test", "validation", "valid", "dev")  # hf splits tried for evaluation, in order
FILE_SUFFIXES = (".csv", ".jsonl", ".parquet")  # local files `load_task` reads


def completion_columns(columns, kind: str, text_column, prompt_column, completion_column, source: str):
    """The prompt/completion (or messages) columns when the data is a completion task, else None.

    A completion task: prompt/completion columns given, or (no text column given or found) the columns
    detected by name; a table with neither these nor a text column is refused naming its columns."""
    if prompt_column or completion_column:
        return pick_columns(columns, prompt_column, completion_column, source)
    if text_column is None and not any(c.lower() in _TEXT_COLUMNS for c in columns):
        try:
            return pick_columns(columns, None, None, source)
        except MissingColumnError:
            raise MissingColumnError(
                f"No text column in {source} (looked for {', '.join(_TEXT_COLUMNS)}) and no prompt/completion or "
                f"messages columns; available columns: {', '.join(columns)}. Name it with `text_column` (or "
                f"`prompt_column` and `completion_column` for a prompt/completion task)."
            ) from None
    return None


def _completion_raw(name: str, rows: dict, cols: tuple, total: int) -> Raw:
    """A completion task's Raw from its columns, with the fixed split of the pairs."""
    from .completion import pairs_of

    prompts, comps = pairs_of(rows, cols)
    return pairs_raw(name, *split_pairs(prompts, comps), cols, FIXED_SPLIT, total - len(prompts))


def pairs_raw(name: str, tr_p, tr_c, te_p, te_c, cols: tuple, split: str, dropped: int) -> Raw:
    """Raw of split prompt/completion pairs, the columns recorded (empty splits refused by `encode`)."""
    raw = encode(name, tr_p, None, te_p, None, split=split, dropped=dropped)
    desc = f"messages={cols[0]}" if len(cols) == 1 else f"prompt={cols[0]} completion={cols[1]}"
    return Raw((), raw.train_texts, (), raw.test_texts, (), split, dropped, tuple(tr_c), tuple(te_c), desc)


def read_file(path: Path, kind: str, text_column, label_column, prompt_column=None, completion_column=None) -> Raw:
    """A local .csv/.jsonl/.parquet file as a fixed split (label column only for classification; a
    completion task when `completion_columns` finds prompt/completion or messages columns)."""
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
    cols = completion_columns(columns, kind, text_column, prompt_column, completion_column, str(path))
    if cols is not None:
        return _completion_raw(str(path), {c: df[c].tolist() for c in cols}, cols, len(df))
    tcol = pick_column(columns, text_column, _TEXT_COLUMNS, "text", str(path))
    lcol = pick_column(columns, label_column, _LABEL_COLUMNS, "label", str(path)) if kind == "classification" else None
    texts, names = clean(df[tcol].tolist(), df[lcol].tolist() if lcol else None)
    return encode(str(path), *fixed_split(texts, names), dropped=len(df) - len(texts))


def _offline() -> bool:
    """Offline by setting (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or because the Hub cannot be reached."""
    from .. import models

    flags = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f in ("1", "ON", "YES", "TRUE") for f in flags) or not models.hub_reachable()


@contextlib.contextmanager
def _cache_only(offline: bool) -> Iterator[None]:
    """Within the block `datasets` and `huggingface_hub` run in offline mode (cache only) when `offline`."""
    if not offline:
        yield
        return
    import datasets
    import huggingface_hub.constants as hub

    before = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = before


def read_hf(spec: str, kind: str, text_column, label_column, prompt_column=None, completion_column=None) -> Raw:
    """Hugging Face data set "NAME[:CONFIG]": train plus the first usable eval split, else a fixed split."""
    import datasets

    name, _, config = spec.partition(":")
    local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()  # a folder of data files
    offline = not local and _offline()
    try:
        with _cache_only(offline):
            dsd = datasets.load_dataset(name, config or None)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        if offline and not isinstance(err, ValueError):  # ValueError: e.g. an unknown CONFIG of a cached set
            raise UnknownTaskError(
                f"Hugging Face data set {spec!r} could not be loaded: not in the local cache, and the Hub cannot be "
                "reached (offline); load it once online, or save it as a local .csv/.jsonl/.parquet file."
            ) from None
        raise UnknownTaskError(f"Hugging Face data set {spec!r} could not be loaded: {msg}") from None
    if not isinstance(dsd, datasets.DatasetDict) or "train" not in dsd:
        splits = list(dsd) if isinstance(dsd, datasets.DatasetDict) else []
        raise EmptyDatasetError(f"Hugging Face data set {spec!r} has no train split (splits: {', '.join(splits)})")
    train = dsd["train"]
    source = f"hf:{spec} (train split)"
    cols = completion_columns(train.column_names, kind, text_column, prompt_column, completion_column, source)
    if cols is not None:
        test = next((dsd[s] for s in _EVAL_SPLITS if s in dsd), None)
        if test is None:
            return _completion_raw(f"hf:{spec}", {c: list(train[c]) for c in cols}, cols, len(train))
        return _hf_completion_splits(spec, train, test, cols)
    tcol = pick_column(train.column_names, text_column, _TEXT_COLUMNS, "text", source)
    lcol = None
    if kind == "classification":
        lcol = pick_column(train.column_names, label_column, _LABEL_COLUMNS, "label", source)
    feature = train.features[lcol] if lcol else None
    class_names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    bad = -1 if class_names is not None else None  # ClassLabel -1 = unlabeled (e.g. GLUE test sets)

    dropped = [0]  # rows dropped by clean, over the splits used

    def rows(ds):
        if tcol not in ds.column_names or (lcol and lcol not in ds.column_names):
            return [], []
        texts, names = clean(list(ds[tcol]), list(ds[lcol]) if lcol else None, bad_label=bad)
        dropped[0] += len(ds) - len(texts)
        return texts, names

    train_t, train_n = rows(train)
    for split in _EVAL_SPLITS:
        if split in dsd:
            before = dropped[0]
            test_t, test_n = rows(dsd[split])
            if test_t:
                how = f"the data set's train and {split} splits"
                break
            dropped[0] = before  # an unusable split (e.g. unlabeled) is not used: its rows are not "dropped"
    else:
        if not train_t:
            raise EmptyDatasetError(f"Hugging Face data set {spec!r} has no usable train examples")
        train_t, train_n, test_t, test_n = fixed_split(train_t, train_n)
        how = f"{FIXED_SPLIT}, of the data set's train split"
    return encode(f"hf:{spec}", train_t, train_n, test_t, test_n, class_names, split=how, dropped=dropped[0])



def _hf_completion_splits(spec: str, train, test, cols: tuple) -> Raw:
    """A completion task from a Hugging Face data set's own train and evaluation splits."""
    from .completion import pairs_of

    tr_p, tr_c = pairs_of({c: list(train[c]) for c in cols}, cols)
    te_p, te_c = pairs_of({c: list(test[c]) for c in cols}, cols)
    return pairs_raw(f"hf:{spec}", tr_p, tr_c, te_p, te_c, cols, "the data set's own train and evaluation splits",
                     len(train) + len(test) - len(tr_p) - len(te_p))
