"""Run the cells of several studies on one GPU host as a pool of `intrinsic study run --shard` processes.

    python3 scripts/gpu_pool.py [--slots 16] [--passes 2] [--adopt-from DIR ...] [--quick] STUDY=RESULTS_DIR ...

Each study gets jobs in phases: its probes (`--probes-only --shard k/S`, one process per seed), then pass 1 (every
`--shard k/N`, N = --slots: the lr-sweep cells and the test cells whose sweep is done), then pass 2 (the test cells
that waited, and any cell that failed in pass 1), and so on. A phase starts only when every job of the study's
phase before it has ended: this barrier is what an ad hoc loop of "pass 1, pass 2" per process lacks (on
2026-11-29 such a loop left 5 test cells pending because a process ran its second pass while the lr-sweep cell
of their arm was still training elsewhere). Studies are independent of each other, except that a study's probes
start only after the probes of the studies listed before it with the same probe key (model, task and [probe]
settings: such studies share probe ids, and the later one adopts the earlier one's probes first, `intrinsic study
adopt`, instead of computing them twice at the same time); probes of other keys run side by side. Free slots
take the first eligible job, probes before passes (a probe unblocks a study's passes), then in order (earlier
studies first), so the GPU stays busy across the studies' barriers.
`--adopt-from DIR` adopts finished cells and probes from DIR into every study first (e.g. committed results of
another study that shares cell ids).

CPU threads: every process gets OMP_NUM_THREADS = MKL_NUM_THREADS = OPENBLAS_NUM_THREADS = `--threads` (default: the
host's cores / --slots, at least 1; a variable already set is kept), and at most `--probe-slots` probes run at once.
Measured on 2026-11-29 (H200 host, 16 cores): 10 probe processes with the default 16 threads each (load average 160)
were still in their spectra phase after 20 minutes, while one probe alone took 65 s in all. Not proven which
cause: the linear algebra's thread teams thrash when several processes oversubscribe the cores
(`benchmarks/bench_oversubscription.py`), or the probes' many small synchronizing GPU calls crawl when several
processes time-slice the GPU (an earlier run: 5 probes side by side on one H200 did not finish in 500 s,
gpu_study_shards.sh). `--probes-alone` keeps training
processes off the GPU until every probe has ended, and `--probe-timeout S` kills a probe that runs longer than S
seconds and reruns it with nothing else running (a stall then costs S, not the session).

GPU memory: 16 processes share one H200's 140 GB, and a study's processes may need more than their share: on
2026-11-29 smollm2-placement-gen (256-token batches, 6-8 GB of training peak each, up to 18 GB reserved with its
evaluation before that was chunked) ran out of memory 16 at a time. `--cap STUDY=N` lets at most N of a study's
processes run at once (the free slots go to the other studies); a job whose log reports a cell out of GPU memory
halves its study's cap (from the number of its processes running then; its later passes retry the failed cells);
every process gets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True unless set.

Processes survive the end of a device call when this runs detached (`setsid nohup python3 scripts/gpu_pool.py
... > /tmp/pool.log 2>&1 &`); a later call waits on it (`pgrep -f gpu_pool.py`). Progress: one line per job that
ends, and /tmp/gpu_pool.json (written atomically) with every job's state. Times of the cells are marked shared
(several processes on one GPU). Exit status 0 when every job ended with status 0, else 1; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
from collections import Counter
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STATUS = Path("/tmp/gpu_pool.json")


@dataclass
class Job:
    """One `intrinsic study run` process: the study's `phase` (0 = probes, p >= 1 = pass p) and its shard."""

    study: str
    out: str
    phase: int
    shard: str
    state: str = "waiting"  # waiting | running | ok | failed
    rc: int | None = None
    started: float | None = None
    ended: float | None = None
    log: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)
    quick: bool = False  # the study's [quick] variant (a CPU check of the pipeline)
    probe_key: str = ""  # studies with equal keys share probe ids (rows.probe_key of seed 0)
    alone: bool = False  # a probe that ran past --probe-timeout: killed, then rerun with nothing else running
    cap: int = 0  # at most this many jobs of the study at once (--cap; 0: no cap)

    def argv(self) -> list[str]:
        base = ["intrinsic", "study", "run", self.study, "--out", self.out, "--shard", self.shard]
        base += ["--quick"] if self.quick else []
        return base + (["--probes-only"] if self.phase == 0 else ["--no-report", "--json"])


