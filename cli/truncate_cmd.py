"""`intrinsic truncate RUN_DIR...`: r90, the outcome-measured intrinsic rank of each component of a full
fine-tuning run (several runs, e.g. one per seed: each measured, then summarized with CIs). Thin: parse,
call `intrinsic.truncation` (`truncate_run`, `summarize_runs`), render the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from intrinsic.truncation.settings import DEFAULT_RANKS, TruncateSettings

from .common import (
    JsonOpt,
    cli_field_help,
    config_option,
    console,
    display_table,
    err_console,
    handle_errors,
    print_json,
    progress,
)


def truncate(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", show_default=False, help="Full fine-tuning "
                                          "runs saved with their model (intrinsic train MODEL TASK --placement full "
                                          "--save-model); several (one per seed) are also summarized."),
    components: Annotated[Optional[str], config_option(TruncateSettings, "components", "--components", "-c")] = None,
    ranks: Optional[str] = typer.Option(None, "--ranks", "-r", show_default=False, help=cli_field_help(
        TruncateSettings, "ranks") + f" \\[default: {','.join(map(str, DEFAULT_RANKS))}]"),
    device: Annotated[Optional[str], config_option(TruncateSettings, "device", "--device")] = None,
    as_json: bool = JsonOpt,
) -> None:
    """Cut each component's fine-tuning update to rank r (truncated SVD), keep the rest fully fine-tuned, and
    score the model with the run's own evaluation: r90 is the smallest r that keeps 90% of full fine-tuning's
    gain over the untrained model; r90_own the smallest r that keeps 90% of the component's own contribution
    (the gain lost when its update is removed, r = 0, always measured). Writes RUN_DIR/truncation.json
    (resumable)."""
    with handle_errors(truncate):
        from intrinsic.truncation import check_run, summarize_runs, truncate_run

        given = dict(components=components, ranks=ranks, device=device)
        settings = TruncateSettings(**{k: v for k, v in given.items() if v is not None})
        for run_dir in run_dirs:  # every folder is checked before the first one is measured
            check_run(run_dir)
        results = []
        log_lines = not as_json and not err_console.is_terminal
        for i, run_dir in enumerate(run_dirs):
            where = f"[{i + 1}/{len(run_dirs)}] " if len(run_dirs) > 1 else ""
            with progress(transient=True) as bar:  # gone once done: the table (or JSON) follows
                job = bar.add_task(f"{where}truncate", total=None, info="")

                def on_event(ev, job=job, bar=bar, where=where):
                    if ev["event"] == "phase":
                        if not as_json:  # phases stay on screen (and in a log); the bar shows the points
                            err_console.print(f"[dim]{escape(where + ev['message'])}[/]")
                        bar.update(job, description=where + ev["message"], completed=0, total=None, info="")
                    elif ev["event"] == "svd":
                        bar.update(job, description=f"{where}SVD of each update", completed=ev["done"],
                                   total=ev["total"])
                    elif ev["event"] == "point":
                        if log_lines:  # no live bar in a log: one line per point
                            err_console.print(f"{where}{ev['done']}/{ev['total']} {ev['component']} r={ev['rank']}: "
                                              f"score {ev['score']:.4f}", highlight=False)
                        bar.update(job, description=f"{where}truncate", completed=ev["done"], total=ev["total"],
                                   info=f"{ev['component']} r={ev['rank']}: score {ev['score']:.4f}")

                results.append(truncate_run(run_dir, settings, callback=on_event))
        summary = summarize_runs(results) if len(results) > 1 else None
        if as_json:
            print_json(summary if summary is not None else results[0])
        elif summary is not None:
            _render_summary(summary)
        else:
            _render(results[0])


def _render(r) -> None:
    from intrinsic.truncation import TRUNCATION_FILE

    grid = sorted({rank for c in r.components for rank in c.ranks})
    rows = []
    for c in r.components:
        gain = dict(zip(c.ranks, c.gains, strict=True))
        row = {"component": c.component, "layers": _span(c.layers), "r90": "-" if c.r90 is None else c.r90,
               "r90_own": _own_cell(c.r90_own, c.own_status),
               "own share": "" if c.own_share is None else f"{c.own_share:.1%}",
               "r=0": "…" if c.gain_without is None else f"{c.gain_without:+.4f}", "dW 90%": c.energy_rank90}
        row.update({f"r={k}": "" if k not in gain else ("…" if gain[k] is None else f"{gain[k]:+.4f}") for k in grid})
        rows.append(row)
    display_table(rows, columns=["component", "layers", "r90", "r90_own", "own share", "dW 90%", "r=0",
                                 *[f"r={k}" for k in grid]],
                  title=f"{escape(r.model)} on {escape(r.task)}: gain over the untrained model when one component's "
                        "update is cut to rank r")
    console.print(f"untrained {r.untrained_score:.4f}, full fine-tuning {r.full_score:.4f} "
                  f"(run.json {r.run_score:.4f}): gain {r.full_gain:+.4f}; r90 keeps {r.keep:.0%} of it "
                  f"({r.eval_examples} {r.eval_split} examples, {r.device}).")
    console.print("r90: smallest r keeping 90% of the gain; r90_own: smallest r keeping 90% of the component's own "
                  "contribution gain(full) - gain(0) (r=0: its update removed); own share: that contribution / "
                  f"gain(full) (undef: below {r.own_floor:.0%}; n/r: not reached on the grid); dW 90%: smallest r "
                  "keeping 90% of the update's ||dW||^2 (its spectrum alone).")
    if not r.full_gain > 0:
        err_console.print("[yellow]warning:[/] full fine-tuning did not beat the untrained model: no r90.")
    console.print(f"written: {Path(r.run_dir) / TRUNCATION_FILE}")


def _render_summary(s) -> None:
    first = s.runs[0]
    grid = sorted({k.rank for c in s.summary for k in c.kept})
    rows = []
    for c in s.summary:
        kept = {k.rank: k.mean for k in c.kept}
        row = {"component": c.component, "r90 by run": ",".join("-" if v is None else str(v) for v in c.r90s),
               "median": "-" if c.median is None else f"{c.median:g}",
               "geo mean [95% CI]": "-" if c.geomean is None else f"{c.geomean:.3g}" + (
                   f" [{c.ci_low:.3g}, {c.ci_high:.3g}]" if c.ci_low is not None else ""),
               "dW 90%": ",".join(map(str, c.energy_rank90)),
               "r90_own by run": ",".join(_own_cell(v, st) for v, st in zip(c.own.r90s, c.own.status, strict=True)),
               "own median": "-" if c.own.median is None else f"{c.own.median:g}",
               "own geo mean [95% CI]": "-" if c.own.geomean is None else f"{c.own.geomean:.3g}" + (
                   f" [{c.own.ci_low:.3g}, {c.own.ci_high:.3g}]" if c.own.ci_low is not None else ""),
               "own share": "-" if c.own.share is None else f"{c.own.share:.1%}"}
        row.update({f"kept r={k}": "" if kept.get(k) is None else f"{kept[k]:.2f}" for k in grid})
        rows.append(row)
    display_table(rows, columns=["component", "r90 by run", "median", "geo mean [95% CI]", "r90_own by run",
                                 "own median", "own geo mean [95% CI]", "own share", "dW 90%",
                                 *[f"kept r={k}" for k in grid]],
                  title=f"{escape(first.model)} on {escape(first.task)}: r90 over {len(s.runs)} runs")
    gains = ", ".join(f"{r.full_gain:+.4f}" for r in s.runs)
    console.print(f"full fine-tuning's gain by run: {gains}. kept r: mean share of that gain kept at rank r; "
                  "geo mean: 2^(mean log2 r90), CI t-based over runs; own: the same for r90_own over the runs where it "
                  "is defined (undef: own contribution below the floor; n/r: not reached). Each run's table: "
                  "truncation.json in its folder.")


def _own_cell(rank, status: str) -> str:
    """r90_own as a table cell: the rank, n/r (not reached), undef (below the floor) or … (not measured)."""
    from intrinsic.truncation import NOT_REACHED, REACHED, UNDEFINED

    return str(rank) if status == REACHED else {NOT_REACHED: "n/r", UNDEFINED: "undef"}.get(status, "…")


def _span(layers) -> str:
    if not layers:
        return ""
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ",".join(map(str, layers))
