"""`intrinsic study run` and `intrinsic study report`: controlled grids of LoRA runs and their report.

Thin: parse options, call intrinsic.study, render. The library does the work (see
intrinsic/study/ and studies/README.md for the study file format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from intrinsic.errors import ConfigError
from intrinsic.study.engine import RaySettings

from .common import (JsonOpt, config_help, config_option, console, display_table, err_console, handle_errors,
                     print_json, progress)

study_app = typer.Typer(
    help="Run a study (a grid of placements x budgets x seeds) with resume, and report it: statistics over "
         "seeds, Pareto frontiers, prediction check, guidelines.",
    no_args_is_help=True,
)


_WIDE_ONLY = ("std", "gain", "ranks", "peak_mb", "time_s", "status")  # comparison columns cut on narrow terminals


def _default_out(spec) -> Path:
    return Path("study-results") / (spec.name + ("-quick" if spec.quick else ""))


def _engine(name: str, sharded: bool, settings: RaySettings):
    """The engine of --engine (None: the local runner), refusing options that do not apply to it."""
    from intrinsic.study.engine import make_engine

    engine = make_engine(name, settings)
    given = [flag for flag, name in (("--address", "address"), ("--gpus-per-cell", "gpus_per_cell"),
                                     ("--cpus-per-cell", "cpus_per_cell"), ("--max-retries", "max_retries"),
                                     ("--exclusive-timing", "exclusive_timing"))
             if getattr(settings, name) != getattr(RaySettings(), name)]
    if engine is None and given:
        raise ConfigError(f"{', '.join(given)} only apply to --engine ray.")
    if engine is not None and sharded:
        raise ConfigError("--shard and --probes-only are for the local engine; --engine ray schedules every cell "
                          "and probe itself.")
    return engine


@study_app.command("run")
def run(
    study: str = typer.Argument(..., help="A study TOML file, or the name of a packaged study (placement-ablation, "
                                          "weight-types, rank-sweep, layer-bands)."),
    out: Path = typer.Option(None, "--out", "-o", help="Results directory [default: study-results/NAME[-quick]]."),
    quick: bool = typer.Option(False, "--quick", help="Apply the study's \\[quick] overrides (1 seed, few steps, small eval)."),
    only: str = typer.Option(None, "--only", help="Run only the cell (or config) whose id starts with this (see --list)."),
    force: bool = typer.Option(False, "--force", help="Reuse a results directory made by a different study definition."),
    list_cells: bool = typer.Option(False, "--list", help="List the grid's cells and their status; train nothing."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report when the grid is done."),
    shard: str = typer.Option(None, "--shard", help="Run only shard K/N of the cells (e.g. 0/8), so N processes "
                              "can share a GPU or several; run --probes-only first, then `study report DIR`."),
    probes_only: bool = typer.Option(False, "--probes-only", help="Only compute the probes (of shard K/N's seeds)."),
    engine: str = typer.Option("local", "--engine", help="Who runs the cells: local (one after another in this "
                               "process, the reference) or ray (one Ray task per cell, on this machine or a "
                               "cluster; pip install 'intrinsic\\[ray]')."),
    address: Annotated[Optional[str], config_option(RaySettings, "address", "--address")] = None,
    gpus_per_cell: Annotated[Optional[float], config_option(RaySettings, "gpus_per_cell", "--gpus-per-cell")] = None,
    cpus_per_cell: Annotated[float, config_option(RaySettings, "cpus_per_cell", "--cpus-per-cell")] = 1.0,
    max_retries: Annotated[int, config_option(RaySettings, "max_retries", "--max-retries")] = 2,
    exclusive_timing: Annotated[bool, typer.Option("--exclusive-timing", help=config_help(
        RaySettings, "exclusive_timing"))] = False,
    as_json: bool = JsonOpt,
) -> None:
    """Run every unfinished cell of a study; finished cells are kept, failures recorded, then report.
    Exits 1 when a cell failed (infeasible budgets are results, not failures), 2 on a bad definition."""
    with handle_errors():
        from intrinsic.study.rows import cell_row
        from intrinsic.study.runner import Hooks, parse_shard, run_probes, run_study
        from intrinsic.study.spec import load_spec, resolve_study

        runner_engine = _engine(engine, bool(shard or probes_only), RaySettings(
            address=address, gpus_per_cell=gpus_per_cell, cpus_per_cell=cpus_per_cell, max_retries=max_retries,
            exclusive_timing=exclusive_timing))
        spec = load_spec(resolve_study(study), quick=quick)
        out = out or _default_out(spec)
        shard_kn = parse_shard(shard)
        if probes_only:
            seeds = run_probes(spec, out, shard=shard_kn, force=force,
                               say=None if as_json else lambda m: err_console.print(m, highlight=False))
            if as_json:
                print_json({"study": spec.name, "out": str(out), "probed_seeds": seeds})
            else:
                console.print(f"probes ready for seeds {seeds} under {out / 'probes'}")
            return
        cells = spec.cells()
        if not list_cells:
            from intrinsic.study.check import check_resources

            check_resources(spec)  # before the header: a bad model or task is one line, nothing written
            if runner_engine is not None:
                runner_engine.prepare(spec)  # likewise an unreachable cluster or too many GPUs per cell
        if list_cells:
            rows = [cell_row(c, out / "cells" / c.id).to_record() for c in cells]
            cols = ["id", "label", "seed", "status", "score", "error"]
            display_table([{**r, "groups": ", ".join(r["groups"])} for r in rows], columns=cols, as_json=as_json,
                          json_obj={"study": spec.name, "definition_hash": spec.definition_hash, "out": str(out),
                                    "cells": rows},
                          title=f"{spec.name}: {len(cells)} cells, definition {spec.definition_hash}")
            return
        if not as_json:
            console.print(f"[bold]{escape(spec.name)}[/]{' (quick)' if quick else ''}: {escape(spec.question)}")
            console.print(f"{len(cells)} cells -> {out}")
        with progress(transient=as_json) as bar:
            task = bar.add_task(spec.name, total=None, info="")

            def start(cell, i, n):
                bar.update(task, total=n, info=f"{cell.label} seed {cell.seed}")

            def end(cell, row, i, n):
                bar.update(task, total=n, completed=i + 1)
                if not row.ok:  # on stderr, so also with --json (the GPU pool reads it for out-of-memory)
                    err_console.print(f"[yellow]{row.status}[/] {escape(cell.label)} seed {cell.seed}: "
                                      f"{escape(str(row.error))}", highlight=False)

            def message(m):
                bar.update(task, info=m)
                if m.startswith("Ray dashboard") and not as_json:
                    err_console.print(m, highlight=False)

            summary = run_study(spec, out, only=only, force=force, shard=shard_kn, engine=runner_engine,
                                hooks=Hooks(on_cell_start=start, on_cell_end=end, on_message=message))
        files = None
        if report and shard_kn is None and summary.counts.get("ok"):
            from intrinsic.study.report import write_report

            files, _, _ = write_report(out)
        if as_json:
            print_json({"summary": summary, "report": files,
                        "engine": runner_engine.describe() if runner_engine else {"engine": "local"}})
        else:
            counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items()))
            console.print(f"ran {summary.ran}, skipped {summary.skipped} finished; now {counts}; "
                          f"{summary.wall_s:.0f} s")
            if files:
                console.print(f"report: {files.markdown}, {files.html}")
        failed = summary.counts.get("failed", 0)
        if failed:
            err_console.print(f"[bold red]error:[/] {failed} of {summary.cells} cells failed; their errors are in "
                              f"{escape(str(out / 'results.json'))} (`intrinsic study run ... --list` shows them).",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=1)


@study_app.command("adopt")
def adopt_cmd(
    study: str = typer.Argument(..., help="The study to fill: a TOML file or a packaged study's name."),
    source: Path = typer.Option(..., "--from", help="A results directory of another study sharing cells with it."),
    out: Path = typer.Option(None, "--out", "-o", help="Results directory [default: study-results/NAME[-quick]]."),
    quick: bool = typer.Option(False, "--quick", help="Apply the study's \\[quick] overrides."),
    force: bool = typer.Option(False, "--force", help="Reuse a results directory made by a different study definition."),
    as_json: bool = JsonOpt,
) -> None:
    """Copy the finished cells (and probes) of another results directory that this study shares, by cell id:
    `study run` then trains only the rest. Nothing is trained here."""
    with handle_errors():
        from dataclasses import asdict

        from intrinsic.study.adopt import adopt
        from intrinsic.study.spec import load_spec, resolve_study

        spec = load_spec(resolve_study(study), quick=quick)
        got = adopt(spec, source, out or _default_out(spec), force=force)
        if as_json:
            print_json(asdict(got))
            return
        console.print(f"{got.study}: {len(got.cells)} finished cells and {len(got.probes)} probes copied from "
                      f"{escape(got.source)} into {escape(got.out)}; {len(got.kept)} already there, {got.missing} "
                      "left for `study run`")
        if got.regridded:
            console.print(f"{len(got.regridded)} test cells copied from another lr grid (same arm, seed and lr): "
                          "they count once the wider sweep chooses their lr, else `study run` retrains them")


@study_app.command("report")
def report_cmd(
    results: Path = typer.Argument(..., help="A results directory written by `intrinsic study run`."),
    as_json: bool = JsonOpt,
) -> None:
    """Statistics over seeds, paired tests against `all`, Pareto frontiers, prediction check, guidelines;
    writes report.md, report.html, analysis.json and PNG plots into the results directory."""
    with handle_errors():
        from intrinsic.study.report import tables, write_report

        files, analysis, guidelines = write_report(results)
        if as_json:
            print_json({"files": files, "analysis": analysis, "guidelines": guidelines})
            return
        s = analysis.study
        console.print(f"[bold]{escape(str(s.get('name')))}[/]{' (quick)' if s.get('quick') else ''}: "
                      f"{escape(str(s.get('question')))}")
        for title, cols, rows in tables(analysis, guidelines):
            if rows:
                narrow = (cols if console.width >= 160 or not title.startswith("Comparison") else
                          [c for c in cols if c not in _WIDE_ONLY])
                display_table(rows, title=title, columns=narrow)
        console.print(f"report: {files.markdown}, {files.html} ({len(files.plots)} plots)")


@study_app.command("predictors")
def predictors_cmd(
    results: list[Path] = typer.Argument(..., help="Results directories of studies of one model and task."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the check as Markdown to this file."),
    as_json: bool = JsonOpt,
) -> None:
    """Which probe statistic predicts the gain, over the test cells of several studies pooled (each distinct cell
    once): Spearman rho of every statistic's predicted share with the gain, overall and within each budget group,
    with the seed-bootstrap CI and the partial rho given breadth. One study alone has too few placements per
    budget for a rank correlation to say much."""
    with handle_errors():
        from intrinsic.results import atomic_write_text
        from intrinsic.study.pooled import pooled_statistics, render_markdown, statistics_table

        pooled = pooled_statistics(results)
        if out is not None:
            atomic_write_text(out, render_markdown(pooled))
        if as_json:
            print_json(pooled)
            return
        console.print(f"{pooled.model} on {pooled.task}: {len(pooled.studies)} studies, {pooled.cells} distinct test "
                      f"cells ({pooled.shared} shared, counted once), {pooled.placements} placements")
        title, cols, rows = statistics_table(pooled)
        display_table(rows, title=title, columns=cols)
        for stat, groups in pooled.meets_target.items():
            console.print(f"{stat}: rho >= 0.85 in {len(groups)} group(s){': ' + ', '.join(groups) if groups else ''}")
        if out is not None:
            console.print(f"written: {escape(str(out))}")
