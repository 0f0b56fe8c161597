"""Predictors of a placement's need: one registry (name -> function of a probe report), typed results.

Each predictor reads one per-module statistic from a probe of the base model and gives a `Need`: per
module, the statistic as per-direction values (rank-dependent statistics) or one value (module-level
ones). The predicted need of a plan (modules and ranks) is the share of the statistic, over every probed
module, that the plan's modules cover, at the plan's ranks where the statistic is rank-dependent:

    share(plan) = sum over entries (module j, rank r) of sum_{i <= r} v_{j,i}  /  total

- gradient: v = sigma_i^2 of the mean gradient G, total = sum_j ||G_j||_F^2 (the study's predicted share);
- example_energy: v = the per-example gradient energy sum_i ||G_i||_F^2 (module-level; --example-energy);
- update: v = sigma_i^2 of the update probe's dW = W_K - W_0, total = sum_j ||dW_j||_F^2 (`update_energy`, so a
  probe read without its spectra.npz or kept as top-k gives the same shares; probes made before that field: the
  sum over the kept spectra);
- activation: as EVA, each module's explained variance ratios lambda_i / trace(C) of its input covariance,
  total = the number of modules measured (each module weighs 1; --activations);
- weight_alpha: the power-law alpha of W^T W's eigenvalues (module-level; larger alpha = less heavy-tailed
  = more need, as AlphaLoRA; a module whose spectrum could not be fitted counts 0; --weight-alpha);
- params: the null predictor, each module's out x in (module-level): the share of parameters adapted.

`auto_gains` turns a predictor into what `auto` water-fills on: the per-direction values of a
rank-dependent statistic (gradient: `ProbeReport.gains` as the request asks), and for a module-level
statistic s_j the mean gradient's profile scaled by it, s_j * sigma_{j,i}^2 / sum_i sigma_{j,i}^2 (the
statistic says how much a module needs, the gradient spectrum which directions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..fields import field_defaults
from ..probes.settings import ProbeSettings
from .request import PREDICTORS as NAMES


@dataclass(frozen=True)
class Need:
    """One statistic's need per module: what a placement covers of it."""

    predictor: str  # registry name
    values: dict[str, np.ndarray]  # module -> per-direction values (descending), or one value (module-level)
    total: float  # the statistic summed over every probed module: the share's denominator
    rank_dependent: bool  # whether a module's coverage grows with the rank (else all or nothing)

    def covered(self, name: str, rank: int) -> float:
        """What a rank-`rank` adapter on module `name` covers (0 for a module without the statistic)."""
        v = self.values.get(name)
        if v is None:
            return 0.0
        return float(v[:rank].sum()) if self.rank_dependent else float(v.sum())

    def share(self, entries) -> float | None:
        """The share of the statistic covered by (name, rank) pairs or plan entries; None when total is 0."""
        pairs = [(e.name, e.rank) if hasattr(e, "rank") else e for e in entries]
        got = sum(self.covered(n, r) for n, r in pairs)
        return got / self.total if self.total > 0 else None


@dataclass(frozen=True)
class Predictor:
    """A registry entry."""

    name: str
    help: str  # one line: what the statistic is
    rank_dependent: bool
    need: Callable  # (ProbeReport) -> Need


# probe settings that measure what a predictor reads (the quick probe of `train --placement auto` adds them)
PROBE_SETTINGS = {"example_energy": {"example_energy": True}, "activation": {"activations": True},
                  "weight_alpha": {"weight_alpha": True},
                  "update": {"update_steps": field_defaults(ProbeSettings)["update_steps"]}}


def _rows(report):
    return report.top_level()


def _missing(report, field: str, flag: str, name: str) -> None:
    if any(getattr(m, field) is None for m in _rows(report)):
        key, value = next(iter(PROBE_SETTINGS[name].items()))
        raise ConfigError(f"Predictor {name} needs the probe's {field.replace('_', ' ')}, which this probe did not "
                          f"measure: probe again with {flag} (in a study: [probe] {key} = {str(value).lower()}).")


def _gradient(report) -> Need:
    rows = _rows(report)
    vals = {m.name: np.asarray(m.grad_sv, dtype=np.float64) ** 2 for m in rows}
    total = sum(float(m.grad_norm) ** 2 if m.grad_norm > 0 else float(vals[m.name].sum()) for m in rows)
    return Need("gradient", vals, total, True)


def _update(report) -> Need:
    _missing(report, "update_sv", "--update-steps K (not --no-update)", "update")
    rows = _rows(report)
    vals = {m.name: np.asarray(m.update_sv, dtype=np.float64) ** 2 for m in rows}
    if all(m.update_energy is not None for m in rows):  # ||dW||_F^2 recorded: shares need no spectrum beyond rank
        return Need("update", vals, float(sum(m.update_energy for m in rows)), True)
    return Need("update", vals, float(sum(v.sum() for v in vals.values())), True)


