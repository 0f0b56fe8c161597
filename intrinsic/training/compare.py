"""Runs side by side: one typed row per saved run, marked Pareto-optimal on (score up, trainable params down).

`compare_runs(paths)` reads each run.json (`RunResult.load`) and returns `RunComparison` rows in the
order given; `intrinsic compare` only renders them (or prints them as JSON: the row's fields, in
order, are the keys of its `--json` output). A failed run, one without a score, or one that scores
no better than its baseline (majority class, untrained model) is never on the front and never pushes
another run off it (`pareto.pareto_front` treats NaN that way).

Only comparable runs compete: runs of another model, task, step count, evaluation size or seed form
their own group (`RunComparison.group`), each with its own front, and `comparison_note(rows)` says
in one line what differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fields import documented


@dataclass(frozen=True)
class RunComparison:
    """One run in a comparison: what run.json says, plus whether no other run beats it."""

    run: str = documented(help="the run directory's name (the parent's name when a run.json file was given)")
    path: str = documented(help="the path as given on the command line")
    model: str = documented(help="the model trained")
    task: str = documented(help="the task trained on")
    placement: str = documented(help='plan strategy ("all", "q,v", "auto", ...) or "full"')
    status: str = documented(help='"complete" | "failed"')
    score: float | None = documented(help="final held-out score (higher is better); null for a failed run")
    best: float | None = documented(help="best score over all evaluation points")
    trainable_params: int = documented(help="parameters that received gradients (adapters + head, or all)")
    trainable_pct: float | None = documented(help="100 * trainable_params / base_params")
    adapter_bytes: int | None = documented(help="bytes of the saved adapter on disk (0 for full fine-tuning)")
    train_time_s: float | None = documented(help="wall time of the training steps only")
    time_per_step_s: float | None = documented(help="train_time_s / steps")
    tokens_per_s: float | None = documented(help="training tokens per second")
    peak_memory_mb: float | None = documented(help="peak memory in MiB (see memory_kind)")
    memory_kind: str | None = documented(help='"cuda": absolute peak allocated; "rss": peak growth of the process')
    pareto: bool = documented(help="scores above its baseline, and no other complete run of its group has a "
                                   "score at least as high with at most as many trainable params (and is "
                                   "strictly better on one)")
    baseline: float | None = documented(help="the score of the run's baseline (majority class or untrained model)")
    steps: int | None = documented(help="optimizer steps completed")
    seed: int | None = documented(help="the training seed")
    eval_examples: int | None = documented(help="cap on held-out examples (max_eval_examples; null: all)")
    group: int = documented(help="1, 2, ...: runs with the same model, task, steps, eval size and seed, in order "
                                 "of first appearance; the Pareto front is drawn within each group")
    exact_match: float | None = documented(None, "metrics.exact_match: share of greedy answers equal to the "
                                                 "reference (completion tasks), else null")
    forgetting: float | None = documented(None, "metrics.forgetting: log-loss on the forgetting corpus after minus "
                                                "before training (higher: more forgotten), else null")


def compare_runs(paths: Sequence[str | Path]) -> list[RunComparison]:
    """One `RunComparison` per run directory (or run.json file) in `paths`, in the order given."""
    from ..pareto import pareto_front
    from .config import RunResult
    from .rundir import RUN_FILE

    if not paths:
        raise ConfigError("compare needs at least one run directory.")
    paths = [Path(p) for p in paths]
    results = [RunResult.load(p) for p in paths]
    names = [(p.parent if p.name == RUN_FILE else p).name for p in paths]
    keys = [tuple(_setting(r, name) for name in COMPARED) for r in results]
    group_of = {k: i + 1 for i, k in enumerate(dict.fromkeys(keys))}
    front: set[int] = set()
    for key in group_of:
        members = [i for i, k in enumerate(keys) if k == key]
        points = [(_useful_score(results[i]), float(results[i].trainable_params)) for i in members]
        front.update(members[j] for j in pareto_front(points))
    return [
        RunComparison(run=name, path=str(path), model=r.model, task=r.task, placement=r.placement,
                      status=r.status, score=r.score, best=r.best_score, trainable_params=r.trainable_params,
                      trainable_pct=r.trainable_pct, adapter_bytes=r.adapter_bytes, train_time_s=r.train_time_s,
                      time_per_step_s=r.time_per_step_s, tokens_per_s=r.tokens_per_s,
                      peak_memory_mb=r.peak_memory_mb, memory_kind=r.memory_kind, pareto=i in front,
                      baseline=r.baseline_score, steps=r.steps, seed=_setting(r, "seed"),
                      eval_examples=_setting(r, "eval size"), group=group_of[keys[i]],
                      exact_match=(r.metrics or {}).get("exact_match"), forgetting=(r.metrics or {}).get("forgetting"))
        for i, (name, path, r) in enumerate(zip(names, paths, results, strict=True))
    ]


# what must be equal for two runs' scores to be compared, as the note names it
COMPARED = ("model", "task", "steps", "eval size", "seed")


def _setting(r, name: str):
    """Setting `name` of COMPARED for RunResult `r` (None when run.json does not say)."""
    if name in ("model", "task", "steps"):
        return getattr(r, name)
    return (r.config or {}).get({"eval size": "max_eval_examples", "seed": "seed"}[name])


def _useful_score(r) -> float:
    """The score a run competes with: NaN (never on the front) when failed, missing, or not above baseline."""
    if r.status != "complete" or r.score is None:
        return float("nan")
    if r.baseline_score is not None and r.score <= r.baseline_score:
        return float("nan")
    return r.score


def comparison_note(rows: Sequence[RunComparison]) -> str | None:
    """One line naming what differs between the runs' groups ("steps (10, 100); seed (0, 1)"), or None when
    every run is comparable with every other."""
    if len({r.group for r in rows}) < 2:
        return None
    values = {"model": [r.model for r in rows], "task": [r.task for r in rows], "steps": [r.steps for r in rows],
              "eval size": [r.eval_examples for r in rows], "seed": [r.seed for r in rows]}
    differ = []
    for name in COMPARED:
        distinct = sorted(set(values[name]), key=lambda v: (v is None, v if isinstance(v, (int, float)) else str(v)))
        if len(distinct) > 1:
            shown = ", ".join("all" if v is None and name == "eval size" else str(v) for v in distinct)
            differ.append(f"{name} ({shown})")
    return (f"these runs differ in {'; '.join(differ)}: their scores are not comparable, so each group of runs "
            "with the same settings (column 'group') has its own Pareto front.")
