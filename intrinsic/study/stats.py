"""Statistics over a handful of seeds: mean, std and t-based 95% CIs; paired tests; rank correlation.

Studies run 1-5 seeds per cell, so every function here is honest about small n: with one seed
there is no spread, no CI and no p-value (None, never 0); a difference is only called
"significant" when a paired test over shared seeds says so (p < alpha).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05  # significance level used throughout the report
EXACT_MAX_N = 8  # Spearman p-values are exact (all n! permutations) up to this many pairs


@dataclass(frozen=True)
class Summary:
    """Mean of n values with a two-sided t-distribution confidence interval."""

    n: int  # number of finite values
    mean: float | None  # None when n == 0
    std: float | None  # sample std (ddof=1); None when n < 2
    ci_low: float | None  # mean - t_{(1+level)/2, n-1} * std / sqrt(n); None when n < 2
    ci_high: float | None  # upper end of the same interval
    level: float = 0.95  # confidence level of the interval


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of a against b on shared seeds (a - b)."""

    n: int  # number of pairs
    mean_diff: float | None  # mean of a - b
    ci_low: float | None  # t-based CI of the mean difference
    ci_high: float | None
    t: float | None  # t statistic of scipy.stats.ttest_rel; None when n < 2 or all differences equal
    p: float | None  # two-sided p-value; None when the test is undefined
    method: str = "ttest_rel"  # "ttest_rel" or "bootstrap"

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA


@dataclass(frozen=True)
class Correlation:
    """Spearman rank correlation with a confidence interval."""

    n: int  # number of (x, y) pairs
    rho: float | None  # Spearman's rho; None when n < 3 or a variable is constant
    p: float | None  # two-sided p-value of scipy.stats.spearmanr
    ci_low: float | None  # CI of rho (Fisher z with the Fieller 1.06 variance, or bootstrap)
    ci_high: float | None
    method: str = "fisher-z"  # how the CI was made
    p_method: str = "t-approx"  # "exact" (all permutations, n <= EXACT_MAX_N) or scipy's "t-approx"


def _finite(values: Sequence[float | None]) -> np.ndarray:
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return arr[np.isfinite(arr)]