def plan_jobs(studies: list[tuple], slots: int, passes: int, quick: bool = False) -> list[Job]:
    """Jobs for `studies` [(study, out, seeds[, probe_key])] in order: per study its probes (one per seed), then
    `passes` passes of `slots` shards each. Without a probe key every study shares one (probes in list order)."""
    jobs = []
    for study, out, seeds, *key in studies:
        k0 = key[0] if key else ""
        jobs += [Job(study, out, 0, f"{k}/{seeds}", quick=quick, probe_key=k0) for k in range(seeds)]
        for p in range(1, passes + 1):
            jobs += [Job(study, out, p, f"{k}/{slots}", quick=quick, probe_key=k0) for k in range(slots)]
    return jobs


def _ended(job: Job) -> bool:
    return job.state in ("ok", "failed")


def thread_env(env: dict[str, str], threads: int) -> dict[str, str]:
    """`env` with the BLAS/OpenMP thread counts set to `threads` where they are not set already."""
    out = dict(env)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        out.setdefault(var, str(threads))
    return out


def eligible(jobs: list[Job], probes_alone: bool = False) -> list[Job]:
    """The waiting jobs whose barrier is passed, in order: a study's phase p >= 1 needs every job of its phase p - 1
    ended; its probes (phase 0) need the probes of every study listed before it with the same probe key ended.
    With `probes_alone`, no pass starts before every probe of every study has ended."""
    order = list(dict.fromkeys(j.study for j in jobs))
    probing = probes_alone and any(j.phase == 0 and not _ended(j) for j in jobs)
    out = []
    for j in jobs:
        if j.state != "waiting" or (probing and j.phase != 0):
            continue
        if j.phase == 0:
            earlier = order[: order.index(j.study)]
            ready = all(_ended(i) for i in jobs if i.phase == 0 and i.study in earlier and i.probe_key == j.probe_key)
        else:
            ready = all(_ended(i) for i in jobs if i.study == j.study and i.phase == j.phase - 1)
        if ready:
            out.append(j)
    return out


def to_start(candidates: list[Job], running: list[Job], free: int, probe_slots: int) -> list[Job]:
    """Which of the eligible `candidates` start now, given the `running` jobs and `free` slots: nothing while a
    job runs alone; a job to run alone only when nothing runs (and then only it); else probes before passes (a
    probe unblocks a study's passes), at most `probe_slots` probes running and at most `cap` jobs of a capped
    study, then in order."""
    if any(r.alone for r in running):
        return []
    alone = [j for j in candidates if j.alone]
    if alone:
        return [] if running else alone[:1]
    out, probes = [], sum(1 for r in running if r.phase == 0)
    per_study = Counter(r.study for r in running)
    for j in sorted(candidates, key=lambda j: j.phase != 0):
        if len(out) == free:
            break
        if j.cap and per_study[j.study] >= j.cap:
            continue
        if j.phase == 0:
            if probes >= probe_slots:
                continue
            probes += 1
        per_study[j.study] += 1
        out.append(j)
    return out


OOM_MARKS = ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED")  # a cell's GPU allocation failure, in its log


def ran_out_of_memory(log: str) -> bool:
    """Whether a job's log reports a cell that failed for GPU memory (`study run` prints failed cells on stderr)."""
    try:
        text = Path(log).read_text(errors="ignore")
    except OSError:
        return False
    return any(m in text for m in OOM_MARKS)


