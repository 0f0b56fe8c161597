"""A study is checked before anything is written (issue 15, items 5, 10, 12): every [train], [probe] and
[data] value against the type of the field it sets, the model and task names; a study whose cells fail
exits 1 with "N of M cells failed"; an early failure leaves no results folder; a folder holding no finished
cell is not bound to its (broken) definition; TOML section names survive the CLI's markup; a quick
study's guidelines claim nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intrinsic.errors import ConfigError
from intrinsic.study.spec import parse_spec

BASE = """\
name = "t"
question = "Which placement wins?"
model = "minilm"
task = "rotten-tomatoes"
seeds = [0]

[train]
steps = 5
batch_size = 4

[probe]
batches = 2

[[grid]]
name = "equal-rank"
strategies = ["all", "full"]
ranks = [4]

[quick]
[quick.train]
steps = 2
"""


@pytest.mark.parametrize("edit, needle, line", [
    (("steps = 5", 'steps = "sixty"'), "`steps` must be an integer, got 'sixty'", 8),
    (("steps = 5", 'lr = "fast"'), "`lr` must be a number, got 'fast'", 8),
    (("steps = 5", 'save_adapter = "no"'), "`save_adapter` must be true or false, got 'no'", 8),
    (("steps = 5", "warmup_ratio = 1.5"), "`warmup_ratio` must be in [0, 1)", 8),
    (("steps = 5", "steps = 0"), "`steps` must be a positive integer", 8),
    (("steps = 2", 'steps = "x"'), "[quick.train]: `steps` must be an integer", 21),  # checked even without --quick
    (("batches = 2", 'batches = "two"'), "[probe]: `batches` must be an integer", 12),
    (("batches = 2", "batches = 1"), "`batches` must be an integer >= 2", 12),
    (("batches = 2", 'roles = ["q", "vv"]'), "`roles` must name roles", 12),
    (("[quick.train]", "[quick.probe]\nbatch_size.x = 2\n[quick.train]"), "[quick.probe]: `batch_size` must be", 21),
    (("[probe]", "[data]\ntext_column = 3\n[probe]"), "[data]: `text_column` must be a string, got 3", 12),
    (("[probe]", "[train_overrides.full]\nlr = -1\n[probe]"), "[train_overrides.full]: `lr` must be > 0", 12),
    (('seeds = [0]', 'seeds = [0]\ndtype = "float33"'), "'dtype' must be one of float32", 6),
    (('seeds = [0]', 'seeds = [0]\ndevice = "gpu"'), "'device' must be one of cpu", 6),
])
def test_values_are_checked_against_the_fields_they_set(edit, needle, line):
    text = BASE.replace(*edit, 1)
    assert text != BASE
    with pytest.raises(ConfigError) as e:
        parse_spec(text, source="s.toml")
    msg = str(e.value)
    assert needle in msg, msg
    assert msg.startswith(f"s.toml:{line}:"), msg
    assert "\n" not in msg


def test_valid_values_still_parse():
    spec = parse_spec(BASE.replace("steps = 5", "steps = 5\nlr = 1\nwarmup_ratio = 0\nsave_adapter = false")
                      .replace("batches = 2", 'batches = 2\nroles = "q"\nlayers = [0, 1]\nupdate_steps = 0'))
    assert spec.train["lr"] == 1 and spec.probe_settings["update_steps"] is None


def _study(tmp_path, model, task, extra="", train="steps = 2"):
    toml = tmp_path / "s.toml"
    toml.write_text(f"""
