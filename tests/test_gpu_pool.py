"""scripts/gpu_pool.py: the GPU job pool's barriers, with real processes standing in for `intrinsic study run`.

A study's pass p may start only when every job of its pass p - 1 has ended (the lack of this barrier left 5 test
cells pending on 2026-11-29); its probes only after the probes of the studies listed before it; free slots take
the first eligible job, so one study's barrier does not idle the pool while another study has work."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_pool", ROOT / "scripts" / "gpu_pool.py")
pool = importlib.util.module_from_spec(spec)
sys.modules["gpu_pool"] = pool
spec.loader.exec_module(pool)


def test_plan_and_barriers_without_processes():
    jobs = pool.plan_jobs([("a", "/x/a", 2), ("b", "/x/b", 1)], slots=3, passes=2)
    assert [(j.study, j.phase) for j in jobs].count(("a", 1)) == 3 and len(jobs) == 2 + 6 + 1 + 6
    first = pool.eligible(jobs)
    assert {(j.study, j.phase) for j in first} == {("a", 0)}  # b's probes wait for a's; no pass before probes
    for j in first:
        j.state = "ok"
    now = pool.eligible(jobs)
    assert {(j.study, j.phase) for j in now} == {("a", 1), ("b", 0)}
    jobs[2].state = "failed"  # a failed pass-1 job still ends the pass ...
    assert all(j.phase != 2 for j in pool.eligible(jobs))  # ... but the other two are still waiting
    for j in jobs:
        if j.study == "a" and j.phase == 1:
            j.state = "ok" if j.state == "waiting" else j.state
    assert any(j.study == "a" and j.phase == 2 for j in pool.eligible(jobs))


def test_probes_wait_only_for_studies_with_the_same_probe_key():
    jobs = pool.plan_jobs([("a", "/x/a", 1, "k1"), ("g", "/x/g", 1, "k2"), ("b", "/x/b", 1, "k1")], slots=1, passes=1)
    first = {(j.study, j.phase) for j in pool.eligible(jobs)}
    assert first == {("a", 0), ("g", 0)}  # g's probes (another key) run beside a's; b's wait to adopt a's
    for j in jobs:
        if j.study == "a" and j.phase == 0:
            j.state = "ok"
    assert ("b", 0) in {(j.study, j.phase) for j in pool.eligible(jobs)}


def test_pool_runs_real_processes_in_barrier_order(tmp_path, monkeypatch):
    """Jobs are real processes that log start and end times; every pass-2 job of a study starts after every
    pass-1 job of that study ended, and slots overlap studies (b's probe runs while a's pass 1 is running)."""
    log = tmp_path / "events.jsonl"
    script = ("import json, sys, time; t0 = time.time(); time.sleep(float(sys.argv[2])); "
              "open(sys.argv[1], 'a').write(json.dumps([sys.argv[3], t0, time.time()]) + '\\n')")

    def argv(self):
        slow = 0.6 if (self.phase == 1 and self.shard == "0/2") else 0.1
        return [sys.executable, "-c", script, str(log), str(slow), f"{self.study}:{self.phase}:{self.shard}"]

    monkeypatch.setattr(pool.Job, "argv", argv)
    monkeypatch.setattr(pool, "STATUS", tmp_path / "status.json")
    jobs = pool.plan_jobs([("a", str(tmp_path / "a"), 1), ("b", str(tmp_path / "b"), 1)], slots=2, passes=2)
    assert pool.run(jobs, slots=2, gpus=1, adopt_from=[], poll=0.02) == 0
    ev = {k: (s, e) for k, s, e in map(json.loads, log.read_text().splitlines())}
    assert len(ev) == len(jobs) == 10
    for study in "ab":
        end1 = max(e for k, (s, e) in ev.items() if k.startswith(f"{study}:1:"))
        start2 = min(s for k, (s, e) in ev.items() if k.startswith(f"{study}:2:"))
        start1 = min(s for k, (s, e) in ev.items() if k.startswith(f"{study}:1:"))
        end0 = max(e for k, (s, e) in ev.items() if k.startswith(f"{study}:0:"))
        assert start2 >= end1 and start1 >= end0
    s_b0 = ev["b:0:0/1"][0]
    assert s_b0 < ev["a:1:0/2"][1]  # b's probe ran beside a's slow pass-1 shard, not after it
    assert all(r["state"] == "ok" for r in json.loads((tmp_path / "status.json").read_text()))


def test_probe_slots_cap_and_threads(tmp_path, monkeypatch):
    """At most `probe_slots` probes overlap (one here, though 3 slots are free), and every process gets
    the thread count in OMP_NUM_THREADS unless the caller set it."""
    log = tmp_path / "events.jsonl"
    script = ("import json, os, sys, time; t0 = time.time(); time.sleep(0.15); "
              "open(sys.argv[1], 'a').write(json.dumps([sys.argv[2], t0, time.time(), os.environ.get("
              "'OMP_NUM_THREADS'), os.environ.get('MKL_NUM_THREADS'), os.environ.get('PYTORCH_CUDA_ALLOC_CONF')]) + '\\n')")

    def argv(self):
        return [sys.executable, "-c", script, str(log), f"{self.study}:{self.phase}:{self.shard}"]

    monkeypatch.setattr(pool.Job, "argv", argv)
    monkeypatch.setattr(pool, "STATUS", tmp_path / "status.json")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    jobs = pool.plan_jobs([("a", str(tmp_path / "a"), 3, "k1"), ("g", str(tmp_path / "g"), 1, "k2")], slots=3,
                          passes=1)
    assert pool.run(jobs, slots=3, gpus=1, adopt_from=[], poll=0.02, threads=5, probe_slots=1) == 0
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    probes = sorted((s, e) for k, s, e, *_ in rows if ":0:" in k)
    assert len(probes) == 4 and all(b[0] >= a[1] for a, b in zip(probes, probes[1:]))  # one at a time
    assert {(omp, mkl, alloc) for *_, omp, mkl, alloc in rows} == {("5", "7", "expandable_segments:True")}
    assert pool.thread_env({}, 2)["OPENBLAS_NUM_THREADS"] == "2"


def test_free_slots_go_to_probes_before_passes(tmp_path, monkeypatch):
    """Study a (listed first) has its pass 1 eligible and study g its probe: with one slot, g's probe runs first."""
    log = tmp_path / "order.txt"
    script = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    monkeypatch.setattr(pool.Job, "argv", lambda self: [sys.executable, "-c", script, str(log),
                                                         f"{self.study}:{self.phase}"])
    monkeypatch.setattr(pool, "STATUS", tmp_path / "status.json")
    jobs = pool.plan_jobs([("a", str(tmp_path / "a"), 1, "k1"), ("g", str(tmp_path / "g"), 1, "k2")], slots=1,
                          passes=1)
    jobs[0].state = "ok"  # a's probe is done: a's pass 1 and g's probe are both eligible
    assert pool.run(jobs, slots=1, gpus=1, adopt_from=[], poll=0.01) == 0
    assert log.read_text().split() == ["g:0", "a:1", "g:1"]