def lower_cap(jobs: list[Job], study: str, running: int) -> int:
    """After an out-of-memory failure among `running` jobs of `study` (the failed one included): at most half as
    many of its jobs at once from now on, at least 1 (never raised). Sets every job's cap; returns the new cap."""
    old = next((j.cap for j in jobs if j.study == study), 0)
    cap = max(1, running // 2)
    cap = min(cap, old) if old else cap
    for j in jobs:
        if j.study == study:
            j.cap = cap
    return cap


def _adopt(study: str, out: str, source: str) -> None:
    if Path(source).resolve() == Path(out).resolve() or not Path(source).is_dir():
        return
    r = subprocess.run(["intrinsic", "study", "adopt", study, "--from", source, "--out", out, "--json"],
                       capture_output=True, text=True)
    if r.returncode == 0:
        d = json.loads(r.stdout)
        print(f"adopt {study} <- {source}: {len(d['cells'])} cells, {len(d['probes'])} probes", flush=True)
    else:
        print(f"adopt {study} <- {source}: {r.stderr.strip().splitlines()[-1:]}", flush=True)


def _write_status(jobs: list[Job]) -> None:
    rows = [dict(study=j.study, phase=j.phase, shard=j.shard, state=j.state, rc=j.rc,
                 seconds=round((j.ended or time.time()) - j.started, 1) if j.started else None) for j in jobs]
    tmp = STATUS.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(STATUS)


def run(jobs: list[Job], slots: int, gpus: int, adopt_from: list[str], poll: float = 2.0, threads: int = 1,
        probe_slots: int | None = None, probes_alone: bool = False, probe_timeout: float = 0.0) -> int:
    """Keep `slots` jobs running (GPU slot % gpus), at most `probe_slots` of them probes, each with `threads` CPU
    threads, until every job has ended (with `probes_alone`, passes only after every probe); a probe running longer
    than `probe_timeout` seconds (0: no limit) is killed and rerun alone. Returns 0 when all exited 0."""
    probe_slots = slots if probe_slots is None else probe_slots
    studies = list(dict.fromkeys((j.study, j.out, j.probe_key) for j in jobs))
    for study, out, _ in studies:
        for src in adopt_from:
            _adopt(study, out, src)
    free = list(range(slots))
    running: dict[int, Job] = {}
    probed = set()  # studies that adopted the earlier studies' probes
    lowered: dict[str, float] = {}  # study -> when an out-of-memory failure last lowered its cap
    while True:
        for slot, j in list(running.items()):
            rc = j.proc.poll()
            if rc is None:  # still running: only a probe past --probe-timeout is stopped (and rerun alone)
                if probe_timeout and j.phase == 0 and not j.alone and time.time() - j.started > probe_timeout:
                    j.proc.kill()
                    j.proc.wait()
                    j.state, j.alone = "waiting", True
                    del running[slot]
                    free.append(slot)
                    print(f"{time.strftime('%H:%M:%S')} {j.study} phase 0 shard {j.shard}: past --probe-timeout "
                          f"{probe_timeout:.0f} s, killed; it reruns alone", flush=True)
                continue
            j.rc, j.ended, j.state = rc, time.time(), "ok" if rc == 0 else "failed"
            del running[slot]
            free.append(slot)
            left = sum(1 for i in jobs if not _ended(i))
            print(f"{time.strftime('%H:%M:%S')} {j.study} phase {j.phase} shard {j.shard}: rc {rc} "
                  f"({j.ended - j.started:.0f} s; {left} jobs left)", flush=True)
            if rc and j.started > lowered.get(j.study, 0.0) and ran_out_of_memory(j.log):
                # its later passes retry the failed cells, fewer at a time; jobs started before a lowering do not
                # lower it again (one crowded wave counts once)
                lowered[j.study] = time.time()
                cap = lower_cap(jobs, j.study, 1 + sum(1 for r in running.values() if r.study == j.study))
                print(f"{j.study}: a cell ran out of GPU memory; at most {cap} of its processes at once from now on",
                      flush=True)
        for j in to_start(eligible(jobs, probes_alone), list(running.values()), len(free), probe_slots):
            if j.phase == 0 and j.study not in probed:  # earlier studies' probes are done: take theirs (same ids)
                probed.add(j.study)
                for study, out, key in studies[: [s for s, _, _ in studies].index(j.study)]:
                    if key == j.probe_key:
                        _adopt(j.study, j.out, out)
            slot = free.pop(0)
            Path(j.out).parent.mkdir(parents=True, exist_ok=True)
            j.log = f"{STATUS.parent}/pool-{Path(j.out).name}-{j.phase}-{j.shard.replace('/', 'of')}.log"
            env = thread_env(dict(os.environ, CUDA_VISIBLE_DEVICES=str(slot % gpus)), threads)
            env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # less fragmentation, 16 to a GPU
            j.started = time.time()
            try:
                with open(j.log, "w") as fh:
                    j.proc = subprocess.Popen(j.argv(), stdout=fh, stderr=subprocess.STDOUT, env=env)
            except OSError as e:  # e.g. `intrinsic` not on PATH: the job fails, the pool goes on
                j.rc, j.ended, j.state = 127, time.time(), "failed"
                free.insert(0, slot)
                print(f"{j.study} phase {j.phase} shard {j.shard}: cannot start ({e})", flush=True)
                continue
            j.state = "running"
            running[slot] = j
        _write_status(jobs)
        if not running and not eligible(jobs, probes_alone):
            break
        time.sleep(poll)
    return 0 if all(j.state == "ok" for j in jobs) else 1


def _seeds_and_key(study: str, quick: bool) -> tuple[int, str]:
    """The study's number of seeds and its probe key (equal keys: the same probe ids)."""
    from intrinsic.study.rows import probe_key
    from intrinsic.study.spec import load_spec, resolve_study
    spec = load_spec(resolve_study(study), quick=quick)
    return len(spec.seeds), probe_key(spec, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="+", metavar="STUDY=RESULTS_DIR")
    ap.add_argument("--slots", type=int, default=16, help="processes at a time (all GPUs together)")
    ap.add_argument("--passes", type=int, default=2, help="passes of shards per study after its probes")
    ap.add_argument("--gpus", type=int, default=None, help="GPUs to spread the slots over (default: all visible)")
    ap.add_argument("--adopt-from", action="append", default=[], metavar="DIR",
                    help="adopt finished cells and probes from DIR into every study first (repeatable)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads per process (default: cores / --slots, at least 1)")
    ap.add_argument("--probe-slots", type=int, default=4, help="probes running at once at most (default 4)")
    ap.add_argument("--probes-alone", action="store_true",
                    help="no training pass starts before every probe has ended (probes do not share the GPU with "
                         "training processes)")
    ap.add_argument("--probe-timeout", type=float, default=0.0,
                    help="seconds after which a running probe is killed and rerun with nothing else running "
                         "(default 0: no limit)")
    ap.add_argument("--cap", action="append", default=[], metavar="STUDY=N",
                    help="at most N processes of STUDY (as given, or its file name without .toml) at once, e.g. "
                         "for a study whose processes need more GPU memory than slots x their share (repeatable)")
    ap.add_argument("--quick", action="store_true", help="the studies' [quick] variants (a CPU pipeline check)")
    a = ap.parse_args(argv)
    if a.slots < 1 or a.passes < 1 or a.probe_slots < 1 or (a.threads is not None and a.threads < 1) \
            or a.probe_timeout < 0:
        print("--slots, --passes, --probe-slots and --threads must be at least 1, --probe-timeout at least 0",
              file=sys.stderr)
        return 2
    caps = {}
    for c in a.cap:
        name, sep, n = c.rpartition("=")
        if not sep or not name or not n.isdigit() or int(n) < 1:
            print(f"each --cap must be STUDY=N with N at least 1, got {c!r}", file=sys.stderr)
            return 2
        caps[name] = int(n)
    pairs = []
    for s in a.studies:
        study, sep, out = s.partition("=")
        if not sep or not study or not out:
            print(f"each study must be STUDY=RESULTS_DIR, got {s!r}", file=sys.stderr)
            return 2
        try:
            pairs.append((study, out, *_seeds_and_key(study, a.quick)))
        except Exception as e:  # noqa: BLE001 - any unreadable definition is one clear line
            print(f"{study}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            return 2
    gpus = a.gpus
    if gpus is None:
        import torch
        gpus = max(1, torch.cuda.device_count())
    jobs = plan_jobs(pairs, a.slots, a.passes, a.quick)
    unknown = set(caps) - {j.study for j in jobs} - {Path(j.study).stem for j in jobs}
    if unknown:
        print(f"--cap names no study given: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    for j in jobs:
        j.cap = caps.get(j.study, caps.get(Path(j.study).stem, 0))
    print(f"{len(jobs)} jobs for {len(pairs)} studies on {gpus} GPU(s), {a.slots} at a time", flush=True)
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.slots)
    print(f"{threads} CPU thread(s) per process, at most {a.probe_slots} probes at once", flush=True)
    return run(jobs, a.slots, gpus, a.adopt_from, threads=threads, probe_slots=a.probe_slots,
               probes_alone=a.probes_alone, probe_timeout=a.probe_timeout)


if __name__ == "__main__":
    raise SystemExit(main())
