"""CLI smoke tests for `intrinsic probe` and `intrinsic report` on a tiny saved model and a tiny csv task."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from intrinsic.cli.app import app

runner = CliRunner()
FAST = ["--batches", "2", "--batch-size", "4", "--max-length", "16"]




@pytest.fixture(scope="module")
def probed(tiny_bert_dir, tiny_csv, tmp_path_factory):
    """One full CLI probe (gradient + update with checkpoints), shared by the tests below."""
    out = tmp_path_factory.mktemp("probe") / "run"
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(out), *FAST,
                              "--update-steps", "4", "--update-checkpoints", "2", "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_probe_json_and_files(probed):
    out, data = probed
    assert data["schema_version"] == 1 and data["task"].endswith("tiny.csv")
    assert len(data["modules"]) == 12 and data["tokens"] > 0
    assert data["settings"]["update_checkpoints"] == [2, 4] and data["settings"]["rank_estimator"] == "half_difference"
    assert all(m["update_ranks"] for m in data["modules"])
    names = {p.name for p in out.iterdir()}
    assert {"probe.json", "spectra.npz", "rank_heatmap.png", "rank_vs_layer.png", "spectra.png", "report.md",
            "report.html"} <= names
    assert json.loads((out / "probe.json").read_text()) == data


def test_report_rerenders_without_recomputing(probed):
    out, data = probed
    res = runner.invoke(app, ["report", str(out), "--format", "html"])
    assert res.exit_code == 0, res.output
    assert "Attention vs FFN" in res.stdout and "Intrinsic rank per layer" in " ".join(res.stdout.split())
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 3
    res = runner.invoke(app, ["report", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == data


def test_probe_table_subset_no_update(tiny_bert_dir, tiny_csv, tmp_path):
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(tmp_path / "p"), *FAST,
                              "--no-update", "--roles", "q,v", "--layers", "1", "--estimator", "split_half"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())  # rich wraps lines at 80 columns here
    assert "Intrinsic rank per layer and role (split_half)" in text and "update probe: skipped" in text
    data = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert {(m["layer"], m["role"]) for m in data["modules"]} == {(1, "q"), (1, "v")}
    assert not (tmp_path / "p" / "update_growth.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batches", "1"], "--batches"),
        (["--update-steps", "0"], "--update-steps"),
        (["--roles", "gate"], "names no module"),
        (["--roles", "qq"], "roles"),
        (["--layers", "7"], "outside"),
        (["--estimator", "nope"], "--estimator must be one of"),
        (["--update-checkpoints", "a,b"], "comma-separated"),
        (["--topk", "16"], "--topk"),
        (["--exact", "--topk", "64"], "exclude each other"),
        (["--topk", "64", "--estimator", "gavish_donoho"], "whole spectrum"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny_bert_dir, tiny_csv, tmp_path, args, message):
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(tmp_path / "o"), *FAST, *args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()  # nothing written, no empty folder left


def test_probe_topk_and_example_energy_json(tiny_bert_dir, tiny_csv, tmp_path):
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(tmp_path / "p"), *FAST,
                              "--no-update", "--topk", "64", "--example-energy", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["spectra"] == "topk" and data["settings"]["topk"] == 64
    assert data["settings"]["example_energy"] is True
    assert abs(sum(m["example_energy_share"] for m in data["modules"] if m["block_of"] is None) - 1) < 1e-6
    assert "example_energy_share" in data["summary"]["by_kind"]["ffn"]


def test_existing_and_unwritable_out_dir(probed, tiny_bert_dir, tiny_csv, tmp_path):
    out, _ = probed
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(out), *FAST])
    assert res.exit_code == 2 and "--overwrite" in " ".join(res.output.split())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["probe", str(tiny_bert_dir), str(tiny_csv), "--out", str(blocker / "sub"), *FAST])
    assert res.exit_code == 2 and "not writable" in " ".join(res.output.split())


def test_report_on_missing_dir(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "No probe found" in " ".join(res.output.split())
