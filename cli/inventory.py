"""`intrinsic modules` and `intrinsic tasks`: what would be probed, and which tasks exist."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Optional

import typer
from rich.markup import escape

from intrinsic.probes.settings import ProbeSettings

from intrinsic.report.format import human

from .common import JsonOpt, ModelArg, ModulesOpt, config_option, console, display_table, handle_errors, print_json


def modules(
    model: ModelArg,
    modules_override: ModulesOpt = None,
    lm: bool = typer.Option(False, "--lm", help="Load with a causal-LM head instead of a classification head."),
    as_json: bool = JsonOpt,
) -> None:
    """List the attention and FFN modules of MODEL: roles, (out, in) shapes and parameter counts per layer."""
    with handle_errors():
        from intrinsic.arch import discover, parse_module_patterns
        from intrinsic.models import base_param_count, load_model

        loaded = load_model(model, task_kind="lm" if lm else "classification")
        patterns = parse_module_patterns(modules_override) if modules_override else None
        refs = discover(loaded.model, patterns=patterns)
        total = sum(r.params for r in refs)
        base = base_param_count(loaded.model)
        if as_json:
            print_json(
                {
                    "model": model,
                    "model_type": loaded.model_type,
                    "num_modules": len(refs),
                    "num_layers": len({r.layer for r in refs}),
                    "module_params": total,
                    "base_params": base,
                    "modules": refs,
                }
            )
            return
        by_layer: dict[int, dict[str, str]] = defaultdict(dict)
        roles: list[str] = []
        for r in refs:
            by_layer[r.layer][r.role] = f"{r.shape[0]}×{r.shape[1]}"
            if r.role not in roles:
                roles.append(r.role)
        rows = []
        for layer in sorted(by_layer):
            row = {"layer": layer, **{role: by_layer[layer].get(role, "") for role in roles}}
            row["params"] = human(sum(r.params for r in refs if r.layer == layer))
            rows.append(row)
        display_table(rows, title=f"{model} ({loaded.model_type}): {len(refs)} modules in {len(rows)} layers")
        console.print(
            f"probed weights: [bold]{human(total)}[/] of {human(base)} base parameters ({100 * total / base:.1f}%)"
        )


def tasks(
    name: Optional[str] = typer.Argument(None, help="Show this task as `probe` and `train` load it: sizes, how its "
                                         "test split came about, label ids in order, rows dropped.",
                                         show_default=False),
    text_column: Annotated[Optional[str], config_option(ProbeSettings, "text_column", "--text-column")] = None,
    label_column: Annotated[Optional[str], config_option(ProbeSettings, "label_column", "--label-column")] = None,
    prompt_column: Annotated[Optional[str], config_option(ProbeSettings, "prompt_column", "--prompt-column")] = None,
    completion_column: Annotated[Optional[str],
                                 config_option(ProbeSettings, "completion_column", "--completion-column")] = None,
    as_json: bool = JsonOpt,
) -> None:
    """List the built-in tasks with their kind, sizes and label sets, or show one task (NAME)."""
    with handle_errors():
        from intrinsic.tasks import list_tasks, load_task

        if name is not None:
            data = load_task(name, text_column=text_column, label_column=label_column, prompt_column=prompt_column,
                             completion_column=completion_column)
            if as_json:
                print_json(data.summary())
                return
            console.print(escape(data.describe()), highlight=False, soft_wrap=True)
            counts = data.summary()["train_label_counts"]
            if counts:
                display_table([{"id": i, "label": n, "train examples": c} for i, (n, c) in enumerate(counts.items())],
                              title=f"Labels of {data.name} (id = index)")
            return
        infos = list_tasks()
        if as_json:
            print_json(infos)
            return
        rows = [
            {
                "task": t.name,
                "kind": t.kind,
                "train": t.train_size,
                "test": t.test_size,
                "labels": ", ".join(t.labels) if len(t.labels) <= 5 else f"{len(t.labels)} classes",
            }
            for t in infos
        ]
        display_table(rows, title="Built-in tasks")
        console.print(
            "Also: [bold]NAME:lm[/] (causal LM on a text task), [bold]hf:NAME[:CONFIG][/] (datasets.load_dataset), "
            "and local [bold].csv/.jsonl/.parquet[/] files (--text-column/--label-column)."
        )

