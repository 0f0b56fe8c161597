"""The report's "Measured intrinsic rank (r90) per component" section, from a study's truncation files.

With [truncate], every finished full fine-tuning test cell holds cells/<id>/truncation.json (`study.truncate`).
`r90_section` reads them (one run per seed), summarizes each component over the seeds
(`truncation.summarize_runs`: r90 per seed, median, geometric mean with its CI, the update's spectral 90%-energy
rank) and sets beside it the probe's estimate for the same component: per seed the median designated
`intrinsic_rank` over the component's probed blocks (the rows of the probe's per-role view whose kind, role or
layer band is the component's), then the median over the seeds that have a probe. `r90_checks` then tells which
probe statistic (of the first seed's probe) orders the components like their measured r90; truncation's
component names are mapped to study variants for it (`study_variant`: "first" -> "all[0-9]").
No truncation file: None, and the report is what it was. `r90_blocks`: the section as report blocks.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..fields import documented
from .grid import SWEEP
from .rows import CellRow
from .stats import rounded


@dataclass(frozen=True)
class R90Row:
    """One component: its measured r90 over seeds beside the probe's estimate."""

    component: str = documented(help="the truncation component (attention, ffn, a role, first/middle/last)")
    variant: str = documented(help="the same component as a study variant (what r90_checks reads)")
    seeds: tuple[int, ...] = documented(help="seeds of the full fine-tuning runs measured")
    r90s: tuple[int | None, ...] = documented(help="r90 of each of those runs (null: not reached on the grid)")
    median: float | None = documented(help="median r90 (not reached counts as above every rank)")
    geomean: float | None = documented(help="geometric mean of r90 (null when a run did not reach it)")
    ci_low: float | None = documented(help="95% CI of the geometric mean, lower end (log2 scale, t-based)")
    ci_high: float | None = documented(help="its upper end")
    dw90: float | None = documented(help="median over the runs of the update's spectral 90%-energy rank")
    probe_rank: float | None = documented(help="the probe's estimate: median over seeds of the median designated "
                                               "intrinsic_rank over the component's probed blocks (null: no probe)")
    probe_blocks: int = documented(0, "probed blocks of the component (in the first seed's probe)")
    r90_owns: tuple[int | None, ...] = documented((), "r90_own of each run: 90% of the component's own contribution "
                                                      "(null: see own_status)")
    own_status: tuple[str, ...] = documented((), "own_status of each run (reached, not reached, undefined: own "
                                                 "contribution below 1% of the full gain, not measured)")
    own_median: float | None = documented(None, "median r90_own over the runs where it is defined (not reached "
                                                "counts as above every rank)")
    own_geomean: float | None = documented(None, "geometric mean of r90_own over those runs (null when one did not "
                                                 "reach it)")
    own_ci_low: float | None = documented(None, "95% CI of that geometric mean, lower end (log2 scale, t-based)")
    own_ci_high: float | None = documented(None, "its upper end")
    own_share: float | None = documented(None, "mean over the runs of the component's own share of the full gain, "
                                               "(gain(full) - gain(0)) / gain(full)")
    own_share_ci_low: float | None = documented(None, "t-based 95% CI of that mean, lower end")
    own_share_ci_high: float | None = documented(None, "its upper end")


@dataclass(frozen=True)
class R90Section:
    """Everything the r90 section of the report shows."""

    rows: tuple[R90Row, ...] = documented(help="one row per component")
    checks: tuple[dict[str, Any], ...] = documented(help="per probe statistic: Spearman rho of its reading of the "
                                                          "components with their r90_own, or r90 (`check_target`) "
                                                          "(study.r90.r90_checks)")
    probe_seed: int | None = documented(help="seed of the probe the checks read (null: no probe)")
    ranks: tuple[int, ...] = documented(help="the rank grid r90 is read from")
    check_target: str | None = documented(None, '"r90_own" when at least 3 components reached it at every seed '
                                                 '(the checks then read those), else "r90"; null: no checks')
    kept: bool = documented(False, "the probe readings (probe_rank, checks) were kept from the folder's previous "
                                   "analysis.json: its probes are absent and the r90 measurements are unchanged")


