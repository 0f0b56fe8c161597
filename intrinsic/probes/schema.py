"""The probe's result schema: one typed row per module, summaries, and save/load.

Schema (version 1), written by `ProbeReport.save(out_dir)`:

- `probe.json`: every field of `ProbeReport` below. Spectra there are cut to their top
  `JSON_TOP_SV` values so the file stays small and readable.
- `spectra.npz`: every spectrum in full (float64), keyed `"<module name>|<spectrum>"` with
  spectrum one of grad, noise, even, odd, update, update@<step>, act (input covariance eigenvalues). `ProbeReport.load` puts the
  full spectra back, so `load(save(r)) == r`; without the npz file the truncated ones load.

Rows whose `block_of` is set are views, not modules: the role blocks (q, k, v or gate, up)
of a fused weight (GPT-2 `c_attn`, Phi-3 `qkv_proj`), each probed as its own row slice of
the fused matrix. PEFT can only adapt the fused module, so placements use rows with
`block_of is None`; the per-role summaries and plots use the "leaf" rows (blocks in place
of their fused module), so a role column means the same thing for every architecture.
Gradient energy is additive over row blocks, so energy shares agree either way.
"""

from __future__ import annotations

import io
import statistics
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..results import atomic_write_bytes, from_dict, read_json, to_dict, write_json

SCHEMA_VERSION = 1
JSON_TOP_SV = 64  # singular values per spectrum kept in probe.json (the npz keeps all)
PROBE_FILE = "probe.json"
SPECTRA_FILE = "spectra.npz"
_SV_FIELDS = ("grad_sv", "noise_sv", "even_sv", "odd_sv")  # spectra of every row
GAIN_SOURCES = ("raw", "signal")  # what `ProbeReport.gains` measures per direction (see there)
GAIN_NORMALIZE = ("none", "module")  # how it scales each module's gains


@dataclass(frozen=True)
class ModuleProbe:
    """Everything the probe measured for one module (or one role block of a fused module)."""

    name: str  # module name as in model.named_modules(); a fused block is "<fused name>:<role>"
    layer: int  # transformer block index
    kind: str  # "attention" | "ffn"
    role: str  # q k v o qkv | up gate down gate_up
    shape: tuple[int, int]  # (out, in) of the probed matrix (rows of the block for a fused block)
    params: int  # out * in
    grad_sv: tuple[float, ...]  # singular values of the mean gradient G, descending (at most max_sv)
    grad_ranks: dict[str, float | None]  # rank.estimate of the gradient Spectra: every estimator in rank.ESTIMATORS;
    # None (top-k spectra only): an estimator that needs the whole spectrum, or an energy rank beyond the top k
    noise_sv: tuple[float, ...]  # singular values of the shuffled-label mean gradient
    update_sv: tuple[float, ...] | None  # singular values of W_K - W_0 (None: update probe skipped)
    update_ranks: dict[str, float] | None  # rank.estimate(update_sv): the descriptive estimators
    update_checkpoints: dict[str, dict[str, float]]  # str(step) -> rank.estimate of W_step - W_0
    intrinsic_rank: int  # the designated estimator's value (settings.rank_estimator)
    energy_share: float  # ||G||_F^2 of this row / sum over all modules (rows with block_of None)
    block_of: str | None = None  # fused module this block belongs to; None for a module
    rank_cap: int = 0  # min(tokens, out, in): the mean gradient's rank cannot exceed it
    grad_norm: float = 0.0  # ||G||_F
    even_sv: tuple[float, ...] = ()  # spectrum of the mean gradient over even batches (split half A)
    odd_sv: tuple[float, ...] = ()  # spectrum of the mean gradient over odd batches (split half B)
    update_checkpoint_sv: dict[str, tuple[float, ...]] = field(default_factory=dict)  # str(step) -> spectrum
    noise_norm: float | None = None  # ||G_shuffled||_F (None: not recorded by probes before the head fit)
    label_norm: float | None = None  # ||G - G_shuffled||_F, the label-dependent part of G (None: not recorded)
    sign_flip_p: tuple[float, ...] | None = None  # sign-flip step-down p-values p_1, p_2, .. (None: no folds kept)
    sign_flip_null: tuple[float, ...] | None = None  # per step k: mean squared null statistic, the noise energy
    #   direction k must exceed (mean over the sign-flipped resamples of sigma_k^2); None: no folds kept
    example_energy: float | None = None  # per-example gradient energy: mean over batches of sum_i ||G_i||_F^2,
    # G_i example i's contribution to the batch gradient (None: not measured, settings.example_energy off)
    example_energy_share: float | None = None  # example_energy / its sum over the modules (rows with block_of None)
    act_var: float | None = None  # total variance of the module's inputs, trace of their covariance over the
    # calibration tokens (None: not measured, settings.activations off); a fused block has its module's
    act_eig: tuple[float, ...] | None = None  # eigenvalues of that covariance, descending (top max_sv): the share
    # explained by the top r input directions is sum(act_eig[:r]) / act_var (as EVA)
    weight_alpha: float | None = None  # power-law exponent alpha of the eigenvalues of W^T W (Hill MLE over the
    # tail, xmin by the smallest KS distance; nan: too few eigenvalues); None: settings.weight_alpha off
    weight_alpha_tail: int | None = None  # eigenvalues in the fitted tail
    update_energy: float | None = None  # ||W_K - W_0||_F^2 of the whole update (None: no update probe, or a probe
    # made before this field: the update predictor then sums the kept spectrum)

    @property
    def short(self) -> str:
        """Compact label such as 'L3.q'."""
        return f"L{self.layer}.{self.role}"


