"""Learning rate per arm chosen on validation (`selection.select_lrs`, lr-sweep cells): the choice reads
validation rows only (poisoned test scores change nothing; a test row is refused), the test cells
train with the chosen lr, results.json records it, and resume never retrains a finished sweep."""

from __future__ import annotations

import json
import math

import pytest

from intrinsic.study.grid import SWEEP
from intrinsic.study.rows import CellRow, read_results
from intrinsic.study.runner import run_study
from intrinsic.study.selection import select_lrs, sweep_rows
from intrinsic.study.spec import parse_spec

from test_study_run import study_text


def _row(i, lr, score, status="ok", phase=SWEEP, split="validation", arm="a1"):
    return CellRow(id=f"r{i}", config_id=f"k{lr}", label=f"all r=2 lr={lr:g} (validation)", variant="all",
                   strategy="all", seed=i % 2, phase=phase, arm=arm, lr_grid=(1e-4, 1e-3, 1e-2), lr=lr,
                   eval_split=split, status=status, score=score if status == "ok" else None)


def test_select_lrs_by_hand():
    rows = [_row(0, 1e-4, 0.60), _row(1, 1e-4, 0.70), _row(2, 1e-3, 0.66), _row(3, 1e-3, 0.68),
            _row(4, 1e-2, 0.90, status="failed"), _row(5, 1e-2, 0.50)]
    c = select_lrs(rows)["a1"]
    assert c.val_scores == pytest.approx((0.65, 0.67, 0.50)) and c.runs == (2, 2, 1) and c.failed == 1
    assert c.chosen == 1e-3 and c.label == "all r=2"
    tie = select_lrs([_row(0, 1e-4, 0.7), _row(1, 1e-3, 0.7), _row(2, 1e-2, 0.1)])["a1"]
    assert tie.chosen == 1e-4  # ties: the first lr of the grid
    waiting = select_lrs(rows[:4] + [_row(6, 1e-2, None, status="pending")])["a1"]
    assert waiting.pending == 1 and waiting.chosen is None  # no choice while the sweep is unfinished
    assert select_lrs(rows[:4])["a1"].pending == 1  # an lr without any row is unfinished too
    with pytest.raises(ValueError, match="validation"):  # a test-scored row is refused outright
        select_lrs(rows + [_row(7, 1e-2, 0.99, phase="test", split="test")])
    with pytest.raises(ValueError, match="validation"):
        select_lrs(rows + [_row(8, 1e-2, 0.99, split="test")])


def _spec(model, csv):
    text = study_text(model, csv, ["all", "ffn"], budgets='["all@2"]', probe=False).replace(
        "seeds = [0]", "seeds = [0, 1]\nlrs = [1e-4, 5e-2]").replace("steps = 2", "steps = 4")
    return parse_spec(text, source="lr.toml")


def test_lr_sweep_runs_chooses_on_validation_and_resumes(tiny_bert_dir, tiny_csv, tmp_path):
    spec = _spec(tiny_bert_dir, tiny_csv)
    cells = spec.cells()
    sweep = [c for c in cells if c.phase == SWEEP]
    assert len(sweep) == 2 * 2 * 1 and cells[: len(sweep)] == sweep  # 2 arms x 2 lrs x 1 lr seed, first
    assert all(c.train["eval_split"] == "validation" and c.seed == 0 for c in sweep)
    out = tmp_path / "lr"
    s1 = run_study(spec, out)
    assert s1.counts == {"ok": len(cells)}
    data = json.loads((out / "results.json").read_text())
    rows = read_results(out)
    for choice in data["lr_selection"]:
        mine = [r for r in rows if r.phase == SWEEP and r.arm == choice["arm"]]
        best = max(mine, key=lambda r: (r.score, -choice["lrs"].index(r.lr)))  # by hand: max score, first on tie
        assert choice["chosen"] == best.lr
        tests = [r for r in rows if r.phase == "test" and r.arm == choice["arm"]]
        assert len(tests) == 2 and all(r.lr == best.lr and r.eval_split == "test" for r in tests)
    # poison every test score: the choice must not move
    for r in rows:
        if r.phase == "test":
            p = out / "cells" / r.id / "run.json"
            run = json.loads(p.read_text())
            run["score"] = 1e9 if r.lr == data["lr_selection"][0]["lrs"][-1] else float("nan")
            p.write_text(json.dumps(run))
    before = {c["arm"]: c["chosen"] for c in data["lr_selection"]}
    after = {a: c.chosen for a, c in select_lrs(sweep_rows(read_results(out))).items()}
    assert after == before
    # resume: nothing retrained; a removed sweep cell alone is redone (the test cells keep their lr)
    import shutil

    shutil.rmtree(out / "cells" / sweep[0].id)
    s2 = run_study(spec, out)
    assert s2.ran == 1 and s2.counts == {"ok": len(cells)}
    assert run_study(spec, out).ran == 0


