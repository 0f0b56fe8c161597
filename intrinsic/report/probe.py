"""The report of a saved probe, as Markdown or HTML, embedding its plots.

`write_report(report, out_dir, fmt)` (re)draws any missing plot and writes `report.md`
(plots linked as files beside it) or `report.html` (one self-contained file, plots inlined as
base64 PNG). Both come from one document (`document(report, plots)`, rendered by
`intrinsic.report.document`) with the same sections: provenance, attention vs FFN, the
rank-vs-layer table, the top modules by gradient energy, every module's estimators, and phase
timings.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ..probes.schema import ProbeReport, rank_grid
from ..rank import TESTS
from ..results import atomic_write_text
from .document import Block, Heading, Image, Paragraph, Table, render_html, render_markdown
from .format import cell

FORMATS = ("md", "html")
_DESCRIPTIVE_COLUMNS = ("gavish_donoho", "energy_90", "stable_rank", "entropy_rank")  # of rank.DESCRIPTIVE
_fmt = partial(cell, digits=3, large="plain", bools=False)  # the probe report's numbers: 3 digits, exact counts


def sections(report: ProbeReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows), shared by both formats."""
    out = []
    kinds = report.summary.get("by_kind", {})
    out.append((
        "Attention vs FFN",
        ["kind", "modules", "median rank", "mean rank", "max rank", "energy share", "median update rank (energy 90%)"],
        [[k, _fmt(g["modules"]), _fmt(g["median_rank"]), _fmt(g["mean_rank"]), _fmt(g["max_rank"]),
          f"{100 * g['energy_share']:.1f}%", _fmt(g.get("median_update_energy_90"))] for k, g in kinds.items()],
    ))
    layers, roles, grid = rank_grid(report)
    out.append((
        f"Intrinsic rank per layer and role ({report.estimator})",
        ["layer", *roles],
        [[str(L), *(_fmt(None) if grid[i, j] != grid[i, j] else str(int(grid[i, j])) for j in range(len(roles)))]
         for i, L in enumerate(layers)],
    ))
    out.append((
        "Top modules by gradient energy",
        ["module", "layer", "role", "energy share", "intrinsic rank"],
        [[t["name"], str(t["layer"]), t["role"], f"{100 * t['energy_share']:.1f}%", str(t["intrinsic_rank"])]
         for t in report.summary.get("top_energy", [])],
    ))
    # every noise-floor test of the registry except the designated one (the "rank" column), then a few descriptive
    cols = [c for c in (*TESTS, *_DESCRIPTIVE_COLUMNS) if c != report.estimator
            and any(c in m.grad_ranks for m in report.modules)]
    has_update = any(m.update_ranks for m in report.modules)
    out.append((
        "Every module (gradient estimators; update = energy-90 rank of W_K - W_0)",
        ["module", "shape", "cap", "rank", *cols, *(["update"] if has_update else [])],
        [[m.short + (f" ({m.block_of.rsplit('.', 1)[-1]} block)" if m.block_of else ""), f"{m.shape[0]}x{m.shape[1]}",
          str(m.rank_cap), str(m.intrinsic_rank), *(_fmt(m.grad_ranks.get(c)) for c in cols),
          *([_fmt((m.update_ranks or {}).get("energy_90"))] if has_update else [])]
         for m in report.modules],
    ))
    top = report.top_level()
    if any(m.example_energy_share is not None for m in top):  # opt-in (settings.example_energy)
        ranked = sorted(top, key=lambda m: -(m.example_energy_share or 0.0))
        out.append((
            "Per-example gradient energy (sum over examples of ||G_i||^2, share over modules)",
            ["module", "per-example energy share", "mean-gradient energy share", "intrinsic rank"],
            [[m.name, f"{100 * (m.example_energy_share or 0.0):.1f}%", f"{100 * m.energy_share:.1f}%",
              str(m.intrinsic_rank)] for m in ranked[:10]]
            + [[f"all {k}", f"{100 * g['example_energy_share']:.1f}%", f"{100 * g['energy_share']:.1f}%", ""]
               for k, g in kinds.items() if "example_energy_share" in g],
        ))
    if report.timings:
        out.append(("Timings (seconds)", ["phase", "seconds"], [[k, f"{v:.2f}"] for k, v in report.timings.items()]))
    return out


def _intro(report: ProbeReport) -> list[str]:
    s = report.settings
    upd = f"{s.get('update_steps')} AdamW steps (lr {s.get('update_lr')})" if s.get("update_steps") else "skipped"
    return [
        f"Model **{report.model}**, task **{report.task}**, seed {report.seed}.",
        f"Gradient probe: {s.get('batches')} batches of {s.get('batch_size')} (max length {s.get('max_length')}), "
        f"{report.tokens:,} tokens; no gradient rank can exceed {report.token_cap}. Update probe: {upd}.",
        f"Intrinsic rank = `{report.estimator}` estimator.",
    ] + ([f"Spectra: top {s.get('topk')} singular values per matrix (randomized, float32; estimators that need "
          "the whole spectrum read '-')."] if s.get("spectra") == "topk" else [])


def document(report: ProbeReport, plots: list[Path]) -> list[Block]:
    """The probe report as document blocks; `plots` are the PNG files to show, in order."""
    blocks: list[Block] = [Heading(1, f"Probe: {report.model} on {report.task}"), Paragraph("\n".join(_intro(report)))]
    blocks += [Image(p, p.stem) for p in plots]
    for title, header, rows in sections(report):
        blocks += [Heading(2, title), Table(tuple(header), tuple(tuple(r) for r in rows))]
    return blocks


def _plot_paths(out_dir: Path) -> list[Path]:
    from .plots import PLOT_FILES

    return [out_dir / p for p in PLOT_FILES if (out_dir / p).is_file()]


def write_report(report: ProbeReport, out_dir: str | Path, fmt: str = "md") -> Path:
    """Write report.md or report.html into out_dir, drawing the plots first if they are missing."""
    from ..errors import ConfigError
    from .plots import write_plots

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    out = Path(out_dir)
    plots = _plot_paths(out)
    if not any(p.name == "rank_heatmap.png" for p in plots):
        write_plots(report, out)
        plots = _plot_paths(out)
    blocks = document(report, plots)
    if fmt == "md":
        return atomic_write_text(out / "report.md", render_markdown(blocks))
    return atomic_write_text(out / "report.html", render_html(blocks, title=f"Probe {report.model}"))