@dataclass(frozen=True)
class ProbeReport:
    """A whole probe: provenance, per-module rows, summaries, timings. Versioned (`schema_version`)."""

    schema_version: int  # SCHEMA_VERSION of the writer; newer files refuse to load
    model: str  # model name as given (alias, path or hub id)
    task: str  # task name as given
    settings: dict[str, Any]  # ProbeSettings as JSON data
    seed: int  # the seed every random choice derives from
    tokens: int  # non-pad tokens in the calibration batches (real labels)
    token_cap: int  # min(tokens, largest min(out, in) probed): no gradient rank can exceed it
    modules: tuple[ModuleProbe, ...]  # one row per module, plus role-block rows of fused modules
    summary: dict[str, Any]  # see summarize()
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    env: dict[str, Any] = field(default_factory=dict)  # intrinsic.env.environment(): versions, device, for provenance
    examples_used: int = 0  # distinct training texts in the calibration batches (0: a probe saved before it was kept)
    notes: tuple[str, ...] = ()  # what the probe changed or noticed, e.g. batches capped at the data (one line each)
    data: dict[str, Any] = field(default_factory=dict)  # the task as probed: tasks.TaskData.summary() (split, labels)

    # ------------------------------------------------------------------ views
    @property
    def estimator(self) -> str:
        return str(self.settings.get("rank_estimator", ""))

    def leaves(self) -> list[ModuleProbe]:
        """Rows for per-role views: modules, with fused modules replaced by their blocks."""
        return leaf_rows(self.modules)

    def top_level(self) -> list[ModuleProbe]:
        """Rows that are real modules (what a LoRA placement can target)."""
        return [m for m in self.modules if m.block_of is None]

    def refs(self) -> list:
        """ModuleRefs of the probed modules (what a placement can target), without loading the model."""
        from ..arch import ModuleRef

        return [ModuleRef(m.name, m.layer, m.kind, m.role, tuple(m.shape), m.params) for m in self.top_level()]

    def default_gain_source(self) -> str:
        """"signal" when every module kept the sign-flip test's noise levels (a probe with folds), else "raw"."""
        rows = self.top_level()
        return "signal" if rows and all(m.sign_flip_null is not None for m in rows) else "raw"

    def gains(self, source: str = "raw", normalize: str = "none") -> dict[str, np.ndarray]:
        """Per module, the gain of each successive rank-1 direction: what `auto` water-fills on.

        source "raw": sigma_i^2 of the mean gradient G, the first-order loss decrease of a rank-r
        update along G's top directions (noise included). source "signal": only the directions the
        sign-flip test keeps (the first `sign_flip` of them), each with its energy above the noise,
        max(sigma_i^2 - null_i, 0) where null_i is the mean squared null statistic of step i; every
        later direction gains 0, so a module with no tested signal gets no adapter. Needs a probe that
        kept fold means (ProbeSettings.folds).
        normalize "module": divide by the module's ||G||_F^2, so each gain is a share of the module's
        own gradient energy: every module weighs the same, as under Adam's per-parameter scaling,
        which equalises the step size of modules with small and large gradients.
        """
        if source not in GAIN_SOURCES:
            raise ConfigError(f"Unknown gain source '{source}': use one of {', '.join(GAIN_SOURCES)}.")
        if normalize not in GAIN_NORMALIZE:
            raise ConfigError(f"Unknown gain normalization '{normalize}': use one of {', '.join(GAIN_NORMALIZE)}.")
        out = {}
        for m in self.top_level():
            sig2 = np.asarray(m.grad_sv, dtype=np.float64) ** 2  # (k,)
            if source == "signal":
                if m.sign_flip_null is None or "sign_flip" not in m.grad_ranks:
                    raise ConfigError("Gains 'signal' need the sign-flip test's fold means, which this probe did not "
                                      f"keep ({m.name}): probe again with --folds 8 (the default), or use gains 'raw'.")
                kept = int(m.grad_ranks["sign_flip"])  # directions the step-down test rejected
                noise = np.asarray(m.sign_flip_null[:kept], dtype=np.float64)  # (kept,)
                sig2 = np.concatenate([np.maximum(sig2[:kept] - noise, 0.0), np.zeros(max(len(sig2) - kept, 0))])
            if normalize == "module":
                total = float(m.grad_norm) ** 2
                sig2 = sig2 / total if total > 0 else np.zeros_like(sig2)
            out[m.name] = sig2
        return out

    def records(self) -> list[dict[str, Any]]:
        """Flat per-row records (for tables or a DataFrame)."""
        out = []
        for m in self.modules:
            rec = {
                "name": m.name, "layer": m.layer, "kind": m.kind, "role": m.role,
                "shape": f"{m.shape[0]}x{m.shape[1]}", "block_of": m.block_of,
                "intrinsic_rank": m.intrinsic_rank, "energy_share": m.energy_share, "rank_cap": m.rank_cap,
            }
            rec.update({f"grad.{k}": v for k, v in m.grad_ranks.items()})
            rec.update({f"update.{k}": v for k, v in (m.update_ranks or {}).items()})
            out.append(rec)
        return out

    # ------------------------------------------------------------------ IO
    def to_json(self, top_sv: int = JSON_TOP_SV) -> dict[str, Any]:
        """The report as JSON data (what probe.json holds): spectra cut to their top `top_sv` values."""
        data = to_dict(self)
        for row in data["modules"]:
            for key in _SV_FIELDS + ("update_sv",):
                if row.get(key) is not None:
                    row[key] = row[key][:top_sv]
            row["update_checkpoint_sv"] = {s: v[:top_sv] for s, v in row["update_checkpoint_sv"].items()}
            if row.get("act_eig") is not None:
                row["act_eig"] = row["act_eig"][:top_sv]
            for key in ("sign_flip_p", "sign_flip_null", "noise_norm", "label_norm", "example_energy",
                        "example_energy_share", "act_var", "act_eig", "weight_alpha",
                        "weight_alpha_tail", "update_energy"):  # off: the row keeps the keys it had before
                if row.get(key) is None:
                    row.pop(key, None)
        data["spectra"] = {"file": SPECTRA_FILE, "json_top_sv": top_sv}
        return data

    def save(self, out_dir: str | Path) -> Path:
        """Write the data only: spectra.npz, then probe.json (last, so its presence means a complete
        probe). For the plots and report.md too (what `intrinsic probe` writes), use `write_report`."""
        out = Path(out_dir)
        buf = io.BytesIO()
        np.savez_compressed(buf, **_spectra_arrays(self.modules))
        atomic_write_bytes(out / SPECTRA_FILE, buf.getvalue())
        return write_json(out / PROBE_FILE, self.to_json())

    def write_report(self, out_dir: str | Path, fmt: str = "md") -> Path:
        """Save the data (`save`), draw the plots and write report.md (fmt "md") or report.html into
        `out_dir`, as `intrinsic probe` does; returns the report's path."""
        from ..report.plots import write_plots
        from ..report.probe import write_report

        self.save(out_dir)
        write_plots(self, out_dir)
        return write_report(self, out_dir, fmt)

    @classmethod
    def load(cls, path: str | Path) -> ProbeReport:
        """Read a saved probe (a directory or its probe.json); full spectra come from spectra.npz if present."""
        path = Path(path)
        file = path / PROBE_FILE if path.is_dir() or not path.suffix else path
        if not file.is_file():
            raise ConfigError(f"No probe found at {path} (expected {file.name}; run `intrinsic probe` first).")
        data = read_json(file)
        version = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(version, int) or "modules" not in data:
            raise ConfigError(f"{file} is not a probe report (no schema_version/modules).")
        if version > SCHEMA_VERSION:
            raise ConfigError(f"{file} has schema version {version}; this intrinsic reads up to {SCHEMA_VERSION}. Upgrade.")
        report = from_dict(cls, data)
        report = replace(report, modules=tuple(_fix_row(m) for m in report.modules))
        npz = file.parent / SPECTRA_FILE
        if npz.is_file():
            try:
                with np.load(npz) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                raise ConfigError(f"{npz} is unreadable ({e}); re-run the probe.") from None
            report = replace(report, modules=tuple(_with_spectra(m, arrays) for m in report.modules))
        return report


