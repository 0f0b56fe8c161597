"""The opt-in fold means of the gradient probe and the `sign_flip` estimator on a tiny model; and that
folds=0 (the default) leaves the probe's output exactly as it was."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from intrinsic.arch import discover
from intrinsic.cli.app import app
from intrinsic.errors import ConfigError, EmptyDatasetError
from intrinsic.probes import ProbeSettings, probe
from intrinsic.probes.gradient import accumulate_gradients
from intrinsic.tasks import make_batches

from test_probe import FAST, _task

runner = CliRunner()


@pytest.fixture(scope="module")
def folded(tiny_bert):
    """(probe with folds=8 and sign_flip, the same probe without folds): shared by the tests below."""
    settings = {**FAST, "batches": 8}
    return (probe(tiny_bert, _task(), **settings, folds=8, rank_estimator="sign_flip"),
            probe(tiny_bert, _task(), **settings, folds=0))


def test_fold_means_average_to_the_mean_gradient(tiny_bert):
    model, data = tiny_bert.model, _task()
    refs = discover(model)
    batches = make_batches(data, tiny_bert.tokenizer, num_batches=8, batch_size=8, max_length=24, seed=0)
    plain = accumulate_gradients(model, refs, batches, batches[:1])
    sums = accumulate_gradients(model, refs, batches, batches[:1], folds=4)
    assert sums.folds is not None and sums.n_fold == 2
    for i in range(len(refs)):
        assert torch.equal(sums.even[i], plain.even[i]) and torch.equal(sums.odd[i], plain.odd[i])
        assert sums.folds[i].shape == (4, *refs[i].shape)
        G = sums.means(i)[0]
        torch.testing.assert_close(sums.fold_means(i).mean(0), G, rtol=1e-4, atol=1e-7)
    assert plain.folds is None


def test_probe_with_folds_stores_the_sign_flip_column(folded):
    rep, base = folded
    assert rep.settings["folds"] == 8 and rep.estimator == "sign_flip"
    for m in rep.modules:
        assert "sign_flip" in m.grad_ranks and m.intrinsic_rank == int(m.grad_ranks["sign_flip"])
        assert 0 <= m.intrinsic_rank <= min(m.shape)
    for a, b in zip(rep.modules, base.modules):  # folds only add: every other number is the same
        assert a.grad_sv == b.grad_sv and {k: v for k, v in a.grad_ranks.items() if k != "sign_flip"} == b.grad_ranks


def test_default_folds_follow_the_batches(tiny_bert):
    """folds None: 8 fold means and sign_flip when the batches are a multiple of 8; otherwise no folds, the
    half_difference screen, and a note saying so; the rest of the probe is the same as with folds=0."""
    a = probe(tiny_bert, _task(), **FAST)  # 4 batches
    b = probe(tiny_bert, _task(), **FAST, folds=0)
    strip = lambda r: {**r.to_json(), "timings": None, "notes": None}  # noqa: E731
    assert strip(a) == strip(b)
    assert a.estimator == "half_difference" and "folds" not in a.settings
    assert any("not a multiple of 8" in n and "uncalibrated" in n for n in a.notes)
    assert all("sign_flip" not in m.grad_ranks for m in a.modules)
    c = probe(tiny_bert, _task(), **{**FAST, "batches": 8})
    assert c.estimator == "sign_flip" and c.settings["folds"] == 8
    assert all(m.intrinsic_rank == int(m.grad_ranks["sign_flip"]) for m in c.modules)


def test_capped_batches_keep_whole_folds(tiny_bert):
    """Asked for 16 batches of 8 with 96 examples (12 fit): 8 are probed, a multiple of the folds, noted."""
    rep = probe(tiny_bert, _task(n=96), **{**FAST, "batches": 16})
    assert rep.settings["batches"] == 8 and rep.settings["folds"] == 8 and rep.estimator == "sign_flip"
    assert any("probed 8 batches" in n and "multiple of the 8 folds" in n for n in rep.notes)


@pytest.mark.parametrize("settings, message", [
    (dict(folds=4, batches=32), "`folds` must be 0 .off. or an integer >= 8"),
    (dict(folds=8, batches=20), "`batches` .20. must be a multiple of `folds` .8."),
    (dict(rank_estimator="sign_flip", folds=0), "sign_flip needs fold means"),
    (dict(rank_estimator="sign_flip", batches=20), "sign_flip needs fold means: `batches` .20. must be a multiple of 8"),
    (dict(folds=True), "`folds`"),
])
def test_settings_refuse_bad_folds(settings, message):
    with pytest.raises(ConfigError, match=message):
        ProbeSettings(**settings)


def test_cli_folds_option(tiny_bert_dir, tiny_csv, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(out), "--batches", "8",
                              "--batch-size", "4", "--max-length", "16", "--no-update", "--folds", "8",
                              "--rank-estimator", "sign_flip", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["folds"] == 8 and all("sign_flip" in m["grad_ranks"] for m in data["modules"])


def test_cli_sign_flip_without_folds_is_one_line(tiny_bert_dir, tiny_csv, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(out), "--no-update",
                              "--estimator", "sign_flip", "--folds", "0"])
    assert res.exit_code == 2
    assert "sign_flip needs fold means" in res.output and "--folds" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_rows_carry_the_per_direction_pvalues(folded, tmp_path):
    from intrinsic.probes.schema import ProbeReport

    rep, base = folded
    for m in rep.modules:
        p = m.sign_flip_p
        assert p and len(p) >= 1 and all(0 < x <= 1 for x in p)
        kept = 0
        for x in p:  # the rank is the number of leading p-values at or below alpha
            if x > 0.05:
                break
            kept += 1
        assert kept == m.intrinsic_rank
    rep.save(tmp_path)
    assert ProbeReport.load(tmp_path).modules == rep.modules
    assert all(m.sign_flip_p is None for m in base.modules)
    assert all("sign_flip_p" not in row for row in base.to_json()["modules"])  # default probe.json unchanged


def test_folds_refuse_reused_examples(tiny_bert):
    """An example in two folds makes them dependent and the sign-flip test liberal: refuse, naming the options."""
    with pytest.raises(EmptyDatasetError, match=r"has 96 distinct training examples, too few for the sign-flip test's 8 "
                                          r"folds of batches of 16 .128 examples.: lower --batch-size"):
        probe(tiny_bert, _task(n=96), batches=8, batch_size=16, max_length=24, update_steps=None, folds=8)