name = "tiny"
question = "Does it run?"
model = "{model}"
task = "{task}"
seeds = [0]
device = "cpu"
{extra}
[train]
{train}
batch_size = 8
max_length = 24
max_eval_examples = 16
save_adapter = false
[probe]
enabled = false
[[grid]]
name = "b"
strategies = ["all", "ffn"]
ranks = [1]
""")
    return toml


def _run(args):
    from intrinsic.cli.app import app

    return CliRunner().invoke(app, ["study", "run", *map(str, args)])


def _one_line_error(res, needle):
    assert res.exit_code == 2, res.output
    assert needle in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_cli_refuses_a_bad_value_before_writing_anything(tiny_bert_dir, tiny_csv, tmp_path):
    out = tmp_path / "out"
    res = _run([_study(tmp_path, tiny_bert_dir, tiny_csv, train='steps = "sixty"'), "--out", out])
    _one_line_error(res, "`steps` must be an integer, got 'sixty'")
    assert not out.exists()


@pytest.mark.parametrize("model, task, extra, needle", [
    ("minilmm", "TINY", "", "Unknown model 'minilmm'"),
    ("MODEL", "rotten-tomatos", "", "Did you mean: rotten-tomatoes"),
    ("MODEL", "TINY", '[data]\ntext_column = "body"', "text column 'body' not in"),
    ("MODEL", "/nowhere/t.csv", "", "No such data file"),
])
def test_cli_refuses_unknown_model_or_task_before_writing_anything(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch,
                                                                   model, task, extra, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an unknown hub id is answered from the local cache, fast
    model, task = model.replace("MODEL", str(tiny_bert_dir)), task.replace("TINY", str(tiny_csv))
    out = tmp_path / "out"
    _one_line_error(_run([_study(tmp_path, model, task, extra), "--out", out]), needle)
    _one_line_error(_run([_study(tmp_path, model, task, extra), "--out", out, "--probes-only"]), needle)
    assert not out.exists()


def test_toml_section_names_survive_the_cli(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(BASE + "[train.sub]\nx = 1\n")
    _one_line_error(_run([toml]), "unknown key 'sub' in [train]")


def _failing_train(monkeypatch):
    import intrinsic.training as train_mod

    def boom(*a, **k):
        raise RuntimeError("simulated crash inside training")

    monkeypatch.setattr(train_mod, "train", boom)


def test_cli_exits_1_when_cells_fail_and_a_fixed_rerun_needs_no_force(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _failing_train(monkeypatch)
    res = _run([_study(tmp_path, tiny_bert_dir, tiny_csv), "--out", out])
    assert res.exit_code == 1, res.output
    assert "2 of 2 cells failed" in res.output and "simulated crash" in res.output
    assert "Traceback" not in res.output
    res = _run([_study(tmp_path, tiny_bert_dir, tiny_csv), "--out", out, "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["summary"]["counts"] == {"failed": 2}
    assert "simulated crash" in res.stderr  # each failed cell on stderr also with --json (the GPU pool reads it)

    monkeypatch.undo()
    # the fixed definition reuses the folder: it holds no finished cell, so nothing would be lost
    res = _run([_study(tmp_path, tiny_bert_dir, tiny_csv, train="steps = 1"), "--out", out, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["summary"]["counts"] == {"ok": 2}
    # a folder with finished cells still refuses another definition
    res = _run([_study(tmp_path, tiny_bert_dir, tiny_csv, train="steps = 3"), "--out", out])
    assert res.exit_code == 2 and "different study definition" in res.output and "Traceback" not in res.output


class Killed(BaseException):
    """Stands in for Ctrl-C or a kill."""


def test_early_failure_leaves_no_results_folder(tiny_bert_dir, tiny_csv, tmp_path):
    from intrinsic.study.runner import Hooks, run_study

    spec = parse_spec(_study(tmp_path, tiny_bert_dir, tiny_csv).read_text())
    out = tmp_path / "new" / "out"

    def kill(cell, i, n):
        raise Killed()

    with pytest.raises(Killed):
        run_study(spec, out, hooks=Hooks(on_cell_start=kill))
    assert not out.exists()
    # a folder that existed before is left alone
    out.mkdir(parents=True)
    with pytest.raises(Killed):
        run_study(spec, out, hooks=Hooks(on_cell_start=kill))
    assert out.is_dir()


def test_quick_study_guidelines_claim_nothing():
    from intrinsic.study.analysis import analyze
    from intrinsic.study.guidelines import SUPPORTED, generate
    from intrinsic.study.rows import read_results

    fixture = Path(__file__).parent / "data" / "study_fixture"
    study, rows = json.loads((fixture / "study.json").read_text()), read_results(fixture / "results.json")
    assert any(g.strength == SUPPORTED for g in generate(analyze(rows, study)))
    quick = generate(analyze(rows, {**study, "quick": True}))
    assert quick and not any(g.strength in (SUPPORTED, "negative") for g in quick)
    assert all("supported" not in g.strength for g in quick)
