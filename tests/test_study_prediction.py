"""The study's self-check, computed by hand from the files on disk: the predicted energy share of a
cell's placement (sum over adapted modules of the top-`rank` squared singular values of the probe's
mean gradient, over the total gradient energy) and the measured gain (score minus the untrained score,
or minus the trainer's baseline when the untrained model was not scored)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from intrinsic.study.runner import run_study
from intrinsic.study.spec import parse_spec

from test_study_run import study_text


@pytest.fixture(scope="module")
def finished(tiny_bert_dir, tiny_csv, tmp_path_factory):
    text = study_text(tiny_bert_dir, tiny_csv, ["all", "ffn", "auto"], budgets='["all@3"]')
    text = text.replace("[probe]\n", "[probe]\nmax_sv = 64\nactivations = true\n")
    text = text.replace("steps = 2\n", "steps = 40\nlr = 0.01\n")
    out = tmp_path_factory.mktemp("prediction") / "res"
    run_study(parse_spec(text), out)
    return out


def _probe_by_hand(out):
    (probe_dir,) = list((out / "probes").iterdir())
    record = json.loads((probe_dir / "probe.json").read_text())
    with np.load(probe_dir / "spectra.npz") as z:
        sv = {m["name"]: np.asarray(z[f"{m['name']}|grad"], dtype=np.float64)
              for m in record["modules"] if m["block_of"] is None}
    norms = {m["name"]: float(m["grad_norm"]) for m in record["modules"] if m["block_of"] is None}
    return sv, norms


def test_predicted_share_is_top_rank_energy_over_total(finished):
    sv, norms = _probe_by_hand(finished)
    total = sum(n ** 2 for n in norms.values())
    rows = json.loads((finished / "results.json").read_text())["rows"]
    checked = 0
    for row in rows:
        assert row["status"] == "ok", row
        run = json.loads((finished / "cells" / row["id"] / "run.json").read_text())
        entries = run["plan"]["entries"]
        assert any(int(e["rank"]) > 1 for e in entries)  # so sigma_1^2 alone would be a different number
        expected = sum(float((sv[e["name"]][: int(e["rank"])] ** 2).sum()) for e in entries) / total
        assert row["predicted_share"] == pytest.approx(expected, rel=1e-9)
        top1 = sum(float(sv[e["name"]][0] ** 2) for e in entries) / total
        assert abs(row["predicted_share"] - top1) > 1e-6 * expected  # the test can tell rank from sigma_1
        checked += 1
    assert checked == 3


def test_gain_is_score_minus_untrained_or_baseline(finished):
    rows = json.loads((finished / "results.json").read_text())["rows"]
    for row in rows:
        run = json.loads((finished / "cells" / row["id"] / "run.json").read_text())
        base = run["untrained_score"] if run.get("untrained_score") is not None else run["baseline_score"]
        assert row["gain"] == pytest.approx(run["score"] - base, abs=1e-12)
        assert row["score"] == run["score"]
    assert any(abs(r["gain"]) > 1e-9 for r in rows)  # a sign flip changes at least one row


def test_every_predictor_share_of_a_cell_by_hand(finished):
    """CellRow.predicted: the gradient share is the predicted share; activation (EVA ratios, each module weighs 1)
    and params (share of the weights adapted) recomputed from probe.json and the cell's plan; the report shows them."""
    (probe_dir,) = list((finished / "probes").iterdir())
    record = json.loads((probe_dir / "probe.json").read_text())
    mods = {m["name"]: m for m in record["modules"] if m["block_of"] is None}
    with np.load(probe_dir / "spectra.npz") as z:
        eig = {n: np.asarray(z[f"{n}|act"]) for n in mods}
    for row in json.loads((finished / "results.json").read_text())["rows"]:
        entries = json.loads((finished / "cells" / row["id"] / "run.json").read_text())["plan"]["entries"]
        got = row["predicted"]
        assert set(got) == {"gradient", "activation", "params"}  # what this probe measured (no update probe)
        assert got["gradient"] == pytest.approx(row["predicted_share"], rel=1e-12)
        act = sum(eig[e["name"]][: int(e["rank"])].sum() / mods[e["name"]]["act_var"] for e in entries) / len(mods)
        assert got["activation"] == pytest.approx(act, rel=1e-9)
        params = sum(mods[e["name"]]["params"] for e in entries) / sum(m["params"] for m in mods.values())
        assert got["params"] == pytest.approx(params, rel=1e-12)
    from intrinsic.study.report import write_report

    files, _, _ = write_report(finished, dest=finished.parent / "report")
    md = open(files.markdown).read()
    assert "Which probe statistic predicts the gain?" in md and "| all placements | activation | 3 |" in md