def _activation(report) -> Need:
    _missing(report, "act_var", "--activations", "activation")
    vals = {m.name: (np.asarray(m.act_eig, dtype=np.float64) / m.act_var if m.act_var > 0 else np.zeros(1))
            for m in _rows(report)}
    return Need("activation", vals, float(sum(1 for m in _rows(report) if m.act_var > 0)), True)


def _module_level(name: str, field: str, flag: str | None = None) -> Callable:
    def need(report) -> Need:
        if flag:
            _missing(report, field, flag, name)
        vals = {}
        for m in _rows(report):
            x = getattr(m, field)
            x = 0.0 if x is None or not math.isfinite(float(x)) else float(x)
            vals[m.name] = np.array([x])
        return Need(name, vals, float(sum(v.sum() for v in vals.values())), False)
    return need


REGISTRY: dict[str, Predictor] = {p.name: p for p in (
    Predictor("gradient", "mean-gradient energy captured at the plan's ranks (sigma_i^2 of G)", True, _gradient),
    Predictor("example_energy", "per-example gradient energy of the adapted modules", False,
              _module_level("example_energy", "example_energy", "--example-energy")),
    Predictor("update", "update-dW energy captured at the plan's ranks (sigma_i^2 of W_K - W_0)", True, _update),
    Predictor("activation", "input-activation variance explained at the plan's ranks (EVA's ratios, each module "
              "weighs 1)", True, _activation),
    Predictor("weight_alpha", "power-law alpha of W^T W's spectrum of the adapted modules (WeightWatcher)", False,
              _module_level("weight_alpha", "weight_alpha", "--weight-alpha")),
    Predictor("params", "null predictor: share of the weights' parameters adapted", False,
              _module_level("params", "params")),
)}
assert tuple(REGISTRY) == NAMES  # request.PREDICTORS lists the same names (kept there free of numpy)


def get(name: str) -> Predictor:
    """The registry entry of `name`; ConfigError with the nearest names when unknown."""
    if name not in REGISTRY:
        raise ConfigError(f"Unknown predictor '{name}'.{did_you_mean(name, REGISTRY)} Known: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def need(report, name: str) -> Need:
    """The Need of predictor `name` from a ProbeReport."""
    return get(name).need(report)


def available(report) -> list[str]:
    """The predictors this probe report has the statistics for, in registry order."""
    out = []
    for name in REGISTRY:
        try:
            need(report, name)
        except ConfigError:
            continue
        out.append(name)
    return out


def shares(report, entries) -> dict[str, float | None]:
    """{predictor: share of its statistic covered by `entries`} for every predictor the report supports."""
    return {name: need(report, name).share(entries) for name in available(report)}


def auto_gains(report, name: str, gains: str | None = None, normalize: str = "none") -> dict[str, np.ndarray]:
    """Per module, the per-direction gains `auto` water-fills on under predictor `name` (module docstring).
    gradient: `report.gains(gains or the report's default, normalize)`, as before predictors existed."""
    p = get(name)
    if name == "gradient":
        return report.gains(gains or report.default_gain_source(), normalize)
    if gains is not None or normalize != "none":
        raise ConfigError(f"`gains` and `normalize` choose how auto reads the mean gradient (predictor gradient); "
                          f"predictor {name} allocates by its own statistic: leave them out.")
    n = p.need(report)
    if p.rank_dependent:
        return dict(n.values)
    out = {}
    for m in _rows(report):
        sig2 = np.asarray(m.grad_sv, dtype=np.float64) ** 2  # (k,)
        total = float(sig2.sum())
        s = float(n.values[m.name][0])
        out[m.name] = s * sig2 / total if total > 0 and s > 0 else np.zeros_like(sig2)
    return out


def component_need(n: Need, modules: list[str], level: float = 0.9) -> float | None:
    """The statistic's reading of a component (a set of modules) to compare with its measured r90:
    rank-dependent: the smallest uniform rank r at which the component's modules cover `level` of the
    component's statistic; module-level: the mean statistic per module. None without the statistic."""
    vals = [n.values[m] for m in modules if m in n.values]
    if not vals:
        return None
    if not n.rank_dependent:
        return float(np.mean([v.sum() for v in vals]))
    width = max(len(v) for v in vals)
    padded = np.zeros((len(vals), width))  # (modules, directions)
    for i, v in enumerate(vals):
        padded[i, : len(v)] = v
    cum = padded.sum(axis=0).cumsum()  # (width,) covered at uniform rank 1..width
    if cum[-1] <= 0:
        return None
    return float(np.searchsorted(cum, level * cum[-1] * (1 - 1e-12)) + 1)


__all__ = ["Need", "Predictor", "REGISTRY", "auto_gains", "available", "component_need", "get", "need", "shares"]
