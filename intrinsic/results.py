"""JSON and binary IO shared by every result type: atomic writes, dataclass <-> dict.

An interrupted run must never leave a half-written file under its final name, so every
write goes to a temporary file in the same directory and is renamed into place. (Numbers
formatted for people live in `intrinsic.report.format`.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf; readers treat null as "not defined"
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    if hasattr(obj, "tolist"):  # numpy arrays
        return _jsonable(obj.tolist())
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass (possibly nested) as plain JSON-ready Python data."""
    return _jsonable(obj)


def dumps(obj: Any) -> str:
    return json.dumps(to_dict(obj), indent=2, sort_keys=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the new one, never half.

    A path that cannot be written (no permission, a file where a directory should be, a full
    disk) raises ConfigError naming it, in one line."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _unwritable(path, e) from None
        raise
    return path


def _unwritable(path: Path, e: OSError) -> ConfigError:
    """The one-line error for a file that cannot be written."""
    if path.is_dir():
        return ConfigError(f"Cannot write {path}: it is a directory.")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return ConfigError(f"Cannot write {path}: {blocker} is a file, not a directory.")
    return ConfigError(f"Cannot write {path} ({e.strerror or e}).")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, dumps(obj) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No such file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None


def ensure_writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and check that files can be written there."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "it" if blocker == path else str(blocker)
        raise ConfigError(f"Output directory {path} is not writable: {what} is a file, not a directory; "
                          "choose another --out.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):  # unique: safe when processes race
            pass
    except OSError as e:
        raise ConfigError(f"Output directory {path} is not writable ({e.strerror or e}): choose another --out.") \
            from None
    return path


@contextlib.contextmanager
def output_dir(path: str | Path) -> Iterator[Path]:
    """`ensure_writable_dir(path)` for the body of a command; when the body fails, the directories
    this call created are removed again if nothing was written into them (files are never removed)."""
    path = Path(path)
    created = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    ensure_writable_dir(path)
    try:
        yield path
    except BaseException:
        remove_empty_dirs(created)
        raise


def remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove each of `dirs` (deepest first) and empty folders under it, if no file is left in them."""
    for top in dirs:
        if not top.is_dir():
            continue
        for root, _subdirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(root)  # fails, and so stays, when anything is still inside


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass `cls` from a dict, recursing into dataclass-typed fields.

    Unknown keys are ignored (forward compatibility); missing keys take field defaults.
    Field types must be given as real types or simple strings resolvable from `cls`'s module.
    A value that does not fit its field's type is passed through unchanged; an error raised while
    building a nested dataclass (a failed validation) propagates.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(hints.get(f.name, Any), data[f.name])
    return cls(**kwargs)


def _fits(tp: Any, value: Any) -> bool:
    """Whether `value` has the JSON shape of type `tp` (containers and dataclasses; scalars always fit)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return True


def _coerce(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    if origin in (list, tuple) and args:
        inner = args[0]
        seq = [_coerce(inner, v) for v in value]
        return tuple(seq) if origin is tuple else seq
    if origin is dict and len(args) == 2:
        return {k: _coerce(args[1], v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        arm = next((a for a in args if a is not type(None) and _fits(a, value)), None)  # the first that fits
        return value if arm is None else _coerce(arm, value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


_DATA_SUFFIXES = (".csv", ".jsonl", ".parquet")


def default_out(model: str, task: str, what: str, seed: int | None) -> Path:
    """The default output folder of `intrinsic probe` and `intrinsic train`: runs/MODEL-TASK-WHAT-sSEED, WHAT
    being "probe" or the placement. Each part is named by its last path component, a data file without
    its suffix (data/reviews.csv -> reviews), characters other than letters, digits, '.', '_' and '-'
    replaced by '_' (rotten-tomatoes:lm -> rotten-tomatoes_lm, q,v -> q_v)."""

    def slug(name: str) -> str:
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if base.lower().endswith(_DATA_SUFFIXES):
            base = base.rsplit(".", 1)[0]
        return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("_") or "x"

    return Path("runs") / f"{slug(model)}-{slug(task)}-{slug(what)}-s{seed or 0}"
