"""Does the probe predict anything a trivial count would not? The check of the probe's predicted
energy share against trivial predictors and against the noise ceiling of the outcome.

Within a scope (all placements, or one comparison group: a rank or a parameter budget), over the
configs that have every predictor (full fine-tuning has no module count and drops out):
- probe: Spearman rho of the predicted energy share with the mean gain;
- trivial: the same rho for the number of adapted modules and for the trainable parameters
  (a constant predictor, e.g. parameters within a budget, has rho None and counts as 0);
- noise ceiling: the Spearman rho between the mean gains of two halves of the seeds, averaged over
  every split of the shared seeds into halves (at most `MAX_SPLITS`): how well the outcome predicts
  itself. Needs >= 2 shared seeds.

Verdict: "supported" only if the probe's rho beats both trivial rhos, reaches the ceiling (to the two
decimals reported) and has
p < alpha (exact permutation p for n <= 8); "contradicted" if the rho is negative with p < alpha;
otherwise "too weak to say", with the reasons.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as sps

from .stats import ALPHA, Correlation, spearman

if TYPE_CHECKING:
    from .analysis import ConfigSummary

MAX_SPLITS = 200  # seed splits averaged for the noise ceiling
SUPPORTED, CONTRADICTED, WEAK = "supported", "contradicted", "too weak to say"


@dataclass(frozen=True)
class PredictorCheck:
    """The probe against trivial predictors and the noise ceiling, in one scope."""

    scope: str  # "all placements" or a group ("budget=all@8")
    labels: tuple[str, ...]  # the configs compared (every predictor defined)
    probe: Correlation  # Spearman(predicted energy share, mean gain)
    modules: Correlation  # Spearman(number of adapted modules, mean gain)
    params: Correlation  # Spearman(trainable parameters, mean gain)
    ceiling: float | None  # mean split-half Spearman of the gains (None: < 2 shared seeds or constant)
    splits: int  # seed splits averaged into the ceiling
    verdict: str  # supported | contradicted | too weak to say
    reasons: tuple[str, ...]  # why it is not supported (empty when it is)


def noise_ceiling(gains: Sequence[Mapping[int, float]]) -> tuple[float | None, int]:
    """(mean Spearman rho between the per-config mean gains of two halves of the shared seeds, splits used).
    One half has floor(k/2) of the k shared seeds, the other the rest; every split up to MAX_SPLITS."""
    shared = sorted(set.intersection(*(set(g) for g in gains))) if gains else []
    k = len(shared)
    if k < 2 or len(gains) < 3:
        return None, 0
    rhos = []
    halves = itertools.combinations(shared, k // 2)
    if k % 2 == 0:  # each split once: the half holding the first seed (its mirror is the same split)
        halves = (h for h in halves if h[0] == shared[0])
    for half in itertools.islice(halves, MAX_SPLITS):
        rest = [s for s in shared if s not in half]
        a = [np.mean([g[s] for s in half]) for g in gains]
        b = [np.mean([g[s] for s in rest]) for g in gains]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            rhos.append(float(sps.spearmanr(a, b).statistic))
    return (float(np.mean(rhos)) if rhos else None), len(rhos)


def _rho(c: Correlation) -> float:
    return c.rho if c.rho is not None else 0.0


def check(scope: str, configs: Sequence[ConfigSummary], alpha: float = ALPHA) -> PredictorCheck:
    """The check over `configs` (those lacking a predictor or a gain are left out)."""
    use = [c for c in configs if c.predicted_share.mean is not None and c.gain.mean is not None
           and c.modules is not None and c.modules.mean is not None and c.trainable_params.mean is not None]
    gain = [c.gain.mean for c in use]
    probe = spearman([c.predicted_share.mean for c in use], gain)
    modules = spearman([c.modules.mean for c in use], gain)
    params = spearman([c.trainable_params.mean for c in use], gain)
    ceiling, splits = noise_ceiling([c.gains_by_seed for c in use])
    reasons = []
    if probe.rho is None:
        reasons.append(f"no correlation to check ({len(use)} configs with every predictor; need >= 3, varied)")
    else:
        for name, triv in (("adapted modules", modules), ("trainable parameters", params)):
            if not probe.rho > _rho(triv):
                reasons.append(f"the number of {name} does as well (rho {_rho(triv):.2f} >= {probe.rho:.2f})")
        if ceiling is None:
            reasons.append("no noise ceiling (needs >= 2 seeds shared by every config)")
        elif round(probe.rho, 2) < round(ceiling, 2):  # "reaches": equal at the two decimals reported
            reasons.append(f"rho {probe.rho:.2f} is below the noise ceiling {ceiling:.2f}")
        if probe.p is None or probe.p >= alpha:
            reasons.append(f"p = {probe.p:.2g} >= {alpha}" if probe.p is not None else "no p-value")
    if probe.rho is not None and probe.rho < 0 and probe.p is not None and probe.p < alpha:
        verdict = CONTRADICTED
    else:
        verdict = WEAK if reasons else SUPPORTED
    return PredictorCheck(scope, tuple(c.label for c in use), probe, modules, params, ceiling, splits, verdict,
                          tuple(reasons))


def predictor_checks(configs: Sequence[ConfigSummary], groups: Mapping[str, Sequence[str]]) -> list[PredictorCheck]:
    """The check over all placements, then within every group with >= 3 configs that have every predictor."""
    by_label = {c.label: c for c in configs}
    out = [check("all placements", configs)]
    for g, labels in groups.items():
        got = check(g, [by_label[l] for l in labels])
        if len(got.labels) >= 3:
            out.append(got)
    return [c for c in out if c.labels]
