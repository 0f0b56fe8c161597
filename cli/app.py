"""Typer entry point. Heavy imports (torch, transformers) stay inside command bodies."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="intrinsic",
    help="Measure per-module intrinsic rank of fine-tuning and place LoRA adapters where it is needed.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def main() -> None:
    app()
