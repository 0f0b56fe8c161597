"""Guidelines generated from a study's analysis: plain sentences, each with the numbers behind it.

Every sentence carries a strength: "supported" (a paired test or a CI backs it), "too weak to
say" (CIs overlap, p >= 0.05, or a single seed), "negative" (the evidence contradicts the tool's
own prediction), or "info" (a measurement, no claim). Nothing here claims a difference that the
seeds do not support. A `--quick` run (one seed, few steps) claims nothing: what would have been
"supported" or "negative" is "no claim (quick run)" there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..report.format import human
from .analysis import COST_LABELS, REFERENCE, StudyAnalysis
from .stats import ALPHA, Summary, intervals_overlap

SUPPORTED, WEAK, NEGATIVE, INFO = "supported", "too weak to say", "negative", "info"
QUICK = "no claim (quick run)"  # the strength of every claim of a --quick run


@dataclass(frozen=True)
class Guideline:
    """One generated sentence."""

    topic: str  # "baseline", a cost metric (frontier advice), "comparison", "auto", "prediction", "memory"
    text: str  # the sentence, numbers included
    strength: str  # supported | too weak to say | negative | info | no claim (quick run)
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


def group_guidelines(a: StudyAnalysis) -> list[Guideline]:
    """Per comparison group: the best placement, and whether the seeds support it over `all`."""
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
            worse = [c for (gg, _), c in comps.items() if gg == g and c.verdict == "worse"]
            tail = (f" It beats {', '.join(c.label for c in worse)} significantly (p < {ALPHA})." if worse else
                    " No other placement differs from it significantly.")
            out.append(Guideline("comparison", head + tail, SUPPORTED if worse else WEAK,
                                 {**ev, "significantly_worse": [c.label for c in worse]}))
            continue
        comp = comps.get((g, best.label))
        if comp is None:
            out.append(Guideline("comparison", head + f" There is no finished `{REFERENCE}` run in this group to compare.",
                                 WEAK, ev))
            continue
        t = comp.ttest
        ev.update({"diff_vs_all": t.mean_diff, "p": t.p, "pairs": t.n})
        if comp.verdict == "better":
            text = (f"{head} It beats {comp.reference} by {t.mean_diff:+.3f} (95% CI [{t.ci_low:+.3f}, {t.ci_high:+.3f}], "
                    f"paired t-test {fmt_p(t.p)}, {t.n} seeds): "
                    + ("prefer it at this budget." if g.startswith("budget=") else
                       "at this rank it scores higher (parameter counts differ: see the frontier)."))
            out.append(Guideline("comparison", text, SUPPORTED, ev))
        else:
            why = ("only one shared seed, so no test is possible" if t.n < 2 else
                   f"{fmt_p(t.p)} over {t.n} seeds"
                   + (", CIs overlap" if intervals_overlap(best.score, by_label[comp.reference].score) else ""))
            diff = "n/a" if t.mean_diff is None else f"{t.mean_diff:+.3f}"
            text = (f"{head} Its lead over {comp.reference} ({diff}) "
                    f"is too weak to say ({why}): either choice is defensible.")
            out.append(Guideline("comparison", text, WEAK, ev))
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
                                     f"({fmt_ci(rivals[0].score)}) with non-overlapping CIs.", SUPPORTED, ev))
            continue
        overlap = intervals_overlap(cheap.score, top.score)
        if overlap is None or overlap:
            why = "single seeds, no CIs" if overlap is None else "their 95% CIs overlap"
            text += (f" Whether spending more than {cheap.label} buys score is too weak to say ({why}: "
                     f"{fmt_ci(cheap.score)} vs {fmt_ci(top.score)}).")
            out.append(Guideline(f.metric, text, WEAK, ev))
        else:
            text += f" The gain from {cheap.label} to {top.label} is real: {fmt_ci(cheap.score)} vs {fmt_ci(top.score)}."
            out.append(Guideline(f.metric, text, SUPPORTED, ev))
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
    out = []
    p = a.prediction
    c = p.overall
    ev = {"rho": c.rho, "ci": [c.ci_low, c.ci_high], "p": c.p, "n": c.n}
    if c.rho is None:
        out.append(Guideline("prediction", f"The probe's prediction cannot be checked: {c.n} placements with both a "
                                           "predicted energy share and a measured gain (need >= 3, varied).", WEAK, ev))
    else:
        ci = f"[{c.ci_low:.2f}, {c.ci_high:.2f}]" if c.ci_low is not None else "(no CI: n < 4)"
        base = (f"Predicted energy share vs measured gain over {c.n} placements: Spearman rho = {c.rho:.2f} {ci}, "
                f"{fmt_p(c.p)} ({'exact permutation test' if c.p_method == 'exact' else 't approximation'}).")
        if c.p is not None and c.p < ALPHA and c.rho > 0:
            out.append(Guideline("prediction", base + " The probe orders placements the way training does.", SUPPORTED, ev))
        elif c.p is not None and c.p < ALPHA and c.rho < 0:
            out.append(Guideline("prediction", base + " Negative result: placements the probe favours did worse.",
                                 NEGATIVE, ev))
        else:
            out.append(Guideline("prediction", base + " Negative result: no reliable agreement between the probe's "
                                 "prediction and the measured gains.", NEGATIVE if c.n >= 6 else WEAK, ev))
    for g, corr in p.by_group.items():
        if corr.rho is not None:
            held = "parameter budget" if g.startswith("budget=") else "rank"
            out.append(Guideline("prediction", f"Within {g} ({corr.n} placements, {held} held fixed): "
                                 f"Spearman rho = {corr.rho:.2f}, {fmt_p(corr.p)}.",
                                 SUPPORTED if corr.p is not None and corr.p < ALPHA and corr.rho > 0 else WEAK,
                                 {"group": g, "rho": corr.rho, "p": corr.p, "n": corr.n}))
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
        out.append(Guideline("auto", text, SUPPORTED if not off else (NEGATIVE if not on else INFO),
                             {"label": label, "on_frontier": fronts}))
    if p.auto_best_in_group:
        wins = [g for g, v in p.auto_best_in_group.items() if v]
        n = len(p.auto_best_in_group)
        out.append(Guideline("auto", f"auto has the best mean score in {len(wins)} of {n} comparison groups"
                                     + (f" ({', '.join(wins)})." if wins else "; it never wins outright."),
                             INFO if wins else NEGATIVE, {"wins": wins, "groups": n}))
    return out


def generate(a: StudyAnalysis) -> list[Guideline]:
    """All guidelines, most decision-relevant first; a quick run's claims demoted to QUICK."""
    out = (baseline_guidelines(a) + frontier_guidelines(a) + group_guidelines(a) + auto_guidelines(a)
           + prediction_guidelines(a) + memory_guideline(a))
    if not a.study.get("quick"):
        return out
    return [replace(g, strength=QUICK, evidence={**g.evidence, "strength_if_not_quick": g.strength})
            if g.strength in (SUPPORTED, NEGATIVE) else g for g in out]
