"""Errors a user can cause. The CLI prints each as one line and exits with code 2.

Everything raised for bad input derives from `IntrinsicError`; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class IntrinsicError(Exception):
    """Base class: a problem with the user's input or environment, explained in one line."""


class UnknownModelError(IntrinsicError):
    """A model name that is neither a packaged alias, a local directory nor a loadable hub id."""


class MissingPackageError(IntrinsicError):
    """A packaged asset (model or data set) whose PyPI package is not installed."""


class UnsupportedArchitectureError(IntrinsicError):
    """A `config.model_type` missing from the architecture map, with no `--modules` override."""


class UnknownTaskError(IntrinsicError):
    """A task name the registry does not know."""


class MissingColumnError(IntrinsicError):
    """A text or label column absent from a data set."""


class EmptyDatasetError(IntrinsicError):
    """A data set with no examples left after loading, filtering or subsampling."""


class NonFiniteError(IntrinsicError):
    """A NaN or inf loss or gradient."""


class BudgetError(IntrinsicError):
    """A parameter budget no placement can meet."""


class ConfigError(IntrinsicError):
    """Invalid settings: an option value out of range, conflicting options, a bad study file."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for the nearest known names, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
