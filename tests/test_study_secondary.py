"""Secondary metrics (exact match, forgetting) against `all`: paired t as scipy's, each metric its own Holm
family apart from the score's, better = higher exact match or lower forgetting, and the report's table."""

from __future__ import annotations

import pytest
from scipy import stats as sps

from intrinsic.study.analysis import analyze
from intrinsic.study.report import tables
from intrinsic.study.rows import CellRow
from intrinsic.study.stats import holm

SEEDS = range(5)
NOISE = [0.01, -0.02, 0.015, 0.0, -0.005]
# placement -> (score, exact match, forgetting) around which seeds vary
ARMS = {"all": (-55.0, 0.50, 0.20), "ffn": (-56.0, 0.60, 0.10), "attention": (-60.0, 0.30, 0.21)}


def rows(with_em: bool = True) -> list[CellRow]:
    out = []
    for k, (name, (score, em, forget)) in enumerate(ARMS.items()):
        for s in SEEDS:  # each arm its own noise pattern, so every paired difference varies over seeds
            out.append(CellRow(id=f"{name}{s}", config_id=name, label=f"{name} budget=all@8", variant=name,
                               strategy=name, groups=("budget=all@8",), status="ok", seed=s,
                               score=score + 10 * NOISE[(s + k) % 5], trainable_params=1000,
                               exact_match=em + NOISE[(s + 2 * k) % 5] if with_em else None,
                               forgetting=forget + NOISE[(s + 3 * k + 1) % 5]))
    return out


def test_secondary_comparisons_are_paired_t_with_their_own_holm_family():
    rs = rows()
    a = analyze(rs, {"name": "t", "metrics": []})
    assert {c.metric for c in a.comparisons} == {"score"} and a.comparisons[0].family == 2
    by = {(c.metric, c.label.split()[0]): c for c in a.secondary}
    assert set(by) == {(m, p) for m in ("exact_match", "forgetting") for p in ("ffn", "attention")}
    for metric in ("exact_match", "forgetting"):
        ps = []
        for arm in ("ffn", "attention"):
            mine = [getattr(r, metric) for r in rs if r.config_id == arm]
            ref = [getattr(r, metric) for r in rs if r.config_id == "all"]
            want = sps.ttest_rel(mine, ref)
            got = by[metric, arm]
            assert got.ttest.p == pytest.approx(want.pvalue) and got.reference == "all budget=all@8"
            assert got.ttest.mean_diff == pytest.approx(sum(mine) / 5 - sum(ref) / 5)
            ps.append(want.pvalue)
        for arm, p in zip(("ffn", "attention"), holm(ps)):  # Holm within the metric, family of 2
            assert by[metric, arm].p_holm == pytest.approx(p) and by[metric, arm].family == 2
    # ffn: higher exact match and lower forgetting than all: better on both; attention: worse exact match
    assert by["exact_match", "ffn"].verdict == "better" and by["forgetting", "ffn"].verdict == "better"
    assert by["exact_match", "attention"].verdict == "worse"
    table = next(t for t in tables(a) if t[0].startswith("Secondary metrics"))
    row = next(r for r in table[2] if r["metric"] == "forgetting" and r["placement"].startswith("ffn"))
    assert row["diff_vs_all"] < 0 and row["verdict"] == "better" and row["pairs"] == 5


def test_no_secondary_rows_for_a_metric_nobody_measured():
    a = analyze(rows(with_em=False), {"name": "t", "metrics": []})
    assert {c.metric for c in a.secondary} == {"forgetting"}
