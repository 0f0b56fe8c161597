"""Predictors of a placement's need (`placement.need`) on a tiny probe, against hand computations from the
probe's rows; `auto` by a chosen statistic (`--predictor`, the study's [placement] predictor)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.errors import ConfigError
from intrinsic.placement import PlacementRequest, make_plan
from intrinsic.placement.need import REGISTRY, auto_gains, available, component_need, need, shares
from intrinsic.placement.request import PREDICTORS
from intrinsic.probes import ProbeReport

runner = CliRunner()
FAST = ["--batches", "2", "--batch-size", "4", "--max-length", "16", "--update-steps", "3", "--no-fit-head", "--device",
        "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def probes(tiny_bert_dir, tiny_csv, tmp_path_factory):
    """(probe with every statistic, probe with the defaults only) of the tiny BERT, through the CLI."""
    base = tmp_path_factory.mktemp("pred")
    full, plain = base / "full", base / "plain"
    res = invoke("probe", tiny_bert_dir, tiny_csv, "--out", full, *FAST, "--example-energy", "--activations",
                 "--weight-alpha", "--json")
    assert res.exit_code == 0, res.output
    rep = ProbeReport.load(full)  # the same probe without the opt-in statistics, as a default probe saves it
    off = dict(example_energy=None, example_energy_share=None, act_var=None, act_eig=None, weight_alpha=None,
               weight_alpha_tail=None)
    replace(rep, modules=tuple(replace(m, **off) for m in rep.modules)).save(plain)
    return full, plain


def _plan_pairs(rep: ProbeReport) -> list[tuple[str, int]]:
    """A hand plan: every other module, ranks 1, 2, 3, ..."""
    return [(m.name, 1 + i) for i, m in enumerate(rep.top_level()[::2])]


def test_every_predictor_share_equals_a_hand_computation(probes):
    rep = ProbeReport.load(probes[0])
    rows = {m.name: m for m in rep.top_level()}
    pairs = _plan_pairs(rep)
    assert available(rep) == list(PREDICTORS) == list(REGISTRY)
    got = shares(rep, pairs)
    want = {
        "gradient": sum(sum(s * s for s in rows[n].grad_sv[:r]) for n, r in pairs)
        / sum(m.grad_norm ** 2 for m in rows.values()),
        "example_energy": sum(rows[n].example_energy_share for n, _ in pairs),  # the probe's own shares
        "update": sum(sum(s * s for s in rows[n].update_sv[:r]) for n, r in pairs)
        / sum(m.update_energy for m in rows.values()),
        "activation": sum(sum(rows[n].act_eig[:r]) / rows[n].act_var for n, r in pairs) / len(rows),
        "weight_alpha": sum(rows[n].weight_alpha for n, _ in pairs) / sum(m.weight_alpha for m in rows.values()),
        "params": sum(rows[n].shape[0] * rows[n].shape[1] for n, _ in pairs) / sum(m.params for m in rows.values()),
    }
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-9), name
        assert 0 < got[name] < 1
    everything = [(m.name, 10**6) for m in rep.top_level()]  # every module at full rank covers it all
    for name, share in shares(rep, everything).items():
        assert share == pytest.approx(1.0, rel=1e-6), name  # ||G||_F^2 is a float32 norm
    # rank-dependent statistics grow with the rank; module-level ones do not
    lo, hi = shares(rep, [(pairs[0][0], 1)]), shares(rep, [(pairs[0][0], 2)])
    for name, p in REGISTRY.items():
        assert (hi[name] > lo[name]) if p.rank_dependent else (hi[name] == lo[name]), name


def test_a_default_probe_has_the_default_predictors_and_says_what_the_others_need(probes):
    rep = ProbeReport.load(probes[1])
    assert available(rep) == ["gradient", "update", "params"]
    with pytest.raises(ConfigError, match="--activations"):
        need(rep, "activation")
    with pytest.raises(ConfigError, match="Did you mean: activation"):
        need(rep, "activations")


def test_auto_gains_by_predictor(probes):
    rep = ProbeReport.load(probes[0])
    base = rep.gains(rep.default_gain_source())
    g = auto_gains(rep, "gradient")
    assert g.keys() == base.keys() and all(np.array_equal(g[k], base[k]) for k in g)  # today's, unchanged
    for name in ("example_energy", "weight_alpha", "params"):  # module statistic x the gradient's profile
        g = auto_gains(rep, name)
        for m in rep.top_level():
            sig2 = np.asarray(m.grad_sv) ** 2
            s = {"example_energy": m.example_energy, "weight_alpha": m.weight_alpha, "params": m.params}[name]
            np.testing.assert_allclose(g[m.name], s * sig2 / sig2.sum(), rtol=1e-12)
    a = auto_gains(rep, "activation")
    m = rep.top_level()[0]
    np.testing.assert_allclose(a[m.name], np.asarray(m.act_eig) / m.act_var, rtol=1e-12)
    with pytest.raises(ConfigError, match="predictor update allocates by its own statistic"):
        auto_gains(rep, "update", gains="raw")


def test_component_need():
    from intrinsic.placement.need import Need

    n = Need("x", {"a": np.array([6.0, 3.0, 1.0]), "b": np.array([2.0, 0.0]), "c": np.array([5.0])}, 17.0, True)
    # a + b: per uniform rank 8, 11, 12 of 12: 90% (10.8) first reached at rank 2
    assert component_need(n, ["a", "b"]) == 2
    assert component_need(n, ["a", "b"], level=0.5) == 1
    assert component_need(n, ["a", "b"], level=1.0) == 3
    assert component_need(n, ["zzz"]) is None
    flat = Need("y", {"a": np.array([3.0]), "b": np.array([1.0])}, 4.0, False)
    assert component_need(flat, ["a", "b"]) == 2.0  # the mean per module


def test_predictor_changes_the_plan_and_the_default_is_unchanged(probes):
    rep = ProbeReport.load(probes[0])
    refs = rep.refs()

    def plan(**kw):
        return make_plan(refs, PlacementRequest("auto", budget="all@2", **kw), base_params=0, gains=rep)

    default, grad = plan(), plan(predictor="gradient")
    assert default.entries == grad.entries and "predictor" not in default.settings
    assert grad.settings["predictor"] == "gradient"
    plans = {name: plan(predictor=name) for name in PREDICTORS}
    ranks = {name: {e.name: e.rank for e in p.entries} for name, p in plans.items()}
    assert len({json.dumps(r, sort_keys=True) for r in ranks.values()}) >= 4  # the statistic decides the plan
    for name, p in plans.items():
        assert p.params <= p.budget and p.settings["predictor"] == name
    # the plan auto makes under a predictor covers at least as much of that statistic as a uniform plan of the
    # same budget (greedy on the statistic's own gains; rank-dependent statistics only, the others spread
    # their module value over the gradient's profile)
    uniform = make_plan(refs, PlacementRequest("all", rank=2), base_params=0)
    for name in ("gradient", "update", "activation"):
        n = need(rep, name)
        assert n.share(plans[name].entries) >= n.share(uniform.entries) - 1e-12, name
    with pytest.raises(ConfigError, match="given as numbers"):
        make_plan(refs, PlacementRequest("auto", budget="all@2", predictor="update"), base_params=0,
                  gains=rep.gains())


def test_cli_predictor(probes, tmp_path):
    full, plain = probes
    res = invoke("plan", full, "--budget", "all@2", "--predictor", "activation", "--out", tmp_path / "a", "--json")
    assert res.exit_code == 0, res.output
    act = json.loads(res.output)
    res = invoke("plan", full, "--budget", "all@2", "--out", tmp_path / "b", "--json")
    default = json.loads(res.output)
    assert act["settings"]["predictor"] == "activation" and "predictor" not in default["settings"]
    assert act["entries"] != default["entries"]
    for args, needles in (
        (("--predictor", "gradiant"), ("predictor", "Did you mean: gradient")),
        (("--predictor", "weight_alpha"), ("--weight-alpha",)),  # the probe did not measure it
        (("--predictor", "params", "--gains", "raw"), ("own statistic",)),
    ):
        res = invoke("plan", plain, "--budget", "all@2", *args, "--out", tmp_path / "c")
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        line = " ".join(res.output.split())
        assert len(res.output.strip().splitlines()) == 1 and all(n in line for n in needles), line


def test_study_placement_predictor_knob(tmp_path):
    from intrinsic.study.spec import parse_spec

    base = ('name = "s"\nquestion = "q"\nmodel = "m"\ntask = "t"\nseeds = [0]\n'
            '[[grid]]\nstrategies = ["auto", "all"]\nranks = [2]\n')
    plain = tmp_path / "plain.toml"
    plain.write_text(base)
    chosen = tmp_path / "chosen.toml"
    chosen.write_text(base + '[placement]\npredictor = "update"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text(base + '[placement]\npredictor = "updat"\n')
    a, b = parse_spec(plain.read_text()), parse_spec(chosen.read_text())
    assert "predictor" not in a.placement  # the default stays out: earlier studies keep their hashes
    ids_a = {c.strategy: c.id for c in a.cells()}
    ids_b = {c.strategy: c.id for c in b.cells()}
    assert ids_a["auto"] != ids_b["auto"] and b.placement_request(b.cells()[0]).predictor == "update"
    with pytest.raises(ConfigError, match="Did you mean: update"):
        parse_spec(bad.read_text())
    with pytest.raises(ConfigError, match="leave them out"):  # refused when the study is read, not mid-run
        parse_spec(base + '[placement]\npredictor = "update"\ngains = "raw"\n')


def test_train_auto_with_a_predictor_probes_what_it_reads(tiny_bert_dir, tiny_csv, tmp_path):
    """`train --placement auto --predictor activation` without --probe: the quick probe measures the input
    variance, and the trained plan is the one that statistic allocates."""
    out = tmp_path / "run"
    res = invoke("train", tiny_bert_dir, tiny_csv, "--placement", "auto", "--budget", "all@2", "--predictor",
                 "activation", "--steps", "2", "--batch-size", "4", "--max-length", "16", "--device", "cpu",
                 "--out", out, "--json")
    assert res.exit_code == 0, res.output
    run = json.loads(res.stdout)
    rep = ProbeReport.load(out / "probe")
    assert rep.settings.get("activations") is True
    want = make_plan(rep.refs(), PlacementRequest("auto", budget="all@2", predictor="activation"), base_params=0,
                     gains=rep)
    assert {e["name"]: e["rank"] for e in run["plan"]["entries"]} == {e.name: e.rank for e in want.entries}
    assert run["plan"]["settings"]["predictor"] == "activation"


def test_components_and_r90_correlation(probes):
    from intrinsic.study.predictors import seed_bootstrap_rho
    from intrinsic.study.r90 import component_modules, r90_checks

    rep = ProbeReport.load(probes[0])
    top = rep.top_level()
    assert component_modules(rep, "attention") == [m.name for m in top if m.kind == "attention"]
    assert component_modules(rep, "ffn[0]") == [m.name for m in top if m.kind == "ffn" and m.layer == 0]
    assert component_modules(rep, "q,v[1]") == [m.name for m in top if m.role in ("q", "v") and m.layer == 1]
    comps = ["q", "k", "v", "o", "up", "down", "attention[0]", "ffn[1]"]
    alpha = need(rep, "weight_alpha")  # module-level: its reading is the mean alpha of the component's modules
    reading = {c: float(np.mean([m.weight_alpha for m in top if m.name in component_modules(rep, c)])) for c in comps}
    assert len(set(reading.values())) == len(comps)  # the components differ
    # planted: r90 = the alpha reading, per seed with noise that keeps the order of the means
    r90 = {c: [reading[c] * 2 + 0.01 * s for s in range(4)] for c in comps}
    checks = {k.statistic: k for k in r90_checks(r90, rep)}
    assert set(checks) == set(PREDICTORS)
    a = checks["weight_alpha"]
    assert a.rho.rho == pytest.approx(1.0) and a.components == tuple(comps)
    assert a.readings == pytest.approx(tuple(reading[c] for c in comps), rel=1e-12)
    assert a.r90 == pytest.approx(tuple(reading[c] * 2 + 0.015 for c in comps))
    assert a.ci_low == pytest.approx(1.0) and a.ci_high == pytest.approx(1.0)
    grad = need(rep, "gradient")  # rank-dependent: the component's own 90% rank
    assert checks["gradient"].readings == tuple(component_need(grad, component_modules(rep, c)) for c in comps)
    assert alpha.rank_dependent is False
    # noisy seeds: a CI with width, holding the point estimate
    rng = np.random.default_rng(0)
    seeds = {c: list(reading[c] + rng.normal(0, 0.5, 8)) for c in comps}
    noisy = r90_checks(seeds, rep, ["weight_alpha"])[0]
    assert noisy.ci_low < noisy.ci_high and noisy.ci_low <= noisy.rho.rho <= noisy.ci_high
    lo, hi, _ = seed_bootstrap_rho([dict.fromkeys(range(8), reading[c]) for c in comps],  # the study's bootstrap
                                   [dict(enumerate(seeds[c])) for c in comps])
    assert (noisy.ci_low, noisy.ci_high) == pytest.approx((lo, hi))
    p = checks["params"]  # the null predictor reads the mean module size
    assert p.readings == tuple(float(np.mean([m.params for m in top if m.name in component_modules(rep, c)]))
                               for c in comps)
    single = r90_checks({c: reading[c] for c in comps}, rep, ["weight_alpha"])[0]  # one value per component: no CI
    assert single.rho.rho == pytest.approx(1.0) and single.ci_low is None
    with pytest.raises(ConfigError, match="one value per seed"):
        r90_checks({"q": [1.0, 2.0], "k": [1.0]}, rep)
    with pytest.raises(ConfigError, match="Did you mean: q"):
        r90_checks({"qq": 1.0, "k": 2.0, "v": 3.0}, rep)


def test_study_rows_record_every_predictor_share(probes):
    """rows.ProbeEnergy.predicted: full fine-tuning covers everything, a plan its shares, no plan nothing."""
    from intrinsic.study.rows import ProbeEnergy

    rep = ProbeReport.load(probes[0])

    class Energy(ProbeEnergy):
        def __init__(self):  # the seed's probe already loaded
            self._cache, self._reports, self._needs = {}, {7: rep}, {}

    e = Energy()
    plan = make_plan(rep.refs(), PlacementRequest("ffn", rank=2), base_params=0)
    assert e.predicted(7, "full") == dict.fromkeys(PREDICTORS, 1.0)
    assert e.predicted(7, plan) == shares(rep, plan.entries)
    assert e.predicted(7, None) is None


def test_update_shares_need_no_spectra_file(probes, tmp_path):
    """The update predictor's total is ||dW||_F^2 recorded per module (`update_energy`), which equals the sum of
    the squared singular values where the spectrum is whole (the tiny model's), and is kept in probe.json: the
    shares come out the same when the probe is read without spectra.npz (probe.json keeps the top 64 values), and
    a probe made before the field (update_energy None) falls back to the kept spectra."""
    rep = ProbeReport.load(probes[0])
    for m in rep.top_level():
        assert m.update_energy == pytest.approx(sum(s * s for s in m.update_sv), rel=1e-5)
    cut = replace(rep, modules=tuple(replace(m, update_sv=m.update_sv[:2]) for m in rep.modules))
    pairs = _plan_pairs(rep)
    assert shares(cut, [(n, min(r, 2)) for n, r in pairs])["update"] == pytest.approx(
        shares(rep, [(n, min(r, 2)) for n, r in pairs])["update"], rel=1e-12)  # head kept: same share
    rep.save(tmp_path / "p")
    (tmp_path / "p" / "spectra.npz").unlink()
    assert ProbeReport.load(tmp_path / "p").modules[0].update_energy == rep.modules[0].update_energy
    old = replace(cut, modules=tuple(replace(m, update_energy=None) for m in cut.modules))
    got = shares(old, [(pairs[0][0], 2)])["update"]
    want = sum(s * s for s in old.top_level()[0].update_sv[:2]) / sum(sum(s * s for s in m.update_sv)
                                                                    for m in old.top_level())
    assert got == pytest.approx(want, rel=1e-12) and got > shares(rep, [(pairs[0][0], 2)])["update"]
