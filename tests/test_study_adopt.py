"""`study adopt`: the finished cells and probes two study definitions share (same ids) are copied, nothing else;
what the target already has is kept; a stale temporary copy is replaced; bad input is one line; --json parses."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.study.adopt import adopt
from intrinsic.study.rows import finished_run, probe_key
from intrinsic.study.runner import Hooks, run_study
from intrinsic.study.spec import parse_spec
from test_study_run import study_text


def test_adopt_copies_shared_cells_and_probes_only(tiny_bert_dir, tiny_csv, tmp_path):
    a = parse_spec(study_text(tiny_bert_dir, tiny_csv, ["all", "attention", "auto"], name="a"))
    b = parse_spec(study_text(tiny_bert_dir, tiny_csv, ["all", "ffn", "auto"], name="b"))
    src, dst = tmp_path / "a", tmp_path / "b"
    run_study(a, src)
    shared = {c.id for c in a.cells()} & {c.id for c in b.cells()}
    assert len(shared) == 2  # all and auto at all@2; attention and ffn differ
    (dst / "cells").mkdir(parents=True)
    stale = dst / "cells" / f".{sorted(shared)[0]}.adopting"  # an adopt interrupted mid-copy
    stale.mkdir()
    got = adopt(b, src, dst)
    assert set(got.cells) == shared and got.kept == () and got.missing == len(b.cells()) - 2
    assert got.probes == (probe_key(b, 0),) and (dst / "probes" / probe_key(b, 0) / "probe.json").is_file()
    for cid in shared:
        assert finished_run(dst / "cells" / cid).score == finished_run(src / "cells" / cid).score
    assert not stale.exists() and sorted(p.name for p in (dst / "cells").iterdir()) == sorted(shared)
    assert json.loads((dst / "study.json").read_text())["name"] == "b"
    again = adopt(b, src, dst)  # what is there is kept, not copied again
    assert again.cells == () and set(again.kept) == shared and again.probes == ()


def test_cli_adopt_json_and_bad_input(tiny_bert_dir, tiny_csv, tmp_path):
    text = study_text(tiny_bert_dir, tiny_csv, ["all"], name="c", probe=False)
    (tmp_path / "c.toml").write_text(text)
    src = tmp_path / "src"
    run_study(parse_spec(text), src)
    runner = CliRunner()
    res = runner.invoke(app, ["study", "adopt", str(tmp_path / "c.toml"), "--from", str(src), "--out",
                              str(tmp_path / "dst"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert len(data["cells"]) == 1 and data["probes"] == [] and data["missing"] == 0 and data["study"] == "c"
    for args, msg in ((["--from", str(tmp_path / "nowhere")], "not a study results directory"),
                      (["--from", str(src), "--out", str(src)], "same directory")):
        res = runner.invoke(app, ["study", "adopt", str(tmp_path / "c.toml"), *args])
        assert res.exit_code == 2 and msg in " ".join(res.output.split()) and "Traceback" not in res.output


def test_adopt_keeps_test_runs_across_a_wider_lr_grid(tiny_bert_dir, tiny_csv, tmp_path):
    """Widening an lr grid changes the test cells' ids, not their runs: `adopt` copies them (regridded), they are
    pending until the wider sweep chooses, count when it chooses their lr, and only an arm whose choice moved is
    retrained."""
    from intrinsic.study.rows import load_results

    def spec(lrs):
        text = study_text(tiny_bert_dir, tiny_csv, ["all", "ffn"], name="g", probe=False)
        return parse_spec(text.replace("seeds = [0]\n", f"seeds = [0, 1]\nlrs = {lrs}\nlr_seeds = [0]\n"))

    narrow, wide = spec("[1e-3, 1e-2]"), spec("[1e-4, 1e-3, 1e-2]")
    src, dst = tmp_path / "narrow", tmp_path / "wide"
    run_study(narrow, src)
    old_tests = {(c.arm, c.seed): c for c in narrow.cells() if c.phase == "test"}
    every_new = {(c.arm, c.seed): c for c in wide.cells() if c.phase == "test"}
    assert set(old_tests) == set(every_new) and all(old_tests[k].id != every_new[k].id for k in old_tests)

    got = adopt(wide, src, dst)
    assert set(got.regridded) == {c.id for c in every_new.values()}
    assert len(got.cells) == 4 and got.missing == 2  # the four old sweep cells; the two 1e-4 sweep cells
    for key, c in every_new.items():  # each from the run of its own arm and seed
        rec = json.loads((dst / "cells" / c.id / "cell.json").read_text())
        assert rec["regridded_from"] == old_tests[key].id and rec["cell"]["lrs"] == [1e-4, 1e-3, 1e-2]
    new_tests = {arm: c for (arm, seed), c in every_new.items() if seed == 0}
    elsewhere = {c.id for c in spec("[3e-4, 3e-5]").cells() if c.phase == "test"}
    assert adopt(spec("[3e-4, 3e-5]"), src, tmp_path / "other").regridded == ()  # no earlier run at these lrs
    assert not any((tmp_path / "other" / "cells" / cid).exists() for cid in elsewhere)
    rows = {r.id: r for r in load_results(dst)[1]}
    for c in new_tests.values():  # the wider sweep has not run: not counted yet, and says why
        assert rows[c.id].status == "pending" and "sweep finished" in rows[c.id].error

    # the wider sweep: 1e-4 loses for `all` (its choice stands) and wins for `ffn` (its test run is stale)
    sweeps = {c.arm: c for c in wide.cells() if c.phase != "test" and c.lr == 1e-4}
    for arm, score in ((a, -1e9 if new_tests[a].strategy == "all" else 1e9) for a in sweeps):
        donor = next(c for c in wide.cells() if c.arm == arm and c.phase != "test" and c.lr == 1e-3)
        cell_dir = dst / "cells" / sweeps[arm].id
        shutil.copytree(dst / "cells" / donor.id, cell_dir)
        run = json.loads((cell_dir / "run.json").read_text())
        run["score"], run["config"]["lr"] = score, 1e-4
        (cell_dir / "run.json").write_text(json.dumps(run))
    rows = {r.id: r for r in load_results(dst)[1]}
    keep = next(c for c in new_tests.values() if c.strategy == "all")
    moved = next(c for c in new_tests.values() if c.strategy == "ffn")
    assert rows[keep.id].status == "ok"
    assert rows[keep.id].lr == finished_run(src / "cells" / old_tests[keep.arm, 0].id).config["lr"]
    assert rows[moved.id].status == "pending" and "chooses 0.0001" in rows[moved.id].error

    ran = []
    run_study(wide, dst, hooks=Hooks(on_cell_start=lambda c, i, n: ran.append(c.id)))
    assert sorted(ran) == sorted(c.id for c in every_new.values() if c.arm == moved.arm)  # only the moved arm
    rows = {r.id: r for r in load_results(dst)[1]}
    assert rows[moved.id].status == "ok" and rows[moved.id].lr == 1e-4 and rows[keep.id].status == "ok"
