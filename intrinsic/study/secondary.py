"""The report's secondary metrics: exact match (completion tasks) and forgetting against `all`.

The score decides a study's comparisons and guidelines; a completion task also measures exact match of the greedy
answer, and a study with a forgetting corpus the rise of that corpus' log-loss. `analysis.secondary_comparisons`
pairs every placement with its group's `all` on each of them by seed (paired t, as the score), each metric its own
Holm family; this module turns them into the report's table and its note.
"""

from __future__ import annotations

from typing import Any

from .analysis import REFERENCE, SECONDARY, StudyAnalysis
from .stats import rounded

LABELS = {"exact_match": "exact match (higher is better)", "forgetting": "forgetting, nats (lower is better)"}


def secondary_table(a: StudyAnalysis) -> tuple[str, list[str], list[dict[str, Any]]] | None:
    """(title, columns, rows): one row per placement and secondary metric; None when no metric was measured."""
    if not a.secondary:
        return None
    by_label = {c.label: c for c in a.configs}
    rows = []
    for c in a.secondary:
        mine, ref = by_label[c.label].metric(c.metric), by_label[c.reference].metric(c.metric)
        rows.append({"metric": c.metric, "group": c.group, "placement": c.label, "pairs": c.ttest.n,
                     "mean": rounded(mine.mean if mine else None), REFERENCE: rounded(ref.mean if ref else None),
                     f"diff_vs_{REFERENCE}": rounded(c.ttest.mean_diff), "p": rounded(c.ttest.p), "p_holm": rounded(c.p_holm),
                     "family": c.family, "mde": rounded(c.mde), "verdict": c.verdict})
    cols = ["metric", "group", "placement", "pairs", "mean", REFERENCE, f"diff_vs_{REFERENCE}", "p", "p_holm",
            "family", "mde", "verdict"]
    return ("Secondary metrics against `all` (paired t over seeds; Holm within each metric)", cols, rows)


def secondary_note(a: StudyAnalysis) -> str:
    """What the secondary table means and how it is corrected."""
    measured = [LABELS[m] for m in SECONDARY if any(c.metric == m for c in a.secondary)]
    return (f"Secondary metrics: {'; '.join(measured)}. Each placement against `{REFERENCE}` of its group, paired "
            "by seed (scipy.stats.ttest_rel on the differences), Holm-corrected within each metric's family "
            "(`family`: its size), separately from the score's family: a difference is called better or worse "
            "only when p_holm < " f"{a.alpha}; better means higher exact match or lower forgetting.")
