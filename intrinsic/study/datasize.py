"""The data-size axis in the analysis: LoRA against full fine-tuning at each data size, and the rank at
which LoRA falls behind.

Cells of a `[[grid]]` block with `train_examples` carry their size in their groups ("rank=4 n=1000",
"full n=1000"). `full_comparisons` pairs every LoRA config of a size with the full fine-tuning config of
the same size (group "n=1000 vs full", paired by seed; difference = LoRA - full, higher is better); the
analysis Holm-corrects them together with every other comparison of the report. `data_size_section` then
reads, per size and strategy, the ranks at which LoRA is significantly worse than full fine-tuning: the
largest of them is where LoRA "falls behind" at that size (LoRA Without Regret: LoRA falls behind full
fine-tuning once the data hold more than the adapter's capacity, so this rank should grow with the data).
A study without a data-size axis has no such comparison and no section.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fields import documented
from .stats import rounded

if TYPE_CHECKING:
    from .analysis import Comparison, ConfigSummary, StudyAnalysis

VS_FULL = " vs full"  # suffix of the group of a comparison against full fine-tuning: "n=1000 vs full"


def size_of(group: str) -> str | None:
    """The data size of a comparison group ("rank=4 n=1000" -> "1000", "full n=full" -> "full"), else None."""
    m = re.search(r"(?:^| )n=(\w+)$", group.removesuffix(VS_FULL))
    return m.group(1) if m else None


def size_key(size: str | None) -> tuple[int, int]:
    """Sort key of data sizes: none first, then counts ascending, "full" last."""
    if size is None:
        return (0, 0)
    return (1, int(size)) if size.isdigit() else (2, 0)


def full_comparisons(configs: Sequence[ConfigSummary], compare) -> list[Comparison]:
    """Every finished non-full config of a data size against the full fine-tuning config of that size (by
    `compare(config, reference, group)`, uncorrected): group "n=SIZE vs full"."""
    fulls = {size_of(g): c for c in configs if c.strategy == "full" and c.n_ok for g in c.groups if size_of(g)}
    out = []
    for c in configs:
        if c.strategy == "full" or not c.n_ok:
            continue
        for size in dict.fromkeys(size_of(g) for g in c.groups if size_of(g)):
            if size in fulls:
                out.append(compare(c, fulls[size], f"n={size}{VS_FULL}"))
    return out


def rank_of(c: ConfigSummary) -> int | None:
    """A config's uniform rank: its rank, or r of a budget "S@r" (auto and fixed strategies under all@r)."""
    if c.rank is not None:
        return c.rank
    m = re.fullmatch(r".+@(\d+)", c.budget or "")
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class SizeRow:
    """One LoRA config against full fine-tuning at its data size."""

    size: str = documented(help='data size: a count of training examples, or "full"')
    label: str = documented(help="the LoRA config, e.g. 'all r=4 n=1000'")
    variant: str = documented(help="its strategy plus layer selection")
    rank: int | None = documented(help="its uniform rank (r of S@r for budget cells), null when it has none")
    score: float | None = documented(help="its mean score over seeds")
    full_score: float | None = documented(help="full fine-tuning's mean score at this size")
    diff: float | None = documented(help="mean paired difference, LoRA - full (negative: LoRA behind)")
    ci_low: float | None = documented(help="95% CI of the paired difference, lower end (t-based)")
    ci_high: float | None = documented(help="its upper end")
    pairs: int = documented(help="seeds shared with full fine-tuning")
    p_holm: float | None = documented(help="paired t-test p, Holm-corrected over every comparison of the report")
    mde: float | None = documented(help="minimum detectable effect at 80% power with these pairs")
    verdict: str = documented(help='"worse" | "better" (p_holm < alpha) | "no significant difference" | '
                                   '"too few seeds"')


@dataclass(frozen=True)
class FallsBehind:
    """Per data size and strategy: the ranks at which LoRA is significantly worse than full fine-tuning."""

    size: str = documented(help='data size: a count of training examples, or "full"')
    variant: str = documented(help="the LoRA strategy (plus layer selection)")
    ranks: tuple[int, ...] = documented(help="the ranks compared with full fine-tuning at this size")
    worse_at: tuple[int, ...] = documented(help="the ranks significantly worse than full (Holm)")
    behind_up_to: int | None = documented(help="the largest rank significantly worse than full: LoRA falls behind "
                                               "up to this rank (null: at no rank tested)")
    catches_up_at: int | None = documented(help="the smallest tested rank above behind_up_to (from it on, no tested "
                                                "rank is significantly worse); null when none is above it")
    tested: tuple[int, ...] = documented((), "the ranks whose comparison has a p-value (>= 2 shared seeds)")


@dataclass(frozen=True)
class DataSizeSection:
    """The report's "LoRA vs full fine-tuning per data size" section (analysis.json `data_size`)."""

    sizes: tuple[str, ...] = documented(help="the data sizes, ascending (full last)")
    rows: tuple[SizeRow, ...] = documented(help="every LoRA config against full fine-tuning at its size")
    falls_behind: tuple[FallsBehind, ...] = documented(help="per size and strategy, where LoRA falls behind")
    alpha: float = documented(0.05, "the report's family-wise significance level")