# ---------------------------------------------------------------------- helpers


def leaf_rows(modules) -> list[ModuleProbe]:
    fused = {m.block_of for m in modules if m.block_of is not None}
    return [m for m in modules if m.name not in fused]


def _spectra_arrays(modules) -> dict[str, np.ndarray]:
    arrays = {}
    for m in modules:
        for key in _SV_FIELDS:
            arrays[f"{m.name}|{key[:-3]}"] = np.asarray(getattr(m, key), dtype=np.float64)
        if m.update_sv is not None:
            arrays[f"{m.name}|update"] = np.asarray(m.update_sv, dtype=np.float64)
        for step, sv in m.update_checkpoint_sv.items():
            arrays[f"{m.name}|update@{step}"] = np.asarray(sv, dtype=np.float64)
        if m.act_eig is not None:
            arrays[f"{m.name}|act"] = np.asarray(m.act_eig, dtype=np.float64)
    return arrays


def _with_spectra(m: ModuleProbe, arrays: dict[str, np.ndarray]) -> ModuleProbe:
    def get(key, default):
        a = arrays.get(f"{m.name}|{key}")
        return default if a is None else tuple(float(x) for x in a)

    changes = {k: get(k[:-3], getattr(m, k)) for k in _SV_FIELDS}
    if m.update_sv is not None:
        changes["update_sv"] = get("update", m.update_sv)
    changes["update_checkpoint_sv"] = {s: get(f"update@{s}", v) for s, v in m.update_checkpoint_sv.items()}
    if m.act_eig is not None:
        changes["act_eig"] = get("act", m.act_eig)
    return replace(m, **changes)


