"""`intrinsic train` (one LoRA or full fine-tuning run) and `intrinsic compare` (runs side by side).

Thin: parse options, call `intrinsic.pipeline` / `intrinsic.training.compare`, render. Options that
mirror a `TrainConfig` or `PlacementRequest` field take its help and default from the library
(`common.config_option`); options not given are left to the library's defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from intrinsic.probes.settings import ProbeSettings
from intrinsic.report.format import human
from intrinsic.training.config import TrainConfig

from .common import (
    BudgetLikeOpt,
    BudgetOpt,
    DeviceOpt,
    DtypeOpt,
    FillOpt,
    GainsOpt,
    GranularityOpt,
    JsonOpt,
    LayersOpt,
    MaxRankOpt,
    ModelArg,
    NormalizeOpt,
    PredictorOpt,
    PlacementOpt,
    RankOpt,
    RsloraOpt,
    TaskArg,
    config_help,
    config_option,
    console,
    display_table,
    err_console,
    handle_errors,
    placement_request,
    print_json,
    progress,
)


def _opt(name: str, *flags: str):
    """An option documented by the `TrainConfig` field `name` (help and default from the library)."""
    return config_option(TrainConfig, name, *flags)


def train(
    model: ModelArg,
    task: TaskArg,
    placement: PlacementOpt = "all",
    rank: RankOpt = None,
    budget: BudgetOpt = None,
    budget_like: BudgetLikeOpt = None,
    layers: LayersOpt = None,
    probe_dir: Path = typer.Option(None, "--probe", help="Probe report directory for auto \\[default: reuse OUT/probe "
                                   "or run a quick gradient probe there]."),
    max_rank: MaxRankOpt = None,
    granularity: GranularityOpt = None,
    gains: GainsOpt = None,
    normalize: NormalizeOpt = None,
    predictor: PredictorOpt = None,
    fill: FillOpt = None,
    steps: Annotated[Optional[int], _opt("steps", "--steps")] = None,
    lr: Annotated[Optional[float], _opt("lr", "--lr")] = None,
    batch_size: Annotated[Optional[int], _opt("batch_size", "--batch-size")] = None,
    max_length: Annotated[Optional[int], _opt("max_length", "--max-length")] = None,
    seed: Annotated[Optional[int], _opt("seed", "--seed")] = None,
    eval_every: Annotated[Optional[int], _opt("eval_every", "--eval-every")] = None,
    max_examples: Annotated[Optional[int], _opt("max_examples", "--max-examples")] = None,
    max_eval_examples: Annotated[Optional[int], _opt("max_eval_examples", "--max-eval-examples")] = None,
    all_eval: bool = typer.Option(False, "--all-eval", help="Evaluate on the whole held-out split "
                                  "(no --max-eval-examples cap)."),
    mixed_precision: Annotated[Optional[str], _opt("mixed_precision", "--mixed-precision")] = None,
    grad_accum: Annotated[Optional[int], _opt("grad_accum", "--grad-accum")] = None,
    gradient_checkpointing: Annotated[Optional[bool],
                                      _opt("gradient_checkpointing", "--gradient-checkpointing")] = None,
    checkpoint_every: Annotated[Optional[int], _opt("checkpoint_every", "--checkpoint-every")] = None,
    fast: Annotated[Optional[bool], _opt("fast", "--fast")] = None,
    compile_model: Annotated[Optional[bool], _opt("compile", "--compile")] = None,
    peak_tflops: Annotated[Optional[float], _opt("peak_tflops", "--peak-tflops")] = None,
    eval_split: Annotated[Optional[str], _opt("eval_split", "--eval-split")] = None,
    forgetting_corpus: Annotated[Optional[str], _opt("forgetting_corpus", "--forgetting-corpus")] = None,
    text_column: Annotated[Optional[str], config_option(ProbeSettings, "text_column", "--text-column")] = None,
    label_column: Annotated[Optional[str], config_option(ProbeSettings, "label_column", "--label-column")] = None,
    prompt_column: Annotated[Optional[str], config_option(ProbeSettings, "prompt_column", "--prompt-column")] = None,
    completion_column: Annotated[Optional[str],
                                 config_option(ProbeSettings, "completion_column", "--completion-column")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    rslora: RsloraOpt = False,
    save_model: bool = typer.Option(False, "--save-model", help=config_help(TrainConfig, "save_full_model")),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory \\[default: runs/MODEL-TASK-PLACEMENT-sSEED, "
                               "MODEL and TASK by their last path component, a data file without its suffix]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in OUT (start fresh)."),
    resume: bool = typer.Option(False, "--resume", help="Return OUT's run if it is complete; continue an interrupted "
                                "one from its last checkpoint (OUT/checkpoint, saved at every evaluation and "
                                "--checkpoint-every); a failed one starts again from step 0."),
    as_json: bool = JsonOpt,
) -> None:
    """Fine-tune MODEL on TASK with a LoRA placement (or fully) and report score, params, time and memory."""
    with handle_errors(train):
        from intrinsic.errors import ConfigError
        from intrinsic.results import default_out, output_dir
        from intrinsic.training import prepare_out_dir

        if overwrite and resume:
            raise ConfigError("Give --overwrite or --resume, not both.")
        request = placement_request(placement, rank=rank, budget=budget, budget_like=budget_like, layers=layers,
                                    max_rank=max_rank, granularity=granularity, rslora=rslora,
                                    gains=gains, normalize=normalize, predictor=predictor, fill=fill)
        given = dict(steps=steps, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed,
                     eval_every=eval_every, max_examples=max_examples, mixed_precision=mixed_precision,
                     grad_accum=grad_accum, gradient_checkpointing=gradient_checkpointing,
                     checkpoint_every=checkpoint_every, fast=fast, compile=compile_model, peak_tflops=peak_tflops,
                     eval_split=eval_split,
                     forgetting_corpus=forgetting_corpus)
        settings = {k: v for k, v in given.items() if v is not None}
        if all_eval or max_eval_examples is not None:
            settings["max_eval_examples"] = None if all_eval else max_eval_examples
        config = TrainConfig(**settings, rslora=rslora, save_full_model=save_model)
        out = out or default_out(model, task, request.strategy, config.seed)
        columns = {"text_column": text_column, "label_column": label_column, "prompt_column": prompt_column,
                   "completion_column": completion_column}
        expected = dict(model=model, task=task, placement=request.strategy, config=config)
        done = prepare_out_dir(out, overwrite=overwrite, resume=resume, expected=expected)
        with output_dir(out):  # a failure before anything is written leaves no empty folder behind
            if done is None:
                done = _run(model, task, request, probe_dir, config, device, dtype, out, as_json, columns, resume)
            else:  # same model, task, placement and config: compare the plan too (it needs the model)
                from intrinsic.training.rundir import refuse_other_run

                _pipe, the_plan = _plan(model, task, request, probe_dir, config, device, dtype, out, as_json,
                                        columns)
                refuse_other_run(out, done, config=config, plan=the_plan)
                if not as_json:
                    err_console.print(f"[dim]{out} holds a complete run with these settings; returning it "
                                      "(--resume).[/]")
        if as_json:
            print_json(done)
        else:
            _render_run(done, out)


def _run(model, task_name, request, probe_dir, config, device, dtype, out: Path, quiet: bool, columns: dict,
         resume: bool = False):
    pipe, plan = _plan(model, task_name, request, probe_dir, config, device, dtype, out, quiet, columns)
    if not quiet:
        err_console.print(f"[dim]data: {escape(pipe.task_data.describe())}[/]")
    if plan != "full" and not quiet:
        err_console.print(f"placement [bold]{plan.strategy}[/]: {len(plan.entries)} modules, "
                          f"{human(plan.params)} LoRA params ({plan.pct:.2f}% of {human(pipe.base_params)})")
        if plan.unspent_note():
            err_console.print(plan.unspent_note())
    with progress(transient=quiet) as bar:
        job = bar.add_task("train", total=config.steps, info="")
        last = {"eval": ""}

        def on_event(ev):
            if ev["event"] == "step":
                rate = f"  {human(ev['tokens_per_s'])} tok/s" + (f" MFU {100 * ev['mfu']:.0f}%" if ev["mfu"] else "")
                bar.update(job, completed=ev["step"], info=f"loss {ev['loss']:.4f}{rate}{last['eval']}")
            elif ev["event"] == "start" and ev.get("resumed_from"):
                bar.update(job, completed=ev["resumed_from"], info=f"resumed from step {ev['resumed_from']}")
            elif ev["event"] == "note" and not quiet:
                err_console.print(f"[dim]{escape(ev['message'])}[/]")
            elif ev["event"] == "eval":
                m = ev["metrics"]
                last["eval"] = (f"  acc {m['accuracy']:.3f}" if "accuracy" in m else f"  ppl {m['perplexity']:.2f}")
                if "exact_match" in m:
                    last["eval"] += f"  exact {m['exact_match']:.3f}"
                bar.update(job, description="train", info=f"evaluated at {ev['step']}{last['eval']}")

        return pipe.train(plan, config, out, callback=on_event, resume=resume)


def _plan(model, task_name, request, probe_dir, config, device, dtype, out: Path, quiet: bool, columns: dict):
    """(Pipeline, Plan or "full") of this request; auto reads --probe DIR, else OUT/probe, else probes there."""
    from intrinsic.pipeline import Pipeline
    from intrinsic.probes import ProbeReport
    from intrinsic.training.rundir import PROBE_DIR

    pipe = Pipeline(model, task_name, seed=config.seed, device=device, dtype=dtype,
                    data={"max_examples": config.max_examples, "max_eval_examples": config.max_eval_examples,
                          **columns})

    def report():  # read or run only when the strategy is auto: --probe DIR, else OUT/probe, else a quick probe
        if probe_dir is not None:
            return ProbeReport.load(probe_dir)
        with progress(transient=True) as bar:
            job = bar.add_task("probe", total=None, info="")

            def on_phase(phase, done, total):
                bar.update(job, description=f"probe: {phase}", completed=done, total=total, info="")

            return pipe.quick_probe(config, cache_dir=out / PROBE_DIR, progress=None if quiet else on_phase,
                                    predictor=request.predictor)

    return pipe, pipe.plan(request, probe=report)


def _metric_rows(r) -> list[dict]:
    score_name = {"classification": "accuracy", "completion": "-loss per completion token"}.get(r.task_kind,
                                                                                                "-perplexity")
    rows = [
        {"metric": f"score ({score_name})", "value": r.score},
        {"metric": "best score (step)", "value": f"{r.best_score:.4g} ({r.best_step})"},
        {"metric": f"baseline ({r.baseline_kind})", "value": r.baseline_score},
    ]
    rows += [{"metric": k, "value": v} for k, v in r.metrics.items() if k != "accuracy"]
    rows += [
        {"metric": "trainable params",
         "value": f"{r.trainable_params:,} ({r.trainable_pct:.3g}% of {human(r.base_params)})"},
        {"metric": "  LoRA / head", "value": f"{r.lora_params:,} / {r.head_params:,}"},
        {"metric": "adapter on disk", "value": f"{r.adapter_bytes / 1024:,.1f} KiB" if r.adapter_bytes else "-"},
        {"metric": "train time",
         "value": f"{r.train_time_s:.1f} s ({r.steps} steps, {1000 * r.time_per_step_s:.1f} ms/step)"},
        {"metric": "tokens / s", "value": f"{r.tokens_per_s:,.0f}" + (
            f" (MFU {100 * r.mfu:.1f}% of {r.peak_tflops:.0f} TFLOP/s)" if r.mfu else "")},
        {"metric": "eval time", "value": f"{r.eval_time_s:.1f} s"},
        {"metric": "peak memory", "value": f"{r.peak_memory_mb:,.1f} MiB ({r.memory_kind})"},
    ]
    return rows


def _render_run(r, out: Path) -> None:
    from intrinsic.training.rundir import RUN_FILE

    title = f"{r.model} on {r.task}: {r.placement} — {r.status}"
    display_table(_metric_rows(r), title=title, columns=["metric", "value"])
    if r.adapter_dir:
        console.print(f"adapter: {r.adapter_dir}   run: {out / RUN_FILE}")
    else:
        console.print(f"run: {out / RUN_FILE} (no adapter: full fine-tuning; --save-model keeps the model)")


# ----------------------------------------------------------------------------- compare


def compare(
    runs: list[Path] = typer.Argument(..., help="Run directories (or their run.json files)."),
    as_json: bool = JsonOpt,
) -> None:
    """Show runs side by side (score, params, time, memory) and mark the Pareto-optimal ones (score vs params)."""
    with handle_errors():
        from intrinsic.training.compare import compare_runs, comparison_note

        rows = compare_runs(runs)
        if as_json:
            print_json(rows)
            return
        tasks = sorted({f"{r.model} / {r.task}" for r in rows})
        shown = [{"": "★" if r.pareto else "", "group": r.group, "run": r.run, "placement": r.placement,
                  "status": r.status, "score": _f(r.score, ".4f"), "baseline": _f(r.baseline, ".4f"),
                  "params": human(r.trainable_params), "% base": _f(r.trainable_pct, ".3g"),
                  "train s": _f(r.train_time_s, ".1f"), "ms/step": _f(1000 * r.time_per_step_s, ".0f"),
                  "peak MiB": _f(r.peak_memory_mb, ".0f") + (" (gpu)" if r.memory_kind == "cuda" else ""),
                  "exact": _f(r.exact_match, ".3f"), "forgetting": _f(r.forgetting, "+.4f")}
                 for r in rows]
        cols = ["", "run", "placement", "score", "baseline", "params", "% base", "train s", "ms/step", "peak MiB"]
        for key, col in (("forgetting", "forgetting"), ("exact_match", "exact")):  # completion runs only
            if any(getattr(r, key) is not None for r in rows):
                cols.insert(cols.index("baseline") + 1, col)
        if any(r.status != "complete" for r in rows):
            cols.insert(3, "status")
        note = comparison_note(rows)
        if note:
            cols.insert(1, "group")
        display_table(shown, columns=cols, title=f"{len(rows)} runs — {'; '.join(tasks)}", styles={"": "bold green"})
        console.print("★ Pareto-optimal: above its baseline, and no other run" + (" of its group" if note else "")
                      + " scores as high with as few trainable params.")
        if note:
            err_console.print(f"[yellow]warning:[/] {note}", soft_wrap=True)


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)
