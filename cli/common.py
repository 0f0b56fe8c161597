"""Shared CLI helpers: one-line errors, the `--json` switch, rich tables, progress bars.

Every command body runs inside `handle_errors()`, which turns an `IntrinsicError` into one
red line on stderr and exit code 2. `display_table` renders rows as a rich table, or prints
them as JSON when `--json` is given, so every listing serves scripts and people alike.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from intrinsic.report.format import cell

console = Console()
err_console = Console(stderr=True)

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout instead of tables.")


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Turn user errors into one line on stderr and exit code 2 (no traceback)."""
    from intrinsic.errors import IntrinsicError

    try:
        yield
    except IntrinsicError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # [train] stays
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(code=130) from None


def print_json(obj: Any) -> None:
    """Print `obj` (dataclass or plain data) as JSON on stdout, nothing else."""
    from intrinsic.results import to_dict

    sys.stdout.write(json.dumps(to_dict(obj), indent=2) + "\n")
    sys.stdout.flush()


def display_table(
    rows: Sequence[dict[str, Any]],
    *,
    title: str | None = None,
    columns: Sequence[str] | None = None,
    as_json: bool = False,
    json_obj: Any = None,
    styles: dict[str, str] | None = None,
) -> None:
    """Render `rows` as a rich table, or print `json_obj` (default: the rows) as JSON."""
    if as_json:
        print_json(rows if json_obj is None else json_obj)
        return
    columns = list(columns or (rows[0].keys() if rows else []))
    table = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        table.add_column(c, style=(styles or {}).get(c), justify="right" if _numeric(rows, c) else "left")
    for r in rows:
        table.add_row(*(cell(r.get(c), large="comma", bools=False) for c in columns))
    console.print(table)


def _numeric(rows: Sequence[dict[str, Any]], col: str) -> bool:
    return any(isinstance(r.get(col), (int, float)) and not isinstance(r.get(col), bool) for r in rows)


def progress(transient: bool = False):
    """A rich progress bar (description, bar, m/n, elapsed, remaining) on stderr."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        transient=transient,
    )


def placement_option(name: str, flag: str) -> Any:
    """A typer option for the `PlacementRequest` field `name`: its default and help come from the dataclass."""
    from intrinsic.fields import field_defaults, field_help
    from intrinsic.placement.request import PlacementRequest

    return typer.Option(field_defaults(PlacementRequest)[name], flag, help=field_help(PlacementRequest)[name])


def budget_text(budget: str | None, budget_like: str | None) -> str | None:
    """The budget given as --budget or as --budget-like STRATEGY@RANK (at most one of them)."""
    from intrinsic.errors import ConfigError

    if budget is not None and budget_like is not None:
        raise ConfigError("Give --budget or --budget-like, not both.")
    if budget_like is not None and "@" not in budget_like:
        raise ConfigError(f"--budget-like takes STRATEGY@RANK such as all@8, got '{budget_like}'.")
    return budget if budget is not None else budget_like
