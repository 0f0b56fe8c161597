"""r90 over seeds: several `TruncationResult`s of one model and task (one full fine-tuning run per seed)
summarized per component, with confidence intervals.

r90 lives on a coarse grid (1, 2, 4, ...), so its spread is summarized on the log2 scale: the geometric
mean of r90 over seeds with the t-based 95% CI of mean log2 r90, mapped back (`study.stats.summarize`).
A seed whose r90 was not reached on the grid makes the geometric mean undefined (None; `not_reached`
counts them). Beside it, per rank, the share of full fine-tuning's gain the truncated model keeps,
gain(r) / gain(full), as a mean with its t CI over seeds: a continuous view of the same curve.
r90_own (`OwnSummary`) is summarized the same way over the seeds where it is defined (a seed whose own
contribution is below the floor is counted as undefined and left out), with the component's own share of
the gain as a mean with its t CI.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..errors import ConfigError
from ..fields import documented
from .result import NOT_REACHED, REACHED, UNDEFINED, TruncationResult


@dataclass(frozen=True)
class RankShare:
    """The share of the gain kept at one rank, over seeds."""

    rank: int = documented(help="the rank r")
    n: int = documented(help="seeds measured at r (with a positive full gain)")
    mean: float | None = documented(help="mean of gain(r) / gain(full) over those seeds")
    ci_low: float | None = documented(help="t-based 95% CI of the mean (null with fewer than 2 seeds)")
    ci_high: float | None = documented(help="upper end of that CI")


@dataclass(frozen=True)
class OwnSummary:
    """One component's r90_own and own share over seeds."""

    r90s: tuple[int | None, ...] = documented(help="r90_own of each run, in the order of the runs (null: not "
                                                   "reached, undefined or not measured: see status)")
    status: tuple[str, ...] = documented(help="own_status of each run (reached, not reached, undefined, not measured)")
    undefined: int = documented(help="runs whose own contribution is below the floor: left out of the statistics")
    not_reached: int = documented(help="runs whose r90_own was not reached on the grid")
    median: float | None = documented(help="median r90_own over the runs where it is defined, not reached counting "
                                           "as above every rank (null when half or more were not reached)")
    geomean: float | None = documented(help="2^(mean log2 r90_own) over those runs; null when one was not reached")
    ci_low: float | None = documented(help="2^ of the t-based 95% CI's lower end of mean log2 r90_own")
    ci_high: float | None = documented(help="2^ of its upper end")
    share: float | None = documented(help="mean over the runs of the component's own share of the full gain, "
                                          "(gain(full) - gain(0)) / gain(full)")
    share_ci_low: float | None = documented(help="t-based 95% CI of that mean (null with fewer than 2 runs)")
    share_ci_high: float | None = documented(help="its upper end")


@dataclass(frozen=True)
class ComponentSummary:
    """One component's r90 over seeds."""

    component: str = documented(help="the component (as in ComponentTruncation)")
    runs: int = documented(help="runs that measured it")
    r90s: tuple[int | None, ...] = documented(help="r90 of each run, in the order of the runs (null: not reached)")
    not_reached: int = documented(help="runs whose r90 was not reached on the grid (or that gained nothing)")
    median: float | None = documented(help="median r90 over the runs, a run not reached counting as above every "
                                           "rank (null when half or more were not reached)")
    geomean: float | None = documented(help="2^(mean log2 r90); null when a run was not reached")
    ci_low: float | None = documented(help="2^ of the t-based 95% CI's lower end of mean log2 r90 (null with fewer "
                                           "than 2 runs, or a run not reached)")
    ci_high: float | None = documented(help="2^ of its upper end")
    energy_rank90: tuple[int, ...] = documented(help="the update's spectral 90%-energy rank in each run")
    kept: tuple[RankShare, ...] = documented(help="share of the gain kept at each rank, over the runs")
    own: OwnSummary = documented(help="r90_own and the component's own share of the gain, over the runs")


@dataclass(frozen=True)
class TruncationSummary:
    """`intrinsic truncate RUN_DIR RUN_DIR...`: every run's result and the summary per component."""

    runs: tuple[TruncationResult, ...] = documented(help="the TruncationResult of each run, in the order given")
    summary: tuple[ComponentSummary, ...] = documented(help="per component, r90 over the runs")


def summarize_runs(results) -> TruncationSummary:
    """The per-component summary of several TruncationResults (same model and task; ConfigError otherwise)."""
    from ..study.stats import summarize

    results = tuple(results)
    pairs = {(r.model, r.task) for r in results}
    if len(pairs) > 1:
        raise ConfigError("The runs are of different models or tasks (" + "; ".join(
            f"{m} on {t}" for m, t in sorted(pairs)) + "): summarize the seeds of one model and task.")
    names = list(dict.fromkeys(c.component for r in results for c in r.components))
    out = []
    for name in names:
        rows = [(r, next(c for c in r.components if c.component == name)) for r in results
                if any(c.component == name for c in r.components)]
        r90s = tuple(c.r90 for _, c in rows)
        median, geomean, ci_low, ci_high = _rank_stats(r90s)
        by_rank: dict[int, list[float]] = {}
        for r, c in rows:
            if r.full_gain > 0:
                for k, g in zip(c.ranks, c.gains, strict=True):
                    if g is not None:
                        by_rank.setdefault(k, []).append(g / r.full_gain)
        kept = []
        for k in sorted(by_rank):
            s = summarize(by_rank[k])
            kept.append(RankShare(rank=k, n=s.n, mean=s.mean, ci_low=s.ci_low, ci_high=s.ci_high))
        out.append(ComponentSummary(
            component=name, runs=len(rows), r90s=r90s, not_reached=sum(v is None for v in r90s),
            median=median, geomean=geomean, ci_low=ci_low, ci_high=ci_high,
            energy_rank90=tuple(c.energy_rank90 for _, c in rows), kept=tuple(kept),
            own=_own([c for _, c in rows])))
    return TruncationSummary(runs=results, summary=tuple(out))


def _own(rows) -> OwnSummary:
    """r90_own over the runs' rows of one component: statistics over the runs where it is defined."""
    from ..study.stats import summarize

    status = tuple(c.own_status for c in rows)
    defined = tuple(c.r90_own for c in rows if c.own_status in (REACHED, NOT_REACHED))
    median, geomean, ci_low, ci_high = _rank_stats(defined)
    share = summarize([c.own_share for c in rows if c.own_share is not None])
    return OwnSummary(r90s=tuple(c.r90_own for c in rows), status=status, undefined=status.count(UNDEFINED),
                      not_reached=status.count(NOT_REACHED), median=median, geomean=geomean, ci_low=ci_low,
                      ci_high=ci_high, share=share.mean, share_ci_low=share.ci_low, share_ci_high=share.ci_high)


def _rank_stats(ranks) -> tuple[float | None, float | None, float | None, float | None]:
    """(median, geometric mean, its CI low, high) of ranks over runs, None meaning not reached (see the fields)."""
    from ..study.stats import summarize

    reached = [v for v in ranks if v is not None]
    logs = summarize([math.log2(v) for v in reached]) if reached and len(reached) == len(ranks) else None

    def two(x):
        return None if x is None else 2.0 ** x

    if logs is None:
        return _median(ranks), None, None, None
    return _median(ranks), two(logs.mean), two(logs.ci_low), two(logs.ci_high)


def _median(r90s) -> float | None:
    """Median with None as +infinity; None when the median itself is not reached."""
    vals = [math.inf if v is None else float(v) for v in r90s]
    if not vals:
        return None
    m = statistics.median(vals)
    return None if math.isinf(m) else m
