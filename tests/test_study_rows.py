"""Typed study rows (`intrinsic.study.rows`): a CellRow from a finished, full, failed, infeasible and
pending cell directory, the predicted share and the gain against hand computations, the stored record
(key order of results.json schema 1), and results files of a newer schema refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from intrinsic.errors import ConfigError
from intrinsic.placement import Plan, PlanEntry
from intrinsic.results import to_dict, write_json
from intrinsic.study.grid import Cell
from intrinsic.study.rows import (RESULTS_SCHEMA, ROW_METRICS, CellRow, ProbeEnergy, cell_row, finished_run,
                                  load_results, read_results, rebuild_results)
from intrinsic.study.runner import study_record
from intrinsic.study.spec import parse_spec
from intrinsic.training import RunResult

# results.json schema 1 as written before rows were typed: the keys of a finished row, in this order
OK_KEYS = ["id", "config_id", "label", "variant", "strategy", "rank", "budget", "layers", "seed", "groups", "blocks",
           "phase", "arm", "lr_grid", "lr", "eval_split", "status", "error", "score", "baseline_score", "baseline_kind", "untrained_score", "trainable_params",
           "lora_params", "trainable_pct", "peak_memory_mb", "memory_kind", "train_time_s", "time_per_step_s",
           "tokens_per_s", "adapter_bytes", "gain", "rank_min", "rank_max", "modules", "plan_params",
           "predicted_share", "timing", "exact_match", "forgetting"]
UNFINISHED_KEYS = OK_KEYS[:18]

CELL = Cell(id="c1", config_id="k1", strategy="auto", rank=None, budget="all@4", layers=None, seed=3,
            groups=("budget=all@4",), blocks=("budget",))
ENTRIES = (("m.a", 3), ("m.b", 5), ("m.c", 2), ("m.d", 3))  # (module, rank): min 2, max 5, neither first nor
# last, and a repeated rank


def _plan() -> Plan:
    entries = tuple(PlanEntry(name, layer=i, kind="ffn", role="up", shape=(8, 4), rank=r, alpha=2.0 * r)
                    for i, (name, r) in enumerate(ENTRIES))
    return Plan("auto", entries, budget=200, params=sum(e.params for e in entries), base_params=1000, rslora=False)


def _run(plan: Plan | None, *, status="complete", error=None, score=0.8, untrained=None, baseline=0.55) -> RunResult:
    return RunResult(
        schema_version=1, status=status, error=error, model="tiny", model_type="bert", task="tiny.csv",
        task_kind="classification", placement="full" if plan is None else plan.strategy,
        plan=None if plan is None else to_dict(plan), config={"steps": 2}, env={}, score=score,
        metrics={"accuracy": score}, best_score=score, best_step=2, baseline_score=baseline, baseline_kind="majority",
        untrained_score=untrained, base_params=1000, trainable_params=218, lora_params=216, head_params=2,
        trainable_pct=17.0, adapter_bytes=4096, adapter_dir=None, steps=2, train_time_s=1.5, time_per_step_s=0.75,
        train_tokens=300, tokens_per_s=200.0, eval_time_s=0.1, peak_memory_mb=12.5, memory_kind="rss")


class _Energy(ProbeEnergy):
    """ProbeEnergy with planted spectra instead of a probe on disk."""

    def __init__(self, sv: dict[str, np.ndarray], total: float):
        self._cache = {CELL.seed: ({k: v ** 2 for k, v in sv.items()}, total)}
        self._reports, self._needs = {CELL.seed: None}, {}  # no probe report: no per-predictor shares


SV = {"m.a": np.array([4.0, 2.0, 1.0, 0.5]), "m.b": np.array([3.0, 3.0, 1.0, 1.0, 1.0, 0.5]),
      "m.c": np.array([2.0, 1.5]), "m.d": np.array([1.0, 1.0, 1.0, 1.0]), "m.unused": np.array([9.0])}
TOTAL = 200.0


def test_finished_cell_row_from_run_and_plan(tmp_path):
    plan = _plan()
    _run(plan, untrained=0.5).save(tmp_path)
    (tmp_path / "cell.json").write_text(json.dumps({"timing": "shared"}))  # as runner.run_cell records it
    row = cell_row(CELL, tmp_path, _Energy(SV, TOTAL))
    assert row.status == "ok" and row.ok and row.error is None and row.timing == "shared"
    assert (row.id, row.config_id, row.label, row.strategy, row.budget, row.seed) == (
        "c1", "k1", "auto budget=all@4", "auto", "all@4", 3)
    assert (row.score, row.baseline_score, row.untrained_score) == (0.8, 0.55, 0.5)
    assert row.gain == pytest.approx(0.8 - 0.5)  # over the untrained score when it was measured
    assert (row.rank_min, row.rank_max, row.modules, row.plan_params) == (2, 5, 4, plan.params)
    by_hand = (16 + 4 + 1) + (9 + 9 + 1 + 1 + 1) + (4 + 2.25) + 3  # top-rank sigma^2 of m.a, m.b, m.c, m.d
    assert row.predicted_share == pytest.approx(by_hand / TOTAL, rel=1e-12)
    for k in ROW_METRICS:
        assert getattr(row, k) == getattr(RunResult.load(tmp_path), k)
    rec = row.to_record()
    assert list(rec) == OK_KEYS and rec["groups"] == ["budget=all@4"]
    assert CellRow.from_record(json.loads(json.dumps(rec))) == row
    assert finished_run(tmp_path) is not None


def test_gain_falls_back_to_the_baseline_and_full_shares_everything(tmp_path):
    _run(None, score=0.7, untrained=None, baseline=0.6).save(tmp_path)
    full = Cell(id="f1", config_id="kf", strategy="full", rank=None, budget=None, layers=None, seed=3,
                groups=("rank=4",), blocks=("b",))
    row = cell_row(full, tmp_path, _Energy(SV, TOTAL))
    assert row.ok and row.gain == pytest.approx(0.7 - 0.6) and row.gain > 0
    assert row.predicted_share == 1.0
    assert (row.rank_min, row.rank_max, row.modules, row.plan_params) == (None, None, None, None)
    assert cell_row(full, tmp_path).predicted_share is None  # no probe asked for (the --list view)


def test_share_without_probe_is_none(tmp_path):
    energy = ProbeEnergy(parse_spec(_study_text()), tmp_path)  # no probes/ directory
    assert energy.share(0, _plan()) is None and energy.share(0, "full") == 1.0


def test_failed_infeasible_and_pending_rows(tmp_path):
    failed = tmp_path / "failed"
    _run(_plan(), status="failed", error="NonFiniteError: Non-finite loss at step 2").save(failed)
    row = cell_row(CELL, failed)
    assert (row.status, row.error) == ("failed", "NonFiniteError: Non-finite loss at step 2")
    assert row.score is None and row.gain is None and finished_run(failed) is None
    assert list(row.to_record()) == UNFINISHED_KEYS

    infeasible = tmp_path / "infeasible"
    write_json(infeasible / "status.json", {"status": "infeasible", "error": "Budget 10 params is below the minimum"})
    row = cell_row(CELL, infeasible)
    assert (row.status, row.error) == ("infeasible", "Budget 10 params is below the minimum")
    assert list(row.to_record()) == UNFINISHED_KEYS

    half = tmp_path / "half"
    half.mkdir()
    (half / "run.json").write_text('{"schema_version": 1, "status": "compl')  # a torn write
    for d in (tmp_path / "missing", half):
        row = cell_row(CELL, d)
        assert (row.status, row.error, row.score) == ("pending", None, None)
        assert row.to_record() == {**{k: to_dict(getattr(row, k)) for k in UNFINISHED_KEYS}}


def _study_text() -> str:
    return """
