"""`intrinsic truncate RUN_DIR`: r90, the outcome-measured intrinsic rank of each component of a full
fine-tuning run. Thin: parse, call `intrinsic.truncation.truncate_run`, render the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from intrinsic.truncation.settings import DEFAULT_RANKS, TruncateSettings

from .common import JsonOpt, cli_field_help, config_option, console, display_table, err_console, handle_errors, print_json, progress


def truncate(
    run_dir: Path = typer.Argument(..., help="A full fine-tuning run saved with its model "
                                   "(intrinsic train MODEL TASK --placement full --save-model).", show_default=False),
    components: Annotated[Optional[str], config_option(TruncateSettings, "components", "--components", "-c")] = None,
    ranks: Optional[str] = typer.Option(None, "--ranks", "-r", show_default=False, help=cli_field_help(
        TruncateSettings, "ranks") + f" \\[default: {','.join(map(str, DEFAULT_RANKS))}]"),
    device: Annotated[Optional[str], config_option(TruncateSettings, "device", "--device")] = None,
    as_json: bool = JsonOpt,
) -> None:
    """Cut each component's fine-tuning update to rank r (truncated SVD), keep the rest fully fine-tuned, and
    score the model with the run's own evaluation: r90 is the smallest r that keeps 90% of full fine-tuning's
    gain over the untrained model. Writes RUN_DIR/truncation.json (resumable)."""
    with handle_errors(truncate):
        from intrinsic.truncation import check_run, truncate_run

        check_run(run_dir)  # a folder that is no full run with its model is refused before any bar shows
        given = dict(components=components, ranks=ranks, device=device)
        settings = TruncateSettings(**{k: v for k, v in given.items() if v is not None})
        with progress(transient=True) as bar:  # gone once done: the table (or JSON) follows
            job = bar.add_task("truncate", total=None, info="")

            def on_event(ev):
                if ev["event"] == "phase":
                    bar.update(job, description=ev["message"], completed=0, total=None, info="")
                elif ev["event"] == "svd":
                    bar.update(job, description="SVD of each update", completed=ev["done"], total=ev["total"])
                elif ev["event"] == "point":
                    bar.update(job, description="truncate", completed=ev["done"], total=ev["total"],
                               info=f"{ev['component']} r={ev['rank']}: score {ev['score']:.4f}")

            result = truncate_run(run_dir, settings, callback=on_event)
        if as_json:
            print_json(result)
        else:
            _render(result)


def _render(r) -> None:
    from intrinsic.truncation import TRUNCATION_FILE

    grid = sorted({rank for c in r.components for rank in c.ranks})
    rows = []
    for c in r.components:
        gain = dict(zip(c.ranks, c.gains, strict=True))
        row = {"component": c.component, "layers": _span(c.layers), "r90": "-" if c.r90 is None else c.r90,
               "dW 90%": c.energy_rank90}
        row.update({f"r={k}": "" if k not in gain else ("…" if gain[k] is None else f"{gain[k]:+.4f}") for k in grid})
        rows.append(row)
    display_table(rows, columns=["component", "layers", "r90", "dW 90%", *[f"r={k}" for k in grid]],
                  title=f"{escape(r.model)} on {escape(r.task)}: gain over the untrained model when one component's "
                        "update is cut to rank r")
    console.print(f"untrained {r.untrained_score:.4f}, full fine-tuning {r.full_score:.4f} (run.json {r.run_score:.4f}):"
                  f" gain {r.full_gain:+.4f}; r90 keeps {r.keep:.0%} of it ({r.eval_examples} {r.eval_split} examples,"
                  f" {r.device}).")
    console.print("r90: smallest r keeping 90% of the gain; dW 90%: smallest r keeping 90% of the update's "
                  "||dW||^2 (its spectrum alone).")
    if not r.full_gain > 0:
        err_console.print("[yellow]warning:[/] full fine-tuning did not beat the untrained model: no r90.")
    console.print(f"written: {Path(r.run_dir) / TRUNCATION_FILE}")


def _span(layers) -> str:
    if not layers:
        return ""
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ",".join(map(str, layers))
