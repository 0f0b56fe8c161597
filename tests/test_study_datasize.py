"""The data-size axis of a study grid (`[[grid]] train_examples`, `epochs`; issue 13): the cells of a size train on
that many examples (one pass: the tokens the trainer saw are those of the cut subsample, counted by hand), steps
follow epochs x examples / batch, the size is in labels, groups and results.json, bad sizes are one line with exit
2, specs without the axis keep their ids, the analysis compares LoRA with full fine-tuning per size (the rank where
LoRA falls behind, by hand), and the packaged SmolLM2 studies list and run --quick on a tiny Llama."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intrinsic.study.rows import CellRow, read_results
from intrinsic.study.runner import run_study, study_record
from intrinsic.study.spec import load_spec, parse_spec, spec_from_record

from test_study_run import study_text

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SIZES = '\ntrain_examples = [40, "full"]\nepochs = 1\n'


def sized_text(model_dir, csv, sizes: str = SIZES) -> str:
    """all at rank 2 and full, at 40 examples and the whole split; one pass (epochs = 1), batch 8, no truncation."""
    text = study_text(model_dir, csv, ["all", "full"], budgets='["all@2"]', probe=False)
    return text.replace("max_length = 24", "max_length = 64").replace('budgets = ["all@2"]', "ranks = [2]") + sizes


def test_axis_cells_labels_groups_and_ids(tiny_bert_dir, tiny_csv):
    plain = parse_spec(sized_text(tiny_bert_dir, tiny_csv, sizes=""))
    spec = parse_spec(sized_text(tiny_bert_dir, tiny_csv))
    cells = {c.label: c for c in spec.cells()}
    assert sorted(cells) == ["all r=2 n=40", "all r=2 n=full", "full n=40", "full n=full"]
    assert cells["all r=2 n=40"].groups == ("rank=2 n=40",) and cells["full n=full"].groups == ("rank=2 n=full",)
    assert cells["all r=2 n=40"].train["max_examples"] == 40 and "max_examples" not in cells["all r=2 n=full"].train
    assert all("steps" not in c.train and c.epochs == 1.0 for c in cells.values())  # counted at run time
    assert {c.id for c in plain.cells()}.isdisjoint(c.id for c in cells.values())  # epochs is part of the identity
    # without epochs, "full" is the plain cell (same id): the axis enters no hash where it changes nothing
    fixed = parse_spec(sized_text(tiny_bert_dir, tiny_csv, sizes='\ntrain_examples = [40, "full"]\n'))
    by_label = {c.label: c for c in fixed.cells()}
    assert by_label["all r=2 n=full"].id == next(c.id for c in plain.cells() if c.strategy == "all")
    assert by_label["all r=2 n=40"].train["steps"] == 2  # fixed steps: [train] steps
    # the study record keeps the axis (results dirs are re-read from it) and is unchanged without it
    assert spec_from_record(json.loads(json.dumps(study_record(spec)))).cells() == spec.cells()
    assert all("train_examples" not in b and "epochs" not in b for b in study_record(plain)["spec"]["grid"])


def test_axis_cuts_the_training_data_and_counts_steps(tiny_bert_dir, tiny_csv, tmp_path):
    """One pass over 40 examples trains on exactly the 40 of the cut (their tokens, counted by hand); the whole split
    takes ceil(n / 8) steps; the report compares LoRA with full fine-tuning per size."""
    from intrinsic.tasks import load_task, subsample
    from intrinsic.tasks.registry import TRAIN_STREAM
    from intrinsic.testing import tiny_tokenizer

    text = sized_text(tiny_bert_dir, tiny_csv).replace("[train]", 'metrics = ["score"]\n[train]')
    spec = parse_spec(text.replace("[probe]", "[train_overrides.all]\nlrs = [1e-3, 3e-3]\n[probe]"), source="s.toml")
    out = tmp_path / "sized"
    assert run_study(spec, out).counts == {"ok": len(spec.cells())}
    task = load_task(str(tiny_csv))
    n_full = len(task.train_texts)
    tok = tiny_tokenizer()

    def tokens(texts):
        return sum(len(tok(t, truncation=True, max_length=64)["input_ids"]) for t in texts)

    rows = {r.label: r for r in read_results(out)}
    for seed_rows in (rows["all r=2 n=40"], rows["full n=40"]):
        cut = subsample(task.train_texts, task.train_labels, 40, seed=0, stream=TRAIN_STREAM)[0]
        run = json.loads((out / "cells" / seed_rows.id / "run.json").read_text())
        assert seed_rows.train_examples == 40 and seed_rows.steps == run["steps"] == 5  # 40 / 8
        assert run["config"]["max_examples"] == 40 and run["train_tokens"] == tokens(cut)
    for label in ("all r=2 n=full", "full n=full"):
        run = json.loads((out / "cells" / rows[label].id / "run.json").read_text())
        assert rows[label].train_examples == "full" and run["steps"] == math.ceil(n_full / 8)
        assert n_full % 8 == 0 and run["train_tokens"] == tokens(task.train_texts)  # exactly one pass
    sweeps = [r for r in rows.values() if r.phase == "lr-sweep"]
    assert len(sweeps) == 4 and all(r.eval_split == "validation" for r in sweeps)
    for r in sweeps:  # the arm's sweep takes the steps of its test cells
        test = next(t for t in rows.values() if t.arm == r.arm and t.phase == "test")
        assert r.steps == test.steps and r.train_examples == test.train_examples
    data = json.loads((out / "results.json").read_text())
    assert {r["train_examples"] for r in data["rows"]} == {40, "full"}

    from intrinsic.study.report import write_report

    files, a, gl = write_report(out)
    analysis = json.loads(Path(files.analysis_json).read_text())
    got = {(r["size"], r["label"]) for r in analysis["data_size"]["rows"]}
    assert got == {("40", "all r=2 n=40"), ("full", "all r=2 n=full")}
    assert all(r["verdict"] == "too few seeds" for r in analysis["data_size"]["rows"])  # one seed
    assert [b["tested"] for b in analysis["data_size"]["falls_behind"]] == [[], []]
    assert "n=40, all: no paired test against full fine-tuning" in " ".join(g.text for g in gl)
    md = Path(files.markdown).read_text()
    assert "LoRA vs full fine-tuning per data size" in md and "Comparison group rank=2 n=40" in md


@pytest.mark.parametrize(("sizes", "needle"), [
    ("\ntrain_examples = [0]\n", "`train_examples` must be a non-empty list of training-example counts >= 1"),
    ("\ntrain_examples = [-5]\n", "counts >= 1"),
    ("\ntrain_examples = []\n", "non-empty list"),
    ('\ntrain_examples = ["all"]\n', 'or "full"'),
    ("\ntrain_examples = [40, 40]\n", "lists a size twice"),
    ("\ntrain_examples = [40]\nepochs = 0\n", "`epochs` must be a number > 0"),
    ("\nepochs = 2\n", "`epochs` scales the steps with `train_examples`"),
    ("\ntrain_examples = [100000]\n", "train_examples 100000 is more than the 128 training examples"),
])
def test_bad_sizes_are_one_line_exit_2(tiny_bert_dir, tiny_csv, tmp_path, sizes, needle):
    from intrinsic.cli.app import app

    toml = tmp_path / "s.toml"
    toml.write_text(sized_text(tiny_bert_dir, tiny_csv, sizes=sizes))
    res = CliRunner().invoke(app, ["study", "run", str(toml), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert needle in line and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert f"{toml}:" in line and not (tmp_path / "o").exists()  # names the file and line; nothing written


def _row(label, strategy, rank, size, seed, score):
    groups = (f"rank={rank} n={size}",) if rank else tuple(f"rank={r} n={size}" for r in (1, 4))  # as expand()
    return CellRow(id=f"{label}/{seed}", config_id=label, label=label, variant=strategy, strategy=strategy,
                   rank=rank, seed=seed, groups=groups, status="ok", score=score, train_examples=size)


def test_lora_falls_behind_full_by_hand():
    """Small data: every rank within noise of full. All data: rank 1 clearly behind, rank 4 not. The
    comparisons against full join the Holm family; where LoRA falls behind is read from them."""
    from intrinsic.study.analysis import analyze
    from intrinsic.study.datasize import data_size_section
    from intrinsic.study.guidelines import generate
    from intrinsic.study.stats import holm, paired_ttest

    noise = [0.002, -0.001, 0.003, -0.002, 0.0]  # full fine-tuning around 0.8
    d = [0.004, -0.001, 0.005, 0.002, -0.002]  # LoRA - full: effect ~0.55 sd (p ~0.3; few seeds_needed, fast)
    c = [0.003, 0.004, -0.002, 0.006, -0.001]
    rows = []
    for size, gap1, d1 in (("40", 0.0, c), ("full", -0.1, d)):
        for s in range(5):
            rows += [_row(f"full n={size}", "full", None, size, s, 0.8 + noise[s]),
                     _row(f"all r=1 n={size}", "all", 1, size, s, 0.8 + noise[s] + gap1 + d1[s]),
                     _row(f"all r=4 n={size}", "all", 4, size, s, 0.8 + noise[s] + d[s])]
    a = analyze(rows, {"name": "t", "metrics": ["score"]})
    vs_full = [c for c in a.comparisons if c.group.endswith(" vs full")]
    assert len(vs_full) == 4 and {c.reference for c in vs_full} == {"full n=40", "full n=full"}
    # by hand: paired t of LoRA - full per (size, rank), Holm over the 4 distinct pairs (full against all@r in the
    # rank groups is the same test as all@r against full: counted once)
    assert len(a.comparisons) == 8 and {c.family for c in a.comparisons} == {4}
    scores = {(r.label, r.seed): r.score for r in rows}
    ps = {c.label: paired_ttest([scores[(c.label, s)] for s in range(5)],
                                [scores[(c.reference, s)] for s in range(5)]).p for c in vs_full}
    assert {c.label: c.p_holm for c in vs_full} == pytest.approx(dict(zip(ps, holm(list(ps.values())))))
    s = data_size_section(a)
    assert s.sizes == ("40", "full")
    behind = {b.size: b for b in s.falls_behind}
    assert behind["40"].behind_up_to is None and behind["40"].worse_at == () and behind["40"].tested == (1, 4)
    assert behind["full"].worse_at == (1,) and behind["full"].behind_up_to == 1 and behind["full"].catches_up_at == 4
    row = next(r for r in s.rows if r.label == "all r=1 n=full")
    assert row.diff == pytest.approx(-0.1 + sum(d) / 5)
    texts = [g.text for g in generate(a) if g.topic == "data size"]
    assert any("n=full, all: significantly behind full fine-tuning up to rank 1" in t for t in texts)
    assert any("n=40: none; n=full: 1; it grows with the data" in t for t in texts)


SMOLLM2 = {  # study: (cells, quick cells, needs a probe)
    "smollm2-budgets-lm": (13 * 5 + 13 * 3, 5, True),  # 4 LoRA arms x 3 budgets + full
    "smollm2-weight-types": (14 * 5 + 14 * 3, 5, True),
    "smollm2-rank-data": (15 * 5 + 15 * 4, 6, False),  # lr grids of 4 (one step past the other studies')
    "smollm2-lr-edge": (4 * 5 + 4 * 4, 2, False),  # all at 3 budgets + full, lr grids of 4
    "smollm2-layer-bands": (9 * 5 + 9 * 3, 6, True),
}


@pytest.mark.parametrize("name", sorted(SMOLLM2))
def test_smollm2_studies_list(name):
    from intrinsic.cli.app import app

    spec, quick = load_spec(STUDIES / f"{name}.toml"), load_spec(STUDIES / f"{name}.toml", quick=True)
    cells, quick_cells, probe = SMOLLM2[name]
    assert (len(spec.cells()), len(quick.cells())) == (cells, quick_cells) and spec.seeds == (0, 1, 2, 3, 4)
    assert spec.probe_enabled == probe and spec.train["forgetting_corpus"] == "bbc-news"
    tests = [c for c in spec.cells() if c.phase == "test"]
    grid = 4 if name in ("smollm2-rank-data", "smollm2-lr-edge") else 3
    assert all(len(c.lrs) == grid for c in tests)  # every arm's lr chosen on validation
    res = CliRunner().invoke(app, ["study", "run", name, "--list", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["cells"]) == cells


def test_rank_data_quick_runs_on_a_tiny_llama(tmp_path, tiny_csv):
    """The packaged rank x data-size study, --quick, with its model and task swapped for a tiny Llama and a local
    csv read as causal LM: every cell trains and the sizes set the steps (the report is tested above)."""
    from intrinsic.testing import build_tiny_model

    model_dir = tmp_path / "tiny-llama"
    tiny = build_tiny_model("llama", task_kind="lm")
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    text = (STUDIES / "smollm2-rank-data.toml").read_text()
    text = text.replace('model = "smollm2"', f'model = "{model_dir}"').replace(
        'task = "rotten-tomatoes:lm"', f'task = "{tiny_csv}:lm"').replace('dtype = "float32"', 'dtype = "float32"\ndevice = "cpu"')
    toml = tmp_path / "rank-data.toml"
    toml.write_text(text)
    from intrinsic.cli.app import app

    out = tmp_path / "out"
    probes = CliRunner().invoke(app, ["study", "run", str(toml), "--quick", "--out", str(out), "--probes-only", "--json"])
    assert probes.exit_code == 0 and json.loads(probes.output)["probed_seeds"] == []  # no arm needs a probe
    res = CliRunner().invoke(app, ["study", "run", str(toml), "--quick", "--out", str(out), "--json", "--no-report"])
    assert res.exit_code == 0, res.output
    rows = {r.label: r for r in read_results(out)}
    assert set(rows) == {"all r=1 n=16", "all r=4 n=16", "all r=1 n=full", "all r=4 n=full", "full n=16", "full n=full"}
    assert all(r.status == "ok" for r in rows.values())
    assert rows["all r=1 n=16"].steps == 4 and rows["full n=full"].steps == 12  # 16 / 4 and 48 / 4, one pass


@pytest.mark.parametrize("name", ["placement-all8", "smollm2-placement-lm"])
def test_committed_results_keep_resuming(name):
    """The committed results directories still match their definitions: every cell id of results.json is a cell
    of the packaged study (placement-all8 also has its definition hash), so a rerun resumes them."""
    results = STUDIES / "results" / name
    spec = load_spec(STUDIES / f"{name}.toml")
    ids = {r["id"] for r in json.loads((results / "results.json").read_text())["rows"]}
    assert ids and ids <= {c.id for c in spec.cells()}
    if name == "placement-all8":
        assert json.loads((results / "study.json").read_text())["definition_hash"] == spec.definition_hash
