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

`statistic_checks` does the same for every predictor statistic of `placement.need` (the share of the
statistic a plan covers, per seed from that seed's probe: `CellRow.predicted`), with a bootstrap CI of
rho over seeds (resample the seeds, recompute the mean gains and mean shares, recompute rho), and the
partial Spearman rho with the gain given the null predictor `params` (the share of the weights a placement
adapts; for `params` itself, given `gradient`): does the statistic say anything about the gains that breadth
alone does not? (On smollm2-weight-types, 14 placements at one budget: gradient 0.85, but 0.47 given breadth,
p 0.11; breadth 0.70 given gradient, p 0.008. On smollm2-budgets-lm, 12 placements over three budgets:
gradient 0.74 given breadth, p 0.010.) The partial rho is reported, not part of the verdict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as sps

from .stats import ALPHA, Correlation, partial_spearman, rounded, spearman

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


def _trivial(c: ConfigSummary) -> bool:
    """Whether a config has the trivial predictors (full fine-tuning has no module count)."""
    return (c.gain.mean is not None and c.modules is not None and c.modules.mean is not None
            and c.trainable_params.mean is not None)


def verdict(probe: Correlation, modules: Correlation, params: Correlation, ceiling: float | None, n: int,
            alpha: float = ALPHA) -> tuple[str, tuple[str, ...]]:
    """(verdict, reasons) of a predictor's rho against the trivial predictors' and the noise ceiling."""
    reasons = []
    if probe.rho is None:
        reasons.append(f"no correlation to check ({n} configs with every predictor; need >= 3, varied)")
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
        return CONTRADICTED, tuple(reasons)
    return (WEAK if reasons else SUPPORTED), tuple(reasons)


def check(scope: str, configs: Sequence[ConfigSummary], alpha: float = ALPHA) -> PredictorCheck:
    """The check over `configs` (those lacking a predictor or a gain are left out)."""
    use = [c for c in configs if c.predicted_share.mean is not None and _trivial(c)]
    gain = [c.gain.mean for c in use]
    probe = spearman([c.predicted_share.mean for c in use], gain)
    modules = spearman([c.modules.mean for c in use], gain)
    params = spearman([c.trainable_params.mean for c in use], gain)
    ceiling, splits = noise_ceiling([c.gains_by_seed for c in use])
    v, reasons = verdict(probe, modules, params, ceiling, len(use), alpha)
    return PredictorCheck(scope, tuple(c.label for c in use), probe, modules, params, ceiling, splits, v, reasons)


def predictor_checks(configs: Sequence[ConfigSummary], groups: Mapping[str, Sequence[str]]) -> list[PredictorCheck]:
    """The check over all placements, then within every group with >= 3 configs that have every predictor."""
    by_label = {c.label: c for c in configs}
    out = [check("all placements", configs)]
    for g, labels in groups.items():
        got = check(g, [by_label[l] for l in labels])
        if len(got.labels) >= 3:
            out.append(got)
    return [c for c in out if c.labels]


# ----------------------------------------------------------------------------- every predictor statistic

N_BOOT = 2000  # seed resamples of the bootstrap CI of a statistic's rho


@dataclass(frozen=True)
class StatisticCheck:
    """One predictor statistic (placement.need) against the measured gains, in one scope."""

    scope: str  # "all placements" or a group ("budget=all@8")
    statistic: str  # predictor name (placement.need.REGISTRY)
    labels: tuple[str, ...]  # the configs compared (the statistic and the trivial predictors defined)
    rho: Correlation  # Spearman(mean predicted share over seeds, mean gain); its p exact for n <= 8
    ci_low: float | None  # 2.5% quantile of rho over seed resamples (`seed_bootstrap_rho`); None: < 2 seeds
    ci_high: float | None  # 97.5% quantile
    resamples: int  # seed resamples that gave a rho (constant sides skipped)
    verdict: str  # supported | contradicted | too weak to say, against the trivial predictors as `check`
    reasons: tuple[str, ...]  # why it is not supported (empty when it is)
    partial: Correlation | None = None  # Spearman rho with the gain given the null predictor (`partial_given`)
    partial_given: str | None = None  # NULL_STATISTIC, or for the null itself DEFAULT_STATISTIC; None: absent
    ci_seeds: int = 0  # the seeds every config shares, which the CI resamples
    seeds: int = 0  # the most seeds of any config, which the rho's means use (more than ci_seeds: the CI is of
    #                 the shared seeds' rho, not of this one, and need not contain it)


def ci_text(k: StatisticCheck) -> str | None:
    """The check's seed-bootstrap CI as text, "(on k of m seeds)" added when it resampled fewer seeds than the
    rho's means use (pending or failed cells): then it is the interval of another estimate."""
    if k.ci_low is None:
        return None
    part = f" (on {k.ci_seeds} of {k.seeds} seeds)" if k.ci_seeds < k.seeds else ""
    return f"[{k.ci_low:.2f}, {k.ci_high:.2f}]{part}"


def statistic_rows(checks: Sequence[StatisticCheck]) -> list[dict]:
    """One table row per check: scope, statistic, n, rho, CI, p, partial rho and p, given, verdict."""
    return [{"scope": k.scope, "statistic": k.statistic, "n": len(k.labels), "spearman_rho": rounded(k.rho.rho, 3),
             "ci95_seeds": ci_text(k), "p": rounded(k.rho.p, 4),
             "partial_rho": None if k.partial is None else rounded(k.partial.rho, 3),
             "partial_p": None if k.partial is None else rounded(k.partial.p, 4), "given": k.partial_given,
             "verdict": k.verdict} for k in checks]


NULL_STATISTIC = "params"  # the null predictor: the share of the weights a placement adapts (breadth)
DEFAULT_STATISTIC = "gradient"  # auto's default: the null predictor's own row is partialled on it


def shared_seeds(predicted: Sequence[Mapping[int, float]], gains: Sequence[Mapping[int, float]]) -> list[int]:
    """The seeds with a predicted share and a gain in every config, sorted."""
    return sorted(set.intersection(*(set(g) & set(p) for g, p in zip(gains, predicted)))) if gains else []


def seed_bootstrap_rho(predicted: Sequence[Mapping[int, float]], gains: Sequence[Mapping[int, float]], *,
                       n_boot: int = N_BOOT, seed: int = 0,
                       level: float = 0.95) -> tuple[float | None, float | None, int]:
    """Percentile CI of Spearman(mean predicted, mean gain) over configs, resampling the seeds: draw the seeds
    shared by every config with replacement, recompute each config's mean gain and mean predicted share over
    the drawn seeds, recompute rho. (lo, hi, resamples used); None, None with < 2 shared seeds or < 3 configs."""
    shared = shared_seeds(predicted, gains)
    if len(shared) < 2 or len(gains) < 3:
        return None, None, 0
    P = np.array([[p[s] for s in shared] for p in predicted])  # (configs, seeds)
    G = np.array([[g[s] for s in shared] for g in gains])  # (configs, seeds)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(shared), size=(n_boot, len(shared)))  # (n_boot, seeds) drawn seeds
    x, y = P[:, idx].mean(axis=2).T, G[:, idx].mean(axis=2).T  # (n_boot, configs) mean share and mean gain
    keep = (np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0)  # a constant side has no rho
    rhos = _row_spearman(x[keep], y[keep])  # (kept,)
    if not len(rhos):
        return None, None, 0
    lo, hi = np.quantile(rhos, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi), len(rhos)


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of every row pair (average ranks for ties, as scipy.stats.spearmanr), x and y (B, n)."""
    rx, ry = sps.rankdata(x, axis=1), sps.rankdata(y, axis=1)  # (B, n)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    return (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))


def statistic_check(scope: str, statistic: str, configs: Sequence[ConfigSummary],
                    alpha: float = ALPHA) -> StatisticCheck:
    """One statistic over `configs` (those without it, a gain or the trivial predictors are left out)."""
    use = [c for c in configs if _trivial(c) and c.predicted_by_seed.get(statistic)]
    pred = [c.predicted_by_seed[statistic] for c in use]
    gain = [c.gain.mean for c in use]
    share = [float(np.mean(list(p.values()))) for p in pred]  # mean share over seeds, per config
    rho = spearman(share, gain)
    modules = spearman([c.modules.mean for c in use], gain)
    params = spearman([c.trainable_params.mean for c in use], gain)
    ceiling, _ = noise_ceiling([c.gains_by_seed for c in use])
    v, reasons = verdict(rho, modules, params, ceiling, len(use), alpha)
    lo, hi, b = seed_bootstrap_rho(pred, [c.gains_by_seed for c in use]) if rho.rho is not None else (None, None, 0)
    given = DEFAULT_STATISTIC if statistic == NULL_STATISTIC else NULL_STATISTIC
    partial = None
    if all(c.predicted_by_seed.get(given) for c in use):
        z = [float(np.mean(list(c.predicted_by_seed[given].values()))) for c in use]
        partial = partial_spearman(share, gain, z)
    gains_by_seed = [c.gains_by_seed for c in use]
    return StatisticCheck(scope, statistic, tuple(c.label for c in use), rho, lo, hi, b, v, reasons, partial,
                          given if partial is not None else None, ci_seeds=len(shared_seeds(pred, gains_by_seed)),
                          seeds=max((len(set(g) & set(p)) for g, p in zip(gains_by_seed, pred)), default=0))


def statistic_checks(configs: Sequence[ConfigSummary], groups: Mapping[str, Sequence[str]]) -> list[StatisticCheck]:
    """Every statistic the configs carry, over all placements, then within every group with >= 3 configs that
    have it; scopes in the order of `predictor_checks`, statistics in registry order."""
    from ..placement.need import REGISTRY

    present = {name for c in configs for name in c.predicted_by_seed}
    names = [n for n in REGISTRY if n in present]
    by_label = {c.label: c for c in configs}
    scopes = [("all placements", list(configs))] + [(g, [by_label[l] for l in ls]) for g, ls in groups.items()]
    out = []
    for scope, cs in scopes:
        for name in names:
            got = statistic_check(scope, name, cs)
            if len(got.labels) >= (1 if scope == "all placements" else 3):
                out.append(got)
    return out