def test_probes_alone_holds_every_pass_until_every_probe_ended():
    jobs = pool.plan_jobs([("a", "/x/a", 1, "k1"), ("g", "/x/g", 2, "k2")], slots=1, passes=1)
    jobs[0].state = "ok"  # a's probe ended; g's two probes have not
    assert ("a", 1) in {(j.study, j.phase) for j in pool.eligible(jobs)}  # by default a's pass may start
    assert {(j.study, j.phase) for j in pool.eligible(jobs, probes_alone=True)} == {("g", 0)}
    for j in jobs:
        if j.study == "g" and j.phase == 0:
            j.state = "failed"  # ended, even if failed
    assert {(j.study, j.phase) for j in pool.eligible(jobs, probes_alone=True)} == {("a", 1), ("g", 1)}


def test_to_start_rules():
    a0, a1, b0, b1 = (pool.Job(s, "/x/" + s, p, "0/1") for s, p in (("a", 0), ("a", 1), ("b", 0), ("b", 1)))
    assert pool.to_start([a1, b0, b1], [], free=2, probe_slots=4) == [b0, a1]  # probes first, then in order
    assert pool.to_start([a1, b0, b1], [a0], free=5, probe_slots=1) == [a1, b1]  # probe cap reached
    a0.alone = True
    assert pool.to_start([a0, a1, b0], [b1], free=5, probe_slots=4) == []  # an alone job waits for an empty pool
    assert pool.to_start([a0, a1, b0], [], free=5, probe_slots=4) == [a0]  # ... and then runs by itself
    assert pool.to_start([a1, b0], [a0], free=5, probe_slots=4) == []  # nothing starts beside it
    c1, c2, c3, d1 = (pool.Job(s, "/x/" + s, 1, f"{k}/3", cap=2 if s == "c" else 0)
                      for s, k in (("c", 0), ("c", 1), ("c", 2), ("d", 0)))
    assert pool.to_start([c1, c2, c3, d1], [], free=5, probe_slots=4) == [c1, c2, d1]  # c capped at 2
    assert pool.to_start([c2, c3, d1], [c1], free=5, probe_slots=4) == [c2, d1]  # one of c's runs already
    assert pool.to_start([c3, d1], [c1, c2], free=1, probe_slots=4) == [d1]  # the free slot goes to d


