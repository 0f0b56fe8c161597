"""CLI smoke tests for `modules` and `tasks`, parsing their --json, and the one-line error paths."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from intrinsic.cli.app import app

runner = CliRunner()


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, intrinsic.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "intrinsic.cli", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - t < 5  # generous on a loaded CI box; ~0.4 s measured


def test_display_table_keeps_exact_counts(capsys):
    """The terminal writes counts with thousands separators (the study report abbreviates them)."""
    from intrinsic.cli.common import display_table

    display_table([{"n": 74496, "x": 0.123456, "ok": True, "gone": None}], title="t")
    out = capsys.readouterr().out
    assert "74,496" in out and "0.1235" in out and "True" in out and " - " in out


def test_modules_json_on_local_tiny_model(tiny_bert_dir):
    res = runner.invoke(app, ["modules", str(tiny_bert_dir), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model_type"] == "bert" and data["num_layers"] == 2
    assert data["num_modules"] == 12
    roles = [m["role"] for m in data["modules"] if m["layer"] == 0]
    assert roles == ["q", "k", "v", "o", "up", "down"]
    up = next(m for m in data["modules"] if m["role"] == "up")
    assert up["shape"] == [64, 32] and up["params"] == 64 * 32


def test_modules_table(tiny_bert_dir):
    res = runner.invoke(app, ["modules", str(tiny_bert_dir)])
    assert res.exit_code == 0 and "12 modules in 2" in res.stdout and "probed weights" in res.stdout


def test_modules_unknown_model_is_one_line_error():
    res = runner.invoke(app, ["modules", "minilmm"])
    assert res.exit_code == 2
    assert "Did you mean: minilm" in res.output and "Traceback" not in res.output


def test_modules_override_pattern_matching_nothing(tiny_bert_dir):
    res = runner.invoke(app, ["modules", str(tiny_bert_dir), "--modules", r"nothing\.here=q"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_tasks_json():
    res = runner.invoke(app, ["tasks", "--json"])
    assert res.exit_code == 0, res.output
    tasks = {t["name"]: t for t in json.loads(res.stdout)}
    assert tasks["rotten-tomatoes"]["labels"] == ["negative", "positive"]
    assert tasks["rotten-tomatoes"]["train_size"] + tasks["rotten-tomatoes"]["test_size"] == 12_752
    assert len(tasks["20newsgroups"]["labels"]) == 20


@pytest.mark.slow
def test_modules_minilm_json():
    res = runner.invoke(app, ["modules", "minilm", "--json"])
    data = json.loads(res.stdout)
    assert data["num_modules"] == 36
    shapes = {(m["role"], tuple(m["shape"])) for m in data["modules"]}
    assert shapes == {("q", (384, 384)), ("k", (384, 384)), ("v", (384, 384)), ("o", (384, 384)),
                      ("up", (1536, 384)), ("down", (384, 1536))}
