"""The study report: which tables, guidelines and PNG plots a study has, written as report.md
and report.html.

The report is one document (`intrinsic.report.document` blocks) rendered to both formats, and
`tables()` gives the CLI the same rows for the terminal, so the three views never disagree (the
terminal only writes large counts exactly where the documents abbreviate them).
The plots use the shared figure helpers of `intrinsic.report.plots`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..report.document import Block, Bullets, Heading, Image, Paragraph, Table, render_html, render_markdown
from ..report.plots import ci_halfwidth, colors_by_name, pyplot, save_png
from ..results import atomic_write_text, write_json
from .analysis import COST_LABELS, REFERENCE, StudyAnalysis, analyze
from .datasize import data_size_section, plot_score_vs_rank, size_blocks, size_of, size_table
from .guidelines import RSS_CAVEAT, Guideline, generate, rss_only
from .predictors import statistic_rows
from .r90_section import R90Section, r90_blocks, r90_section
from .rows import CellRow, load_results
from .secondary import secondary_note, secondary_table
from .stats import rounded

TableRows = tuple[str, list[str], list[dict[str, Any]]]  # (title, columns, rows): a table before formatting


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote."""

    markdown: str  # path of report.md
    html: str  # path of report.html
    plots: tuple[str, ...]  # PNG paths
    analysis_json: str  # analysis.json: every number of the report, machine-readable


def _ci(s) -> str | None:
    return None if s.ci_low is None else f"[{s.ci_low:.3f}, {s.ci_high:.3f}]"


# ----------------------------------------------------------------------------- tables


def group_table(a: StudyAnalysis, group: str) -> TableRows:
    by_label = {c.label: c for c in a.configs}
    comps = {c.label: c for c in a.comparisons if c.group == group}
    rows = []
    for label in a.groups[group]:
        c = by_label[label]
        comp = comps.get(label)
        rows.append({
            "placement": label, "seeds": f"{c.n_ok}/{c.n_cells}", "status": c.status,
            "score": rounded(c.score.mean), "std": rounded(c.score.std),
            "ci95": _ci(c.score), "gain": rounded(c.gain.mean),
            "params": rounded(c.trainable_params.mean, 0),
            "ranks": c.ranks, "peak_mb": rounded(c.peak_memory_mb.mean, 1), "time_s": rounded(c.train_time_s.mean, 2),
            "lr": None if c.lr is None else f"{c.lr:g}" + (" (val)" if c.lr_grid else ""),
            f"diff_vs_{REFERENCE}": rounded(comp.ttest.mean_diff) if comp else None,
            "p": rounded(comp.ttest.p) if comp else None, "p_holm": rounded(comp.p_holm) if comp else None,
            "mde": rounded(comp.mde) if comp else None,
            "verdict": (c.status if not c.n_ok else comp.verdict if comp else
                        "reference" if c.variant == REFERENCE else "-"),
        })
    cols = ["placement", "seeds", "score", "std", "ci95", "gain", "params", "ranks", "lr", "peak_mb",
            "time_s", f"diff_vs_{REFERENCE}", "p", "p_holm", "mde", "verdict"]
    if shared_timing(a):  # peak_mb and time_s of shared devices are marked (see timing_note)
        for row, label in zip(rows, a.groups[group]):
            row["timing"] = by_label[label].timing or "-"
        cols.insert(cols.index("time_s") + 1, "timing")
    if size_of(group) is not None:  # a group of a data-size axis: its training examples
        for row in rows:
            row["n"] = size_of(group)
        cols.insert(1, "n")
    for key in ("exact_match", "forgetting"):  # measured on completion tasks / with a forgetting corpus only
        if any(by_label[label].metric(key) is not None for label in a.groups[group]):
            for row, label in zip(rows, a.groups[group]):
                m = by_label[label].metric(key)
                row[key] = None if m is None else rounded(m.mean)
            cols.insert(cols.index("gain") + 1, key)
    return (f"Comparison group {group}", cols, rows)


