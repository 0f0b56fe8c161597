"""Does a probe statistic order the components of a model like their measured intrinsic rank r90?

r90 (issue 13 item 2, `intrinsic truncate`) is measured on outcomes: the smallest rank r at which replacing a
component's full fine-tuning update dW by its best rank-r approximation keeps 90% of the gain. Each predictor
of `placement.need` gives its own reading of a component (`need.component_need`): for a rank-dependent
statistic the smallest uniform rank at which the component's modules cover 90% of the component's statistic
(its "r90" by the statistic), for a module-level one the mean statistic per module. `r90_checks` gives, per
predictor, the Spearman rho of that reading with the measured r90 over the components.

Components are named as a study's variants: a fixed strategy with an optional layer selection,
"attention", "ffn", "q", "q,v", "all[lower]", "ffn[0-9]" (strategies.select_modules, parse_layers).
r90 values are one number per component, or one per seed (equal lengths): then rho is taken on the means
and its CI by resampling the seeds (as the study's statistic checks). The values may be the literal r90 or
r90_own (90% of the component's own contribution, which does not saturate when the other components carry
the gain); `target` names which, and the study's section passes r90_own when it is defined (`r90_section`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ..errors import ConfigError
from .predictors import _row_spearman
from .stats import Correlation, spearman

N_BOOT = 2000  # seed resamples of the CI


@dataclass(frozen=True)
class R90Check:
    """One predictor's reading of the components against their measured r90."""

    statistic: str  # predictor name (placement.need.REGISTRY)
    components: tuple[str, ...]  # the components compared (those the statistic reads)
    readings: tuple[float, ...]  # the statistic's reading of each component (need.component_need)
    r90: tuple[float, ...]  # measured r90 of each component (mean over seeds)
    rho: Correlation  # Spearman(reading, r90); exact p for n <= 8
    ci_low: float | None  # percentile CI of rho over seed resamples; None with one value per component
    ci_high: float | None
    target: str = "r90"  # what the values are: "r90" or "r90_own"


def component_modules(report, component: str) -> list[str]:
    """Names of the probed modules of a component "STRATEGY" or "STRATEGY[LAYERS]"."""
    from ..placement.strategies import parse_layers, select_modules

    m = re.fullmatch(r"\s*([^\[\]]+?)\s*(?:\[([^\[\]]+)\])?\s*", component)
    if not m:
        raise ConfigError(f"Component '{component}' is not STRATEGY or STRATEGY[LAYERS] (e.g. ffn, q,v, all[lower]).")
    refs = report.refs()
    layers = parse_layers(m.group(2), max(r.layer for r in refs) + 1) if m.group(2) else None
    return [ref.name for ref, _ in select_modules(refs, m.group(1), layers)]


def _values(r90: Mapping[str, float | Sequence[float]]) -> dict[str, np.ndarray]:
    out = {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in r90.items()}
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise ConfigError("r90 per seed must have one value per seed for every component, got lengths "
                          f"{sorted(lengths)}.")
    return out


def r90_checks(r90: Mapping[str, float | Sequence[float]], report, predictors: Sequence[str] | None = None, *,
               n_boot: int = N_BOOT, seed: int = 0, target: str = "r90") -> list[R90Check]:
    """Per predictor (default: every one the probe report supports), Spearman rho of its reading of the
    components with their measured r90 (or r90_own: `target` labels the checks)."""
    from ..placement.need import available, component_need, need

    vals = _values(r90)
    modules = {c: component_modules(report, c) for c in vals}
    out = []
    for name in predictors or available(report):
        n = need(report, name)
        read = {c: component_need(n, mods) for c, mods in modules.items()}
        comps = [c for c in vals if read[c] is not None]
        x = [read[c] for c in comps]
        Y = np.array([vals[c] for c in comps]).reshape(len(comps), -1)  # (components, seeds)
        rho = spearman(x, Y.mean(axis=1))
        lo = hi = None
        if rho.rho is not None and Y.shape[1] >= 2:
            idx = np.random.default_rng(seed).integers(0, Y.shape[1], size=(n_boot, Y.shape[1]))  # drawn seeds
            y = Y[:, idx].mean(axis=2).T  # (n_boot, components) mean r90 over the drawn seeds
            y = y[np.ptp(y, axis=1) > 0]
            if len(y):
                rhos = _row_spearman(np.broadcast_to(np.asarray(x), y.shape), y)
                lo, hi = (float(q) for q in np.quantile(rhos, [0.025, 0.975]))
        out.append(R90Check(name, tuple(comps), tuple(float(v) for v in x), tuple(float(v) for v in Y.mean(axis=1)),
                            rho, lo, hi, target))
    return out
