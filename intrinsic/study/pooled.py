"""Which probe statistic predicts the gain, over the placements of several studies of one model and task.

One study compares a handful of placements per budget (4 in smollm2-budgets-lm, 6 bands in smollm2-layer-bands),
too few for a rank correlation to say much. Studies of one model and task with the same training settings share
cells (by id) and probes, so their test cells can be pooled: every distinct cell once (a cell found in several
studies counts once), grouped by the comparison groups the rows carry ("budget=all@8"), and
`predictors.statistic_checks` run over all of them: per statistic of `placement.need`, Spearman rho with the
mean gain, the seed-bootstrap CI, the partial rho given breadth (`params`), within each group and overall.

Pooling is valid only for studies of one model and task (refused otherwise); whether their train settings match is
the caller's claim (cells of other settings would pool placements trained differently); the studies' names and
definition hashes are recorded. Placement labels that name different configs in different studies are prefixed
with the study's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError
from .analysis import group_index, summarize_configs
from .grid import SWEEP
from .predictors import StatisticCheck, statistic_checks, statistic_rows
from .rows import CellRow, load_results

TARGET_RHO = 0.85  # issue 13: Spearman >= 0.85 between the best statistic and the gain within each budget group


@dataclass(frozen=True)
class PooledStudies:
    """The statistic checks over the pooled test cells of several studies."""

    studies: tuple[str, ...]  # study names, in the order given
    definitions: tuple[str, ...]  # their definition hashes
    model: str
    task: str
    cells: int  # distinct finished test cells pooled
    shared: int  # test cells found in more than one study (pooled once)
    placements: int  # configs (placements) pooled
    groups: dict[str, tuple[str, ...]]  # group -> placement labels
    checks: tuple[StatisticCheck, ...]  # every statistic, over all placements and within each group
    best: dict[str, str]  # scope -> the statistic with the highest rho there
    meets_target: dict[str, tuple[str, ...]]  # statistic -> the groups where its rho >= TARGET_RHO


def pool_rows(results_dirs: Sequence[str | Path]) -> tuple[list[dict], list[CellRow], int]:
    """(study records, the distinct finished test rows of all directories, rows seen more than once)."""
    if not results_dirs:
        raise ConfigError("Give at least one study results directory.")
    records, rows, seen, shared, labels = [], [], set(), 0, {}
    for d in results_dirs:
        record, found = load_results(d)
        if records and (record.get("model"), record.get("task")) != (records[0].get("model"), records[0].get("task")):
            raise ConfigError(f"{d} is {record.get('model')} on {record.get('task')}, {results_dirs[0]} is "
                              f"{records[0].get('model')} on {records[0].get('task')}: pool studies of one model "
                              "and task.")
        records.append(record)
        for r in found:
            if r.phase == SWEEP or not r.ok:  # sweeps select lrs; unfinished cells hold no outcome
                continue
            if r.id in seen:
                shared += 1
                continue
            seen.add(r.id)
            owner = labels.setdefault(r.label, r.config_id)
            rows.append(r if owner == r.config_id else replace(r, label=f"{record.get('name')}: {r.label}"))
    return records, rows, shared


def pooled_statistics(results_dirs: Sequence[str | Path]) -> PooledStudies:
    """Pool the studies' test cells and check every predictor statistic over them (module docstring)."""
    records, rows, shared = pool_rows(results_dirs)
    configs = summarize_configs(rows)
    groups = group_index(configs)
    checks = tuple(statistic_checks(configs, groups))
    best: dict[str, tuple[float, str]] = {}
    for k in checks:
        if k.rho.rho is not None and (k.scope not in best or k.rho.rho > best[k.scope][0]):
            best[k.scope] = (k.rho.rho, k.statistic)
    meets: dict[str, list[str]] = {}
    for k in checks:
        meets.setdefault(k.statistic, [])
        if k.scope != "all placements" and k.rho.rho is not None and k.rho.rho >= TARGET_RHO:
            meets[k.statistic].append(k.scope)
    return PooledStudies(
        studies=tuple(str(r.get("name")) for r in records),
        definitions=tuple(str(r.get("definition_hash")) for r in records),
        model=str(records[0].get("model")), task=str(records[0].get("task")), cells=len(rows), shared=shared,
        placements=len(configs), groups=groups, checks=checks, best={s: b[1] for s, b in best.items()},
        meets_target={s: tuple(g) for s, g in meets.items()})


def statistics_table(p: PooledStudies) -> tuple[str, list[str], list[dict]]:
    """(title, columns, rows) of the pooled checks, one row per scope and statistic."""
    rows = [{**row, "best": "yes" if p.best.get(k.scope) == k.statistic else ""}
            for k, row in zip(p.checks, statistic_rows(p.checks))]
    cols = ["scope", "statistic", "n", "spearman_rho", "ci95_seeds", "p", "partial_rho", "partial_p", "given",
            "verdict", "best"]
    return "Spearman rho of each statistic's predicted share with the measured gain (pooled)", cols, rows


def render_markdown(p: PooledStudies) -> str:
    """The pooled check as a Markdown document."""
    title, cols, rows = statistics_table(p)
    groups = [g for g in p.groups if any(k.scope == g for k in p.checks)]
    lines = [f"# Which probe statistic predicts the gain: {p.model} on {p.task}, {len(p.studies)} studies pooled",
             "", f"Studies: {', '.join(f'`{s}` ({h})' for s, h in zip(p.studies, p.definitions))}. "
             f"{p.cells} distinct finished test cells ({p.shared} more were shared between studies and counted once), "
             f"{p.placements} placements; groups: "
             + "; ".join(f"{g} ({len(p.groups[g])} placements)" for g in groups) + ".", "",
             f"Target: rho >= {TARGET_RHO} within every group. "
             + "; ".join(f"`{s}`: {len(g)} of {len(groups)}" + (f" ({', '.join(g)})" if g else "")
                         for s, g in p.meets_target.items()) + ".", "",
             f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["PooledStudies", "TARGET_RHO", "pool_rows", "pooled_statistics", "render_markdown", "statistics_table"]
