"""Analysis of a study's results: per-config statistics over seeds, paired comparisons against `all`,
Pareto frontiers, and the check of the probe's prediction against measured gains.

Input is the list of typed result rows (`rows.CellRow`, one per cell, as in results.json). A *config* is a cell without its seed; its seeds are replicates. A *group*
("rank=8", "budget=all@8") is a controlled comparison: configs that share a rank or a budget.

Every paired comparison of the score forms one family: their p-values are Holm-corrected together
(`stats.holm`), and each comparison states the minimum detectable effect at 80% power for its number
of seeds and observed sd of the paired differences. The secondary metrics (exact match of completion tasks,
forgetting) get the same pairs against `all`, each metric its own Holm family (`secondary_comparisons`). lr-sweep rows (validation runs) never enter a
comparison: they only give the learning rate chosen per arm (`selection.select_lrs`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..pareto import pareto_front
from .datasize import full_comparisons, size_key, size_of
from .grid import SWEEP
from .predictors import PredictorCheck, StatisticCheck, predictor_checks, statistic_checks
from .rows import CellRow, status_counts
from .selection import LrChoice, select_lrs, sweep_rows
from .stats import (ALPHA, Correlation, PairedTest, Summary, holm, min_detectable_effect, paired_bootstrap,
                    paired_ttest, seeds_needed, spearman, summarize)

REFERENCE = "all"  # the variant every other placement is compared against
SECONDARY = {"exact_match": True, "forgetting": False}  # secondary metric -> higher is better
COST_LABELS = {"trainable_params": "trainable parameters", "peak_memory_mb": "peak memory (MB)",
               "train_time_s": "training time (s)", "time_per_step_s": "time per step (s)",
               "adapter_bytes": "adapter size (bytes)"}


@dataclass(frozen=True)
class ConfigSummary:
    """One placement configuration aggregated over its seeds."""

    config_id: str  # hash of the settings without the seed
    label: str  # e.g. "ffn budget=all@8"
    variant: str  # strategy plus layer selection, e.g. "all[lower]"
    strategy: str  # all | attention | ffn | "q,v" | auto | full
    rank: int | None  # uniform rank (fixed strategies at a rank)
    budget: str | None  # budget text (auto and budget cells)
    groups: tuple[str, ...]  # comparison groups
    n_cells: int  # seeds asked for
    n_ok: int  # seeds that finished
    status: str  # ok | partial | failed | infeasible | pending
    errors: tuple[str, ...]  # distinct error messages of failed or infeasible seeds
    score: Summary  # eval score (accuracy, or -perplexity) over finished seeds
    gain: Summary  # score minus the untrained baseline
    trainable_params: Summary  # trainable parameters (same for every seed except auto)
    peak_memory_mb: Summary  # peak memory of training
    train_time_s: Summary  # wall time of training
    time_per_step_s: Summary  # mean wall time per optimizer step
    adapter_bytes: Summary  # saved adapter size
    predicted_share: Summary  # probe-predicted share of mean-gradient energy captured (1.0 for full)
    ranks: str  # rank range of the plan, e.g. "8" or "2-31"
    memory_kind: str | None = None  # "cuda" (max allocated) or "rss" (CPU process growth: unreliable across cells)
    scores_by_seed: dict[int, float] = field(default_factory=dict)  # seed -> score, finished seeds only
    timing: str | None = None  # "shared" when a finished seed shared its device (time and memory), "exclusive"
    #                            when every one had it alone, None when not recorded (older results)
    gains_by_seed: dict[int, float] = field(default_factory=dict)  # seed -> gain, finished seeds only
    modules: Summary | None = None  # adapted modules of the plan (None for full fine-tuning)
    lr: float | None = None  # the learning rate its runs used (one value), None when unknown or mixed
    lr_grid: tuple[float, ...] = ()  # its lr grid: non-empty = lr chosen on validation
    predicted_by_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # predictor -> seed -> share of
    #                   its statistic the plan covers (CellRow.predicted), finished seeds with a probe only
    exact_match: Summary | None = None  # completion tasks: share of greedy answers right (None: not measured)
    forgetting: Summary | None = None  # forgetting-corpus log-loss after minus before training (None: not measured)
    secondary_by_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # SECONDARY metric -> seed ->
    #                   value, finished seeds where it was measured (absent: never measured)

    def metric(self, name: str) -> Summary:
        return getattr(self, name)


@dataclass(frozen=True)
class Comparison:
    """A placement against `all` in one comparison group, paired by seed."""

    group: str  # "rank=8" | "budget=all@8" | "rank=8 n=1000" | "n=1000 vs full" (reference: full fine-tuning)
    label: str  # the placement compared
    reference: str  # the `all` config it is compared with
    ttest: PairedTest  # scipy.stats.ttest_rel over shared seeds (score - reference score)
    bootstrap: PairedTest  # paired percentile bootstrap of the same difference (robustness check)
    verdict: str  # "better" | "worse" (Holm-corrected p < alpha) | "no significant difference" | "too few seeds"
    sd_diff: float | None = None  # sample sd of the paired differences (None with < 2 pairs)
    p_holm: float | None = None  # ttest.p Holm-corrected over every comparison of the report
    family: int = 0  # size of that family (comparisons with a p-value)
    mde: float | None = None  # minimum detectable effect at 80% power, alpha 0.05, with these pairs and sd_diff
    seeds_needed: int | None = None  # pairs needed for |mean_diff| to reach the MDE (None: unknown)
    metric: str = "score"  # what is compared: the score, or a SECONDARY metric (its own Holm family)

    @property
    def supported(self) -> bool:
        """Survives Holm at alpha and has at least the seeds needed to detect its own effect."""
        return (self.p_holm is not None and self.p_holm < ALPHA and self.seeds_needed is not None
                and self.ttest.n >= self.seeds_needed)


@dataclass(frozen=True)
class Frontier:
    """Pareto frontier of mean score (up) against one mean cost (down)."""

    metric: str  # cost metric name
    points: tuple[tuple[str, float, float], ...]  # (label, cost, score) of every finished config
    front: tuple[str, ...]  # labels on the frontier, by increasing cost


@dataclass(frozen=True)
class Prediction:
    """Does the probe's predicted energy share order the placements like their measured gains?"""

    overall: Correlation  # Spearman(predicted share, mean gain) over all finished configs
    by_group: dict[str, Correlation]  # the same within each comparison group with >= 3 configs
    points: tuple[tuple[str, float, float], ...]  # (label, predicted share, mean gain)
    auto_on_frontier: dict[str, dict[str, bool]]  # auto label -> metric -> on the frontier?
    auto_best_in_group: dict[str, bool]  # budget group -> does auto have the best mean score there?