def test_spec_without_lrs_keeps_its_cells(tiny_bert_dir, tiny_csv):
    text = study_text(tiny_bert_dir, tiny_csv, ["all", "ffn"])
    plain = parse_spec(text).cells()
    assert all(c.phase == "test" and not c.lrs and c.lr is None for c in plain)
    with_lrs = parse_spec(text.replace('seeds = [0]', 'seeds = [0]\nlrs = [1e-3]')).cells()
    assert {c.id for c in plain}.isdisjoint(c.id for c in with_lrs)  # the lr grid is part of a cell's identity
    assert {c.arm for c in plain} == {c.arm for c in with_lrs} == {c.config_id for c in plain}
    over = parse_spec(text + '[train_overrides.ffn]\nlrs = [3e-4, 3e-3]\n').cells()
    assert {c.lr for c in over if c.strategy == "ffn" and c.phase == SWEEP} == {3e-4, 3e-3}
    assert not [c for c in over if c.strategy == "all" and c.phase == SWEEP]
    assert math.isclose(min(c.lr for c in over if c.phase == SWEEP), 3e-4)


@pytest.mark.parametrize("bad,match", [("lrs = [0.0]", "learning rates > 0"), ('lrs = ["x"]', "learning rates > 0"),
                                       ("lrs = [1e-3, 1e-3]", "twice"), ("lr_seeds = [-1]", "integers >= 0")])
def test_bad_lr_grid_is_one_clear_error(tiny_bert_dir, tiny_csv, bad, match):
    from intrinsic.errors import ConfigError

    text = study_text(tiny_bert_dir, tiny_csv, ["all"]).replace("seeds = [0]", f"seeds = [0]\n{bad}")
    with pytest.raises(ConfigError, match=match) as e:
        parse_spec(text, source="s.toml")
    assert str(e.value).startswith("s.toml:")


class InProcessEngine:
    """A real engine (study/engine.py's interface) that runs its cells one after another in this process,
    through the same `run_cell` as every engine: the seam between the runner's lr phases and an engine."""

    def run_cells(self, spec, out, todo, hooks):
        from intrinsic.study.rows import rebuild_results
        from intrinsic.study.runner import _Seeds, run_cell

        seeds = _Seeds(spec, out, lambda _m: None)
        for cell in todo:
            run_cell(cell, spec, seeds, out)
        return rebuild_results(spec, out)


def test_an_engine_runs_the_sweep_first_then_the_test_cells_at_the_chosen_lr(tiny_bert_dir, tiny_csv, tmp_path):
    spec = _spec(tiny_bert_dir, tiny_csv)
    local = run_study(spec, tmp_path / "local")
    engine = run_study(spec, tmp_path / "engine", engine=InProcessEngine())
    assert engine.counts == local.counts == {"ok": len(spec.cells())} and engine.ran == len(spec.cells())
    key = lambda r: (r.id, r.phase, r.lr, r.score)  # noqa: E731
    assert sorted(map(key, read_results(tmp_path / "engine"))) == sorted(map(key, read_results(tmp_path / "local")))
    again = run_study(spec, tmp_path / "engine", engine=InProcessEngine())
    assert again.ran == 0 and again.skipped == len(spec.cells())


def test_a_completion_study_with_an_lr_grid_runs_on_a_tiny_causal_lm(tmp_path):
    """A prompt/completion study (columns named in [data]) on a tiny Llama: lr chosen on validation per arm,
    every row scored by completion log-loss with exact match and the forgetting figure."""
    from intrinsic.testing import build_tiny_model

    model_dir = tmp_path / "tiny-llama"
    tiny = build_tiny_model("llama", task_kind="completion")
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    qa = tmp_path / "qa.csv"
    qa.write_text("q,a\n" + "".join(f"what is {i} plus one?,{i + 1}\n" for i in range(60)))
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("text,label\n" + "".join(f"some other text number {i},{i % 2}\n" for i in range(40)))
    text = study_text(model_dir, qa, ["all", "ffn"], budgets='["all@2"]', probe=False).replace(
        "seeds = [0]", "seeds = [0]\nlrs = [1e-4, 5e-2]").replace(
        "save_adapter = false", f'save_adapter = false\nforgetting_corpus = "{corpus}"').replace(
        "[train]", '[data]\nprompt_column = "q"\ncompletion_column = "a"\n[train]')
    spec = parse_spec(text, source="gen.toml")
    out = tmp_path / "gen"
    summary = run_study(spec, out)
    assert summary.counts == {"ok": len(spec.cells())} == {"ok": 2 * 2 + 2}
    rows = read_results(out)
    assert {r.eval_split for r in rows if r.phase == SWEEP} == {"validation"}
    for r in rows:
        run = json.loads((out / "cells" / r.id / "run.json").read_text())
        assert math.isclose(r.score, -run["metrics"]["loss"])  # completion log-loss, higher is better
        assert r.exact_match is not None and 0.0 <= r.exact_match <= 1.0 and r.forgetting is not None
    chosen = {c["arm"]: c["chosen"] for c in json.loads((out / "results.json").read_text())["lr_selection"]}
    tests = [r for r in rows if r.phase == "test"]
    assert len(chosen) == 2 and {r.strategy for r in tests} == {"all", "ffn"}
    assert all(r.lr == chosen[r.arm] for r in tests)
    # the report shows the mean exact match and forgetting of each placement's test runs
    from intrinsic.study.report import write_report

    _, analysis, _ = write_report(out)
    table = (out / "report.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| placement | seeds"))
    assert "| exact_match |" in header and "| forgetting |" in header
    for c in analysis.configs:
        mine = [r for r in tests if r.label == c.label]
        assert math.isclose(c.forgetting.mean, sum(r.forgetting for r in mine) / len(mine))
        assert math.isclose(c.exact_match.mean, sum(r.exact_match for r in mine) / len(mine))
