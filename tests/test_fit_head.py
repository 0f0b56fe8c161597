"""Opt-in `fit_head` (the classification head fitted on frozen held-out features, on a copy) and the
true- vs shuffled-label energy contrast; without fit_head the probe's output is exactly as before."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.errors import ConfigError
from intrinsic.probes import ProbeSettings, probe
from intrinsic.probes.head import fit_head
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
    assert record["loss_after"] < record["loss_before"] and record["steps"] >= 1
    # it learned the labels, not just their prior: far below the balanced labels' entropy log 2 = 0.69
    assert record["loss_after"] < 0.2 and record["accuracy_after"] > 0.9
    assert record["examples"] == 96 - 4 * 8  # held-out: the calibration examples are not used


def test_fit_head_off_is_the_model_as_given(tiny_bert):
    loaded, record, notes = fit_head(tiny_bert, _task(), ProbeSettings(**FAST))
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
    fitted.save(tmp_path)
    data = json.loads((tmp_path / "probe.json").read_text())
    assert data["summary"]["label_contrast"]["total"] == pytest.approx(total)
    assert all("noise_norm" in row for row in data["modules"])


def test_fit_head_off_leaves_probe_json_unchanged(tiny_bert):
    a = probe(tiny_bert, _task(), **FAST)
    b = probe(tiny_bert, _task(), **FAST, fit_head=False)
    strip = lambda r: {**r.to_json(), "timings": None}  # noqa: E731
    assert strip(a) == strip(b)
    data = a.to_json()
    assert "fit_head" not in data["settings"] and "fit_head" not in data["timings"]
    assert "head_fit" not in data["summary"] and "label_contrast" not in data["summary"]
    assert all("noise_norm" not in row for row in data["modules"])


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