@dataclass(frozen=True)
class StudyAnalysis:
    """Everything the report shows."""

    study: dict[str, Any]  # name, question, model, task, definition_hash, quick, metrics
    configs: tuple[ConfigSummary, ...]  # in grid order
    groups: dict[str, tuple[str, ...]]  # group -> config labels, groups sorted (ranks, then budgets)
    comparisons: tuple[Comparison, ...]  # every non-reference config against `all`, per group
    frontiers: tuple[Frontier, ...]  # one per cost metric
    prediction: Prediction  # prediction validation
    counts: dict[str, int]  # cells by status
    lr_choices: tuple[LrChoice, ...] = ()  # learning rate chosen on validation per arm with an lr grid
    predictor_checks: tuple[PredictorCheck, ...] = ()  # probe vs trivial predictors vs noise ceiling, per scope
    statistic_checks: tuple[StatisticCheck, ...] = ()  # every predictor statistic vs the gain, per scope
    secondary: tuple[Comparison, ...] = ()  # SECONDARY metrics against `all`, per group; each metric one family
    alpha: float = ALPHA  # the report's significance level (family-wise, Holm)

    def config(self, label: str) -> ConfigSummary:
        return next(c for c in self.configs if c.label == label)


def _ranks_text(rows: Sequence[CellRow]) -> str:
    lo = [r.rank_min for r in rows if r.rank_min is not None]
    hi = [r.rank_max for r in rows if r.rank_max is not None]
    if not lo:
        return "-"
    a, b = min(lo), max(hi)
    return str(a) if a == b else f"{a}-{b}"


def _one(values: set) -> Any:
    """The single value of a set, or None when it holds none or several."""
    return next(iter(values)) if len(values) == 1 else None