def data_size_section(a: StudyAnalysis) -> DataSizeSection | None:
    """The section from the analysis' comparisons against full fine-tuning; None without any."""
    by_label = {c.label: c for c in a.configs}
    comps = [c for c in a.comparisons if c.group.endswith(VS_FULL)]
    if not comps:
        return None
    rows = []
    for comp in comps:
        c, ref, t = by_label[comp.label], by_label[comp.reference], comp.ttest
        rows.append(SizeRow(size_of(comp.group), c.label, c.variant, rank_of(c), c.score.mean, ref.score.mean,
                            t.mean_diff, t.ci_low, t.ci_high, t.n, comp.p_holm, comp.mde, comp.verdict))
    rows.sort(key=lambda r: (size_key(r.size), r.variant, r.rank if r.rank is not None else 1 << 30))
    sizes = tuple(dict.fromkeys(r.size for r in rows))
    behind = []
    for size in sizes:
        for variant in dict.fromkeys(r.variant for r in rows if r.size == size):
            ranked = [r for r in rows if r.size == size and r.variant == variant and r.rank is not None]
            if not ranked:
                continue
            worse = tuple(r.rank for r in ranked if r.verdict == "worse")
            top = max(worse) if worse else None
            above = [r.rank for r in ranked if top is None or r.rank > top]
            behind.append(FallsBehind(size, variant, tuple(r.rank for r in ranked), worse, top,
                                      min(above) if above and top is not None else None,
                                      tuple(r.rank for r in ranked if r.p_holm is not None)))
    return DataSizeSection(sizes, tuple(rows), tuple(behind), a.alpha)


def size_table(s: DataSizeSection) -> tuple[str, list[str], list[dict[str, Any]]]:
    rows = [{"n": r.size, "placement": r.label, "rank": r.rank, "score": rounded(r.score),
             "full": rounded(r.full_score), "diff_vs_full": rounded(r.diff),
             "ci95": None if r.ci_low is None else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
             "pairs": r.pairs, "p_holm": rounded(r.p_holm), "mde": rounded(r.mde), "verdict": r.verdict}
            for r in s.rows]
    return ("LoRA vs full fine-tuning at each data size (paired by seed; diff = LoRA - full)",
            ["n", "placement", "rank", "score", "full", "diff_vs_full", "ci95", "pairs", "p_holm", "mde", "verdict"],
            rows)


def behind_text(b: FallsBehind) -> str:
    """'n=1000, all: significantly behind full fine-tuning up to rank 4 (worse at r=1, 4); not at r=16, 64.'"""
    if not b.tested:
        return f"n={b.size}, {b.variant}: no paired test against full fine-tuning (fewer than 2 shared seeds)."
    if b.behind_up_to is None:
        return f"n={b.size}, {b.variant}: behind full fine-tuning at no rank tested (r={', '.join(map(str, b.tested))})."
    ok = [r for r in b.ranks if r not in b.worse_at]
    return (f"n={b.size}, {b.variant}: significantly behind full fine-tuning up to rank {b.behind_up_to} (worse at "
            f"r={', '.join(map(str, b.worse_at))})" + (f"; not at r={', '.join(map(str, ok))}." if ok else "."))


SIZE_NOTE = ("Every LoRA placement of a data size is compared with full fine-tuning at the same size, paired by seed "
             "(scipy.stats.ttest_rel); these comparisons are in the report's one Holm family. A placement is "
             "behind full fine-tuning when the difference is negative with p_holm < alpha. LoRA Without Regret "
             "(Thinking Machines, 2025) find that LoRA matches full fine-tuning until the data hold more than the "
             "adapter can store, so the largest rank that is still behind should grow with the data size.")


def size_blocks(s: DataSizeSection, plot: tuple[Path, str] | None = None) -> list:
    """The report section: heading, note, the table, where LoRA falls behind per size, and the plot."""
    from ..report.document import Bullets, Heading, Image, Paragraph, Table

    blocks = [Heading(2, "LoRA vs full fine-tuning per data size"), Paragraph(SIZE_NOTE),
              Table.of_records(*size_table(s))]
    if s.falls_behind:
        blocks.append(Bullets(tuple(behind_text(b) for b in s.falls_behind)))
    if plot is not None:
        blocks.append(Image(plot[0], alt=plot[1], caption=plot[1]))
    return blocks


def plot_score_vs_rank(a: StudyAnalysis, s: DataSizeSection, path: Path) -> tuple[Path, str] | None:
    """Score against rank, one line per data size and strategy, full fine-tuning as a dashed line of its size."""
    from ..report.plots import ci_halfwidth, colors_by_name, pyplot, save_png

    ranked = [r for r in s.rows if r.rank is not None and r.score is not None]
    if not ranked:
        return None
    by_label = {c.label: c for c in a.configs}
    plt = pyplot()
    colors = colors_by_name(s.sizes)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for size in s.sizes:
        for variant in dict.fromkeys(r.variant for r in ranked if r.size == size):
            rs = sorted((r for r in ranked if r.size == size and r.variant == variant), key=lambda r: r.rank)
            ax.errorbar([r.rank for r in rs], [r.score for r in rs], capsize=3, marker="o", color=colors[size],
                        yerr=[ci_halfwidth(by_label[r.label].score) for r in rs], label=f"{variant} n={size}")
        full = next((r.full_score for r in s.rows if r.size == size and r.full_score is not None), None)
        if full is not None:
            ax.axhline(full, color=colors[size], ls="--", lw=1, label=f"full n={size}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("LoRA rank (log2)")
    ax.set_ylabel("score (mean, 95% CI)")
    ax.set_title(f"{a.study.get('name', 'study')}: score vs rank per data size (dashed: full fine-tuning)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return save_png(fig, path), "Score vs LoRA rank at each data size; dashed lines: full fine-tuning at that size."
