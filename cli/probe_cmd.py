"""`intrinsic probe` (measure per-module intrinsic ranks) and `intrinsic report` (re-render a saved probe).

Thin: parse options, build one `ProbeSettings`, call `intrinsic.probes.probe`, save, render. Options
that mirror a `ProbeSettings` field take its help and default from the library (`common.config_option`);
options not given are left to `ProbeSettings`' defaults.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from intrinsic.fields import field_defaults
from intrinsic.probes.settings import ProbeSettings
from intrinsic.report.format import human

from .common import (
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelArg,
    ModulesOpt,
    TaskArg,
    config_option,
    console,
    err_console,
    handle_errors,
    print_json,
)


def _opt(name: str, *flags: str, lead: str = ""):
    """An option documented by the `ProbeSettings` field `name` (help and default from the library)."""
    return config_option(ProbeSettings, name, *flags, lead=lead)


_DEFAULT = field_defaults(ProbeSettings)


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    from intrinsic.errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got '{text}'") from None


def probe(
    model: ModelArg,
    task: TaskArg,
    out: Path = typer.Option(None, "--out", help="Output directory \\[default: runs/MODEL-TASK-probe-sSEED, "
                             "MODEL and TASK by their last path component, a data file without its suffix]."),
    batches: Annotated[Optional[int], _opt("batches", "--batches")] = None,
    batch_size: Annotated[Optional[int], _opt("batch_size", "--batch-size")] = None,
    max_length: Annotated[Optional[int], _opt("max_length", "--max-length")] = None,
    update_steps: Annotated[Optional[int], _opt("update_steps", "--update-steps")] = None,
    no_update: bool = typer.Option(False, "--no-update", help="Skip the weight-update probe (gradient probe only)."),
    update_checkpoints: Annotated[Optional[str], _opt("update_checkpoints", "--update-checkpoints",
                                                      lead="Comma list, e.g. 10,50,100: ")] = None,
    update_lr: Annotated[Optional[float], _opt("update_lr", "--update-lr")] = None,
    roles: Annotated[Optional[str], _opt("roles", "--roles", lead="Comma list, e.g. q,v: ")] = None,
    layers: Annotated[Optional[str], _opt("layers", "--layers", lead="0-2, 1,3,5 or lower|middle|upper: ")] = None,
    estimator: Annotated[Optional[str], _opt("rank_estimator", "--estimator", "--rank-estimator")] = None,
    folds: Annotated[Optional[int], _opt("folds", "--folds")] = None,
    fit_head: Annotated[Optional[bool], _opt("fit_head", "--fit-head/--no-fit-head")] = None,
    topk: Annotated[Optional[int], _opt("topk", "--topk", lead="Switch to top-k spectra (spectra=topk) keeping K: ")] = None,
    exact: bool = typer.Option(False, "--exact", help="Exact float64 spectra of every matrix (the default on the "
                               "CPU; on a GPU the default is top-k; excludes --topk)."),
    example_energy: Annotated[bool, _opt("example_energy", "--example-energy")] = False,
    activations: Annotated[bool, _opt("activations", "--activations")] = False,
    weight_alpha: Annotated[bool, _opt("weight_alpha", "--weight-alpha")] = False,
    sketch: Annotated[Optional[int], _opt("sketch", "--sketch", lead="Force sketch mode with size K: ")] = None,
    seed: Annotated[Optional[int], _opt("seed", "--seed")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = _DEFAULT["dtype"],
    max_examples: Annotated[Optional[int], _opt("max_examples", "--max-examples")] = None,
    text_column: Annotated[Optional[str], _opt("text_column", "--text-column")] = None,
    label_column: Annotated[Optional[str], _opt("label_column", "--label-column")] = None,
    prompt_column: Annotated[Optional[str], _opt("prompt_column", "--prompt-column")] = None,
    completion_column: Annotated[Optional[str], _opt("completion_column", "--completion-column")] = None,
    modules: ModulesOpt = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a probe already saved in the output directory."),
    as_json: bool = JsonOpt,
) -> None:
    """Probe MODEL on TASK: per-module mean-gradient and weight-update spectra, intrinsic ranks, plots."""
    with handle_errors(probe):
        import dataclasses

        from intrinsic.errors import ConfigError
        from intrinsic.probes import load_inputs
        from intrinsic.probes import probe as run_probe
        from intrinsic.results import default_out, output_dir

        given = dict(
            batches=batches, batch_size=batch_size, max_length=max_length, update_steps=update_steps,
            update_lr=update_lr,
            update_checkpoints=None if no_update else _ints(update_checkpoints, "--update-checkpoints"),
            roles=tuple(r.strip() for r in roles.split(",") if r.strip()) if roles else None,
            rank_estimator=estimator or None, folds=folds, fit_head=fit_head, modules=modules, seed=seed,
            device=device, dtype=dtype,
            spectra="topk" if topk is not None else ("exact" if exact else None), topk=topk,
            example_energy=example_energy or None, activations=activations or None,
            weight_alpha=weight_alpha or None,
            sketch=sketch,
            max_examples=max_examples, text_column=text_column, label_column=label_column,
            prompt_column=prompt_column, completion_column=completion_column,
        )
        if exact and topk is not None:
            raise ConfigError("--exact and --topk exclude each other: pick one spectra mode.")
        if sketch is not None and (exact or topk is not None):
            raise ConfigError("--sketch replaces the gradient accumulators and their spectra: drop --exact/--topk.")
        kw = {k: v for k, v in given.items() if v is not None}  # the rest: ProbeSettings' defaults
        if no_update:
            kw.update(update_steps=None, update_checkpoints=None)
        settings = ProbeSettings(**kw)  # validate every option before any loading
        out = out or default_out(model, task, "probe", settings.seed)
        if (out / "probe.json").exists() and not overwrite:
            raise ConfigError(f"{out} already holds a probe; pass --overwrite to replace it or --out elsewhere.")
        from intrinsic.probes.distributed import init_from_env

        rank = init_from_env()  # under `accelerate launch` / `torchrun`: each process takes its share of the batches
        with output_dir(out) if rank == 0 else contextlib.nullcontext():  # rank 0 writes; a failure leaves no folder
            started = time.perf_counter()
            with err_console.status(f"loading {model} and {task}"):
                loaded, data = load_inputs(model, task, settings)
            load_s = time.perf_counter() - started
            if layers:
                from intrinsic.arch import num_layers
                from intrinsic.placement import parse_layers

                settings = dataclasses.replace(settings, layers=tuple(parse_layers(layers, num_layers(loaded.model))))
            if rank:
                run_probe(loaded, data, settings)  # its batches into the shared sums; rank 0 reports
                return
            report = _run_with_progress(run_probe, loaded, data, settings)
            # the probe times its own load of the objects it was given (~0): count the real one
            timings = {**report.timings, "load": round(report.timings.get("load", 0.0) + load_s, 4)}
            report = dataclasses.replace(report, timings=timings)
            _save(report, out)
        if as_json:
            print_json(report.to_json())
            return
        render_terminal(report)
        console.print(f"saved [bold]{out}[/] (probe.json, spectra.npz, plots, report.md, report.html)")


def _run_with_progress(run_probe, loaded, data, settings):
    from .common import progress

    with progress() as bar:
        ids: dict[str, int] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in ids:
                ids[phase] = bar.add_task(phase, total=total, info="")
            bar.update(ids[phase], completed=done, total=total)

        return run_probe(loaded, data, settings, progress=on_progress)


def _save(report, out: Path) -> None:
    from intrinsic.report.plots import write_plots
    from intrinsic.report.probe import FORMATS, write_report

    report.save(out)
    write_plots(report, out)
    for fmt in FORMATS:  # report.md (plots linked) and report.html (one self-contained file)
        write_report(report, out, fmt)


def report(
    directory: Path = typer.Argument(..., help="A directory written by `intrinsic probe` (holds probe.json)."),
    fmt: str = typer.Option("md", "--format", help="Report file to write: md or html."),
    as_json: bool = JsonOpt,
) -> None:
    """Re-render a saved probe (terminal tables, plots, report.md or report.html) without recomputing."""
    with handle_errors():
        from intrinsic.errors import ConfigError
        from intrinsic.probes.schema import ProbeReport
        from intrinsic.report.probe import FORMATS, write_report

        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
        rep = ProbeReport.load(directory)
        if as_json:
            print_json(rep.to_json())
            return
        path = write_report(rep, directory if directory.is_dir() else directory.parent, fmt)  # fails before output
        render_terminal(rep)
        console.print(f"wrote [bold]{path}[/]")


# ---------------------------------------------------------------------- terminal rendering

_RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))  # viridis stops


def _cell_style(value: float, lo: float, hi: float) -> str:
    t = 0.0 if hi <= lo else (value - lo) / (hi - lo)
    i = min(int(t * (len(_RAMP) - 1)), len(_RAMP) - 2)
    f = t * (len(_RAMP) - 1) - i
    r, g, b = (round(a + f * (c - a)) for a, c in zip(_RAMP[i], _RAMP[i + 1]))
    fg = "black" if t > 0.55 else "white"
    return f"{fg} on rgb({r},{g},{b})"


def render_terminal(rep) -> None:
    """Rank-vs-layer heatmap table, attention vs FFN summary, top modules by gradient energy."""
    import math

    from rich.markup import escape
    from rich.table import Table

    from intrinsic.probes.schema import rank_grid
    from intrinsic.rank import TESTS
    from intrinsic.tasks import describe_summary

    s = rep.settings
    console.print(
        f"[bold]{rep.model}[/] on [bold]{rep.task}[/]: {s.get('batches')} batches x {s.get('batch_size')}"
        + (f" ({rep.examples_used:,} distinct examples)" if rep.examples_used else "")
        + f", {rep.tokens:,} tokens (rank cap {rep.token_cap}); update probe: "
        + (f"{s['update_steps']} steps" if s.get("update_steps") else "skipped")
        + f"; intrinsic rank = [bold]{rep.estimator}[/]"
    )
    if rep.data:
        console.print(f"[dim]data: {escape(describe_summary(rep.data))}[/]")
    for note in rep.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    layers, roles, grid = rank_grid(rep)
    finite = [v for v in grid.flat if not math.isnan(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    heat = Table(title=f"Intrinsic rank per layer and role ({rep.estimator})", header_style="bold")
    heat.add_column("layer", justify="right")
    for r in roles:
        heat.add_column(r, justify="center")
    for i, layer in enumerate(layers):
        cells = []
        for j in range(len(roles)):
            v = grid[i, j]
            cells.append("-" if math.isnan(v) else f"[{_cell_style(v, lo, hi)}] {int(v):>3} [/]")
        heat.add_row(str(layer), *cells)
    console.print(heat)

    kinds = Table(title="Attention vs FFN", header_style="bold")
    for c in ("kind", "modules", "params", "median rank", "mean rank", "energy", "update rank"):
        kinds.add_column(c, justify="left" if c == "kind" else "right")
    for kind, g in rep.summary.get("by_kind", {}).items():
        upd = g.get("median_update_energy_90")
        kinds.add_row(kind, str(g["modules"]), human(g["params"]), f"{g['median_rank']:g}", f"{g['mean_rank']:.1f}",
                      f"{100 * g['energy_share']:.1f}%", "-" if upd is None else f"{upd:g}")
    console.print(kinds)
    console.print("[dim]energy: share of the mean gradient's squared norm; update rank: median energy-90 rank of W_K - W_0[/]")

    by_name = {m.name: m for m in rep.modules}
    top = Table(title="Top modules by gradient energy", header_style="bold")
    cols = (*(c for c in TESTS if any(c in m.grad_ranks for m in rep.modules)), "energy_90")  # tests measured, one descriptive
    for c in ("module", "energy", "rank", *cols, "update e90"):
        top.add_column(c, justify="left" if c == "module" else "right")
    for t in rep.summary.get("top_energy", [])[:8]:
        m = by_name[t["name"]]
        upd = (m.update_ranks or {}).get("energy_90")
        top.add_row(m.short, f"{100 * m.energy_share:.1f}%", str(m.intrinsic_rank),
                    *("-" if m.grad_ranks.get(c) is None else f"{m.grad_ranks[c]:g}" for c in cols),
                    "-" if upd is None else f"{upd:g}")
    console.print(top)
    loss = rep.summary.get("update_loss")
    if loss:
        console.print(f"update probe loss: {loss['first']:.3f} (first 10 steps) -> {loss['last']:.3f} (last 10)")
    if rep.timings:
        console.print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in rep.timings.items()))

