"""What `auto` water-fills on (`ProbeReport.gains`): raw sigma^2, or only the directions the sign-flip test
keeps with their energy above the noise ("signal", the default for probes with fold means), optionally as
shares of each module's own gradient energy ("module", Adam-like); and the noise level the test supplies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.errors import ConfigError
from intrinsic.placement import PlacementRequest, make_plan
from intrinsic.probes import probe
from intrinsic.rank.signflip import rademacher, sign_flip_test

from test_probe import FAST, _task

runner = CliRunner()


@pytest.fixture(scope="module")
def folded(tiny_bert):
    return probe(tiny_bert, _task(n=160), **{**FAST, "batches": 16})


def test_null_ms_is_the_mean_squared_null_statistic():
    """At step 1 the null statistic is sigma_1 of the sign-flipped mean sum_k s_k G_k / K (nothing deflated)."""
    rng = np.random.default_rng(0)
    folds = rng.standard_normal((8, 12, 9))
    res = sign_flip_test(folds, seed=3, resamples=99)
    signs = rademacher(99, 8, 3)
    exact = [np.linalg.svd(np.tensordot(s, folds, axes=1) / 8, compute_uv=False)[0] ** 2 for s in signs]
    assert res.null_ms[0] == pytest.approx(float(np.mean(exact)), rel=1e-6)
    assert len(res.null_ms) == len(res.pvalues)


def test_signal_gains_are_tested_directions_above_the_noise(folded):
    assert folded.default_gain_source() == "signal"
    raw, signal = folded.gains("raw"), folded.gains("signal")
    some_kept = 0
    for m in folded.top_level():
        sig2 = np.asarray(m.grad_sv) ** 2
        np.testing.assert_array_equal(raw[m.name], sig2)
        r = int(m.grad_ranks["sign_flip"])
        some_kept += r > 0
        want = np.zeros_like(sig2)
        want[:r] = np.maximum(sig2[:r] - np.asarray(m.sign_flip_null[:r]), 0.0)
        np.testing.assert_allclose(signal[m.name], want, rtol=0, atol=0)
        assert np.all(signal[m.name] <= raw[m.name])
    assert some_kept  # the planted task gives the test something to keep


def test_module_normalization_divides_by_the_modules_energy(folded):
    for source in ("raw", "signal"):
        plain, norm = folded.gains(source), folded.gains(source, "module")
        for m in folded.top_level():
            np.testing.assert_allclose(norm[m.name], plain[m.name] / m.grad_norm ** 2, rtol=1e-12)
    raw_norm = folded.gains("raw", "module")
    assert all(v.sum() == pytest.approx(1.0, rel=1e-6) for v in raw_norm.values())  # full spectra here


def test_auto_on_signal_adapts_only_modules_with_tested_signal(folded):
    request = PlacementRequest("auto", budget="all@8")
    plan = make_plan(folded.refs(), request, base_params=0, gains=folded)
    kept = {m.name for m in folded.top_level() if m.grad_ranks["sign_flip"] > 0}
    assert plan.settings["gains"] == "signal" and plan.settings["normalize"] == "none"
    assert {e.name for e in plan.entries} <= kept
    for e in plan.entries:  # never more rank than the test certified
        assert e.rank <= int(next(m for m in folded.top_level() if m.name == e.name).grad_ranks["sign_flip"])
    raw = make_plan(folded.refs(), PlacementRequest("auto", budget="all@8", gains="raw"), base_params=0, gains=folded)
    assert raw.settings["gains"] == "raw" and raw.params >= plan.params


def test_signal_gains_need_folds(tiny_bert):
    rep = probe(tiny_bert, _task(), **FAST)  # 4 batches: no folds
    assert rep.default_gain_source() == "raw"
    with pytest.raises(ConfigError, match="need the sign-flip test's fold means"):
        rep.gains("signal")
    plan = make_plan(rep.refs(), PlacementRequest("auto", budget="all@2"), base_params=0, gains=rep)
    assert plan.settings["gains"] == "raw"
    with pytest.raises(ConfigError, match="these gains were given as numbers"):
        make_plan(rep.refs(), PlacementRequest("auto", budget="all@2", normalize="module"), base_params=0,
                  gains=rep.gains())


@pytest.mark.parametrize("knob, value, message", [
    ("gains", "tested", "`gains` must be raw or signal"),
    ("normalize", "adam", "`normalize` must be none or module"),
])
def test_bad_knobs_are_refused(knob, value, message):
    with pytest.raises(ConfigError, match=message):
        PlacementRequest("auto", **{knob: value})


def test_cli_plan_gains_options(folded, tmp_path):
    folded.save(tmp_path / "p")
    res = runner.invoke(app, ["plan", str(tmp_path / "p"), "--budget", "5k", "--gains", "raw", "--normalize", "module",
                              "--out", str(tmp_path / "plan"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["gains"] == "raw" and data["settings"]["normalize"] == "module"
    res = runner.invoke(app, ["plan", str(tmp_path / "p"), "--budget", "5k", "--gains", "tested"])
    assert res.exit_code == 2 and "Traceback" not in res.output and "raw or signal" in res.output