def study_variant(component: str, layers: tuple[int, ...]) -> str:
    """A truncation component as a study variant: kinds and roles keep their names, a layer band becomes
    "all[LO-HI]" (its layers, which are contiguous)."""
    from ..truncation.components import BANDS

    if component in BANDS:
        return f"all[{min(layers)}-{max(layers)}]" if layers else "all"
    return component


def full_test_rows(rows: list[CellRow]) -> list[CellRow]:
    """The finished full fine-tuning test rows, by seed: the runs a study truncates."""
    return sorted((r for r in rows if r.strategy == "full" and r.phase != SWEEP and r.status == "ok"),
                  key=lambda r: r.seed)


def _component_rank(report, component: str, group: str, layers: tuple[int, ...]) -> tuple[float | None, int]:
    """Median designated intrinsic_rank over the probe's blocks of the component, and their number."""
    leaves = report.leaves()
    if group == "kind":
        mine = [m for m in leaves if m.kind == component]
    elif group == "band":
        mine = [m for m in leaves if m.layer in layers]
    else:
        mine = [m for m in leaves if m.role == component]
    return (float(statistics.median(m.intrinsic_rank for m in mine)) if mine else None), len(mine)


def r90_section(out_dir: str | Path, rows: list[CellRow], study: dict[str, Any]) -> R90Section | None:
    """The section from out/cells/<id>/truncation.json of the full test rows; None when there is none."""
    from ..truncation import TruncationResult, summarize_runs

    out = Path(out_dir)
    runs = [(r.seed, t) for r in full_test_rows(rows) if (t := TruncationResult.load(out / "cells" / r.id)) is not None]
    if not runs:
        return None
    summary = summarize_runs([t for _, t in runs])
    seeds = tuple(s for s, _ in runs)
    described = {c.component: c for _, t in runs for c in t.components}
    probes = _probes(out, study, seeds)
    table = []
    for s in summary.summary:
        c = described[s.component]
        ests = [_component_rank(p, c.component, c.group, c.layers) for p in probes.values()]
        vals = [v for v, _ in ests if v is not None]
        dw = [float(v) for v in s.energy_rank90]
        table.append(R90Row(component=s.component, variant=study_variant(c.component, c.layers),
                            seeds=tuple(sd for sd, t in runs if any(x.component == s.component for x in t.components)),
                            r90s=s.r90s, median=s.median, geomean=s.geomean, ci_low=s.ci_low, ci_high=s.ci_high,
                            dw90=statistics.median(dw) if dw else None,
                            probe_rank=statistics.median(vals) if vals else None,
                            probe_blocks=ests[0][1] if ests else 0, r90_owns=s.own.r90s, own_status=s.own.status,
                            own_median=s.own.median, own_geomean=s.own.geomean, own_ci_low=s.own.ci_low,
                            own_ci_high=s.own.ci_high, own_share=s.own.share, own_share_ci_low=s.own.share_ci_low,
                            own_share_ci_high=s.own.share_ci_high))
    first = min(probes) if probes else None
    checks, target = _checks(table, probes[first]) if first is not None else ((), None)
    section = R90Section(tuple(table), checks, first, tuple(sorted({r for _, t in runs for r in t.grid})), target)
    return section if probes else _kept_readings(section, out / "analysis.json")


def _kept_readings(section: R90Section, path: Path) -> R90Section:
    """`section` (made without probes) with the probe readings of the r90 section in the analysis.json at `path`
    when that section measured the same thing (every component's seeds, r90s and r90_owns equal) and had them;
    else `section` as given. Probes are not committed: a report regenerated from a committed folder keeps what
    its probes said, as `rows._kept_predictions` keeps the predicted shares."""
    try:
        old = json.loads(path.read_text())["r90"]
        rows = {r["component"]: r for r in old["rows"]}
    except (OSError, ValueError, KeyError, TypeError):
        return section
    same = all((o := rows.get(r.component)) is not None and tuple(o["seeds"]) == r.seeds
               and tuple(o["r90s"]) == r.r90s and tuple(o.get("r90_owns", ())) == r.r90_owns for r in section.rows)
    if not same or len(rows) != len(section.rows) or old.get("probe_seed") is None:
        return section
    table = tuple(replace(r, probe_rank=rows[r.component]["probe_rank"], probe_blocks=rows[r.component]["probe_blocks"])
                  for r in section.rows)
    return replace(section, rows=table, checks=tuple(old.get("checks", ())), probe_seed=old["probe_seed"],
                   check_target=old.get("check_target"), kept=True)