name = "rows"
question = "?"
model = "tiny"
task = "tiny.csv"
seeds = [0]
[probe]
enabled = false
[[grid]]
name = "b"
strategies = ["all", "ffn"]
ranks = [2]
"""


def test_rebuild_then_load_gives_the_same_typed_rows(tmp_path):
    spec = parse_spec(_study_text())
    write_json(tmp_path / "study.json", study_record(spec))
    first, second = spec.cells()
    _run(_plan()).save(tmp_path / "cells" / first.id)
    write_json(tmp_path / "cells" / second.id / "status.json", {"status": "failed", "error": "boom"})
    rows = rebuild_results(spec, tmp_path)
    assert [r.status for r in rows] == ["ok", "failed"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["schema_version"] == RESULTS_SCHEMA == 1
    assert [list(r) for r in data["rows"]] == [OK_KEYS, UNFINISHED_KEYS]
    assert read_results(tmp_path) == rows
    _, loaded = load_results(tmp_path)
    assert loaded == rows


def test_newer_schema_is_refused(tmp_path):
    spec = parse_spec(_study_text())
    write_json(tmp_path / "study.json", {**study_record(spec), "schema_version": RESULTS_SCHEMA + 1})
    with pytest.raises(ConfigError, match=r"study.json has schema_version 2; .* reads 1 and older"):
        load_results(tmp_path)
    write_json(tmp_path / "study.json", {**study_record(spec), "spec": None})  # no cells/: results.json is read
    write_json(tmp_path / "results.json", {"schema_version": RESULTS_SCHEMA + 1, "study": "rows", "rows": []})
    with pytest.raises(ConfigError, match=r"results.json has schema_version 2; .* Upgrade intrinsic"):
        load_results(tmp_path)
    write_json(tmp_path / "results.json", {"schema_version": RESULTS_SCHEMA, "study": "rows", "rows": []})
    assert load_results(tmp_path)[1] == []


def test_row_fields_are_documented_and_statuses_checked():
    from dataclasses import fields

    from intrinsic.fields import field_help

    assert set(field_help(CellRow)) == {f.name for f in fields(CellRow)}
    assert list(field_help(CellRow)) == OK_KEYS + ["predicted", "train_examples", "steps"]  # set only with a probe / a data-size axis: last, not in OK_KEYS
    with pytest.raises(ConfigError, match="status must be one of"):
        CellRow(id="x", config_id="y", label="l", variant="v", strategy="all", seed=0, status="done")


def test_predictions_survive_a_rebuild_without_the_probes(tmp_path):
    """A committed study with its probes (MiniLM weight types): rebuilding results.json without the probes keeps
    every finished row's predicted shares from the previous results.json (probes are large and often not kept:
    the SmolLM2 studies' reports are regenerated so), and rebuilding without either has none."""
    import shutil

    from intrinsic.study.rows import rebuild_results
    from intrinsic.study.spec import spec_from_record

    src = Path(__file__).resolve().parents[1] / "studies" / "results" / "weight-types"
    out = Path(shutil.copytree(src, tmp_path / "wt"))
    spec = spec_from_record(json.loads((out / "study.json").read_text()))
    with_probes = rebuild_results(spec, out)
    shares = {r.id: (r.predicted_share, r.predicted) for r in with_probes if r.status == "ok"}
    assert shares and all(s is not None and p for s, p in shares.values())
    shutil.rmtree(out / "probes")
    kept = rebuild_results(spec, out)
    assert {r.id: (r.predicted_share, r.predicted) for r in kept if r.status == "ok"} == shares
    (out / "results.json").unlink()
    gone = rebuild_results(spec, out)
    assert all(r.predicted is None for r in gone if r.status == "ok")
    assert all(r.predicted_share in (None, 1.0) for r in gone if r.status == "ok")  # full fine-tuning: 1.0 always
