"""Running studies on a tiny model: resume after a simulated kill (no lost or duplicated rows), a half-written
cell redone, failures and infeasible budgets recorded, a foreign results dir refused, and a tiny
end-to-end study through the CLI (run, then report)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from intrinsic.errors import ConfigError
from intrinsic.study.runner import Hooks, run_study
from intrinsic.study.spec import parse_spec


def study_text(model_dir, csv, strategies, budgets='["all@2"]', name="tiny", probe=True) -> str:
    probe_table = ("[probe]\nbatches = 2\nbatch_size = 8\nmax_length = 24\nupdate_steps = 0\n" if probe
                   else "[probe]\nenabled = false\n")
    return f"""
name = "{name}"
question = "Which placement wins on a tiny model?"
model = "{model_dir}"
task = "{csv}"
seeds = [0]
device = "cpu"
[train]
steps = 2
batch_size = 8
max_length = 24
max_eval_examples = 16
save_adapter = false
{probe_table}
[[grid]]
name = "budget"
strategies = {json.dumps(strategies)}
budgets = {budgets}
"""


def rows_of(out):
    return json.loads((out / "results.json").read_text())["rows"]


class Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C: not an Exception, so the runner must not swallow it."""


def test_resume_after_kill_and_partial_dir(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    import intrinsic.training as train_mod

    spec = parse_spec(study_text(tiny_bert_dir, tiny_csv, ["all", "ffn", "q", "attention"],
                                 budgets='["all@1"]', probe=False))
    cells = spec.cells()
    assert [c.label for c in cells] == ["all r=1", "ffn budget=all@1", "q budget=all@1", "attention budget=all@1"]
    out = tmp_path / "res"

    real_train = train_mod.train

    def flaky(loaded, task, plan, config, out_dir, **kw):
        if plan.strategy == "q":
            raise RuntimeError("simulated crash inside training")
        return real_train(loaded, task, plan, config, out_dir, **kw)

    monkeypatch.setattr(train_mod, "train", flaky)

    def kill_after_q(cell, row, i, n):
        assert row.id == cell.id
        if cell.strategy == "q":
            raise Killed()

    with pytest.raises(Killed):
        run_study(spec, out, hooks=Hooks(on_cell_end=kill_after_q))
    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "pending"]
    assert "simulated crash" in rows[2]["error"]
    first_run = (out / "cells" / cells[0].id / "run.json").stat().st_mtime_ns

    # the kill left cell 4 half-written: a directory with no run.json
    partial = out / "cells" / cells[3].id
    partial.mkdir(parents=True)
    (partial / "junk.tmp").write_text("half")

    monkeypatch.setattr(train_mod, "train", real_train)
    summary = run_study(spec, out)
    assert (summary.ran, summary.skipped) == (2, 2)  # failed and half-written cells redone, finished kept
    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert len({r["id"] for r in rows}) == len(rows) == len(cells)
    assert not (partial / "junk.tmp").exists()
    assert (out / "cells" / cells[0].id / "run.json").stat().st_mtime_ns == first_run  # not retrained

    again = run_study(spec, out)  # nothing left to do: no duplicates either
    assert (again.ran, again.skipped) == (0, 4) and rows_of(out) == rows

    other = parse_spec(study_text(tiny_bert_dir, tiny_csv, ["all"], budgets='["all@1"]', probe=False).replace(
        "steps = 2", "steps = 3"))
    with pytest.raises(ConfigError, match="different study definition"):
        run_study(other, out)


def test_end_to_end_cli_with_auto_probe_and_infeasible(tiny_bert_dir, tiny_csv, tmp_path):
    from intrinsic.cli.app import app

    toml = tmp_path / "tiny.toml"
    toml.write_text(study_text(tiny_bert_dir, tiny_csv, ["all", "auto", "attention"], budgets='["all@1", "50"]'))
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["study", "run", str(toml), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)["summary"]
    # all@1 group: all, auto, attention; budget 50: below any rank-1 adapter (64 params), infeasible for all three
    assert summary["cells"] == 6 and summary["counts"] == {"ok": 3, "infeasible": 3}
    rows = rows_of(out)
    auto = next(r for r in rows if r["label"] == "auto budget=all@1")
    assert auto["status"] == "ok" and 0 < auto["predicted_share"] <= 1
    probes = list((out / "probes").iterdir())
    assert len(probes) == 1 and (probes[0] / "probe.json").is_file()  # one probe per (model, task, seed)
    assert all(r["predicted_share"] is not None for r in rows if r["status"] == "ok")
    assert any("too small" in (r["error"] or "") or "below the minimum" in (r["error"] or "") for r in rows)

    res = runner.invoke(app, ["study", "report", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["analysis"]["counts"] == {"ok": 3, "infeasible": 3}
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert "Comparison group budget=all@1" in (out / "report.md").read_text()

    res = runner.invoke(app, ["study", "run", str(toml), "--out", str(out), "--only", "zzzz"])
    assert res.exit_code == 2 and "No cell id starts with" in res.output


def test_cli_refuses_unknown_key(tmp_path):
    from intrinsic.cli.app import app

    toml = tmp_path / "bad.toml"
    toml.write_text('name = "x"\nquestion = "?"\nmodel = "m"\ntask = "t"\nstrategy = "all"\n')
    res = CliRunner().invoke(app, ["study", "run", str(toml)])
    assert res.exit_code == 2 and "bad.toml:5: unknown key 'strategy'" in res.output


def test_shards_partition_the_grid_and_together_finish_it(tiny_bert_dir, tiny_csv, tmp_path):
    """Shards K/N (one process each on a GPU host) cover every cell exactly once; probes first."""
    from intrinsic.study.rows import load_results
    from intrinsic.study.runner import parse_shard, run_probes, shard_cells

    spec = parse_spec(study_text(tiny_bert_dir, tiny_csv, ["all", "ffn", "auto"], budgets='["all@1"]'))
    cells = spec.cells()
    parts = [shard_cells(cells, (k, 2)) for k in range(2)]
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in cells)
    out = tmp_path / "res"
    assert run_probes(spec, out) == [0]
    assert any((out / "probes").iterdir())
    for k in range(2):
        run_study(spec, out, shard=(k, 2))
    _, rows = load_results(out)
    assert sorted(r.id for r in rows) == sorted(c.id for c in cells)
    assert all(r.status == "ok" for r in rows)
    assert {r.timing for r in rows} == {"shared"}  # shards are meant to share a device: their times are marked
    with pytest.raises(ConfigError, match="K/N"):
        parse_shard("2/2")
