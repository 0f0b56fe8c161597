"""Guidelines generated from a study's analysis: plain sentences, each with the numbers behind it.

Every sentence carries a verdict: "supported", "contradicted" or "too weak to say" for a claim,
"info" for a measurement or description that claims nothing. A claim is "supported" only when its
paired comparison survives Holm correction over every paired comparison of the report (at the
report's alpha) AND the seeds are at least as many as needed to detect the observed effect at 80%
power (minimum detectable effect, MDE, from the observed sd of the paired differences); a smaller
effect is "too weak to say at this sample size". Frontiers are descriptive (info: unpaired means).
The probe's prediction is "supported" only if it beats the trivial predictors and reaches the
noise ceiling (`predictors.py`). A `--quick` run claims nothing: what would have been "supported" or
"contradicted" is "no claim (quick run)" there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..report.format import human
from .analysis import COST_LABELS, REFERENCE, Comparison, StudyAnalysis
from .datasize import VS_FULL, behind_text, data_size_section
from .predictors import CONTRADICTED, SUPPORTED, WEAK
from .stats import Summary, intervals_overlap

INFO = "info"
NEGATIVE = CONTRADICTED  # the former name of the verdict
QUICK = "no claim (quick run)"  # the strength of every claim of a --quick run


@dataclass(frozen=True)
class Guideline:
    """One generated sentence."""

    topic: str  # "baseline", a cost metric (frontier advice), "comparison", "auto", "prediction", "memory"
    text: str  # the sentence, numbers included
    strength: str  # supported | contradicted | too weak to say | info | no claim (quick run)
    evidence: dict[str, Any] = field(default_factory=dict)  # the numbers, machine-readable


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_ci(s: Summary, digits: int = 3) -> str:
    """'0.812 [0.801, 0.823]' or '0.812 (1 seed)'."""
    if s.mean is None:
        return "n/a"
    if s.ci_low is None:
        return f"{s.mean:.{digits}f} ({s.n} seed{'s' if s.n != 1 else ''}, no CI)"
    return f"{s.mean:.{digits}f} [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"


def fmt_p(p: float | None) -> str:
    """'p = 0.026', 'p < 0.001' or 'p n/a'."""
    return "p n/a" if p is None else (f"p = {p:.2g}" if p >= 0.001 else "p < 0.001")


def evidence_text(c: Comparison, alpha: float) -> str:
    """'paired t over 5 seeds, p = 0.01, Holm p = 0.04 (family of 12), MDE 0.007 at 80% power'."""
    t = c.ttest
    mde = "n/a" if c.mde is None else f"{c.mde:.3f}"
    return (f"paired t over {t.n} seeds, {fmt_p(t.p)}, Holm {fmt_p(c.p_holm)} (family of {c.family}, "
            f"alpha {alpha}), MDE {mde} at 80% power")


def comparison_verdict(c: Comparison, alpha: float) -> tuple[str, str]:
    """(verdict, why) of one paired comparison: supported only if it survives Holm and has the seeds."""
    t = c.ttest
    if t.n < 2 or t.p is None:
        return WEAK, "too weak to say: " + ("fewer than 2 shared seeds, no test" if t.n < 2 else
                                            "identical differences, no test")
    if c.supported:
        return SUPPORTED, "supported"
    if c.mde is not None and abs(t.mean_diff or 0) < c.mde:
        need = f"; about {c.seeds_needed} seeds would be needed" if c.seeds_needed else ""
        return WEAK, f"too weak to say at this sample size (|effect| {abs(t.mean_diff):.3f} < MDE {c.mde:.3f}{need})"
    return WEAK, f"too weak to say (Holm p {'n/a' if c.p_holm is None else f'{c.p_holm:.2g}'} >= {alpha})"


def group_guidelines(a: StudyAnalysis) -> list[Guideline]:
    """Per comparison group: the best placement, and whether the seeds support it over `all` (Holm + power)."""
    out = []
    by_label = {c.label: c for c in a.configs}
    comps = {(c.group, c.label): c for c in a.comparisons}
    for g, labels in a.groups.items():
        done = [by_label[l] for l in labels if by_label[l].score.mean is not None]
        if len(done) < 2:
            continue
        best = max(done, key=lambda c: c.score.mean)
        ev = {"group": g, "best": best.label, "score": best.score.mean, "ci": [best.score.ci_low, best.score.ci_high],
              "params": best.trainable_params.mean}
        head = f"At {g}, the best mean score is {best.label}: {fmt_ci(best.score)} ({human(best.trainable_params.mean)} params)."
        if best.variant == REFERENCE:
            mine = [c for (gg, _), c in comps.items() if gg == g]
            worse = [c for c in mine if c.supported and (c.ttest.mean_diff or 0) < 0]
            if worse:
                text = (head + f" It beats {', '.join(c.label for c in worse)}: supported ("
                        + "; ".join(f"{c.label} {c.ttest.mean_diff:+.3f}, {evidence_text(c, a.alpha)}" for c in worse)
                        + ").")
            else:
                why = "; ".join(f"{c.label}: {c.ttest.mean_diff:+.3f}, {comparison_verdict(c, a.alpha)[1]}"
                                for c in mine if c.ttest.mean_diff is not None)
                text = head + f" Its lead over the others is too weak to say ({why or 'no paired test'})."
            out.append(Guideline("comparison", text, SUPPORTED if worse else WEAK,
                                 {**ev, "significantly_worse": [c.label for c in worse]}))
            continue
        comp = comps.get((g, best.label))
        if comp is None:
            out.append(Guideline("comparison", head + f" There is no finished `{REFERENCE}` run in this group to compare.",
                                 WEAK, ev))
            continue
        t = comp.ttest
        verdict, why = comparison_verdict(comp, a.alpha)
        ev.update({"diff_vs_all": t.mean_diff, "p": t.p, "p_holm": comp.p_holm, "family": comp.family,
                   "mde": comp.mde, "seeds_needed": comp.seeds_needed, "pairs": t.n})
        diff = "n/a" if t.mean_diff is None else f"{t.mean_diff:+.3f}"
        text = f"{head} Its lead over {comp.reference} ({diff}"
        if t.ci_low is not None:
            text += f", 95% CI [{t.ci_low:+.3f}, {t.ci_high:+.3f}]"
        text += f"; {evidence_text(comp, a.alpha)}) is {why}"
        text += (": prefer it at this budget." if verdict == SUPPORTED and g.startswith("budget=") else
                 ": at this rank it scores higher (parameter counts differ: see the frontier)." if verdict == SUPPORTED
                 else ": either choice is defensible.")
        out.append(Guideline("comparison", text, verdict, ev))
    return out


RSS_CAVEAT = ("CPU peak memory is RSS growth inside one long-running study process, where memory freed by earlier "
              "cells is reused, so it understates and is not comparable across cells; make memory claims from a GPU run")


def rss_only(a: StudyAnalysis) -> bool:
    kinds = {c.memory_kind for c in a.configs if c.memory_kind}
    return bool(kinds) and kinds <= {"rss"}


def baseline_guidelines(a: StudyAnalysis) -> list[Guideline]:
    """Placements that did not beat the untrained / majority baseline at all."""
    flat = [c for c in a.configs if c.gain.mean is not None and c.gain.mean <= 0]
    if not flat:
        return []
    return [Guideline("baseline", f"{len(flat)} placement(s) did not beat the baseline at all (mean gain <= 0): "
                      + ", ".join(f"{c.label} ({c.score.mean:.3f})" for c in flat)
                      + ". They learned nothing in this run's steps and are left out of the frontier advice.",
                      INFO, {"labels": [c.label for c in flat]})]


def frontier_guidelines(a: StudyAnalysis) -> list[Guideline]:
    """Which placement to choose for a given parameter, memory or time budget (the Pareto frontier)."""
    out = []
    by_label = {c.label: c for c in a.configs}
    for f in a.frontiers:
        pts = [by_label[l] for l in f.front if (by_label[l].gain.mean is None or by_label[l].gain.mean > 0)]
        if not pts:
            continue
        if f.metric == "peak_memory_mb" and rss_only(a):
            out.append(Guideline(f.metric, f"No memory advice from this run: {RSS_CAVEAT}.", WEAK,
                                 {"metric": f.metric, "memory_kind": "rss"}))
            continue
        unit = COST_LABELS.get(f.metric, f.metric)
        steps = "; ".join(f"up to {human(c.metric(f.metric).mean)}: {c.label} ({fmt(c.score.mean)})" for c in pts)
        cheap, top = pts[0], pts[-1]
        ev = {"metric": f.metric, "front": [{"label": c.label, "cost": c.metric(f.metric).mean, "score": c.score.mean}
                                            for c in pts]}
        text = f"Best placement by {unit} (Pareto frontier; pick the last entry your budget affords): {steps}."
        if len(pts) == 1:
            rivals = sorted((c for c in a.configs if c.score.mean is not None and c.label != cheap.label),
                            key=lambda c: -c.score.mean)
            text += f" {cheap.label} is both the cheapest and the best by mean score"
            if not rivals:
                out.append(Guideline(f.metric, text + ".", INFO, ev))
                continue
            overlap = intervals_overlap(cheap.score, rivals[0].score)
            if overlap is None or overlap:
                why = "single seeds, no CIs" if overlap is None else "95% CIs overlap"
                out.append(Guideline(f.metric, text + f"; whether it really beats the runner-up {rivals[0].label} "
                                     f"({fmt_ci(rivals[0].score)}) is too weak to say ({why}).", WEAK, ev))
            else:
                out.append(Guideline(f.metric, text + f", ahead of the runner-up {rivals[0].label} "
                                     f"({fmt_ci(rivals[0].score)}) with non-overlapping CIs (descriptive: "
                                     "no paired test).", INFO, ev))
            continue
        overlap = intervals_overlap(cheap.score, top.score)
        if overlap is None or overlap:
            why = "single seeds, no CIs" if overlap is None else "their 95% CIs overlap"
            text += (f" Whether spending more than {cheap.label} buys score is too weak to say ({why}: "
                     f"{fmt_ci(cheap.score)} vs {fmt_ci(top.score)}).")
            out.append(Guideline(f.metric, text, WEAK, ev))
        else:
            text += (f" {cheap.label} and {top.label} have non-overlapping 95% CIs: {fmt_ci(cheap.score)} vs "
                     f"{fmt_ci(top.score)} (descriptive: no paired test).")
            out.append(Guideline(f.metric, text, INFO, ev))
    return out


def memory_guideline(a: StudyAnalysis) -> list[Guideline]:
    mem = [c for c in a.configs if c.peak_memory_mb.mean is not None]
    lora = [c for c in mem if c.strategy != "full"]
    if not lora:
        return []
    lo, hi = min(lora, key=lambda c: c.peak_memory_mb.mean), max(lora, key=lambda c: c.peak_memory_mb.mean)
    text = (f"Peak training memory of LoRA placements ranges from {lo.peak_memory_mb.mean:.0f} MB ({lo.label}) to "
            f"{hi.peak_memory_mb.mean:.0f} MB ({hi.label})")
    full = [c for c in mem if c.strategy == "full"]
    if full:
        text += f"; full fine-tuning peaked at {full[0].peak_memory_mb.mean:.0f} MB"
    if rss_only(a):
        text += f". {RSS_CAVEAT}."
    else:
        text += (": activations, not adapter size, dominate memory, so placement barely changes it."
                 if hi.peak_memory_mb.mean < 1.25 * max(lo.peak_memory_mb.mean, 1e-9) else ".")
    return [Guideline("memory", text, WEAK if rss_only(a) else INFO, {"min": lo.peak_memory_mb.mean, "max": hi.peak_memory_mb.mean,
                                             "full": full[0].peak_memory_mb.mean if full else None})]


def prediction_guidelines(a: StudyAnalysis) -> list[Guideline]:
    """Does the probe predict the gains better than counting modules or parameters, up to the noise ceiling?"""
    out = []
    c = a.prediction.overall
    if c.rho is None:
        out.append(Guideline("prediction", f"The probe's prediction cannot be checked: {c.n} placements with both a "
                                           "predicted energy share and a measured gain (need >= 3, varied).", WEAK,
                             {"rho": c.rho, "n": c.n}))
    for k in a.predictor_checks:
        if k.probe.rho is None:
            continue
        r = lambda x: "n/a" if x.rho is None else f"{x.rho:.2f}"  # noqa: E731
        ceiling = "n/a" if k.ceiling is None else f"{k.ceiling:.2f}"
        held = (" (parameter budget held fixed)" if k.scope.startswith("budget=") else
                " (rank held fixed)" if k.scope.startswith("rank=") else "")
        text = (f"Prediction check, {k.scope}{held}, {len(k.labels)} placements: Spearman rho of the probe's "
                f"predicted energy share with the gain {r(k.probe)} ({fmt_p(k.probe.p)}), of the number of adapted "
                f"modules {r(k.modules)}, of trainable parameters {r(k.params)}; noise ceiling (seed-split halves) "
                f"{ceiling}.")
        if k.verdict == SUPPORTED:
            text += " The probe beats both trivial predictors and reaches the noise ceiling: supported."
        elif k.verdict == CONTRADICTED:
            text += " Placements the probe favours did worse: contradicted."
        else:
            text += " Too weak to say: " + "; ".join(k.reasons) + "."
        out.append(Guideline("prediction", text, k.verdict,
                             {"scope": k.scope, "n": len(k.labels), "rho_probe": k.probe.rho, "p": k.probe.p,
                              "rho_modules": k.modules.rho, "rho_params": k.params.rho, "ceiling": k.ceiling,
                              "reasons": list(k.reasons)}))
    return out


def protocol_guidelines(a: StudyAnalysis) -> list[Guideline]:
    """The comparison family and the learning rates chosen on validation (info: how the claims were made)."""
    out = []
    fam = max((c.family for c in a.comparisons), default=0)
    if fam:
        vs_full = (", and every LoRA placement of a data size against full fine-tuning at that size"
                   if any(c.group.endswith(VS_FULL) for c in a.comparisons) else "")
        out.append(Guideline("protocol", f"This report makes {fam} distinct paired comparisons (every placement "
                             f"against `{REFERENCE}` in its group{vs_full}); their p-values are Holm-corrected together "
                             f"at alpha {a.alpha}.", INFO, {"family": fam, "alpha": a.alpha}))
    if a.lr_choices:
        parts = [f"{ch.label}: {ch.chosen:g}" if ch.chosen is not None else f"{ch.label}: none yet"
                 for ch in a.lr_choices]
        out.append(Guideline("protocol", "Learning rate per arm, chosen on a validation carve of the train split "
                             "(never on test): " + "; ".join(parts) + ".", INFO,
                             {"chosen": {ch.label: ch.chosen for ch in a.lr_choices}}))
    return out


def size_guidelines(a: StudyAnalysis) -> list[Guideline]:
    """A data-size axis: per size and strategy, up to which rank LoRA is behind full fine-tuning (supported when
    every such comparison survives Holm and reaches its MDE), then how that rank moves with the data (info)."""
    s = data_size_section(a)
    if s is None:
        return []
    comps = {c.label: c for c in a.comparisons if c.group.endswith(VS_FULL)}
    out = []
    for b in s.falls_behind:
        worse = [c for r in s.rows if r.size == b.size and r.variant == b.variant and r.rank in b.worse_at
                 for c in [comps[r.label]]]
        ev = {"size": b.size, "variant": b.variant, "ranks": list(b.ranks), "worse_at": list(b.worse_at),
              "behind_up_to": b.behind_up_to, "diffs": {c.label: c.ttest.mean_diff for c in worse}}
        if b.behind_up_to is None:
            out.append(Guideline("data size", behind_text(b) + (" Too weak to say that LoRA falls behind at this "
                                 "size (no comparison survives Holm)." if b.tested else ""), WEAK, ev))
            continue
        sure = all(c.supported for c in worse)
        why = "; ".join(f"{c.label} {c.ttest.mean_diff:+.3f}, {evidence_text(c, a.alpha)}" for c in worse)
        out.append(Guideline("data size", behind_text(b) + f" ({why}): " + (
            "supported." if sure else "too weak to say at this sample size (below the MDE)."),
            SUPPORTED if sure else WEAK, ev))
    for variant in dict.fromkeys(b.variant for b in s.falls_behind):
        per = [b for b in s.falls_behind if b.variant == variant]
        if len(per) < 2 or not all(b.tested for b in per):  # a size without a paired test says nothing
            continue
        tops = [b.behind_up_to or 0 for b in per]
        grows = tops == sorted(tops) and tops[-1] > tops[0]
        trend = "grows with the data, as LoRA Without Regret report" if grows else "does not grow with the data here"
        parts = "; ".join(f"n={b.size}: {b.behind_up_to if b.behind_up_to is not None else 'none'}" for b in per)
        out.append(Guideline("data size", f"{variant}: the largest rank significantly behind full fine-tuning, by "
                             f"data size: {parts}; it {trend} (descriptive: it reads the comparisons above).", INFO,
                             {"variant": variant, "behind_up_to": {b.size: b.behind_up_to for b in per}}))
    return out


def auto_guidelines(a: StudyAnalysis) -> list[Guideline]:
    p = a.prediction
    if not p.auto_on_frontier:
        return []
    out = []
    for label, fronts in p.auto_on_frontier.items():
        if rss_only(a):  # CPU memory numbers cannot place anything on a frontier
            fronts = {m: v for m, v in fronts.items() if m != "peak_memory_mb"}
        on = [COST_LABELS.get(m, m) for m, v in fronts.items() if v]
        off = [COST_LABELS.get(m, m) for m, v in fronts.items() if not v]
        if on and off:
            text = f"{label} is on the Pareto frontier of score vs {', '.join(on)}, and off it vs {', '.join(off)}."
        elif on:
            text = f"{label} is on the Pareto frontier of score vs every cost axis ({', '.join(on)})."
        else:
            text = f"{label} is on no Pareto frontier: some placement is at least as good and cheaper on {', '.join(off)}."
        out.append(Guideline("auto", text + " (descriptive: mean scores, no test)", INFO,
                             {"label": label, "on_frontier": fronts}))
    seen = set()
    for c in a.comparisons:
        if not c.label.startswith("auto") or c.ttest.mean_diff is None or (c.label, c.reference) in seen:
            continue
        seen.add((c.label, c.reference))
        verdict, why = comparison_verdict(c, a.alpha)
        if verdict == SUPPORTED and c.ttest.mean_diff < 0:
            verdict, why = CONTRADICTED, "contradicted: auto is worse"
        out.append(Guideline("auto", f"{c.label} vs {c.reference}: {c.ttest.mean_diff:+.3f} "
                             f"({evidence_text(c, a.alpha)}): {why}.", verdict,
                             {"label": c.label, "diff": c.ttest.mean_diff, "p_holm": c.p_holm, "mde": c.mde}))
    if p.auto_best_in_group:
        wins = [g for g, v in p.auto_best_in_group.items() if v]
        n = len(p.auto_best_in_group)
        out.append(Guideline("auto", f"auto has the best mean score in {len(wins)} of {n} comparison groups"
                                     + (f" ({', '.join(wins)})." if wins else "; it never wins outright."),
                             INFO, {"wins": wins, "groups": n}))
    return out


def generate(a: StudyAnalysis) -> list[Guideline]:
    """All guidelines, most decision-relevant first; a quick run's claims demoted to QUICK."""
    out = (protocol_guidelines(a) + baseline_guidelines(a) + frontier_guidelines(a) + group_guidelines(a)
           + size_guidelines(a) + auto_guidelines(a) + prediction_guidelines(a) + memory_guideline(a))
    if not a.study.get("quick"):
        return out
    return [replace(g, strength=QUICK, evidence={**g.evidence, "strength_if_not_quick": g.strength})
            if g.strength in (SUPPORTED, CONTRADICTED) else g for g in out]
