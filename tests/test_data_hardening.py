"""Issue 15, data items: distinct probe examples (2), train's column options (4), one-class data (6),
offline hf: data sets (9), what data handling shows and default output names (15).

CLI cases run through Typer's CliRunner on tiny saved models and tiny csv files: exit code, the one-line
message, and nothing half-written left behind.
"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from intrinsic.cli.app import app

runner = CliRunner()
PROBE_FAST = ["--batch-size", "4", "--max-length", "16", "--no-update", "--device", "cpu"]
TRAIN_FAST = ["--steps", "2", "--batch-size", "4", "--max-length", "16", "--device", "cpu", "--placement", "all",
              "--rank", "2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_exit_2(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())  # rich wraps at 80 columns
    for needle in needles:
        assert needle in text, (needle, result.output)


def write_csv(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def labelled_rows(n, fmt="{text},{label}"):
    words = ["movie", "plot", "actor", "scene", "film", "story", "music", "ending"]
    return [fmt.format(text=f"{'good' if i % 2 else 'bad'} {words[i % 8]} {words[(3 * i) % 8]} number {i}",
                       label="pos" if i % 2 else "neg") for i in range(n)]


# ---------------------------------------------------------------- 2: the probe never reuses an example


def test_probe_caps_batches_at_distinct_examples(tiny_bert_dir, tmp_path):
    csv = write_csv(tmp_path / "small.csv", "text,label", labelled_rows(30))  # 24 train rows after the split
    out = tmp_path / "p"
    res = invoke("probe", tiny_bert_dir, csv, "--out", out, "--batches", "32", *PROBE_FAST, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["batches"] == 6  # 24 // 4: every slot a distinct example
    assert data["examples_used"] == 24
    assert any("32 batches" in n and "24" in n for n in data["notes"])
    text = invoke("report", out)
    assert text.exit_code == 0 and "24 distinct examples" in " ".join(text.stdout.split())


def test_probe_refuses_too_few_examples_for_two_batches(tiny_bert_dir, tiny_csv, tmp_path):
    out = tmp_path / "p"
    res = invoke("probe", tiny_bert_dir, tiny_csv, "--out", out, "--max-examples", "5", *PROBE_FAST)
    one_line_exit_2(res, "5 distinct training examples", "--batch-size", "--max-examples")
    assert not (out / "probe.json").exists()


def test_probe_halves_draw_distinct_examples():
    from intrinsic.tasks import example_order

    order = example_order(40, seed=3, batch_size=4, num_batches=10)
    assert len(order) == 40 and len(set(order.tolist())) == 40
    batches = [set(order[i:i + 4].tolist()) for i in range(0, 40, 4)]
    even = set().union(*batches[0::2])
    odd = set().union(*batches[1::2])
    assert not even & odd


def test_probe_default_order_unchanged_with_enough_data():
    """The examples of a run with enough data are the first pass of the seeded permutation, as before."""
    import numpy as np

    from intrinsic.tasks import example_order

    assert example_order(1000, seed=0, batch_size=16, num_batches=32).tolist() == \
        np.random.default_rng(0).permutation(1000)[:512].tolist()


# ---------------------------------------------------------------- 4: train --text-column/--label-column


def test_train_takes_text_and_label_columns(tiny_bert_dir, tmp_path):
    csv = write_csv(tmp_path / "cols.csv", "body,verdict", labelled_rows(40))
    res = invoke("train", tiny_bert_dir, csv, "--out", tmp_path / "r", *TRAIN_FAST, "--text-column", "body",
                 "--label-column", "verdict", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["status"] == "complete"
    missing = invoke("train", tiny_bert_dir, csv, "--out", tmp_path / "r2", *TRAIN_FAST, "--text-column", "txt")
    one_line_exit_2(missing, "'txt'", "body, verdict")
    assert not (tmp_path / "r2" / "run.json").exists()


# ---------------------------------------------------------------- 6: one class


@pytest.mark.parametrize("command", ["train", "probe"])
def test_one_class_is_refused(command, tiny_bert_dir, tmp_path):
    csv = write_csv(tmp_path / "one.csv", "text,label", [f"only good things number {i},pos" for i in range(40)])
    fast = TRAIN_FAST if command == "train" else PROBE_FAST
    res = invoke(command, tiny_bert_dir, csv, "--out", tmp_path / "o", *fast)
    one_line_exit_2(res, "only one class (pos) in the training split", "--label-column")
    assert not (tmp_path / "o" / "run.json").exists() and not (tmp_path / "o" / "probe.json").exists()


def test_one_class_after_subsampling_names_max_examples():
    from intrinsic.errors import EmptyDatasetError
    from intrinsic.tasks import TaskData, check_classes

    data = TaskData("t", "classification", ("neg", "pos"), ("a", "b"), (1, 1), ("c",), (0,))
    with pytest.raises(EmptyDatasetError, match=r"only one class \(pos\) in the training split"):
        check_classes(data)


# ---------------------------------------------------------------- 9: offline hf: data sets fail fast


def test_offline_hf_dataset_fails_fast(monkeypatch, tmp_path):
    import socket

    import datasets

    from intrinsic import models
    from intrinsic.errors import UnknownTaskError
    from intrinsic.tasks import load_task

    def no_network(*_a, **_k):
        raise OSError("network blocked in tests")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(UnknownTaskError) as err:
        load_task("hf:nobody/no-such-dataset")
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert "\n" not in msg and "no-such-dataset" in msg and "offline" in msg and "cache" in msg


# ---------------------------------------------------------------- 15: what data handling shows; output names


def test_dropped_rows_split_and_label_order_are_shown(tmp_path):
    from intrinsic.tasks import load_task

    rows = labelled_rows(40) + ["no label here,", ",pos", "   ,neg"]
    csv = write_csv(tmp_path / "gaps.csv", "text,label", rows)
    data = load_task(str(csv))
    assert data.dropped == 3
    assert "20%" in data.split and "stratified" in data.split
    res = invoke("tasks", csv, "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["labels"] == ["neg", "pos"] and info["dropped"] == 3 and info["split"] == data.split
    assert info["train_size"] + info["test_size"] == 40
    text = " ".join(invoke("tasks", csv).stdout.split())
    assert "0=neg" in text and "1=pos" in text and "3 rows dropped" in text and "20%" in text


def test_probe_report_records_the_data(tiny_bert_dir, tiny_csv, tmp_path):
    res = invoke("probe", tiny_bert_dir, tiny_csv, "--out", tmp_path / "p", "--batches", "2", *PROBE_FAST, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)["data"]
    assert data["labels"] == ["neg", "pos"] and data["dropped"] == 0 and "stratified" in data["split"]


def test_default_output_names_follow_one_rule():
    from intrinsic.results import default_out

    assert str(default_out("minilm", "data/reviews.csv", "probe", 0)) == "runs/minilm-reviews-probe-s0"
    assert str(default_out("minilm", "data/reviews.csv", "all", 3)) == "runs/minilm-reviews-all-s3"
    assert str(default_out("HuggingFaceTB/SmolLM2-135M", "rotten-tomatoes:lm", "q,v", 0)) == \
        "runs/SmolLM2-135M-rotten-tomatoes_lm-q_v-s0"
    for cmd in ("probe", "train"):
        help_text = " ".join(invoke(cmd, "--help").stdout.split())
        assert "runs/MODEL-TASK-" in help_text
