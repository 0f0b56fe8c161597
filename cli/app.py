"""Typer entry point: every command of `intrinsic`, registered here by name (one module per noun).

Heavy imports (torch, transformers) stay inside command bodies so `intrinsic --help`
answers instantly.
"""

from __future__ import annotations

import typer

from .inventory import modules, tasks
from .plan_cmd import plan
from .probe_cmd import probe, report
from .study_cmd import study_app
from .train_cmd import compare, train
from .truncate_cmd import truncate

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



def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"intrinsic {version('intrinsic')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the installed version and exit."),
) -> None:
    pass  # the app's help is Typer(help=...) above; this callback only adds --version


app.command("modules")(modules)
app.command("tasks")(tasks)
app.command("probe")(probe)
app.command("report")(report)
app.command("plan")(plan)
app.command("train")(train)
app.command("compare")(compare)
app.command("truncate")(truncate)
app.add_typer(study_app, name="study")


def main() -> None:
    import warnings

    # transformers 5 deprecates an attribute that peft/accelerate still read on every model build
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    app()
