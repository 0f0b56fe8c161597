"""The Ray engine on a local 2-CPU Ray cluster: the same results.json rows as the local runner, a worker that
dies once retried with every cell run exactly once, a study stopped midway resumed, a cell whose worker always
dies marked failed while the rest completes, timing recorded, and bad engine input refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time

import pytest
from typer.testing import CliRunner

from intrinsic.study.engine_ray import RayEngine, RaySettings
from intrinsic.study.rows import rebuild_results
from intrinsic.study.runner import Hooks, run_cell, run_study
from intrinsic.study.spec import parse_spec

from test_study_run import study_text  # noqa: E402 - the tiny study of the local runner's tests

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'intrinsic[ray]'; `make test` installs it)")

# measured quantities that differ from run to run; everything else of a row must be identical across engines
_MEASURED = {"peak_memory_mb", "train_time_s", "time_per_step_s", "tokens_per_s", "timing"}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with 2 CPUs (2 workers for 1-CPU cells), shared by this module's tests."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def rows_of(out):
    return json.loads((out / "results.json").read_text())["rows"]


def same(rows):
    return [{k: v for k, v in r.items() if k not in _MEASURED} for r in rows]


def logged_cell(log, die_on=None, marker=None):
    """run_cell, logging each cell that completes; with `die_on` (a label), the worker of that cell kills its
    own process: once when `marker` is given (the marker file guards the second attempt), else every time."""

    def cell_fn(cell, spec, seeds, out, **kw):
        if cell.label == die_on and (marker is None or not os.path.exists(marker)):
            if marker is not None:
                open(marker, "w").close()
            os._exit(1)
        run_cell(cell, spec, seeds, out, **kw)
        with open(log, "a") as f:
            f.write(cell.id + "\n")

    return cell_fn


def test_ray_gives_the_local_runners_rows_and_survives_a_dead_worker(cluster, tiny_bert_dir, tiny_csv, tmp_path):
    spec = parse_spec(study_text(tiny_bert_dir, tiny_csv, ["all", "auto", "ffn"], budgets='["all@1"]'))
    local = run_study(spec, tmp_path / "local")
    assert local.counts == {"ok": 3}
    log = tmp_path / "ran.log"
    engine = RayEngine(RaySettings(max_retries=1), logged_cell(log, "ffn budget=all@1", str(tmp_path / "died")))
    summary = run_study(spec, tmp_path / "ray", engine=engine)
    assert summary.counts == {"ok": 3} and (tmp_path / "died").exists()  # the ffn worker died once, then ran
    assert same(rows_of(tmp_path / "ray")) == same(rows_of(tmp_path / "local"))  # same scores, shares, plans
    ids = log.read_text().split()
    assert sorted(ids) == sorted(c.id for c in spec.cells())  # every cell completed exactly once
    assert len(list((tmp_path / "ray" / "probes").iterdir())) == 1  # one probe per (model, task, seed)
    assert {r["timing"] for r in rows_of(tmp_path / "local")} == {"exclusive"}
    assert {r["timing"] for r in rows_of(tmp_path / "ray")} == {"shared"}  # 1 of 2 CPUs: cells ran side by side
    assert engine.describe()["timing"] == "shared" and engine.describe()["cpus_per_cell"] == 1


def test_stopped_midway_resumes_and_a_dying_cell_fails_after_retries(cluster, tiny_bert_dir, tiny_csv, tmp_path):
    spec = parse_spec(study_text(tiny_bert_dir, tiny_csv, ["all", "ffn", "q"], budgets='["all@1"]', probe=False))
    out, log = tmp_path / "res", tmp_path / "ran.log"

    class Stop(BaseException):
        """Stands in for Ctrl-C in the driver."""

    def stop_after_first(cell, row, i, n):
        raise Stop()

    engine = RayEngine(RaySettings(max_retries=1, exclusive_timing=True), logged_cell(log))
    with pytest.raises(Stop):
        run_study(spec, out, engine=engine, hooks=Hooks(on_cell_end=stop_after_first))
    first = [r for r in rows_of(out) if r["status"] == "ok"]
    while len(first) > 1:  # Ray may finish more before the driver stops: keep one, so two are left to run
        shutil.rmtree(out / "cells" / first.pop()["id"])  # (the dying one and one that runs, exclusive)
    rebuild_results(spec, out)
    assert 1 <= len(first) < 3 and {r["status"] for r in rows_of(out)} <= {"ok", "pending"}
    kept = {r["id"]: (out / "cells" / r["id"] / "run.json").stat().st_mtime_ns for r in first}

    log.write_text("")
    victim = next(r["label"] for r in rows_of(out) if r["status"] == "pending")  # a cell the first run left
    engine = RayEngine(RaySettings(max_retries=1, exclusive_timing=True), logged_cell(log, die_on=victim))
    summary = run_study(spec, out, engine=engine)
    assert summary.skipped == len(first) and summary.ran == 3 - len(first)
    assert {k: (out / "cells" / k / "run.json").stat().st_mtime_ns for k in kept} == kept  # not retrained
    rows = rows_of(out)
    assert len({r["id"] for r in rows}) == len(rows) == 3
    by_label = {r["label"]: r for r in rows}
    q = by_label.pop(victim)
    assert q["status"] == "failed" and "worker lost after 1 retries" in q["error"]
    assert {r["status"] for r in by_label.values()} == {"ok"}
    assert sorted(log.read_text().split()) == sorted(r["id"] for r in by_label.values() if r["id"] not in kept)
    ran_now = [r for r in by_label.values() if r["id"] not in kept]
    assert {r["timing"] for r in ran_now} == {"exclusive"}  # --exclusive-timing: one cell per node (2 CPUs)


def test_cli_engine_ray_json_and_bad_input(cluster, tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    from intrinsic.cli.app import app

    toml = tmp_path / "tiny.toml"
    toml.write_text(study_text(tiny_bert_dir, tiny_csv, ["all"], budgets='["all@1"]', probe=False))
    runner = CliRunner()
    res = runner.invoke(app, ["study", "run", str(toml), "--out", str(tmp_path / "o"), "--engine", "ray",
                              "--max-retries", "0", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["summary"]["counts"] == {"ok": 1}
    report = open(data["report"]["markdown"]).read()  # 1 of 2 CPUs: the report marks its time as shared
    assert "**Shared devices.**" in report and "| time_s | timing |" in report and "| shared |" in report
    assert data["engine"] == {"engine": "ray", "address": None, "max_retries": 0, "dashboard": None, "nodes": 1,
                              "gpus_per_cell": 0, "cpus_per_cell": 1, "timing": "shared"}

    def bad(*args):
        t = time.perf_counter()
        r = runner.invoke(app, ["study", "run", str(toml), "--out", str(tmp_path / "b"), *args])
        assert r.exit_code == 2 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert time.perf_counter() - t < 15
        return r.output

    assert "Unknown engine 'rey'" in bad("--engine", "rey") and "Did you mean: ray" in bad("--engine", "rey")
    assert "more than the 0 GPUs" in bad("--engine", "ray", "--gpus-per-cell", "1")
    assert "more than the 2 CPUs" in bad("--engine", "ray", "--cpus-per-cell", "3")
    assert "--max-retries must be >= 0" in bad("--engine", "ray", "--max-retries", "-1")
    assert "--gpus-per-cell only apply to --engine ray" in bad("--gpus-per-cell", "1")
    assert "unreachable" in bad("--engine", "ray", "--address", "127.0.0.1:9")
    with socket.socket() as silent:  # accepts connections, never answers: not a Ray cluster
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert "is not a Ray cluster" in bad("--engine", "ray", "--address", "127.0.0.1:%d" % silent.getsockname()[1])
    assert "--shard and --probes-only are for the local engine" in bad("--engine", "ray", "--shard", "0/2")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    assert "pip install 'intrinsic[ray]'" in bad("--engine", "ray")
    assert not (tmp_path / "b").exists()