def summarize_configs(rows: Sequence[CellRow]) -> list[ConfigSummary]:
    """Group rows by config id (first-seen order) and summarize each over its seeds."""
    by_cfg: dict[str, list[CellRow]] = {}
    for r in rows:
        by_cfg.setdefault(r.config_id, []).append(r)
    out = []
    for cid, rs in by_cfg.items():
        ok = [r for r in rs if r.status == "ok"]
        statuses = {r.status for r in rs}
        if len(ok) == len(rs):
            status = "ok"
        elif ok:
            status = "partial"
        elif statuses == {"infeasible"}:
            status = "infeasible"
        elif "failed" in statuses or "infeasible" in statuses:
            status = "failed"
        else:
            status = "pending"
        first = rs[0]

        def s(key: str) -> Summary:
            return summarize([getattr(r, key) for r in ok])

        out.append(ConfigSummary(
            config_id=cid, label=first.label, variant=first.variant, strategy=first.strategy,
            rank=first.rank, budget=first.budget, groups=tuple(first.groups),
            n_cells=len(rs), n_ok=len(ok), status=status,
            errors=tuple(dict.fromkeys(r.error for r in rs if r.error)),
            score=s("score"), gain=s("gain"), trainable_params=s("trainable_params"),
            peak_memory_mb=s("peak_memory_mb"), train_time_s=s("train_time_s"),
            time_per_step_s=s("time_per_step_s"), adapter_bytes=s("adapter_bytes"),
            predicted_share=s("predicted_share"), ranks=_ranks_text(ok),
            exact_match=s("exact_match") if any(r.exact_match is not None for r in ok) else None,
            forgetting=s("forgetting") if any(r.forgetting is not None for r in ok) else None,
            memory_kind=next((r.memory_kind for r in ok if r.memory_kind), None),
            scores_by_seed={int(r.seed): float(r.score) for r in ok if r.score is not None},
            timing=_timing({r.timing for r in ok}),
            gains_by_seed={int(r.seed): float(r.gain) for r in ok if r.gain is not None},
            modules=s("modules"), lr=_one({r.lr for r in ok}),
            lr_grid=tuple(first.lr_grid), predicted_by_seed=_predicted_by_seed(ok),
            secondary_by_seed={k: v for k in SECONDARY
                               if (v := {int(r.seed): float(getattr(r, k)) for r in ok if getattr(r, k) is not None})},
        ))
    return out


