"""PNG plots (matplotlib, Agg backend: no display needed): the shared figure helpers of every
report, and the plots of a probe report.

Shared: `pyplot()` (matplotlib set to Agg), `png_bytes(fig)` / `save_png(fig, path)` (render,
close, write atomically), `colors_by_name(names)` (one colour per name) and `ci_halfwidth(stat)`
(an error bar from a mean and its CI). The study's plots (`intrinsic.study.report`) use them.

Probe plots, written by `write_plots(report, out_dir)`:
- `rank_heatmap.png`: intrinsic rank per layer (rows) and role (columns), numbers in the cells.
- `rank_vs_layer.png`: median intrinsic rank per layer, attention vs FFN; beside it the share
  of gradient energy each kind carries per layer.
- `spectra.png`: spectrum decay curves sigma_i / sigma_1 of the mean gradient, one panel per
  role, one line per layer; the noise floor (the median over layers of the shuffled-label spectrum,
  on the same scale) is drawn in black, dashed.
- `update_growth.png` (only when the update probe ran with checkpoints): median energy-90 and
  stable rank of W_step - W_0 per kind against the step (they may rise or fall: `GROWTH_TITLE`).

Only the plots that show the intrinsic rank name its estimator in their title.

Every figure is rendered to bytes and written atomically, so a crash never leaves half a PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..probes.schema import ProbeReport, leaf_rows, rank_grid
from ..results import atomic_write_bytes

PLOT_FILES = ("rank_heatmap.png", "rank_vs_layer.png", "spectra.png", "update_growth.png")
_KIND_COLORS = {"attention": "tab:blue", "ffn": "tab:orange"}
GROWTH_TITLE = "Rank of the weight update over fine-tuning steps"


# ----------------------------------------------------------------------------- shared helpers


def pyplot():
    """matplotlib.pyplot on the Agg backend (renders to files; no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """Render `fig` as PNG (110 dpi, tight bounding box) and close it."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_png(fig, path: str | Path) -> Path:
    """Render `fig` as PNG, close it and write it to `path` atomically."""
    return atomic_write_bytes(path, png_bytes(fig))


def colors_by_name(names) -> dict[str, Any]:
    """One colour per distinct name, in first-seen order (tab10, or tab20 beyond ten names)."""
    plt = pyplot()
    distinct = list(dict.fromkeys(names))
    cmap = plt.get_cmap("tab10" if len(distinct) <= 10 else "tab20")
    return {v: cmap(i % cmap.N) for i, v in enumerate(distinct)}


def ci_halfwidth(stat) -> float:
    """The upper half of a confidence interval (`stat.ci_high - stat.mean`), 0 when there is none."""
    if stat.ci_high is not None:
        return stat.ci_high - stat.mean
    return 0.0


# ----------------------------------------------------------------------------- probe plots


def _title(report: ProbeReport, what: str, estimator: bool = True) -> str:
    """"WHAT: MODEL on TASK", with the rank estimator when the plot shows its ranks."""
    return f"{what}: {report.model} on {report.task}" + (f" ({report.estimator})" if estimator else "")


def heatmap_png(report: ProbeReport) -> bytes:
    plt = pyplot()
    layers, roles, grid = rank_grid(report)  # grid (L, R)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * max(len(roles), 2), 1.0 + 0.45 * max(len(layers), 2)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(roles)), roles)
    ax.set_yticks(range(len(layers)), [str(i) for i in layers])
    ax.set_xlabel("role")
    ax.set_ylabel("layer")
    finite = grid[np.isfinite(grid)]
    mid = (finite.max() + finite.min()) / 2 if finite.size else 0
    if grid.size <= 400:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="black" if grid[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, label="intrinsic rank")
    ax.set_title(_title(report, "Intrinsic rank"), fontsize=9)
    return png_bytes(fig)


def lines_png(report: ProbeReport) -> bytes:
    plt = pyplot()
    by_layer = report.summary.get("by_layer", {})
    layers = sorted(int(k) for k in by_layer)
    leaves = leaf_rows(report.modules)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for kind, color in _KIND_COLORS.items():
        rows = [m for m in leaves if m.kind == kind]
        if not rows:
            continue
        med = [np.median([m.intrinsic_rank for m in rows if m.layer == L] or [np.nan]) for L in layers]
        lo = [np.min([m.intrinsic_rank for m in rows if m.layer == L] or [np.nan]) for L in layers]
        hi = [np.max([m.intrinsic_rank for m in rows if m.layer == L] or [np.nan]) for L in layers]
        a1.plot(layers, med, "o-", color=color, label=f"{kind} (median)")
        a1.fill_between(layers, lo, hi, color=color, alpha=0.15)
        share = [sum(m.energy_share for m in rows if m.layer == L) for L in layers]
        a2.plot(layers, share, "o-", color=color, label=kind)
    a1.set_xlabel("layer")
    a1.set_ylabel("intrinsic rank (band: min-max over roles)")
    a1.set_title(_title(report, "Rank vs layer"), fontsize=9)
    a1.legend(fontsize=8)
    a2.set_xlabel("layer")
    a2.set_ylabel("share of gradient energy")
    a2.set_title("Where the gradient energy is", fontsize=9)
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.set_xticks(layers)
        ax.grid(alpha=0.3)
    return png_bytes(fig)


def spectra_png(report: ProbeReport, top: int = 128) -> bytes:
    plt = pyplot()
    cmap = plt.get_cmap("viridis")
    layers, roles, _ = rank_grid(report)
    leaves = leaf_rows(report.modules)
    cols = min(len(roles), 4) or 1
    nrows = (len(roles) + cols - 1) // cols or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.8 * nrows), squeeze=False, layout="constrained")
    for idx, role in enumerate(roles):
        ax = axes[idx // cols][idx % cols]
        floors = []  # each layer's shuffled-label spectrum, on its own layer's scale
        for m in (r for r in leaves if r.role == role):
            s = np.asarray(m.grad_sv[:top])
            if s.size == 0 or s[0] <= 0:
                continue
            color = cmap(layers.index(m.layer) / max(len(layers) - 1, 1))
            ax.semilogy(np.arange(1, s.size + 1), s / s[0], color=color, lw=1.1)
            n = np.asarray(m.noise_sv[:top])
            if n.size:
                floors.append(n / s[0])
        if floors:
            k = min(f.size for f in floors)
            floor = np.median(np.stack([f[:k] for f in floors]), axis=0)  # (k,)
            ax.semilogy(np.arange(1, k + 1), floor, color="black", lw=1.4, ls="--", label="noise floor")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(role, fontsize=9)
        ax.set_xlabel("index i", fontsize=8)
        ax.grid(alpha=0.3)
        if idx % cols == 0:
            ax.set_ylabel("sigma_i / sigma_1", fontsize=8)
    for idx in range(len(roles), nrows * cols):
        axes[idx // cols][idx % cols].axis("off")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(min(layers, default=0), max(layers, default=1)))
    fig.colorbar(sm, ax=axes, label="layer", shrink=0.8, aspect=30)
    fig.suptitle(_title(report, "Mean-gradient spectra (dashed black: noise floor, shuffled labels)",
                        estimator=False), fontsize=9)
    return png_bytes(fig)


def growth_png(report: ProbeReport) -> bytes | None:
    leaves = [m for m in leaf_rows(report.modules) if m.update_checkpoints]
    if not leaves:
        return None
    plt = pyplot()
    steps = sorted({int(s) for m in leaves for s in m.update_checkpoints})
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for kind, color in _KIND_COLORS.items():
        rows = [m for m in leaves if m.kind == kind]
        if not rows:
            continue
        for key, ls in (("energy_90", "-"), ("stable_rank", ":")):
            med = [np.median([m.update_checkpoints.get(str(s), {}).get(key, np.nan) for m in rows]) for s in steps]
            ax.plot(steps, med, "o" + ls, color=color, label=f"{kind} {key}")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("rank of W_step - W_0 (median)")
    ax.set_title(_title(report, GROWTH_TITLE, estimator=False), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def write_plots(report: ProbeReport, out_dir: str | Path) -> list[Path]:
    """Render every plot that applies into out_dir; returns the paths written."""
    out = Path(out_dir)
    written = []
    for name, fn in zip(PLOT_FILES, (heatmap_png, lines_png, spectra_png, growth_png)):
        data = fn(report)
        if data is not None:
            written.append(atomic_write_bytes(out / name, data))
        else:
            (out / name).unlink(missing_ok=True)  # a stale plot of an earlier probe in the same directory
    return written