def _fix_row(m: ModuleProbe) -> ModuleProbe:
    """JSON turns tuples into lists and ints into ints; make rows compare equal to the originals."""
    return replace(
        m,
        shape=tuple(int(x) for x in m.shape),
        grad_ranks={k: None if v is None else float(v) for k, v in m.grad_ranks.items()},
        update_ranks=None if m.update_ranks is None else {k: None if v is None else float(v) for k, v in m.update_ranks.items()},
        update_checkpoints={s: {k: float(v) for k, v in r.items()} for s, r in m.update_checkpoints.items()},
        sign_flip_p=None if m.sign_flip_p is None else tuple(float(p) for p in m.sign_flip_p),
        sign_flip_null=None if m.sign_flip_null is None else tuple(float(p) for p in m.sign_flip_null),
        act_eig=None if m.act_eig is None else tuple(float(x) for x in m.act_eig),
    )


def _role_order(role: str) -> int:
    """Position of a role in `arch.ROLE_ORDER` (unknown roles last)."""
    from ..arch import ROLE_ORDER  # lazy: arch imports torch, and this module is on the CLI's --help path

    return ROLE_ORDER.index(role) if role in ROLE_ORDER else 99


def _median(xs) -> float:
    xs = [float(x) for x in xs]
    return float(statistics.median(xs)) if xs else 0.0


