"""benchmarks/bench_eval_memory.py runs both arms on a tiny model (CPU), their losses agree, its JSON parses,
and bad arguments exit 2 in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_eval_memory.py"


def test_both_arms_agree_and_the_json_parses(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH), "--model", "tiny", "--batch", "4", "--tokens", "32",
                          "--scored", "0.5", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    got = json.loads((tmp_path / "eval-memory-tiny-4x32-cpu.json").read_text())
    assert [r["arm"] for r in got["rows"]] == ["logits", "labelled"]
    assert got["loss_rel_diff"] < 1e-5 and got["rows"][0]["count"] == got["rows"][1]["count"] == 4 * 16
    assert all(r["seconds"] > 0 for r in got["rows"]) and "memory" in out.stdout


def test_bad_arguments_exit_2():
    out = subprocess.run([sys.executable, str(BENCH), "--scored", "0"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "--scored" in out.stderr and "Traceback" not in out.stderr