STATISTICS_NOTE = ("Each statistic's predicted need of a placement is the share of that statistic, over every probed "
                   "module, that the adapted modules cover (at their ranks for rank-dependent statistics), from the "
                   "seed's probe: `gradient` mean-gradient energy, `example_energy` per-example gradient energy, "
                   "`update` energy of the update probe's dW, `activation` input variance explained (as EVA), "
                   "`weight_alpha` WeightWatcher's power-law alpha, and the null predictor `params`, the share of "
                   "the weights adapted. `ci95_seeds`: percentile bootstrap over seeds (resample the seeds, recompute "
                   "the mean gains and shares, recompute rho; with few seeds a resample repeats seeds, so its means are "
                   "noisier and the interval leans toward 0; it resamples the seeds every placement shares, `on k of "
                   "m seeds` when some placement has more, and then need not contain the rho). The verdict is the one "
                   "above: beat both trivial "
                   "predictors, reach the noise ceiling, p < alpha. Full fine-tuning is left out (no module count). "
                   "`partial_rho`: Spearman rho with the gain after removing what the statistic in `given` (the null "
                   "`params`; for `params` itself, `gradient`) says: a statistic that only restates breadth has a "
                   "partial rho near 0 (p from t with n - 3 df; reported, not part of the verdict).")


def shared_timing(a: StudyAnalysis) -> bool:
    """Whether any finished cell of the study ran on a device it shared with other cells."""
    return any(c.timing == "shared" for c in a.configs)


TIMING_NOTE = ("**Shared devices.** Rows with timing `shared` ran beside other cells on the same device (several "
               "cells per GPU, or several per CPU node): their time and peak memory are not those of a dedicated "
               "device; compare them only with each other. Run with `--exclusive-timing` for unshared figures.")


def frontier_table(a: StudyAnalysis) -> TableRows:
    by_label = {c.label: c for c in a.configs}
    rows = []
    for f in a.frontiers:
        for label in f.front:
            c = by_label[label]
            rows.append({"cost axis": COST_LABELS.get(f.metric, f.metric), "placement": label,
                         "cost": rounded(c.metric(f.metric).mean, 2),
                         "score": rounded(c.score.mean), "ci95": _ci(c.score)})
    return ("Pareto frontiers (score up, cost down)", ["cost axis", "placement", "cost", "score", "ci95"], rows)


def prediction_table(a: StudyAnalysis) -> TableRows:
    by_label = {c.label: c for c in a.configs}
    front = {f.metric: set(f.front) for f in a.frontiers}
    rows = []
    for label, share, gain in sorted(a.prediction.points, key=lambda p: -p[1]):
        c = by_label[label]
        rows.append({"placement": label, "predicted_share": rounded(share), "gain": rounded(gain),
                     "gain_ci95": _ci(c.gain),
                     "on_params_frontier": label in front.get("trainable_params", set())})
    return ("Prediction validation: probe-predicted energy share vs measured gain",
            ["placement", "predicted_share", "gain", "gain_ci95", "on_params_frontier"], rows)


def correlation_table(a: StudyAnalysis) -> TableRows:
    rows = []
    for scope, c in [("all placements", a.prediction.overall), *a.prediction.by_group.items()]:
        ci = None if c.ci_low is None else f"[{c.ci_low:.2f}, {c.ci_high:.2f}]"
        rows.append({"scope": scope, "n": c.n, "spearman_rho": rounded(c.rho, 3), "ci95": ci, "p": rounded(c.p, 4),
                     "p_method": c.p_method})
    return ("Spearman correlation (Fisher-z CI)", ["scope", "n", "spearman_rho", "ci95", "p", "p_method"], rows)


def predictor_table(a: StudyAnalysis) -> TableRows:
    rows = [{"scope": k.scope, "n": len(k.labels), "rho_probe": rounded(k.probe.rho, 3),
             "p_probe": rounded(k.probe.p, 4),
             "rho_modules": rounded(k.modules.rho, 3), "rho_params": rounded(k.params.rho, 3),
             "noise_ceiling": rounded(k.ceiling, 3),
             "verdict": k.verdict} for k in a.predictor_checks]
    return ("Probe vs trivial predictors and the noise ceiling (Spearman rho with the gain)",
            ["scope", "n", "rho_probe", "p_probe", "rho_modules", "rho_params", "noise_ceiling", "verdict"], rows)


def statistic_table(a: StudyAnalysis) -> TableRows:
    rows = statistic_rows(a.statistic_checks)
    return ("Which probe statistic predicts the gain? (Spearman rho of the share a placement covers with the gain; "
            "CI: bootstrap over seeds; partial_rho: the same given the statistic named in `given`)",
            ["scope", "statistic", "n", "spearman_rho", "ci95_seeds", "p", "partial_rho", "partial_p", "given",
             "verdict"], rows)


