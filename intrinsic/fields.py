"""Config fields documented once: `documented(default, "why")` stores the help with the field, and
`field_help(Config)` reads it back for the CLI (no parsing of source code)."""

from __future__ import annotations

from dataclasses import MISSING, Field, field, fields
from typing import Any


def documented(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING) -> Any:
    """A dataclass field whose one-line documentation travels in its metadata."""
    if not help:
        raise ValueError("documented() needs its help text")
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def field_help(cls: type) -> dict[str, str]:
    """{field name: help} of a dataclass built with `documented`."""
    return {f.name: f.metadata["help"] for f in fields(cls) if "help" in f.metadata}


def field_defaults(cls: type) -> dict[str, Any]:
    """{field name: default} of a dataclass (fields without a plain default are left out)."""
    out = {}
    for f in fields(cls):
        if isinstance(f, Field) and f.default is not MISSING:
            out[f.name] = f.default
    return out