def _probes(out: Path, study: dict[str, Any], seeds: tuple[int, ...]) -> dict[int, Any]:
    """{seed: ProbeReport} of the seeds whose probe the study saved."""
    from ..errors import ConfigError
    from .rows import ProbeEnergy
    from .spec import spec_from_record

    try:
        energy = ProbeEnergy(spec_from_record(study), out)
    except ConfigError:
        return {}
    return {s: rep for s in seeds if (rep := energy.report(s)) is not None}


def _checks(table: list[R90Row], report) -> tuple[tuple[dict[str, Any], ...], str | None]:
    """r90_checks over the components every seed reached, as report rows, and the target they read: r90_own
    per seed when at least 3 components reached it at every seed (the literal r90 saturates at the grid's first
    rank when the other components carry the gain), else the literal r90 per seed."""
    from ..errors import ConfigError
    from .r90 import r90_checks

    n = max((len(r.r90s) for r in table), default=0)
    use, target = {}, None
    for name, values in (("r90_own", lambda r: r.r90_owns), ("r90", lambda r: r.r90s)):
        use = {r.variant: list(values(r)) for r in table
               if len(values(r)) == n and all(v is not None for v in values(r))}
        if len(use) >= 3:
            target = name
            break
    if target is None:
        return (), None
    try:
        found = r90_checks(use, report, target=target)
    except ConfigError:  # a component the probe did not cover (a probe limited to some layers or roles)
        return (), None
    checks = [{"statistic": k.statistic, "target": k.target, "n": len(k.components), "spearman_rho": k.rho.rho,
               "p": k.rho.p, "ci_low": k.ci_low, "ci_high": k.ci_high, "components": list(k.components),
               "readings": list(k.readings)} for k in found]
    return tuple(checks + _designated_check(table, use, target)), target


def _designated_check(table: list[R90Row], use: dict[str, list], target: str) -> list[dict[str, Any]]:
    """The probe's own rank estimate (`probe_rank`: the designated intrinsic_rank, medians over blocks and seeds'
    probes) against the same targets, as one more check row (no bootstrap: it is already a median over seeds)."""
    from .stats import spearman

    rows = [r for r in table if r.variant in use and r.probe_rank is not None]
    if len(rows) < 3:
        return []
    x = [float(r.probe_rank) for r in rows]
    rho = spearman(x, [float(np.mean(use[r.variant])) for r in rows])
    return [{"statistic": "designated_rank", "target": target, "n": len(rows), "spearman_rho": rho.rho, "p": rho.p,
             "ci_low": None, "ci_high": None, "components": [r.variant for r in rows], "readings": x}]


# ----------------------------------------------------------------------------- the section's tables


def r90_table(r: R90Section) -> tuple[str, list[str], list[dict[str, Any]]]:
    def ranks(v):
        return ", ".join("n/r" if x is None else str(x) for x in v)

    def owns(x):
        return ", ".join(str(v) if st == "reached" else {"not reached": "n/r", "undefined": "undef"}.get(st, "-")
                         for v, st in zip(x.r90_owns, x.own_status, strict=True))

    def share(x):
        if x.own_share is None:
            return None
        ci = "" if x.own_share_ci_low is None else f" [{x.own_share_ci_low:.1%}, {x.own_share_ci_high:.1%}]"
        return f"{x.own_share:.1%}{ci}"

    rows = [{"component": x.component, "seeds": len(x.seeds), "r90_per_seed": ranks(x.r90s), "median": x.median,
             "geomean": rounded(x.geomean, 2),
             "ci95": None if x.ci_low is None else f"[{x.ci_low:.1f}, {x.ci_high:.1f}]",
             "r90_own_per_seed": owns(x), "own_median": x.own_median, "own_geomean": rounded(x.own_geomean, 2),
             "own_ci95": None if x.own_ci_low is None else f"[{x.own_ci_low:.1f}, {x.own_ci_high:.1f}]",
             "own_share": share(x), "dW_90%": x.dw90, "probe_rank": x.probe_rank} for x in r.rows]
    return ("Measured r90 and r90_own per component over seeds (n/r: not reached on the grid; undef: own contribution "
            "below 1% of the full gain; -: not measured) beside the probe's estimate",
            ["component", "seeds", "r90_per_seed", "median", "geomean", "ci95", "r90_own_per_seed", "own_median",
             "own_geomean", "own_ci95", "own_share", "dW_90%", "probe_rank"], rows)


