"""ProbeReport save/load round trip, schema checks, summaries, plots and Markdown/HTML rendering."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from intrinsic.errors import ConfigError
from intrinsic.testing import build_tiny_model
from intrinsic.probes import probe
from intrinsic.probes.schema import JSON_TOP_SV, ProbeReport, rank_grid
from intrinsic.tasks import TaskData

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> ProbeReport:
    """A probe of a tiny GPT-2 (fused c_attn -> role-block rows) with the update probe and checkpoints."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: avoid OpenMP wake-ups on a busy box
    try:
        rng = random.Random(0)
        texts = tuple("".join(rng.choice("abcdz") for _ in range(12)) for _ in range(64))
        labels = tuple(int("z" in t) for t in texts)
        data = TaskData("tiny", "classification", ("no", "yes"), texts, labels, (), ())
        return probe(build_tiny_model("gpt2"), data, batches=4, batch_size=8, max_length=16, update_steps=4,
                     update_checkpoints=(2,), max_sv=8)
    finally:
        torch.set_num_threads(before)


def test_round_trip(report, tmp_path):
    report.save(tmp_path)
    loaded = ProbeReport.load(tmp_path)
    assert loaded == report
    assert ProbeReport.load(tmp_path / "probe.json") == report
    assert any(m.block_of for m in loaded.modules) and all(m.update_checkpoints for m in loaded.modules)


def test_json_is_truncated_and_npz_holds_everything(report, tmp_path):
    report.save(tmp_path)
    data = json.loads((tmp_path / "probe.json").read_text())
    assert data["schema_version"] == 1 and data["spectra"]["json_top_sv"] == JSON_TOP_SV
    assert all(len(m["grad_sv"]) <= JSON_TOP_SV for m in data["modules"])
    with np.load(tmp_path / "spectra.npz") as z:
        name = report.modules[0].name
        assert {f"{name}|grad", f"{name}|noise", f"{name}|even", f"{name}|odd", f"{name}|update", f"{name}|update@2"} <= set(z.files)
        np.testing.assert_array_equal(z[f"{name}|grad"], report.modules[0].grad_sv)
    (tmp_path / "spectra.npz").unlink()  # probe.json alone still loads (top values only)
    alone = ProbeReport.load(tmp_path)
    assert [m.name for m in alone.modules] == [m.name for m in report.modules]
    assert alone.modules[0].grad_sv == report.modules[0].grad_sv[:JSON_TOP_SV]


def test_load_rejects_bad_files(report, tmp_path):
    with pytest.raises(ConfigError, match="No probe found"):
        ProbeReport.load(tmp_path / "missing")
    (tmp_path / "probe.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match="not a probe report"):
        ProbeReport.load(tmp_path)
    report.save(tmp_path)
    data = json.loads((tmp_path / "probe.json").read_text())
    (tmp_path / "probe.json").write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ConfigError, match="schema version 99"):
        ProbeReport.load(tmp_path)


def test_summary(report):
    s = report.summary
    assert set(s["by_kind"]) == {"attention", "ffn"}
    assert sum(g["energy_share"] for g in s["by_kind"].values()) == pytest.approx(1.0)
    assert sum(g["energy_share"] for g in s["by_layer"].values()) == pytest.approx(1.0)
    assert set(s["by_role"]) == {"q", "k", "v", "o", "up", "down"}  # fused qkv shows as its blocks
    shares = [t["energy_share"] for t in s["top_energy"]]
    assert shares == sorted(shares, reverse=True)
    layers, roles, grid = rank_grid(report)
    assert layers == [0, 1] and roles == ["q", "k", "v", "o", "up", "down"] and grid.shape == (2, 6)
    assert report.gains().keys() == {m.name for m in report.top_level()}


def test_plots_and_rendered_reports(report, tmp_path):
    from intrinsic.report.plots import write_plots
    from intrinsic.report.probe import write_report

    paths = write_plots(report, tmp_path)
    assert {p.name for p in paths} == {"rank_heatmap.png", "rank_vs_layer.png", "spectra.png", "update_growth.png"}
    assert all(p.read_bytes().startswith(PNG) for p in paths)
    md = write_report(report, tmp_path, "md").read_text()
    assert "![rank_heatmap](rank_heatmap.png)" in md and "Attention vs FFN" in md and "| layer | q |" in md
    html = write_report(report, tmp_path, "html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html
    with pytest.raises(ConfigError, match="format"):
        write_report(report, tmp_path, "pdf")


def test_render_draws_missing_plots(report, tmp_path):
    from intrinsic.report.probe import write_report

    write_report(report, tmp_path, "md")
    assert (tmp_path / "rank_heatmap.png").read_bytes().startswith(PNG)
