"""Issue 15, items 7, 10, 12 and 13: every command's output path is checked up front (one line, exit 2),
a command that fails early leaves no empty folder behind, messages say what is wrong in the CLI's words,
and the help and terminal output show what a user needs (no `<bool>`, no "None" defaults, `--version`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from intrinsic.cli.app import app

runner = CliRunner()
PROBE_FAST = ["--batches", "2", "--batch-size", "4", "--max-length", "16", "--no-update", "--device", "cpu"]
TRAIN_FAST = ["--steps", "2", "--batch-size", "4", "--max-length", "16", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_exit_2(res, *needles: str) -> str:
    """The error line of a refused command (exit 2, one line, no traceback), checked for `needles`."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    line = " ".join(res.output.split())
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture(scope="module")
def probe_dir(tiny_bert_dir, tiny_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "p"
    res = invoke("probe", tiny_bert_dir, tiny_csv, "--out", out, *PROBE_FAST, "--json")
    assert res.exit_code == 0, res.output
    return out


# ----------------------------------------------------------------------------- 7: unwritable outputs


def test_plan_out_unwritable_or_a_file_is_one_line(probe_dir, tmp_path):
    one_line_exit_2(invoke("plan", probe_dir, "--placement", "all", "--rank", "2", "--out", "/proc/nope"),
                    "/proc/nope", "not writable", "--out")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_exit_2(invoke("plan", probe_dir, "--placement", "all", "--rank", "2", "--out", blocker),
                    "is a file, not a directory", "--out")
    assert blocker.read_text() == "x"


def test_report_into_a_read_only_folder_is_one_line(probe_dir, tmp_path, monkeypatch):
    import shutil
    import tempfile

    copy = tmp_path / "p"
    shutil.copytree(probe_dir, copy)

    def refuse(*args, **kw):  # what a read-only folder answers (chmod is no use when the tests run as root)
        raise PermissionError(13, "Permission denied")

    before = (copy / "report.html").read_bytes()
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    one_line_exit_2(invoke("report", copy, "--format", "html"), "Cannot write", "report.html", "Permission denied")
    assert (copy / "report.html").read_bytes() == before
    assert not [p for p in copy.iterdir() if p.name.endswith(".tmp")]


def test_train_and_probe_out_that_is_a_file(tiny_bert_dir, tiny_csv, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_exit_2(invoke("train", tiny_bert_dir, tiny_csv, "--out", blocker, *TRAIN_FAST),
                    "is a file, not a directory")
    one_line_exit_2(invoke("probe", tiny_bert_dir, tiny_csv, "--out", blocker, *PROBE_FAST),
                    "is a file, not a directory")
    assert blocker.read_text() == "x"


# ----------------------------------------------------------------------------- 10: no empty folders left behind


def test_early_failures_leave_no_empty_output_folder(tiny_bert_dir, tiny_csv, probe_dir, tmp_path):
    one_line_exit_2(invoke("probe", tiny_bert_dir, tiny_csv, "--out", tmp_path / "new" / "probe", *PROBE_FAST,
                           "--layers", "7-9"), "Layer selection '7-9'")
    one_line_exit_2(invoke("train", tiny_bert_dir, tiny_csv, "--out", tmp_path / "new" / "run", *TRAIN_FAST,
                           "--placement", "auto", "--probe", tmp_path / "missing"), "No probe found")
    one_line_exit_2(invoke("train", tiny_bert_dir, tiny_csv, "--out", tmp_path / "new" / "run2", *TRAIN_FAST,
                           "--placement", "all", "--layers", "7"), "Layer selection '7'")
    one_line_exit_2(invoke("plan", probe_dir, "--placement", "all", "--rank", "2", "--layers", "9",
                           "--out", tmp_path / "new" / "plan"))
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    one_line_exit_2(invoke("probe", tiny_bert_dir, tiny_csv, "--out", existing, *PROBE_FAST, "--layers", "7-9"))
    assert existing.is_dir()  # a folder the user made stays


# ----------------------------------------------------------------------------- 12: messages that say what is wrong


def test_reversed_layer_range_says_so(probe_dir):
    one_line_exit_2(invoke("plan", probe_dir, "--placement", "all", "--rank", "2", "--layers", "1-0"),
                    "'1-0' is reversed", "0-1")


def test_messages_name_cli_flags_not_config_fields(tiny_bert_dir, tiny_csv, tmp_path):
    line = one_line_exit_2(invoke("train", tiny_bert_dir, tiny_csv, "--out", tmp_path / "r", "--lr", "-1"), "--lr")
    assert "`lr`" not in line and "TrainConfig" not in line
    line = one_line_exit_2(invoke("probe", tiny_bert_dir, tiny_csv, "--out", tmp_path / "p", "--batches", "1"),
                           "--batches")
    assert "`batches`" not in line
    odd = tmp_path / "odd.csv"
    odd.write_text("blurb,label\n" + "".join(f"word {i},{i % 2}\n" for i in range(40)))
    line = one_line_exit_2(invoke("probe", tiny_bert_dir, odd, "--out", tmp_path / "p2", *PROBE_FAST),
                           "--text-column")
    assert "text_column" not in line


def test_a_failed_run_folder_is_called_failed(tiny_bert_dir, tiny_csv, tmp_path):
    out = tmp_path / "r"
    res = invoke("train", tiny_bert_dir, tiny_csv, "--out", out, *TRAIN_FAST, "--rank", "2", "--json")
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    run.update(status="failed", error="NonFiniteError: loss is nan")
    (out / "run.json").write_text(json.dumps(run))
    line = one_line_exit_2(invoke("train", tiny_bert_dir, tiny_csv, "--out", out, *TRAIN_FAST, "--rank", "2"),
                           "failed run", "--overwrite")
    assert "already holds a run" not in line


# ----------------------------------------------------------------------------- 13: help and terminal


@pytest.mark.parametrize("command", ["probe", "train", "plan", "report", "compare", "modules", "tasks",
                                     "study run", "study report"])
def test_help_shows_no_bool_metavar_and_no_none_value(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    res = runner.invoke(app, [*command.split(), "--help"])
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output
    assert "None" not in res.output  # not a value anyone can type


def test_version():
    from importlib.metadata import version

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"intrinsic {version('intrinsic')}"


def test_probe_and_train_devices_default_to_auto(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    for command in ("probe", "train"):
        line = next(x for x in runner.invoke(app, [command, "--help"]).output.splitlines() if "--device" in x)
        assert "[default: auto]" in line, line


def test_tables_are_not_cut_when_not_a_terminal():
    from intrinsic.cli import common

    long = "model.encoder.layer.11.attention.self.query_key_value_projection"
    with common.console.capture() as cap:  # captured output is not a terminal, like a pipe or a log file
        common.display_table([{"module": long, "role": "qkv", "shape": "2304 x 768", "params": 1_769_472,
                               "note": "fused: q k v blocks of 768 rows each, adapted as one weight"}])
    text = cap.get()
    assert long in text and "adapted as one weight" in " ".join(text.split()) and "…" not in text


def test_probe_timings_include_the_real_load(probe_dir):
    timings = json.loads((probe_dir / "probe.json").read_text())["timings"]
    assert timings["load"] > 0.01, timings


def test_plot_titles_match_their_content(probe_dir, monkeypatch):
    from intrinsic.probes import ProbeReport
    from intrinsic.report import plots

    report = ProbeReport.load(probe_dir)
    figures = []
    monkeypatch.setattr(plots, "png_bytes", lambda fig: figures.append(fig) or b"png")
    plots.spectra_png(report)
    fig = figures[-1]
    assert report.estimator not in fig._suptitle.get_text()
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert any("noise floor" in lab for lab in labels), labels
    plots.heatmap_png(report)
    assert report.estimator in figures[-1].axes[0].get_title()
    assert "growth" not in plots.GROWTH_TITLE.lower() and "step" in plots.GROWTH_TITLE


def test_model_loading_shows_no_transformers_progress_bars(tiny_bert_dir):
    from transformers.utils import logging as hf_logging

    from intrinsic.models import load_model

    hf_logging.enable_progress_bar()
    try:
        load_model(str(tiny_bert_dir), num_labels=2)
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