def r90_check_table(r: R90Section) -> tuple[str, list[str], list[dict[str, Any]]]:
    rows = [{"statistic": k["statistic"], "target": k.get("target", "r90"), "n": k["n"],
             "spearman_rho": rounded(k["spearman_rho"], 3),
             "ci95_seeds": None if k["ci_low"] is None else f"[{k['ci_low']:.2f}, {k['ci_high']:.2f}]",
             "p": rounded(k["p"], 4), "note": _note(k)} for k in r.checks]
    return (f"Which probe statistic orders the components like their {r.check_target or 'r90'}? (Spearman rho; CI: "
            "bootstrap over seeds; `designated_rank`: the probe's rank estimate, probe_rank above)",
            ["statistic", "target", "n", "spearman_rho", "ci95_seeds", "p", "note"], rows)


def _note(check: dict[str, Any]) -> str | None:
    """Why a check has no rho: every component reads the same value (a constant orders nothing)."""
    reads = check.get("readings") or []
    if check["spearman_rho"] is None and reads and len(set(reads)) == 1:
        return f"constant: every component reads {reads[0]:g}"
    return None


R90_NOTE = ("r90 is the smallest rank of the grid at which replacing the component's full fine-tuning update dW by "
            "its best rank-r approximation (everything else fine-tuned) keeps 90% of full fine-tuning's gain over the "
            "untrained model, measured on every finished full fine-tuning test run (`intrinsic truncate`, one run "
            "per seed). It saturates at the grid's first rank when the other components carry most of the gain; "
            "r90_own is the smallest rank keeping 90% of the component's own contribution, gain(full) - gain(0) "
            "with gain(0) the gain with its update removed, and `own_share` that contribution as a share of the "
            "full gain (mean over the seeds, t-based 95% CI). `geomean`: 2^(mean log2 r90) with the t-based 95% CI "
            "of mean log2 r90 (null when a seed did not reach r90); the same for r90_own over the seeds where it is "
            "defined; `dW_90%`: median over the seeds of the smallest rank keeping 90% of ||dW||^2 (the "
            "spectrum alone); `probe_rank`: the probe's estimate, median over the component's probed blocks of the "
            "designated intrinsic_rank, median over the seeds' probes.")


def r90_blocks(r: R90Section) -> list:
    """The report section: heading, note, the r90 table and (when the probe reads >= 3 components) the checks."""
    from ..report.document import Heading, Paragraph, Table

    blocks = [Heading(2, "Measured intrinsic rank (r90) per component"),
              Paragraph(R90_NOTE + f" Rank grid: {', '.join(map(str, r.ranks))}."), Table.of_records(*r90_table(r))]
    if r.checks:
        blocks += [Paragraph(f"Readings from the probe of seed {r.probe_seed}, over the components every seed "
                             f"reached, against {r.check_target} (r90_own when at least 3 components reach it at "
                             "every seed, else r90; study variants: a layer band is `all[LAYERS]`)."),
                   Table.of_records(*r90_check_table(r))]
    if r.probe_seed is None:
        blocks.append(Paragraph(NO_PROBES_NOTE))
    elif r.kept:
        blocks.append(Paragraph(KEPT_NOTE))
    return blocks


KEPT_NOTE = ("The probe readings of this section (`probe_rank`, the statistic checks) are those of the previous "
             "report of this folder, made with the probes present: the probes are not in the folder now, and the r90 "
             "measurements are unchanged.")
NO_PROBES_NOTE = ("No probe of these seeds was found under the study's `probes/` folder, so `probe_rank` and the "
                  "check of which probe statistic orders the components are missing here. They are not kept in "
                  "the repository: regenerate this report with the probes present (`intrinsic study run SPEC "
                  "--out DIR --probes-only` recomputes them) rather than over a report that had them.")
