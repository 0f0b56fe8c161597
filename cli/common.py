"""Shared CLI pieces: option types declared once, one-line errors, the `--json` switch, rich tables,
progress bars.

Options used by several commands are `Annotated` types declared here once (`ModelArg`, `TaskArg`,
`DeviceOpt`, `LayersOpt`, the placement options ...). An option that mirrors a field of a library
config (`ProbeSettings`, `TrainConfig`, `PlacementRequest`) takes its help from that field's
documentation through `config_help` / `config_option`, which also state the library's default: the
option itself defaults to None and only given values are passed on, so every default lives in the
library, once. The config modules imported here are stdlib-only, so `--help` imports no torch.

Every command body runs inside `handle_errors()`, which turns an `IntrinsicError` into one
red line on stderr and exit code 2. `display_table` renders rows as a rich table, or prints
them as JSON when `--json` is given, so every listing serves scripts and people alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from intrinsic.fields import field_defaults, field_help
from intrinsic.placement.request import PlacementRequest
from intrinsic.probes.settings import ProbeSettings
from intrinsic.report.format import cell


def _width(stream) -> int | None:
    """None (the terminal's width) on a terminal or with COLUMNS set; else wide, so a table written to a pipe
    or a log keeps its columns whole instead of being cut at rich's default 80 columns."""
    return None if os.environ.get("COLUMNS") or stream.isatty() else 200


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


def _no_bool_metavar() -> None:
    """Typer shows `<bool>` as the type of a flag (--json, --overwrite): a flag takes no value, so show none."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_flags_bare", False):  # other Typer versions: nothing to patch
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._flags_bare = True
    TyperOption.display_type_rich = display_type_rich


_no_bool_metavar()

# how the CLI spells a config field's None where it is not the option's default
_NONE_FLAG = {"update_steps": "--no-update", "max_eval_examples": "--all-eval"}


def config_help(cls: type, name: str, lead: str = "") -> str:
    """The help of an option mirroring field `name` of config `cls`: `lead` (how to spell the value on the
    command line), the field's own help, and the field's default when it has one worth showing."""
    default = field_defaults(cls).get(name)
    text = lead + cli_field_help(cls, name)
    if default is None or isinstance(default, bool):
        return text
    return text + f" \\[default: {default}]"  # rich markup: an escaped bracket


def cli_field_help(cls: type, name: str) -> str:
    """Field `name`'s help with its None (which nobody can type) said as the CLI says it: "not given" when
    None is the default, else the flag that sets it (`--no-update`)."""
    text = field_help(cls)[name]
    spelling = "not given" if field_defaults(cls).get(name) is None else _NONE_FLAG.get(name)
    return text if spelling is None else re.sub(r"\bNone\b", spelling, text)


def config_option(cls: type, name: str, *flags: str, lead: str = "") -> Any:
    """A typer option (for `Annotated`, default None) documented by field `name` of config `cls`."""
    return typer.Option(*flags, help=config_help(cls, name, lead), show_default=False)


JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout instead of tables.")

# ------------------------------------------------------------------ inputs

ModelArg = Annotated[str, typer.Argument(help="Packaged alias (minilm, smollm2), local directory, or Hugging Face "
                                              "Hub id.", show_default=False)]
TaskArg = Annotated[str, typer.Argument(help="Task: rotten-tomatoes, NAME:lm, hf:NAME[:CONFIG], or a "
                                             ".csv/.jsonl/.parquet file; see `intrinsic tasks`.", show_default=False)]
ModulesOpt = Annotated[Optional[str], config_option(ProbeSettings, "modules", "--modules",
                                                    lead="Map by hand, roles q k v o qkv up gate down gate_up: ")]
# the model's device and weights dtype; probe and train both default to auto (a GPU when torch sees one)
DeviceOpt = Annotated[str, typer.Option("--device", help=field_help(ProbeSettings)["device"] + " (auto: cuda when "
                                        "torch sees a GPU, else cpu)")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help=field_help(ProbeSettings)["dtype"])]

# ------------------------------------------------------------------ placement (PlacementRequest)

# --placement: each command gives its own default (plan: auto, train: all)
PlacementOpt = Annotated[str, typer.Option("--placement", "-p", help=config_help(PlacementRequest, "strategy"))]
RankOpt = Annotated[Optional[int], config_option(PlacementRequest, "rank", "--rank", "-r")]
BudgetOpt = Annotated[Optional[str], config_option(PlacementRequest, "budget", "--budget", "-b")]
BudgetLikeOpt = Annotated[Optional[str], typer.Option("--budget-like", help="Budget equal to STRATEGY@RANK's "
                                                      "parameters, e.g. all@8 (the same as --budget all@8).")]
LayersOpt = Annotated[Optional[str], config_option(PlacementRequest, "layers", "--layers")]
MaxRankOpt = Annotated[Optional[int], config_option(PlacementRequest, "max_rank", "--max-rank")]
GranularityOpt = Annotated[Optional[int], config_option(PlacementRequest, "granularity", "--granularity")]
AlphaMultOpt = Annotated[Optional[float], config_option(PlacementRequest, "alpha_mult", "--alpha-mult")]
GainsOpt = Annotated[Optional[str], config_option(PlacementRequest, "gains", "--gains")]
NormalizeOpt = Annotated[Optional[str], config_option(PlacementRequest, "normalize", "--normalize")]
PredictorOpt = Annotated[Optional[str], config_option(PlacementRequest, "predictor", "--predictor")]
FillOpt = Annotated[Optional[str], config_option(PlacementRequest, "fill", "--fill")]
RsloraOpt = Annotated[bool, typer.Option("--rslora", help=config_help(PlacementRequest, "rslora"))]


def placement_request(strategy: str, *, rank: int | None, budget: str | None, budget_like: str | None,
                      layers: str | None, **knobs: Any) -> PlacementRequest:
    """The `PlacementRequest` of the placement options; knobs left at None take the library's defaults."""
    return PlacementRequest(strategy, rank=rank, budget=budget_text(budget, budget_like), layers=layers,
                            **{k: v for k, v in knobs.items() if v is not None})


@contextlib.contextmanager
def handle_errors(command: Callable[..., Any] | None = None) -> Iterator[None]:
    """Turn user errors into one line on stderr and exit code 2 (no traceback). With `command` (the
    command's function), a config field the message quotes is named by its option (`lr` -> --lr)."""
    from intrinsic.errors import IntrinsicError

    try:
        yield
    except IntrinsicError as e:
        text = escape(flag_words(str(e), command))
        err_console.print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)  # [train] stays
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(code=130) from None


