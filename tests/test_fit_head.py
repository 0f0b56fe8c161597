"""`fit_head` (the classification head fitted on frozen held-out features, L2 penalty chosen on a held-out
fifth, on a copy; on by default) and the true- vs shuffled-label energy contrast."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.errors import ConfigError
from intrinsic.probes import ProbeSettings, probe
from intrinsic.probes.head import L2_GRID, _fit, _loss_acc, fit_head
from intrinsic.testing import build_tiny_model

from test_probe import FAST, _task

runner = CliRunner()


@pytest.fixture(scope="module")
def fitted(tiny_bert):
    return probe(tiny_bert, _task(), **FAST, fit_head=True)


def _head(model):
    return {k: v.detach().clone() for k, v in model.classifier.state_dict().items()}


def test_fit_head_changes_the_copy_not_the_callers_model(tiny_bert):
    before = _head(tiny_bert.model)
    loaded, record, notes = fit_head(tiny_bert, _task(), ProbeSettings(**FAST, fit_head=True))
    assert loaded.model is not tiny_bert.model and not notes
    after = _head(loaded.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the copy's head was fitted
    assert all(torch.equal(before[k], v) for k, v in _head(tiny_bert.model).items())  # the caller's was not
    assert record["loss_after"] <= record["loss_before"] and record["steps"] >= 1
    assert record["examples"] == 96 - 4 * 8  # held-out: the calibration examples are not used
    grid = dict(record["l2_validation_loss"])  # the penalty with the lowest held-out loss was chosen
    assert set(grid) == set(L2_GRID) and grid[record["l2"]] == min(grid.values())


def _separable(n=200, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def test_head_fit_reaches_the_penalised_optimum():
    """L-BFGS ends at a stationary point of mean CE + lam/2 ||W||^2 (bias not penalised), and a larger
    penalty gives smaller weights; a break that drops or doubles the penalty fails the stationarity check."""
    x, y = _separable()
    norms = []
    for lam in (1e-3, 1e-1):
        head = torch.nn.Linear(x.shape[1], 2)
        params = list(head.parameters())
        _fit(head, params, [p.detach().clone() for p in params], x, y, lam)
        loss = _loss_acc(head, x, y, lam)[0]
        grads = torch.autograd.grad(loss, params)
        assert max(float(g.abs().max()) for g in grads) < 1e-4
        norms.append(float(head.weight.detach().norm()))
        assert _loss_acc(head, x, y, lam)[1] > 0.9  # it learned the rule
    assert norms[1] < norms[0]


def test_fit_head_off_is_the_model_as_given(tiny_bert):
    loaded, record, notes = fit_head(tiny_bert, _task(), ProbeSettings(**FAST, fit_head=False))
    assert loaded is tiny_bert and record is None and notes == []


def test_probe_with_fit_head_records_the_fit_and_a_lower_loss(fitted):
    h = fitted.summary["head_fit"]
    assert h["module"] == "classifier" and h["loss_after"] < h["loss_before"]
    assert h["accuracy_after"] >= h["accuracy_before"]
    assert fitted.settings["fit_head"] is True


def test_label_contrast_equals_the_hand_computation(fitted, tmp_path):
    c = fitted.summary["label_contrast"]
    top = [m for m in fitted.modules if m.block_of is None]
    total = sum(m.noise_norm ** 2 for m in top) / sum(m.grad_norm ** 2 for m in top)
    assert c["total"] == pytest.approx(total, rel=1e-12)
    for kind in {m.kind for m in top}:
        rows = [m for m in top if m.kind == kind]
        want = sum(m.noise_norm ** 2 for m in rows) / sum(m.grad_norm ** 2 for m in rows)
        assert c["by_kind"][kind] == pytest.approx(want, rel=1e-12)
    for m in fitted.modules:
        assert c["modules"][m.name] == pytest.approx(m.noise_norm ** 2 / m.grad_norm ** 2, rel=1e-12)
    # the stored norm agrees with the stored shuffled-label spectrum (full here: max_sv >= min(shape))
    for m in top:
        assert m.noise_norm ** 2 == pytest.approx(sum(s * s for s in m.noise_sv), rel=1e-6)
    # the label-dependent share ||G - G_shuffled||^2 / ||G||^2, against the stored norms and a recomputation
    share = sum(m.label_norm ** 2 for m in top) / sum(m.grad_norm ** 2 for m in top)
    assert c["label_share"] == pytest.approx(share, rel=1e-12)
    for kind in {m.kind for m in top}:
        rows = [m for m in top if m.kind == kind]
        want = sum(m.label_norm ** 2 for m in rows) / sum(m.grad_norm ** 2 for m in rows)
        assert c["label_share_by_kind"][kind] == pytest.approx(want, rel=1e-12)
    fitted.save(tmp_path)
    data = json.loads((tmp_path / "probe.json").read_text())
    assert data["summary"]["label_contrast"]["total"] == pytest.approx(total)
    assert all("noise_norm" in row and "label_norm" in row for row in data["modules"])


def test_fit_head_is_the_default_and_off_records_no_fit(tiny_bert):
    default = probe(tiny_bert, _task(), **{k: v for k, v in FAST.items() if k != "fit_head"})
    off = probe(tiny_bert, _task(), **{**FAST, "fit_head": False})
    assert default.settings["fit_head"] is True and "head_fit" in default.summary
    assert off.settings["fit_head"] is False and "head_fit" not in off.summary
    assert "label_contrast" in off.summary  # the contrast is always reported
    assert default.modules[0].grad_sv != off.modules[0].grad_sv


def test_fit_head_default_skips_a_per_token_head():
    tiny = build_tiny_model("gpt2")
    from intrinsic.tasks import TaskData

    data = TaskData(name="t", kind="classification", train_texts=tuple(f"text {i}" for i in range(64)),
                    train_labels=tuple(i % 2 for i in range(64)), test_texts=(), test_labels=(), labels=("a", "b"))
    loaded, record, notes = fit_head(tiny, data, ProbeSettings(**FAST))
    assert loaded is tiny and record is None and notes == [
        "fit_head: skipped, head 'score' of 'tiny-gpt2' is not a pooled classifier (one logit vector per example)"]
    with pytest.raises(ConfigError, match="fit_head supports pooled classification heads"):
        fit_head(tiny, data, ProbeSettings(**FAST, fit_head=True))


def test_fit_head_is_a_noop_for_lm():
    from intrinsic.tasks import TaskData

    tiny = build_tiny_model("gpt2")
    data = TaskData(name="t", kind="lm", train_texts=("ab",) * 8, train_labels=(), test_texts=(), test_labels=(),
                    labels=())
    loaded, record, notes = fit_head(tiny, data, ProbeSettings(**FAST, fit_head=True))
    assert loaded is tiny and record is None and "no-op" in notes[0]


def test_settings_refuse_a_non_bool_fit_head():
    with pytest.raises(ConfigError, match="`fit_head` must be true or false"):
        ProbeSettings(fit_head="yes")


def test_cli_fit_head(tiny_bert_dir, tiny_csv, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(out), "--batches", "4",
                              "--batch-size", "4", "--max-length", "16", "--no-update", "--fit-head", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["fit_head"] is True
    assert data["summary"]["head_fit"]["loss_after"] < data["summary"]["head_fit"]["loss_before"]
    assert data["summary"]["label_contrast"]["total"] > 0


def test_label_norm_is_the_norm_of_the_difference_of_the_two_mean_gradients(tiny_bert):
    """label_norm = ||G - G_shuffled||_F from the accumulated sums (not, e.g., ||G|| - ||G_shuffled||)."""
    from intrinsic.arch import discover
    from intrinsic.probes.gradient import accumulate_gradients, measure_sums
    from intrinsic.tasks import make_batches

    data = _task()
    refs = discover(tiny_bert.model)[:2]
    real = make_batches(data, tiny_bert.tokenizer, num_batches=4, batch_size=8, max_length=24, seed=0)
    shuf = make_batches(data, tiny_bert.tokenizer, num_batches=4, batch_size=8, max_length=24, seed=0,
                        shuffle_labels=True)
    sums = accumulate_gradients(tiny_bert.model, refs, real, shuf)
    spectra = measure_sums(sums, tokens=100, max_sv=8, seed=0)
    for i, (key, s) in enumerate(spectra.items()):
        G, _, _, Gn = sums.means(i)
        assert s.label_norm == pytest.approx(float(torch.linalg.vector_norm(G - Gn)), rel=1e-6)
        assert s.label_norm != pytest.approx(abs(s.norm - s.noise_norm), rel=1e-3)
