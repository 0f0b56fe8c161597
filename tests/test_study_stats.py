"""Study statistics against scipy on fixed numbers, Pareto frontiers on hand-made points, and the
report built from the stored results fixture (tests/data/study_fixture)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from intrinsic.study.analysis import analyze, frontier, summarize_configs
from intrinsic.study.guidelines import NEGATIVE, SUPPORTED, WEAK, generate
from intrinsic.study.report import tables, write_report
from intrinsic.study.rows import CellRow, read_results
from intrinsic.study.stats import paired_bootstrap, paired_ttest, spearman, summarize

FIXTURE = Path(__file__).parent / "data" / "study_fixture"
A = [0.81, 0.79, 0.84, 0.80, 0.82]
B = [0.78, 0.77, 0.80, 0.79, 0.80]


def test_summarize_matches_scipy_t_interval():
    s = summarize(A)
    lo, hi = sps.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=sps.sem(A))
    assert s.n == 5 and s.mean == pytest.approx(np.mean(A)) and s.std == pytest.approx(np.std(A, ddof=1))
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))


def test_summarize_small_n_and_missing():
    one = summarize([0.7, None, float("nan")])
    assert one.n == 1 and one.mean == 0.7 and one.std is None and one.ci_low is None
    assert summarize([]).mean is None


def test_paired_ttest_matches_scipy():
    t = paired_ttest(A, B)
    ref = sps.ttest_rel(A, B)
    assert t.n == 5 and t.t == pytest.approx(ref.statistic) and t.p == pytest.approx(ref.pvalue)
    assert t.mean_diff == pytest.approx(np.mean(np.subtract(A, B)))
    d = np.subtract(A, B)
    lo, hi = sps.t.interval(0.95, 4, loc=d.mean(), scale=sps.sem(d))
    assert (t.ci_low, t.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert t.significant == (ref.pvalue < 0.05)


def test_paired_ttest_undefined_cases():
    assert paired_ttest([0.8], [0.7]).p is None  # one seed: no test, never p = 0
    const = paired_ttest([0.8, 0.9], [0.7, 0.8])  # identical differences: t undefined
    assert const.p is None and const.mean_diff == pytest.approx(0.1)
    assert not const.significant


def test_paired_bootstrap_is_seeded_and_brackets_the_mean():
    b1, b2 = paired_bootstrap(A, B, seed=3), paired_bootstrap(A, B, seed=3)
    assert b1 == b2 and b1.method == "bootstrap"
    assert b1.ci_low <= b1.mean_diff <= b1.ci_high and 0 <= b1.p <= 1


def test_spearman_matches_scipy_and_fisher_ci():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    y = x + rng.normal(scale=1.0, size=20)
    c = spearman(x, y)
    ref = sps.spearmanr(x, y)
    assert c.rho == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue) and c.p_method == "t-approx"
    half = 1.959963984540054 * math.sqrt(1.06 / 17)
    assert c.ci_low == pytest.approx(math.tanh(math.atanh(c.rho) - half))
    assert c.ci_high == pytest.approx(math.tanh(math.atanh(c.rho) + half))
    boot = spearman(x, y, method="bootstrap", n_boot=300)
    assert boot.ci_low < c.rho < boot.ci_high


def test_spearman_exact_p_for_small_n():
    x, y = np.arange(6.0), np.array([1, 3, 2, 5, 4, 6.0])
    c = spearman(x, y)
    ref = sps.permutation_test((y,), lambda yy: sps.spearmanr(x, yy).statistic, permutation_type="pairings",
                               n_resamples=np.inf)
    assert c.p_method == "exact" and c.p == pytest.approx(ref.pvalue)
    perfect = spearman([1, 2, 3, 4], [2, 4, 6, 8])
    assert perfect.rho == 1 and perfect.p == pytest.approx(1 / 12) and perfect.ci_low is None
    assert spearman([1, 2], [1, 2]).rho is None and spearman([1, 2, 3], [5, 5, 5]).rho is None


def _row(label, cost, score, seed=0):
    return CellRow(id=f"{label}{seed}", config_id=label, label=label, variant=label, strategy=label,
                   groups=("g",), status="ok", seed=seed, score=score, trainable_params=cost)


def test_pareto_frontier_hand_made_points():
    # (cost, score): b dominates c (cheaper and better); d ties a on score but costs more; e is best and priciest
    pts = {"a": (10, 0.70), "b": (20, 0.80), "c": (30, 0.75), "d": (15, 0.70), "e": (100, 0.90), "f": (10, 0.60)}
    configs = summarize_configs([_row(k, c, s) for k, (c, s) in pts.items()])
    f = frontier(configs, "trainable_params")
    assert f.front == ("a", "b", "e")


def test_pareto_frontier_equal_points_both_on_front():
    configs = summarize_configs([_row("a", 10, 0.7), _row("b", 10, 0.7), _row("c", 5, 0.5)])
    assert set(frontier(configs, "trainable_params").front) == {"a", "b", "c"}


def _fixture():
    study = json.loads((FIXTURE / "study.json").read_text())
    return study, read_results(FIXTURE / "results.json")


def test_analysis_of_fixture_matches_scipy():
    study, rows = _fixture()
    a = analyze(rows, study)
    assert a.counts == {"ok": 20, "failed": 1, "infeasible": 3}
    ffn = a.config("ffn r=4")
    ref = a.config("all r=4")
    comp = next(c for c in a.comparisons if c.label == "ffn r=4" and c.group == "rank=4")
    seeds = sorted(ffn.scores_by_seed)
    expected = sps.ttest_rel([ffn.scores_by_seed[s] for s in seeds], [ref.scores_by_seed[s] for s in seeds])
    assert comp.ttest.p == pytest.approx(expected.pvalue)
    assert comp.verdict == ("no significant difference" if expected.pvalue >= 0.05 else
                            "better" if expected.statistic > 0 else "worse")
    full = a.config("full")
    assert full.n_ok == 2 and full.status == "partial"
    assert a.config("q budget=10").status == "infeasible"
    assert list(a.groups) == ["rank=4", "budget=all@4", "budget=10"]
    pts = a.prediction.points
    assert a.prediction.overall.rho == pytest.approx(sps.spearmanr([p[1] for p in pts], [p[2] for p in pts]).statistic)
    assert a.prediction.auto_on_frontier["auto budget=all@4"]["trainable_params"]


def test_guidelines_hedge_when_evidence_is_weak():
    study, rows = _fixture()
    gl = generate(analyze(rows, study))
    assert {g.strength for g in gl} <= {SUPPORTED, WEAK, NEGATIVE, "info"}
    assert any(g.strength == WEAK and "too weak to say" in g.text for g in gl)
    # single-seed version of the same study: nothing may be called supported by a paired test
    one = [r for r in rows if r.seed == 0]
    gl1 = generate(analyze(one, study))
    assert not any(g.topic == "comparison" and g.strength == SUPPORTED for g in gl1)


def test_report_builds_from_fixture(tmp_path):
    study, rows = _fixture()
    files, a, gl = write_report(FIXTURE, dest=tmp_path)
    md = Path(files.markdown).read_text()
    for section in ("## Guidelines", "## Comparisons at equal rank or budget", "## Pareto frontiers",
                    "## Does the probe predict the outcome?", "## Problems", "frontier_trainable_params.png"):
        assert section in md
    assert "infeasible" in md and "NonFiniteError" in md
    html = Path(files.html).read_text()
    assert html.count("<table>") >= 5 and "data:image/png;base64," in html
    assert len(files.plots) == 5 and all(Path(p).stat().st_size > 1000 for p in files.plots)
    assert json.loads(Path(files.analysis_json).read_text())["analysis"]["counts"]["ok"] == 20
    titles = [t[0] for t in tables(a, gl)]
    assert titles[0] == "Guidelines" and "Comparison group rank=4" in titles
    assert not (FIXTURE / "report.md").exists()  # the fixture stays read-only