def _predicted_by_seed(ok: Sequence[CellRow]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in ok:
        for name, v in (r.predicted or {}).items():
            if v is not None:
                out.setdefault(name, {})[int(r.seed)] = float(v)
    return out


def _timing(timings: set[str | None]) -> str | None:
    """A config's timing from its finished seeds': shared if any shared its device."""
    if "shared" in timings:
        return "shared"
    return "exclusive" if timings == {"exclusive"} else None


def group_index(configs: list[ConfigSummary]) -> dict[str, tuple[str, ...]]:
    """group -> config labels; rank groups by rank first, then the others in grid order."""
    groups: dict[str, list[str]] = {}
    for c in configs:
        for g in c.groups:
            groups.setdefault(g, []).append(c.label)
    order = list(groups)

    def key(g: str) -> tuple:  # by data size first (none without the axis), then as without it
        m = re.fullmatch(r"rank=(\d+)(?: n=\w+)?", g)
        return size_key(size_of(g)) + ((0, int(m.group(1))) if m else (1, order.index(g)))

    return {g: tuple(groups[g]) for g in sorted(groups, key=key)}


def compare(c: ConfigSummary, ref: ConfigSummary, group: str, metric: str = "score") -> Comparison:
    """`c` against `ref` on `metric` (the score or a SECONDARY metric), paired by the seeds both finished."""
    mine, theirs = ((c.scores_by_seed, ref.scores_by_seed) if metric == "score" else
                    (c.secondary_by_seed.get(metric, {}), ref.secondary_by_seed.get(metric, {})))
    seeds = sorted(set(mine) & set(theirs))
    a = [mine[s] for s in seeds]
    b = [theirs[s] for s in seeds]
    tt, bs = paired_ttest(a, b), paired_bootstrap(a, b)
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    sd = float(d.std(ddof=1)) if len(d) >= 2 else None
    verdict = "too few seeds" if len(seeds) < 2 else "no significant difference"
    return Comparison(group, c.label, ref.label, tt, bs, verdict, sd_diff=sd, mde=min_detectable_effect(len(d), sd),
                      seeds_needed=seeds_needed(tt.mean_diff, sd), metric=metric)


def correct(comps: list[Comparison], alpha: float = ALPHA, higher_is_better: bool = True) -> list[Comparison]:
    """Holm over the family of every distinct comparison with a p-value (a pair of configs that meets in
    two groups, e.g. auto at rank r and at budget all@r, counts once, and so does a pair compared both ways, e.g.
    full against all@r in group rank=r n=N and all@r against full at size N: the same paired test, sign flipped);
    verdicts from the corrected p."""
    first: dict[tuple[str, ...], int] = {}
    for i, c in enumerate(comps):
        first.setdefault(tuple(sorted((c.label, c.reference))), i)
    unique = sorted(set(first.values()))
    adj_unique = dict(zip(unique, holm([comps[i].ttest.p for i in unique])))
    adj = [adj_unique[first[tuple(sorted((c.label, c.reference)))]] for c in comps]
    family = sum(adj_unique[i] is not None for i in unique)
    out = []
    for c, p in zip(comps, adj):
        verdict = c.verdict
        if p is not None and p < alpha:
            verdict = "better" if ((c.ttest.mean_diff or 0) > 0) == higher_is_better else "worse"
        out.append(replace(c, p_holm=p, family=family, verdict=verdict))
    return out


def _against_reference(configs: list[ConfigSummary], groups: dict[str, tuple[str, ...]]):
    """(config, the `all` config of its group, group) for every finished non-reference config of each group."""
    by_label = {c.label: c for c in configs}
    for g, labels in groups.items():
        refs = [by_label[l] for l in labels if by_label[l].variant == REFERENCE and by_label[l].n_ok]
        for c in (by_label[l] for l in labels) if refs else ():
            if c is not refs[0] and c.n_ok:
                yield c, refs[0], g


def comparisons(configs: list[ConfigSummary], groups: dict[str, tuple[str, ...]]) -> list[Comparison]:
    """Every non-reference config against `all` in each group, and (a data-size axis) every LoRA config against
    full fine-tuning at its size (`datasize.full_comparisons`), paired by seed, Holm-corrected together."""
    out = [compare(c, ref, g) for c, ref, g in _against_reference(configs, groups)]
    return correct(out + full_comparisons(configs, compare))


def secondary_comparisons(configs: list[ConfigSummary], groups: dict[str, tuple[str, ...]]) -> list[Comparison]:
    """The pairs of `comparisons` against `all` on each SECONDARY metric some config measured, paired by seed;
    each metric is its own Holm family (a report that reads them makes that many more families)."""
    out = []
    for metric, higher in SECONDARY.items():
        if any(metric in c.secondary_by_seed for c in configs):
            out += correct([compare(c, ref, g, metric) for c, ref, g in _against_reference(configs, groups)],
                           higher_is_better=higher)
    return out


def frontier(configs: list[ConfigSummary], metric: str) -> Frontier:
    pts = [(c.label, c.metric(metric).mean, c.score.mean) for c in configs
           if c.n_ok and c.score.mean is not None and c.metric(metric).mean is not None]
    idx = pareto_front([(score, cost) for _, cost, score in pts], maximize=(True, False))
    front = sorted((pts[i] for i in idx), key=lambda p: (p[1], -p[2]))
    return Frontier(metric, tuple(pts), tuple(p[0] for p in front))


def prediction(configs: list[ConfigSummary], groups: dict[str, tuple[str, ...]],
               frontiers: list[Frontier]) -> Prediction:
    pts = [(c.label, c.predicted_share.mean, c.gain.mean) for c in configs
           if c.predicted_share.mean is not None and c.gain.mean is not None]
    overall = spearman([p[1] for p in pts], [p[2] for p in pts])
    by_label = {c.label: c for c in configs}
    by_group, best = {}, {}
    for g, labels in groups.items():
        gp = [p for p in pts if p[0] in labels]
        if len(gp) >= 3:
            by_group[g] = spearman([p[1] for p in gp], [p[2] for p in gp])
        done = [by_label[l] for l in labels if by_label[l].score.mean is not None]
        autos = [c for c in done if c.strategy == "auto"]
        if autos and len(done) > 1:
            top = max(c.score.mean for c in done)
            best[g] = any(math.isclose(a.score.mean, top) for a in autos)
    on_front = {c.label: {f.metric: c.label in f.front for f in frontiers}
                for c in configs if c.strategy == "auto" and c.n_ok}
    return Prediction(overall, by_group, tuple(pts), on_front, best)


def analyze(rows: Sequence[CellRow], study: dict[str, Any]) -> StudyAnalysis:
    """Everything the report needs, from the study's rows and its record (study.json). lr-sweep rows
    give the lr choices only; every other number comes from the test rows."""
    sweeps, rows = sweep_rows(rows), [r for r in rows if r.phase != SWEEP]
    arms = {r.arm: r.lr_grid for r in rows if r.lr_grid}
    configs = summarize_configs(rows)
    groups = group_index(configs)
    metrics = [m for m in study.get("metrics", COST_LABELS) if m in COST_LABELS]
    fronts = [frontier(configs, m) for m in metrics]
    return StudyAnalysis(study, tuple(configs), groups, tuple(comparisons(configs, groups)), tuple(fronts),
                         prediction(configs, groups, fronts), status_counts(rows + sweeps),
                         tuple(select_lrs(sweeps, arms).values()) if arms else (),
                         tuple(predictor_checks(configs, groups)),
                         statistic_checks=tuple(statistic_checks(configs, groups)),
                         secondary=tuple(secondary_comparisons(configs, groups)))