def lr_table(a: StudyAnalysis) -> TableRows:
    rows = [{"arm": ch.label, "chosen_lr": None if ch.chosen is None else f"{ch.chosen:g}",
             "validation": ", ".join(f"{lr:g}: {'n/a' if v is None else f'{v:.4f}'} ({n})"
                                     for lr, v, n in zip(ch.lrs, ch.val_scores, ch.runs)),
             "failed": ch.failed, "pending": ch.pending} for ch in a.lr_choices]
    return ("Learning rate chosen on validation (mean validation score per lr, runs in brackets)",
            ["arm", "chosen_lr", "validation", "failed", "pending"], rows)


def problems_table(a: StudyAnalysis) -> TableRows:
    rows = [{"placement": c.label, "status": c.status, "seeds_ok": f"{c.n_ok}/{c.n_cells}", "error": "; ".join(c.errors)}
            for c in a.configs if c.status != "ok"]
    return ("Infeasible, failed or unfinished cells", ["placement", "status", "seeds_ok", "error"], rows)


def guideline_table(gl: list[Guideline]) -> TableRows:
    return ("Guidelines", ["strength", "guideline"], [{"strength": g.strength, "guideline": g.text} for g in gl])


def tables(a: StudyAnalysis, gl: list[Guideline] | None = None) -> list[TableRows]:
    """Every table of the report, in report order (the CLI prints these)."""
    out = [guideline_table(gl if gl is not None else generate(a))]
    out += [group_table(a, g) for g in a.groups]
    second = secondary_table(a)
    out += [second] if second else []
    out += [frontier_table(a), prediction_table(a), correlation_table(a), predictor_table(a)]
    if a.statistic_checks:
        out.append(statistic_table(a))
    sizes = data_size_section(a)
    if sizes is not None:
        out.append(size_table(sizes))
    if a.lr_choices:
        out.append(lr_table(a))
    probs = problems_table(a)
    return out + ([probs] if probs[2] else [])


# ----------------------------------------------------------------------------- plots


