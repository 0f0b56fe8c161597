"""The corrected study protocol: Holm over the report's comparisons (by hand), the minimum detectable
effect (against the review's noncentral-t table and a simulation), "supported" only after Holm and
with enough seeds, and the probe's prediction checked against trivial predictors and the noise ceiling
on hand-made rows whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from intrinsic.study.analysis import analyze
from intrinsic.study.guidelines import CONTRADICTED, SUPPORTED, WEAK, generate
from intrinsic.study.predictors import noise_ceiling
from intrinsic.study.rows import CellRow
from intrinsic.study.stats import holm, min_detectable_effect, paired_power, seeds_needed

STUDY = {"name": "hand", "metrics": ["score", "trainable_params"]}


def test_holm_by_hand():
    # Holm (1979) step-down: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert holm([0.001, 0.013, 0.014]) == pytest.approx([0.003, 0.026, 0.026])  # the running max matters
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == [] and holm([None]) == [None]


def test_mde_matches_noncentral_t_table_and_simulation():
    # the review's table (section 2.4): sd 0.4 -> 1.31, 0.67, 0.40, 0.26 at n = 3, 5, 10, 20; power 0.24 / 0.56
    for n, want in ((3, 1.31), (5, 0.67), (10, 0.40), (20, 0.26)):
        assert min_detectable_effect(n, 0.4) == pytest.approx(want, abs=0.006)
    assert paired_power(0.5, 0.4, 3) == pytest.approx(0.24, abs=0.006)
    assert paired_power(0.5, 0.4, 5) == pytest.approx(0.56, abs=0.006)
    # n = 2 (1 df) takes the integration path; check it by simulating the test itself
    rng = np.random.default_rng(0)
    d = rng.normal(3.2, 0.4, size=(200_000, 2))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(2))
    sim = float(np.mean(np.abs(t) > sps.t.ppf(0.975, 1)))
    assert paired_power(3.2, 0.4, 2) == pytest.approx(sim, abs=0.005)
    n = seeds_needed(0.5, 0.4)
    assert min_detectable_effect(n, 0.4) <= 0.5 < min_detectable_effect(n - 1, 0.4)
    assert min_detectable_effect(1, 0.4) is None and seeds_needed(None, 0.4) is None


def _row(label, strategy, seed, score, *, params=1000, modules=4, share=0.5, group="budget=b", gain=None):
    return CellRow(id=f"{label}-{seed}", config_id=label, label=label, variant=strategy, strategy=strategy,
                   budget="b", seed=seed, groups=(group,), status="ok", score=score,
                   gain=score - 0.5 if gain is None else gain, trainable_params=params, modules=modules,
                   predicted_share=share)


def test_supported_needs_holm_and_power():
    rng = np.random.default_rng(1)
    block = rng.normal(0, 0.01, size=5)  # shared seed effect
    rows = []
    for s in range(5):
        rows.append(_row("all b", "all", s, 0.80 + block[s]))
        rows.append(_row("ffn b", "ffn", s, 0.75 + block[s] + rng.normal(0, 0.003)))  # clearly worse
        rows.append(_row("attention b", "attention", s, 0.80 + block[s] + rng.normal(0, 0.01)))  # noise
        rows.append(_row("auto b", "auto", s, 0.70 + block[s] + rng.normal(0, 0.003)))  # clearly worse
    a = analyze(rows, STUDY)
    comps = {c.label: c for c in a.comparisons}
    assert {c.family for c in a.comparisons} == {3}
    ps = [comps[l].ttest.p for l in ("ffn b", "attention b", "auto b")]
    assert [comps[l].p_holm for l in ("ffn b", "attention b", "auto b")] == pytest.approx(holm(ps))
    assert comps["ffn b"].supported and comps["auto b"].supported and not comps["attention b"].supported
    d = np.array([r.score for r in rows if r.label == "attention b"]) - np.array([r.score for r in rows
                                                                                 if r.label == "all b"])
    assert comps["attention b"].sd_diff == pytest.approx(d.std(ddof=1))
    assert comps["attention b"].mde == pytest.approx(min_detectable_effect(5, d.std(ddof=1)))
    gl = generate(a)
    comp = [g for g in gl if g.topic == "comparison"]
    assert comp[0].strength == SUPPORTED and "ffn b" in comp[0].text and "Holm" in comp[0].text
    auto = [g for g in gl if g.topic == "auto" and "vs" in g.text]
    assert auto[0].strength == CONTRADICTED
    assert any("3 distinct paired comparisons" in g.text and "Holm" in g.text for g in gl if g.topic == "protocol")
    # three comparisons with the same differences (-0.05, -0.03, -0.04): p = 0.020 each, Holm 3 x 0.020
    d = (-0.05, -0.03, -0.04)
    same = [_row(l, l.split()[0], s, 0.8 + (d[s] if l != "all b" else 0))
            for l in ("all b", "ffn b", "attention b", "auto b") for s in range(3)]
    few = analyze(same, STUDY).comparisons
    p = sps.ttest_1samp(d, 0).pvalue
    assert p < 0.05 and all(c.ttest.p == pytest.approx(p) and c.p_holm == pytest.approx(3 * p) for c in few)
    assert not any(c.supported for c in few) and all(c.verdict == "no significant difference" for c in few)


def test_prediction_loses_to_parameter_count_when_outcome_is_param_count():
    rows = []
    for i, (params, share) in enumerate([(100, 0.9), (200, 0.1), (300, 0.5), (400, 0.3), (500, 0.7), (600, 0.2)]):
        for s in range(3):
            rows.append(_row(f"c{i}", "all", s, 0.5 + params / 1e4, params=params, modules=4, share=share,
                             gain=params / 1e4 + 1e-5 * s * (i % 2)))
    a = analyze(rows, STUDY)
    k = next(k for k in a.predictor_checks if k.scope == "all placements")
    assert k.params.rho == pytest.approx(1.0) and k.verdict == WEAK
    assert any("trainable parameters does as well" in r for r in k.reasons)
    g = next(g for g in generate(a) if g.topic == "prediction" and "all placements" in g.text)
    assert g.strength == WEAK and "Too weak to say" in g.text


def test_prediction_supported_when_probe_tracks_gain_beyond_trivial_and_ceiling():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(7):
        for s in range(4):  # gains i/10 + noise: halves agree only imperfectly, so the ceiling is < 1
            g = i / 10 + rng.normal(0, 0.06)
            rows.append(_row(f"c{i}", "all", s, 0.5 + g, params=1000, modules=4 + (i * 3) % 7, share=i / 10, gain=g))
    a = analyze(rows, STUDY)
    k = next(k for k in a.predictor_checks if k.scope == "all placements")
    assert k.params.rho is None  # constant within the budget: counts as 0
    assert k.ceiling is not None and k.ceiling < 1 and k.probe.rho >= k.ceiling
    assert k.probe.rho > (k.modules.rho or 0) and k.verdict == SUPPORTED, k.reasons
    # flipping the probe's sign makes it contradicted
    flipped = analyze([CellRow(**{**r.__dict__, "predicted_share": -r.predicted_share}) for r in rows], STUDY)
    assert next(k for k in flipped.predictor_checks if k.scope == "all placements").verdict == CONTRADICTED


def test_noise_ceiling_by_hand():
    gains = [{0: 1.0, 1: 2.0}, {0: 2.0, 1: 1.0}, {0: 3.0, 1: 3.0}]
    # halves {0} vs {1}: ranks (1,2,3) vs (2,1,3) -> rho 0.5 (one split)
    assert noise_ceiling(gains) == (pytest.approx(0.5), 1)
    assert noise_ceiling([{0: 1.0}, {0: 2.0}, {0: 3.0}]) == (None, 0)


def test_significant_but_below_the_mde_is_too_weak_at_this_sample_size():
    # one comparison (Holm = raw p = 0.023) whose effect 0.0176 is below its MDE 0.0185 at 5 seeds
    d = (-0.02, -0.03, -0.01, -0.025, -0.003)
    rows = [_row(l, l.split()[0], s, 0.8 + (d[s] if l == "ffn b" else 0)) for l in ("all b", "ffn b") for s in range(5)]
    a = analyze(rows, STUDY)
    (c,) = a.comparisons
    assert c.p_holm == pytest.approx(sps.ttest_1samp(d, 0).pvalue) and c.p_holm < 0.05 and c.verdict == "worse"
    assert abs(c.ttest.mean_diff) < c.mde and c.seeds_needed == 6 and not c.supported
    g = next(g for g in generate(a) if g.topic == "comparison")
    assert g.strength == WEAK and "too weak to say at this sample size" in g.text and "6 seeds" in g.text


def test_prediction_below_the_noise_ceiling_is_too_weak():
    shares = (0.1, 0.0, 0.2, 0.3, 0.5, 0.4, 0.6)  # two swaps: rho 0.93, exact p < 0.01
    rows = [_row(f"c{i}", "all", s, 0.5 + i / 10, params=1000, modules=4, share=shares[i],
                 gain=i / 10 + 1e-4 * s) for i in range(7) for s in range(4)]  # seeds agree: ceiling 1
    k = next(k for k in analyze(rows, STUDY).predictor_checks if k.scope == "all placements")
    assert k.ceiling == pytest.approx(1.0) and k.probe.p < 0.05 and k.probe.rho == pytest.approx(0.9285714)
    assert k.verdict == WEAK and k.reasons == (f"rho {k.probe.rho:.2f} is below the noise ceiling 1.00",)


def test_a_pair_met_in_two_groups_counts_once_in_the_family():
    rng = np.random.default_rng(5)
    rows = []
    for s in range(3):
        rows.append(_row("all r=4", "all", s, 0.8 + rng.normal(0, 0.01), group="rank=4"))
        rows[-1] = CellRow(**{**rows[-1].__dict__, "groups": ("rank=4", "budget=all@4")})
        rows.append(CellRow(**{**_row("auto", "auto", s, 0.8 + rng.normal(0, 0.01)).__dict__,
                               "groups": ("rank=4", "budget=all@4")}))
        rows.append(_row("ffn r=4", "ffn", s, 0.8 + rng.normal(0, 0.01), group="rank=4"))
    comps = analyze(rows, STUDY).comparisons
    assert len(comps) == 3 and {c.family for c in comps} == {2}  # auto vs all twice (two groups), once in Holm
    auto = [c for c in comps if c.label == "auto"]
    ffn = next(c for c in comps if c.label == "ffn r=4")
    assert auto[0].p_holm == auto[1].p_holm == pytest.approx(holm([auto[0].ttest.p, ffn.ttest.p])[0])
