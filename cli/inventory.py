"""`intrinsic modules` and `intrinsic tasks`: what would be probed, and which tasks exist."""

from __future__ import annotations

from collections import defaultdict

import typer

from intrinsic.report.format import human

from .common import JsonOpt, ModelArg, ModulesOpt, console, display_table, handle_errors, print_json


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


def tasks(as_json: bool = JsonOpt) -> None:
    """List the built-in tasks with their kind, sizes and label sets."""
    with handle_errors():
        from intrinsic.tasks import list_tasks

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

