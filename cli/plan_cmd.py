"""`intrinsic plan PROBE_DIR --budget B`: turn a probe report into a LoRA placement, without training.

Prints the plan as a rank table (layers x roles) and writes it atomically to OUT as
plan.json (the Plan), peft_config.json (LoraConfig keyword arguments) and lora_config.py
(a ready-to-paste `peft.LoraConfig(...)`), so the plan can drive anyone's training code.
"""

from __future__ import annotations

from pathlib import Path

import typer

from intrinsic.report.format import human

from .common import (
    AlphaMultOpt,
    BudgetLikeOpt,
    BudgetOpt,
    FillOpt,
    GainsOpt,
    GranularityOpt,
    JsonOpt,
    LayersOpt,
    MaxRankOpt,
    NormalizeOpt,
    PredictorOpt,
    PlacementOpt,
    RankOpt,
    RsloraOpt,
    console,
    display_table,
    handle_errors,
    placement_request,
    print_json,
)

FORMATS = ("json", "peft", "python")


def plan(
    probe_dir: Path = typer.Argument(..., help="Directory of a saved probe (probe.json), from `intrinsic probe`."),
    budget: BudgetOpt = None,
    budget_like: BudgetLikeOpt = None,
    strategy: PlacementOpt = "auto",
    rank: RankOpt = None,
    layers: LayersOpt = None,
    max_rank: MaxRankOpt = None,
    granularity: GranularityOpt = None,
    gains: GainsOpt = None,
    normalize: NormalizeOpt = None,
    predictor: PredictorOpt = None,
    fill: FillOpt = None,
    alpha_mult: AlphaMultOpt = None,
    rslora: RsloraOpt = False,
    fmt: str = typer.Option("json", "--format", "-f", help="What --json prints: json (the Plan) | peft (LoraConfig "
                            "kwargs) | python (a LoraConfig snippet). All three files are written either way."),
    out: Path = typer.Option(None, "--out", "-o", help="Where to write the files \\[default: PROBE_DIR/plan]."),
    as_json: bool = JsonOpt,
) -> None:
    """Allocate LoRA ranks from PROBE_DIR's gradient spectra under a parameter budget; write plan files."""
    with handle_errors(plan):
        from intrinsic.errors import ConfigError
        from intrinsic.pipeline import peft_task_type, plan_from_probe, write_plan_files
        from intrinsic.probes import ProbeReport
        from intrinsic.results import output_dir

        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'.")
        request = placement_request(strategy, rank=rank, budget=budget, budget_like=budget_like, layers=layers,
                                    max_rank=max_rank, granularity=granularity, alpha_mult=alpha_mult, rslora=rslora,
                                    gains=gains, normalize=normalize, predictor=predictor, fill=fill)
        report = ProbeReport.load(probe_dir)
        out = out or Path(probe_dir) / "plan"
        with output_dir(out):  # checked before planning; left out when planning fails
            the_plan = plan_from_probe(report, request)
            task_type = peft_task_type(report.task)
            write_plan_files(the_plan, out, task_type)
        if as_json:
            if fmt == "json":
                print_json(the_plan)
            elif fmt == "peft":
                print_json({"task_type": task_type, **the_plan.to_peft_dict()})
            else:
                print(the_plan.to_python_snippet(task_type), end="")
            return
        render_plan(the_plan, title=f"{report.model} on {report.task}: {the_plan.strategy}")
        if fmt == "python":
            console.print(the_plan.to_python_snippet(task_type), highlight=False)
        console.print(f"wrote {out}/plan.json, peft_config.json, lora_config.py")


def render_plan(p, title: str) -> None:
    """The plan as a table: one row per layer, one column per role holding the rank ('' = no adapter)."""
    from intrinsic.placement import plan_table

    rows = [{k: ("" if v == 0 and k not in ("layer", "params") else v) for k, v in row.items()}
            for row in plan_table(p)]
    budget = f" of budget {human(p.budget)}" if p.budget else ""
    pct = f" ({p.pct:.3f}% of {human(p.base_params)})" if p.base_params else ""
    display_table(rows, title=f"{title}: {len(p.entries)} modules, {human(p.params)} params{budget}{pct}")
    if p.settings.get("gain_captured") is not None:
        what = p.settings.get("predictor") or "gradient"
        what = "the gradient energy" if what == "gradient" else f"predictor {what}'s gains"
        console.print(f"first-order gain captured: {100 * p.settings['gain_captured']:.1f}% of {what}")
    if p.settings.get("fill") in ("raw", "spread"):
        how = "on the raw gradient spectrum" if p.settings["fill"] == "raw" else "over every module, lowest rank first"
        console.print(f"fill: {human(p.settings['filled_params'])} params bought {how} after every step with a gain")
    if p.unspent_note():
        console.print(p.unspent_note())

