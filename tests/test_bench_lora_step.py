"""The LoRA step benchmark runs end to end on the CPU (--shape tiny) and writes the JSON the lead reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_lora_step_tiny_writes_json(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_lora_step.py"), "--shape", "tiny", "--steps", "2",
           "--warmup", "1", "--repeats", "2", "--arms", "plain,peft,peft+graph,fast", "--profile", "peft", "--name", "t", "--results", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"PATH": "", "OMP_NUM_THREADS": "1",
                                                                                "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "t" / "bench_lora_step.json").read_text())
    assert [r["arm"] for r in data["rows"]] == ["plain", "peft", "fast"]
    assert data["failed"] == {"peft+graph": "RuntimeError: peft+graph needs CUDA"}  # the CUDA-graph arm, on a CPU
    assert "peft" in data["profiles"]
    assert data["batch"] == 2 and data["seq"] == 32 and data["matmul_peak_tflops"] > 0
    assert data["repeats"] == 2
    for r in data["rows"]:
        assert len(r["step_times"]) == 3 and r["s_per_step"] > 0
        assert len(r["s_per_step_runs"]) == 2 and r["s_per_step"] == min(r["s_per_step_runs"])  # median of 2: lower
        assert r["tokens_per_s"] == pytest.approx(64 / r["s_per_step"])
        assert 0 < r["mfu"] < 1
    lora = {r["arm"]: r["flops_per_token"] for r in data["rows"]}
    # LoRA trains no base weight: fewer model FLOPs per token than the plain arm's full weight gradients
    assert lora["peft"] == lora["fast"] < lora["plain"]
    assert "intrinsic train --fast" in proc.stdout
