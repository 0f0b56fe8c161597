"""CPU smoke test of `benchmarks/bench_probe.py --shape` (spectra modes side by side): it runs and its JSON parses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_bench_probe_tiny_shape_writes_its_json(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_probe

    out = tmp_path / "modes.json"
    monkeypatch.setattr(sys, "argv", ["bench_probe.py", "--shape", "llama-tiny", "--batches", "2", "--topk", "64",
                                      "--sketch", "16", "--json", str(out)])
    bench_probe.main()
    res = json.loads(out.read_text())
    assert res["name"] == "llama-tiny" and res["batches"] == 2 and res["modules"] == 14
    assert res["tokens"] == 2 * 2 * 32
    for mode in ("exact", "topk"):
        m = res[mode]
        assert m["probe_s"] == res["accumulate_s"] + m["spectra_s"] + m["estimate_s"]
        assert m["probe_over_plain"] > 0
    assert 0.0 <= res["agreement"]["designated"] <= 1.0 and res["agreement"]["rows"] == 14
    assert res["agreement"]["top8_rel_err_max"] < 1e-3
    assert len(res["designated_ranks"]["exact"]) == len(res["designated_ranks"]["topk"]) == 14
    assert abs(sum(res["example_energy_share_by_kind"].values()) - 1.0) < 1e-6
    sk = res["sketch"]  # the --sketch arm: its time against plain, and its agreement with exact mode
    assert sk["k"] == 16 and sk["probe_s"] == sk["accumulate_s"] + sk["spectra_s"] + sk["estimate_s"] and sk["state_gb"] > 0
    assert sk["agreement"]["rows"] == 14 and len(sk["agreement"]["ranks"]["sketch"]) == 14
    assert 0 <= sk["agreement"]["energy_share_abs_err_max"] < 0.1
    assert "agreement: designated ranks" in (printed := capsys.readouterr().out)
    assert "sketch vs exact: designated ranks" in printed