def _opt(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def rounded(x: float | None, digits: int = 4) -> float | None:
    """`x` rounded to `digits` for a report table; None stays None."""
    return None if x is None else round(float(x), digits)


def summarize(values: Sequence[float | None], level: float = 0.95) -> Summary:
    """Mean, sample std and t-based CI of the finite values (None/NaN ignored)."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Summary(0, None, None, None, None, level)
    mean = float(x.mean())
    if n < 2:
        return Summary(1, mean, None, None, None, level)
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, level)


def paired_ttest(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedTest:
    """Paired t-test of a vs b (same seeds, same order) via scipy.stats.ttest_rel."""
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_.shape != b_.shape:
        raise ValueError(f"paired samples differ in length: {a_.shape} vs {b_.shape}")
    keep = np.isfinite(a_) & np.isfinite(b_)
    a_, b_ = a_[keep], b_[keep]
    d = a_ - b_
    n = len(d)
    if n == 0:
        return PairedTest(0, None, None, None, None, None)
    s = summarize(d, level)
    if n < 2 or s.std <= 1e-9 * max(1.0, abs(s.mean)):
        # One pair has no spread; identical differences make t infinite or undefined: no test.
        return PairedTest(n, s.mean, s.ci_low, s.ci_high, None, None)
    res = sps.ttest_rel(a_, b_)
    return PairedTest(n, s.mean, s.ci_low, s.ci_high, _opt(res.statistic), _opt(res.pvalue))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> PairedTest:
    """Percentile bootstrap of the mean paired difference; p = two-sided share of resampled means on
    the other side of zero (x2, capped at 1). Weak with few pairs: with 3 seeds there are only 10
    distinct resamples, so prefer `paired_ttest` and read this as a robustness check."""
    d = _finite(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    n = len(d)
    if n < 2:
        return PairedTest(n, float(d.mean()) if n else None, None, None, None, None, "bootstrap")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)  # (n_boot,)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return PairedTest(n, float(d.mean()), float(lo), float(hi), None, p, "bootstrap")


def spearman(x: Sequence[float], y: Sequence[float], *, level: float = 0.95, method: str = "fisher-z",
             n_boot: int = 5_000, seed: int = 0) -> Correlation:
    """Spearman's rho (scipy.stats.spearmanr) with a CI; exact permutation p-value when n <= EXACT_MAX_N.

    fisher-z: z = atanh(rho), se = sqrt(1.06 / (n - 3)) (Fieller, Hartley & Pearson 1957), needs n >= 4
    and |rho| < 1.
    bootstrap: percentile interval over resampled pairs (resamples with a constant side are skipped).
    """
    x_, y_ = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x_) & np.isfinite(y_)
    x_, y_ = x_[keep], y_[keep]
    n = len(x_)
    if n < 3 or np.ptp(x_) == 0 or np.ptp(y_) == 0:
        return Correlation(n, None, None, None, None, method)
    res = sps.spearmanr(x_, y_)
    rho, p = float(res.statistic), _opt(res.pvalue)
    p_method = "t-approx"
    if n <= EXACT_MAX_N:
        p, p_method = spearman_exact_p(x_, y_, rho), "exact"
    lo = hi = None
    if method == "fisher-z":
        if n >= 4:
            lo, hi = _fisher_ci(rho, math.sqrt(1.06 / (n - 3)), level)
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        rhos = []
        for _ in range(n_boot):
            idx = rng.integers(0, n, size=n)
            if np.ptp(x_[idx]) > 0 and np.ptp(y_[idx]) > 0:
                rhos.append(sps.spearmanr(x_[idx], y_[idx]).statistic)
        if rhos:
            lo, hi = (float(v) for v in np.quantile(rhos, [0.5 - level / 2, 0.5 + level / 2]))
    else:
        raise ValueError(f"unknown CI method {method!r}")
    return Correlation(n, rho, p, lo, hi, method, p_method)


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float], *, level: float = 0.95) -> Correlation:
    """Spearman's rho of x with y given z: the Pearson correlation of the ranks of x and of y, each with its least-
    squares fit on the ranks of z removed (what x says about y beyond what z says). p from t = r sqrt((n - 3) /
    (1 - r^2)) with n - 3 degrees of freedom, CI by Fisher z with se 1 / sqrt(n - 4) (one variable partialled
    out). Used to ask whether a probe statistic predicts gains beyond the null predictor (the share of the weights
    a placement adapts). rho None when n < 4 or a residual is constant (x or y a function of z's ranks)."""
    x_, y_, z_ = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    keep = np.isfinite(x_) & np.isfinite(y_) & np.isfinite(z_)
    x_, y_, z_ = x_[keep], y_[keep], z_[keep]
    n = len(x_)
    if n < 4:
        return Correlation(n, None, None, None, None, "fisher-z")
    A = np.column_stack([sps.rankdata(z_), np.ones(n)])  # (n, 2)

    def resid(v: np.ndarray) -> np.ndarray:
        r = sps.rankdata(v)
        return r - A @ np.linalg.lstsq(A, r, rcond=None)[0]

    ex, ey = resid(x_), resid(y_)
    sx, sy = float(np.linalg.norm(ex)), float(np.linalg.norm(ey))
    if sx < 1e-9 * n or sy < 1e-9 * n:
        return Correlation(n, None, None, None, None, "fisher-z")
    r = float(np.clip(ex @ ey / (sx * sy), -1.0, 1.0))
    df = n - 3
    p = 0.0 if abs(r) >= 1 - 1e-12 else float(2 * sps.t.sf(abs(r) * math.sqrt(df / (1 - r * r)), df))
    lo, hi = _fisher_ci(r, 1 / math.sqrt(n - 4), level) if n >= 5 else (None, None)
    return Correlation(n, r, p, lo, hi, "fisher-z")


def _fisher_ci(r: float, se: float, level: float) -> tuple[float | None, float | None]:
    """CI of a correlation r by Fisher's z: tanh(atanh(r) +- z_level * se); (None, None) at |r| = 1, where the z
    transform is infinite."""
    if abs(r) >= 1 - 1e-12:
        return None, None
    half = float(sps.norm.ppf(0.5 + level / 2)) * se
    return math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)


def spearman_exact_p(x: np.ndarray, y: np.ndarray, rho: float) -> float:
    """Two-sided permutation p-value of Spearman's rho over all n! orderings of y (n <= EXACT_MAX_N).

    scipy's t approximation is far too optimistic at small n (rho = 1 with n = 4 gives p = 0,
    while 1 in 12 random orderings is at least that extreme in absolute value)."""
    import itertools

    rx, ry = sps.rankdata(x), sps.rankdata(y)
    perms = np.array(list(itertools.permutations(range(len(ry)))))  # (n!, n)
    ryp = ry[perms]  # (n!, n)
    rxc = rx - rx.mean()
    rypc = ryp - ryp.mean(axis=1, keepdims=True)
    rhos = (rypc @ rxc) / (np.linalg.norm(rypc, axis=1) * np.linalg.norm(rxc))  # (n!,)
    return float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))


