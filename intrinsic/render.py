"""Markdown and HTML reports of a saved probe, embedding its plots.

`write_report(report, out_dir, fmt)` (re)draws any missing plot and writes `report.md`
(plots linked as files beside it) or `report.html` (one self-contained file, plots inlined as
base64 PNG). Both carry the same sections: provenance, attention vs FFN, the rank-vs-layer
table, the top modules by gradient energy, every module's estimators, and phase timings.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from .probes.schema import ProbeReport, rank_grid
from .results import atomic_write_text

FORMATS = ("md", "html")
_ESTIMATOR_COLUMNS = ("split_half", "noise_floor", "gavish_donoho", "energy_90", "stable_rank", "entropy_rank")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


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
    cols = [c for c in _ESTIMATOR_COLUMNS if any(c in m.grad_ranks for m in report.modules)]
    has_update = any(m.update_ranks for m in report.modules)
    out.append((
        "Every module (gradient estimators; update = energy-90 rank of W_K - W_0)",
        ["module", "shape", "cap", "rank", *cols, *(["update"] if has_update else [])],
        [[m.short + (f" ({m.block_of.rsplit('.', 1)[-1]} block)" if m.block_of else ""), f"{m.shape[0]}x{m.shape[1]}",
          str(m.rank_cap), str(m.intrinsic_rank), *(_fmt(m.grad_ranks.get(c)) for c in cols),
          *([_fmt((m.update_ranks or {}).get("energy_90"))] if has_update else [])]
         for m in report.modules],
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
    ]


def _plot_names(out_dir: Path) -> list[str]:
    from .plots import PLOT_FILES

    return [p for p in PLOT_FILES if (out_dir / p).is_file()]


def render_markdown(report: ProbeReport, plots: list[str]) -> str:
    lines = [f"# Probe: {report.model} on {report.task}", "", *_intro(report), ""]
    for p in plots:
        lines += [f"![{p[:-4]}]({p})", ""]
    for title, header, rows in sections(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def render_html(report: ProbeReport, plots: dict[str, bytes]) -> str:
    e = html.escape
    body = [f"<h1>Probe: {e(report.model)} on {e(report.task)}</h1>"]
    body += [f"<p>{e(t).replace('**', '')}</p>" for t in _intro(report)]
    for name, data in plots.items():
        b64 = base64.b64encode(data).decode("ascii")
        body.append(f'<p><img alt="{e(name)}" src="data:image/png;base64,{b64}"></p>')
    for title, header, rows in sections(report):
        body.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Probe {e(report.model)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(report: ProbeReport, out_dir: str | Path, fmt: str = "md") -> Path:
    """Write report.md or report.html into out_dir, drawing the plots first if they are missing."""
    from .errors import ConfigError
    from .plots import write_plots

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    out = Path(out_dir)
    names = _plot_names(out)
    if "rank_heatmap.png" not in names:
        write_plots(report, out)
        names = _plot_names(out)
    if fmt == "md":
        return atomic_write_text(out / "report.md", render_markdown(report, names))
    return atomic_write_text(out / "report.html", render_html(report, {n: (out / n).read_bytes() for n in names}))