# config fields whose option is not spelled --FIELD-NAME
_FIELD_FLAGS = {"strategy": "--placement", "rank_estimator": "--estimator", "save_full_model": "--save-model"}


def flag_words(text: str, command: Callable[..., Any] | None) -> str:
    """`text` with each `field_name` the library quotes replaced by `command`'s option for it (`lr` -> --lr,
    `rank_estimator` -> --estimator), so an error names what to type; names without an option stay."""
    import re

    from typer.utils import get_params_from_function

    if command is None:
        return text
    flags = {d for p in get_params_from_function(command).values()
             for d in getattr(p.default, "param_decls", None) or () if d.startswith("--")}

    def swap(m: re.Match) -> str:
        flag = _FIELD_FLAGS.get(m.group(1), "--" + m.group(1).replace("_", "-"))
        return flag if flag in flags else m.group(0)

    return re.sub(r"`([a-z][a-z0-9_]*)`", swap, text)


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
    for c in columns:  # fold: a long module name wraps onto a second line instead of being cut
        table.add_column(c, style=(styles or {}).get(c), justify="right" if _numeric(rows, c) else "left",
                         overflow="fold")
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


def budget_text(budget: str | None, budget_like: str | None) -> str | None:
    """The budget given as --budget or as --budget-like STRATEGY@RANK (at most one of them)."""
    from intrinsic.errors import ConfigError

    if budget is not None and budget_like is not None:
        raise ConfigError("Give --budget or --budget-like, not both.")
    if budget_like is not None and "@" not in budget_like:
        raise ConfigError(f"--budget-like takes STRATEGY@RANK such as all@8, got '{budget_like}'.")
    return budget if budget is not None else budget_like