def intervals_overlap(a: Summary, b: Summary) -> bool | None:
    """Whether two CIs overlap (None when either has no CI)."""
    if a.ci_low is None or b.ci_low is None:
        return None
    return a.ci_low <= b.ci_high and b.ci_low <= a.ci_high


# ----------------------------------------------------------------------------- multiple comparisons and power

POWER = 0.8  # power at which the minimum detectable effect is stated


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in input order. The family is every p that is not None (None:
    no test, stays None); sorted ascending, p_(i) becomes max_{j<=i} min(1, (m - j + 1) p_(j))."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def paired_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test (n pairs, sd of the differences) against a true mean
    difference `effect`: P(|T| > t_{1-alpha/2, n-1}) with T noncentral t, nc = effect sqrt(n) / sd."""
    df, nc = n - 1, abs(effect) * math.sqrt(n) / sd
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    fast = float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
    if math.isfinite(fast) and 0 <= fast <= 1:
        return fast
    from scipy.integrate import quad

    def given_v(v: float) -> float:  # T = (Z + nc) / sqrt(V / df), V ~ chi2(df): P(|T| > crit | V = v)
        c = crit * math.sqrt(v / df)
        return (float(sps.norm.sf(c - nc)) + float(sps.norm.cdf(-c - nc))) * float(sps.chi2.pdf(v, df))

    # scipy's noncentral t returns NaN at 1-2 df and large nc: integrate over V instead
    lo, hi = sps.chi2.ppf([1e-12, 1 - 1e-12], df)
    return min(1.0, float(quad(given_v, lo, hi, limit=200, points=[df])[0]))


def min_detectable_effect(n: int, sd: float | None, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest mean paired difference the two-sided paired t-test detects with `power` at `alpha`,
    given n pairs whose differences have standard deviation sd. None when n < 2 or sd is unknown or 0."""
    if n < 2 or sd is None or not sd > 0:
        return None
    from scipy.optimize import brentq

    hi = sd
    while paired_power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(brentq(lambda e: paired_power(e, sd, n, alpha) - power, 0.0, hi, xtol=1e-7 * sd))


def seeds_needed(effect: float | None, sd: float | None, alpha: float = ALPHA, power: float = POWER,
                 max_n: int = 1000) -> int | None:
    """Fewest pairs (>= 2) at which `effect` is the minimum detectable effect or above; None if unknown
    (no effect or no sd) or beyond max_n. An sd of 0 needs 2 pairs."""
    if effect is None or sd is None or effect == 0:
        return None
    if sd == 0:
        return 2
    enough = lambda n: min_detectable_effect(n, sd, alpha, power) <= abs(effect)  # noqa: E731 - falls with n
    lo, hi = 1, 2
    while not enough(hi):  # doubling, then bisection: the MDE falls monotonically with n
        if hi >= max_n:
            return None
        lo, hi = hi, min(2 * hi, max_n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