def plot_frontier(a: StudyAnalysis, metric: str, path: Path) -> Path | None:
    plt = pyplot()
    f = next(f for f in a.frontiers if f.metric == metric)
    if not f.points:
        return None
    by_label = {c.label: c for c in a.configs}
    colors = colors_by_name(c.variant for c in a.configs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen = set()
    for label, cost, score in f.points:
        c = by_label[label]
        ax.errorbar(cost, score, yerr=ci_halfwidth(c.score), fmt="o", color=colors[c.variant], capsize=3,
                    label=c.variant if c.variant not in seen else None, mfc="none" if label not in f.front else None)
        seen.add(c.variant)
    front = sorted(((by_label[l].metric(metric).mean, by_label[l].score.mean) for l in f.front))
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k", lw=1, alpha=0.6, label="frontier")
    costs = [p[1] for p in f.points]
    if min(costs) > 0 and max(costs) / min(costs) > 20:
        ax.set_xscale("log")
    return _finish(fig, ax, path, COST_LABELS.get(metric, metric),
                   f"{a.study.get('name', 'study')}: score vs {COST_LABELS.get(metric, metric)} (filled = on frontier)")


def plot_score_vs_budget(a: StudyAnalysis, path: Path) -> Path | None:
    plt = pyplot()
    colors = colors_by_name(c.variant for c in a.configs)
    lines: dict[str, list] = {}
    for c in a.configs:
        if c.score.mean is not None and c.trainable_params.mean is not None:
            lines.setdefault(c.variant, []).append(c)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v, cs in lines.items():
        cs = sorted(cs, key=lambda c: c.trainable_params.mean)
        ax.errorbar([c.trainable_params.mean for c in cs], [c.score.mean for c in cs],
                    yerr=[ci_halfwidth(c.score) for c in cs], marker="o" if v != "full" else "*", ms=5 if v != "full" else 12,
                    capsize=3, color=colors[v], label=v, ls="-" if len(cs) > 1 else "none")
    ax.set_xscale("log")
    return _finish(fig, ax, path, "trainable parameters (log)", f"{a.study.get('name', 'study')}: score vs budget per strategy")


def _finish(fig, ax, path: Path, xlabel: str, title: str) -> Path:
    """Shared axis labels, legend and grid of the score plots, then save."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (mean, 95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_prediction(a: StudyAnalysis, path: Path) -> Path | None:
    pts = a.prediction.points
    if not pts:
        return None
    plt = pyplot()
    by_label = {c.label: c for c in a.configs}
    colors = colors_by_name(c.variant for c in a.configs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, share, gain in pts:
        c = by_label[label]
        ax.errorbar(share, gain, yerr=ci_halfwidth(c.gain), fmt="o", color=colors[c.variant], capsize=3)
        ax.annotate(label, (share, gain), fontsize=7, xytext=(3, 3), textcoords="offset points")
    r = a.prediction.overall
    rho = "n/a" if r.rho is None else f"{r.rho:.2f}"
    ax.set_xlabel("predicted share of mean-gradient energy captured")
    ax.set_ylabel("measured gain over baseline (mean, 95% CI)")
    ax.set_title(f"Prediction check: Spearman rho = {rho} (n = {r.n})")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def write_plots(a: StudyAnalysis, out_dir: Path) -> list[tuple[Path, str]]:
    """PNG files with their captions (only those with something to show)."""
    made = []
    for f in a.frontiers:
        p = plot_frontier(a, f.metric, out_dir / f"frontier_{f.metric}.png")
        if p:
            made.append((p, f"Score vs {COST_LABELS.get(f.metric, f.metric)}; the step line is the Pareto frontier."))
    p = plot_score_vs_budget(a, out_dir / "score_vs_budget.png")
    if p:
        made.append((p, "Score vs trainable parameters, one line per strategy (error bars: 95% CI over seeds)."))
    p = plot_prediction(a, out_dir / "prediction.png")
    if p:
        made.append((p, "Probe-predicted energy share vs measured gain per placement."))
    sizes = data_size_section(a)
    by_size = plot_score_vs_rank(a, sizes, out_dir / "score_vs_rank_by_size.png") if sizes is not None else None
    return made + ([by_size] if by_size else [])


# ----------------------------------------------------------------------------- document


def _table(t: TableRows) -> Table:
    return Table.of_records(*t)


def _figure(plot: tuple[Path, str]) -> Image:
    path, caption = plot
    return Image(path, alt=caption, caption=caption)


def document(a: StudyAnalysis, gl: list[Guideline], plots: list[tuple[Path, str]],
             r90: R90Section | None = None) -> list[Block]:
    """The study report as document blocks; `plots` are the (PNG, caption) pairs `write_plots` made;
    `r90`: the measured intrinsic rank per component (a study with [truncate]), else no such section; a
    data-size axis adds "LoRA vs full fine-tuning per data size" (`datasize.py`)."""
    s = a.study
    blocks: list[Block] = [Heading(1, f"Study: {s.get('name', '?')}" + (" (quick)" if s.get("quick") else ""))]
    blocks.append(Paragraph(f"**Question.** {s.get('question', '')}"))
    counts = ", ".join(f"{v} {k}" for k, v in sorted(a.counts.items()))
    blocks.append(Paragraph(f"Model `{s.get('model')}` on task `{s.get('task')}`; definition hash "
                            f"`{s.get('definition_hash')}`; {sum(a.counts.values())} cells ({counts}); "
                            f"{len(a.configs)} placements."))
    if s.get("quick"):
        blocks.append(Paragraph("This is a **quick** run (one seed, few steps, small evaluation): it checks the "
                                "pipeline; its numbers support no claim."))
    blocks.append(Heading(2, "Guidelines"))
    blocks.append(Bullets(tuple(f"*{g.strength}*: {g.text}" for g in gl) or ("No finished runs yet.",)))
    plot_of = {p.name: (p, cap) for p, cap in plots}
    if a.lr_choices:
        blocks += [Heading(2, "Learning rate per arm"), _table(lr_table(a))]
    blocks.append(Heading(2, "Comparisons at equal rank or budget"))
    fam = max((c.family for c in a.comparisons), default=0)
    blocks.append(Paragraph(f"Mean score over seeds with a t-based 95% CI; `diff_vs_{REFERENCE}` and `p` come from a "
                            f"paired t-test (scipy.stats.ttest_rel) over seeds shared with `{REFERENCE}`. The family "
                            f"of comparisons is every row with a p in these tables ({fam} comparisons); `p_holm` is "
                            f"Holm-Bonferroni corrected over that family, and a difference is only called better or "
                            f"worse when p_holm < {a.alpha}. `mde`: the minimum detectable effect at 80% power with "
                            "these seeds and the observed sd of the paired differences; a guideline is supported only "
                            "if its comparison survives Holm and its effect reaches the MDE. `lr` marked (val) was "
                            "chosen on the validation carve of the train split."))
    blocks += [_table(group_table(a, g)) for g in a.groups]
    second = secondary_table(a)
    if second:
        blocks += [Heading(3, "Secondary metrics"), Paragraph(secondary_note(a)), _table(second)]
    if "score_vs_budget.png" in plot_of:
        blocks.append(_figure(plot_of["score_vs_budget.png"]))
    sizes = data_size_section(a)
    if sizes is not None:
        blocks += size_blocks(sizes, plot_of.get("score_vs_rank_by_size.png"))
    blocks += [Heading(2, "Pareto frontiers"), _table(frontier_table(a))]
    blocks += [_figure(plot_of[f"frontier_{f.metric}.png"]) for f in a.frontiers
               if f"frontier_{f.metric}.png" in plot_of]
    blocks.append(Paragraph("Peak memory is `cuda` (max allocated) on GPU and the growth of the process RSS on CPU; "
                            "time is the wall time of the training steps only (on a shared CPU both are noisy)."))
    if rss_only(a):
        blocks.append(Paragraph(f"**Caveat.** {RSS_CAVEAT}."))
    if shared_timing(a):
        blocks.append(Paragraph(TIMING_NOTE))
    blocks.append(Heading(2, "Does the probe predict the outcome?"))
    blocks.append(Paragraph("Predicted value: the share of the mean gradient's energy a placement captures, sum over "
                            "adapted modules of sum_{i<=rank} sigma_i^2 over the total (1.0 for full fine-tuning). "
                            "Measured: score gain over the untrained baseline (or the majority-class baseline for "
                            "classification)."))
    blocks.append(Paragraph("The probe counts as a predictor only if, on the same placements, its rho beats the "
                            "trivial predictors (number of adapted modules, trainable parameters), reaches the noise "
                            "ceiling (Spearman rho between the gains of two halves of the seeds, averaged over splits) "
                            "and has p < alpha. Within a budget this is the test that matters: across budgets, "
                            "parameter count alone orders placements."))
    blocks += [_table(predictor_table(a)), _table(correlation_table(a)), _table(prediction_table(a))]
    if "prediction.png" in plot_of:
        blocks.append(_figure(plot_of["prediction.png"]))
    if a.statistic_checks:
        blocks += [Heading(3, "Which probe statistic predicts the gain?"), Paragraph(STATISTICS_NOTE),
                   _table(statistic_table(a))]
    if r90 is not None:
        blocks += r90_blocks(r90)
    probs = problems_table(a)
    if probs[2]:
        blocks += [Heading(2, "Problems"), _table(probs)]
    return blocks


def write_report(out_dir: str | Path, rows: list[CellRow] | None = None, study: dict | None = None,
                 dest: str | Path | None = None) -> tuple[ReportFiles, StudyAnalysis, list[Guideline]]:
    """Analyze a results directory and write report.md, report.html, analysis.json and the plots to `dest`
    (default: the results directory)."""
    if rows is None or study is None:
        study, rows = load_results(out_dir)
    dest = Path(dest or out_dir)
    dest.mkdir(parents=True, exist_ok=True)
    a = analyze(rows, study)
    gl = generate(a)
    plots = write_plots(a, dest)
    r90 = r90_section(out_dir, rows, study)
    blocks = document(a, gl, plots, r90)
    md = atomic_write_text(dest / "report.md", render_markdown(blocks))
    ht = atomic_write_text(dest / "report.html", render_html(blocks))
    sizes = data_size_section(a)
    aj = write_json(dest / "analysis.json", {"analysis": a, "guidelines": gl, **({"r90": r90} if r90 else {}),
                                             **({"data_size": sizes} if sizes else {})})
    return ReportFiles(str(md), str(ht), tuple(str(p) for p, _ in plots), str(aj)), a, gl


__all__ = ["ReportFiles", "tables", "write_report"]