def test_a_probe_past_the_timeout_is_killed_and_rerun_alone(tmp_path, monkeypatch, capsys):
    """a's probe hangs on its first try (a marker file says which try), is killed after 0.5 s and rerun when
    nothing else runs; g's probe and pass (another key) are unaffected; no job overlaps the rerun."""
    log, marker = tmp_path / "events.jsonl", tmp_path / "tried"
    script = ("import json, os, sys, time; t0 = time.time(); first = sys.argv[2] == 'a:0' and not "
              "os.path.exists(sys.argv[3]); open(sys.argv[3], 'a').close() if first else None; "
              "time.sleep(30 if first else 0.2); "
              "open(sys.argv[1], 'a').write(json.dumps([sys.argv[2], t0, time.time()]) + '\\n')")
    monkeypatch.setattr(pool.Job, "argv", lambda self: [sys.executable, "-c", script, str(log),
                                                         f"{self.study}:{self.phase}", str(marker)])
    monkeypatch.setattr(pool, "STATUS", tmp_path / "status.json")
    jobs = pool.plan_jobs([("a", str(tmp_path / "a"), 1, "k1"), ("g", str(tmp_path / "g"), 1, "k2")], slots=2,
                          passes=1)
    t0 = time.time()
    assert pool.run(jobs, slots=2, gpus=1, adopt_from=[], poll=0.02, probe_timeout=0.5) == 0
    assert time.time() - t0 < 20  # the hanging first try (30 s) was killed
    ev = {k: (s, e) for k, s, e in map(json.loads, log.read_text().splitlines())}
    assert sorted(ev) == ["a:0", "a:1", "g:0", "g:1"]  # the killed try wrote nothing; the rerun did
    s_a0, e_a0 = ev["a:0"]
    assert all(e <= s_a0 or s >= e_a0 for k, (s, e) in ev.items() if k != "a:0")  # nothing overlapped the rerun
    assert "killed; it reruns alone" in capsys.readouterr().out and jobs[0].alone


def test_a_job_that_cannot_start_fails_and_the_pool_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pool.Job, "argv", lambda self: [str(tmp_path / "no-such-program")])
    monkeypatch.setattr(pool, "STATUS", tmp_path / "status.json")
    jobs = pool.plan_jobs([("a", str(tmp_path / "a"), 1)], slots=1, passes=1)
    assert pool.run(jobs, slots=1, gpus=1, adopt_from=[], poll=0.01) == 1
    assert [j.state for j in jobs] == ["failed", "failed"] and "cannot start" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys):
    assert pool.main(["no-equals-sign"]) == 2
    assert "STUDY=RESULTS_DIR" in capsys.readouterr().err
    assert pool.main(["a=b", "--slots", "0"]) == 2
    assert pool.main(["a=b", "--probe-slots", "0"]) == 2 and pool.main(["a=b", "--threads", "0"]) == 2
    assert pool.main(["a=b", "--probe-timeout", "-1"]) == 2
    assert pool.main(["no-such-study=/tmp/x"]) == 2
    assert "no-such-study" in capsys.readouterr().err
    assert pool.main(["a=b", "--cap", "a"]) == 2 and pool.main(["a=b", "--cap", "a=0"]) == 2
    assert "--cap must be STUDY=N" in capsys.readouterr().err


def test_an_out_of_memory_failure_halves_the_study_cap_once_per_wave(tmp_path, monkeypatch, capsys):
    """Study c's pass 1 (4 shards at once) fails with a CUDA OOM in every log: its cap drops to 2 once (the other
    failures of that wave started before the lowering), and pass 2 then runs at most 2 of its jobs at once."""
    log = tmp_path / "events.jsonl"
    script = ("import json, sys, time; t0 = time.time(); time.sleep(0.2); "
              "open(sys.argv[1], 'a').write(json.dumps([sys.argv[2], t0, time.time()]) + '\\n'); "
              "oom = sys.argv[2].endswith(':1'); "
              "print('failed c seed 0: OutOfMemoryError: CUDA out of memory. Tried', file=sys.stderr) if oom else None; "
              "sys.exit(1 if oom else 0)")
    monkeypatch.setattr(pool.Job, "argv", lambda self: [sys.executable, "-c", script, str(log),
                                                         f"{self.study}:{self.shard}:{self.phase}"])
    monkeypatch.setattr(pool, "STATUS", tmp_path / "status.json")
    jobs = pool.plan_jobs([("c", str(tmp_path / "c"), 1, "k")], slots=4, passes=2)
    assert pool.run(jobs, slots=4, gpus=1, adopt_from=[], poll=0.01) == 1
    assert capsys.readouterr().out.count("ran out of GPU memory") == 1
    assert {j.cap for j in jobs} == {2}
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    second = [(s, e) for k, s, e in rows if k.endswith(":2")]
    assert len(second) == 4
    for s, _ in second:  # never more than 2 of pass 2 running at once
        assert sum(1 for s2, e2 in second if s2 <= s < e2) <= 2
    assert pool.ran_out_of_memory(str(tmp_path / "missing.log")) is False
