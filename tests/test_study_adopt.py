"""`study adopt`: the finished cells and probes two study definitions share (same ids) are copied, nothing else;
what the target already has is kept; a stale temporary copy is replaced; bad input is one line; --json parses."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.study.adopt import adopt
from intrinsic.study.rows import finished_run, probe_key
from intrinsic.study.runner import run_study
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