def _group(rows) -> dict[str, Any]:
    upd = [m.update_ranks.get("energy_90", 0.0) for m in rows if m.update_ranks]
    extra = {}
    if any(m.example_energy_share is not None for m in rows):  # measured (settings.example_energy): an added key
        extra["example_energy_share"] = float(sum(m.example_energy_share or 0.0 for m in rows))
    return {
        "modules": len(rows),
        "median_rank": _median(m.intrinsic_rank for m in rows),
        "mean_rank": float(np.mean([m.intrinsic_rank for m in rows])) if rows else 0.0,
        "max_rank": max((m.intrinsic_rank for m in rows), default=0),
        "energy_share": float(sum(m.energy_share for m in rows)),
        "median_update_energy_90": _median(upd) if upd else None,
        "params": int(sum(m.params for m in rows)),
        **extra,
    }


def summarize(modules, top: int = 10) -> dict[str, Any]:
    """Per-kind, per-role and per-layer medians of the intrinsic rank and energy share, and the top modules by energy."""
    leaves = leaf_rows(modules)
    kinds = [k for k in ("attention", "ffn") if any(m.kind == k for m in leaves)]
    roles = sorted({m.role for m in leaves}, key=_role_order)
    layers = sorted({m.layer for m in leaves})
    by_layer = {}
    for layer in layers:
        rows = [m for m in leaves if m.layer == layer]
        entry = _group(rows)
        for k in kinds:
            entry[f"{k}_median_rank"] = _median(m.intrinsic_rank for m in rows if m.kind == k)
        by_layer[str(layer)] = entry
    ranked = sorted((m for m in modules if m.block_of is None), key=lambda m: -m.energy_share)
    return {
        "by_kind": {k: _group([m for m in leaves if m.kind == k]) for k in kinds},
        "by_role": {r: _group([m for m in leaves if m.role == r]) for r in roles},
        "by_layer": by_layer,
        "top_energy": [
            {"name": m.name, "layer": m.layer, "role": m.role, "energy_share": m.energy_share,
             "intrinsic_rank": m.intrinsic_rank}
            for m in ranked[:top]
        ],
    }


def rank_grid(report_or_modules) -> tuple[list[int], list[str], np.ndarray]:
    """(layers, roles, ranks[layer, role]) of the leaf rows' intrinsic ranks; NaN where a layer lacks a role."""
    modules = getattr(report_or_modules, "modules", report_or_modules)
    leaves = leaf_rows(modules)
    layers = sorted({m.layer for m in leaves})
    roles = sorted({m.role for m in leaves}, key=_role_order)
    grid = np.full((len(layers), len(roles)), np.nan)  # (L, R)
    for m in leaves:
        grid[layers.index(m.layer), roles.index(m.role)] = m.intrinsic_rank
    return layers, roles, grid


__all__ = [
    "ModuleProbe", "ProbeReport", "SCHEMA_VERSION", "summarize", "rank_grid", "leaf_rows", "PROBE_FILE", "SPECTRA_FILE",
]
