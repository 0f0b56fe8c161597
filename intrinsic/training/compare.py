"""Runs side by side: one typed row per saved run, marked Pareto-optimal on (score up, trainable params down).

`compare_runs(paths)` reads each run.json (`RunResult.load`) and returns `RunComparison` rows in the
order given; `intrinsic compare` only renders them (or prints them as JSON: the row's fields, in
order, are the keys of its `--json` output). A failed run, or one without a score, is never on the
front and never pushes another run off it (`pareto.pareto_front` treats NaN that way).
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
    pareto: bool = documented(help="no other complete run has a score at least as high with at most as many "
                                   "trainable params (and is strictly better on one)")


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
    nan = float("nan")
    points = [(r.score if r.status == "complete" and r.score is not None else nan, float(r.trainable_params))
              for r in results]
    front = set(pareto_front(points))
    return [
        RunComparison(run=name, path=str(path), model=r.model, task=r.task, placement=r.placement,
                      status=r.status, score=r.score, best=r.best_score, trainable_params=r.trainable_params,
                      trainable_pct=r.trainable_pct, adapter_bytes=r.adapter_bytes, train_time_s=r.train_time_s,
                      time_per_step_s=r.time_per_step_s, tokens_per_s=r.tokens_per_s,
                      peak_memory_mb=r.peak_memory_mb, memory_kind=r.memory_kind, pareto=i in front)
        for i, (name, path, r) in enumerate(zip(names, paths, results, strict=True))
    ]
