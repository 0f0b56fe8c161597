"""Which probe statistic predicts the gain: per-statistic Spearman rho with the seed-bootstrap CI, against an
exact enumeration of the seed resamples, and on a planted study (one statistic orders the gains, one does not)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from intrinsic.report.document import render_markdown
from intrinsic.study.analysis import analyze
from intrinsic.study.predictors import SUPPORTED, WEAK, seed_bootstrap_rho
from intrinsic.study.report import document, statistic_table, tables
from intrinsic.study.rows import CellRow


def test_seed_bootstrap_equals_the_exact_distribution_over_seed_resamples():
    """3 seeds, 4 configs: all 27 resamples of the seeds are equally likely; the bootstrap's quantiles match the
    quantiles of rho over that exact distribution."""
    rng = np.random.default_rng(0)
    gains = [{s: float(v) for s, v in enumerate(rng.normal(size=3) + c)} for c in range(4)]
    pred = [{s: float(c + 0.1 * s * (-1) ** c) for s in range(3)} for c in range(4)]
    exact = []
    for idx in itertools.product(range(3), repeat=3):
        x = [np.mean([p[s] for s in idx]) for p in pred]
        y = [np.mean([g[s] for s in idx]) for g in gains]
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            exact.append(sps.spearmanr(x, y).statistic)
    lo, hi, n = seed_bootstrap_rho(pred, gains, n_boot=20000)
    assert n > 19000
    # the bootstrap quantiles are values of the exact distribution, and its CDF there brackets 2.5% / 97.5%
    exact = np.sort(exact)
    values = np.unique(np.round(exact, 12))
    assert np.isclose(values, lo).any() and np.isclose(values, hi).any()
    assert np.mean(exact < lo - 1e-12) <= 0.025 + 0.01 and np.mean(exact <= lo + 1e-12) >= 0.025 - 0.01
    assert np.mean(exact >= hi - 1e-12) >= 0.025 - 0.01 and np.mean(exact > hi + 1e-12) <= 0.025 + 0.01
    assert lo < hi  # the seeds disagree, so the interval has width


def test_seed_bootstrap_needs_two_shared_seeds_and_three_configs():
    g = [{0: 1.0, 1: 2.0}, {0: 2.0, 1: 3.0}, {0: 3.0, 1: 1.0}]
    assert seed_bootstrap_rho(g, g)[2] > 0
    assert seed_bootstrap_rho([{0: 1.0}] * 3, [{0: 1.0}, {0: 2.0}, {0: 3.0}]) == (None, None, 0)
    assert seed_bootstrap_rho(g[:2], g[:2]) == (None, None, 0)


def _planted_rows(seeds: int = 5) -> list[CellRow]:
    """Six placements at one budget with true gains 1..6 (+ small seed noise); statistic `good` covers
    in the order of the gains, `bad` in an unrelated order, `params` is constant within the budget."""
    rng = np.random.default_rng(1)
    bad_order = [3, 0, 5, 1, 4, 2]
    rows = []
    for c in range(6):
        for s in range(seeds):
            gain = c + 1 + 0.1 * rng.normal()
            rows.append(CellRow(
                id=f"{c}-{s}", config_id=f"c{c}", label=f"p{c} budget=all@4", variant=f"p{c}", strategy="auto",
                seed=s, groups=("budget=all@4",), status="ok", score=gain, untrained_score=0.0, gain=gain,
                trainable_params=1000, modules=c + 1 if c % 2 else 6 - c, predicted_share=0.1 * c,
                predicted={"gradient": 0.1 * c + 0.01 * rng.normal(), "activation": 0.1 * bad_order[c],
                           "params": 0.5}))
    return rows


def test_planted_study_orders_the_statistics_and_reports_them():
    a = analyze(_planted_rows(), {"name": "planted", "metrics": ["score", "trainable_params"]})
    checks = {(k.scope, k.statistic): k for k in a.statistic_checks}
    assert {s for _, s in checks} == {"gradient", "activation", "params"}
    const = checks[("budget=all@4", "params")]  # the same share everywhere: no rho, so not a predictor
    assert const.rho.rho is None and const.verdict == WEAK and const.ci_low is None
    good = checks[("budget=all@4", "gradient")]
    assert good.rho.rho == pytest.approx(1.0, abs=0.06) and len(good.labels) == 6
    assert good.ci_low > 0.7 and good.ci_high <= 1.0 and good.resamples > 1500
    assert good.verdict == SUPPORTED, good.reasons  # beats modules and (constant) params, reaches the ceiling
    bad = checks[("budget=all@4", "activation")]
    want = sps.spearmanr([3, 0, 5, 1, 4, 2], range(6)).statistic
    assert bad.rho.rho == pytest.approx(want) and bad.verdict == WEAK
    assert bad.ci_low == pytest.approx(want) and bad.ci_high == pytest.approx(want)  # it reads no seed noise
    title, cols, rows = statistic_table(a)
    assert cols[:4] == ["scope", "statistic", "n", "spearman_rho"] and len(rows) == len(a.statistic_checks)
    assert statistic_table(a) in tables(a)
    md = render_markdown(document(a, [], []))
    assert "Which probe statistic predicts the gain?" in md and "| budget=all@4 | gradient | 6 |" in md


def test_no_predicted_shares_no_table():
    rows = [CellRow(**{**r.__dict__, "predicted": None}) for r in _planted_rows(2)]
    a = analyze(rows, {"name": "planted"})
    assert a.statistic_checks == ()
    assert "Which probe statistic" not in render_markdown(document(a, [], []))


def test_row_spearman_equals_scipy_with_ties():
    from intrinsic.study.predictors import _row_spearman

    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 4, size=(50, 6)).astype(float), rng.normal(size=(50, 6))
    x[:, 0] += 0.5  # not all rows constant
    got = _row_spearman(x, y)
    for i in range(50):
        if np.ptp(x[i]) > 0:
            assert got[i] == pytest.approx(sps.spearmanr(x[i], y[i]).statistic, abs=1e-12)


def test_partial_spearman_against_the_textbook_formula_and_planted_cases():
    """partial_spearman (residuals of ranks) equals the first-order partial correlation formula on the rank
    correlations, r_xy.z = (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)); a statistic that only restates z
    has a partial rho near 0 though its own rho is high; one with its own information keeps a large partial rho;
    p from t with n - 3 df."""
    from intrinsic.study.stats import partial_spearman

    rng = np.random.default_rng(4)
    z = rng.normal(size=40)
    restates = z + 0.05 * rng.normal(size=40)  # x is (almost) z
    own = rng.normal(size=40)
    y = z + own + 0.1 * rng.normal(size=40)
    for x in (restates, own + 0.3 * z):
        got = partial_spearman(x, y, z)
        r = lambda a, b: sps.spearmanr(a, b).statistic  # noqa: E731
        want = (r(x, y) - r(x, z) * r(y, z)) / np.sqrt((1 - r(x, z) ** 2) * (1 - r(y, z) ** 2))
        assert got.rho == pytest.approx(want, abs=1e-12) and got.n == 40
        t = want * np.sqrt(37 / (1 - want**2))
        assert got.p == pytest.approx(2 * sps.t.sf(abs(t), 37))
        assert got.ci_low < got.rho < got.ci_high
    assert sps.spearmanr(restates, y).statistic > 0.6 and abs(partial_spearman(restates, y, z).rho) < 0.3
    assert partial_spearman(own + 0.3 * z, y, z).rho > 0.8
    assert partial_spearman([1, 2, 3], [1, 2, 3], [3, 1, 2]).rho is None  # n < 4
    assert partial_spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], [1, 2, 3, 4, 5]).rho is None  # x is a function of z


def test_statistic_checks_report_the_partial_rho_given_the_null_predictor():
    """In the planted study with a varying null share, `gradient` carries information beyond `params` (partial
    rho high), `params` given `gradient` does not; the table has the columns."""
    rows = []
    rng = np.random.default_rng(2)
    breadth = [0.1, 0.5, 0.2, 0.6, 0.3, 0.4]  # unrelated to the gains 1..6
    for r in _planted_rows():
        c = int(r.config_id[1:])
        near = [0, 1, 3, 2, 4, 5][c]  # orders the gains but for one swap, so the gains keep a residual given it
        pred = {**r.predicted, "gradient": 0.1 * near, "params": breadth[c] + 0.001 * rng.normal()}
        rows.append(CellRow(**{**r.__dict__, "predicted": pred}))
    a = analyze(rows, {"name": "planted", "metrics": ["score", "trainable_params"]})
    checks = {(k.scope, k.statistic): k for k in a.statistic_checks}
    good, null = checks[("budget=all@4", "gradient")], checks[("budget=all@4", "params")]
    assert good.partial_given == "params" and null.partial_given == "gradient"
    assert good.partial.rho > 0.9 and good.partial.p < 0.05
    assert null.partial.p > 0.05  # breadth unrelated to the gains: nothing significant beyond gradient (n = 6)
    assert good.rho.rho < 1.0  # the swap
    title, cols, table = statistic_table(a)
    assert {"partial_rho", "partial_p", "given"} <= set(cols)
    row = next(t for t in table if t["scope"] == "budget=all@4" and t["statistic"] == "gradient")
    assert row["given"] == "params" and row["partial_rho"] == pytest.approx(good.partial.rho, abs=1e-3)
