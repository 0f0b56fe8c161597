"""benchmarks/bench_oversubscription.py runs end to end on tiny matrices and writes the JSON it reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_oversubscription", ROOT / "benchmarks" / "bench_oversubscription.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_oversubscription"] = bench
spec.loader.exec_module(bench)


def test_writes_one_row_per_thread_count(tmp_path, capsys):
    assert bench.main(["--procs", "2", "--threads", "0,1", "--reps", "1", "--shape", "16,32",
                       "--out", str(tmp_path)]) == 0
    d = json.loads((tmp_path / "oversubscription-cpu.json").read_text())
    assert d["procs"] == 2 and [r["default"] for r in d["rows"]] == [True, False]
    one = d["rows"][1]
    assert one["threads"] == 1 and len(one["shared_runs_s"]) == 2
    assert one["ideal_s"] == pytest.approx(max(one["alone_s"], 2 * one["alone_s"] / d["cores"]))
    default = d["rows"][0]  # all cores per process: 2 processes need twice the time of one at best
    assert default["threads"] == d["cores"] and default["ideal_s"] == pytest.approx(2 * default["alone_s"])
    assert one["slowdown_vs_ideal"] == pytest.approx(sum(one["shared_runs_s"]) / 2 / one["ideal_s"])
    assert "slowdown" in capsys.readouterr().out


def test_bad_arguments_exit_2(tmp_path):
    assert bench.main(["--threads", "x", "--out", str(tmp_path)]) == 2
    assert bench.main(["--procs", "0", "--out", str(tmp_path)]) == 2
    assert bench.main(["--shape", "3", "--out", str(tmp_path)]) == 2
