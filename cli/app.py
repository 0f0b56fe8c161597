"""Typer entry point: one sub-command module per noun, registered here.

Heavy imports (torch, transformers) stay inside command bodies so `intrinsic --help`
answers instantly.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="intrinsic",
    help=(
        "Measure how many dimensions each attention and FFN module of a pretrained transformer "
        "needs to adapt to a task (`probe`), turn that into a LoRA placement (`plan`, `train "
        "--placement auto`), and check the prediction with controlled studies (`study`)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="rich",
)

# Each module defines `register(app: typer.Typer) -> None`.
_COMMAND_MODULES = ("inventory", "probe_cmd", "plan_cmd", "train_cmd", "study_cmd")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def main() -> None:
    import warnings

    # transformers 5 deprecates an attribute that peft/accelerate still read on every model build
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    app()
