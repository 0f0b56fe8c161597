"""The Ray engine: every pending cell of a study becomes a Ray task with its own CPUs and GPUs, so one
command runs a study on a laptop (`ray.init()`), on a multi-GPU host, or on a cluster (`--address`).

What it guarantees (the cell directories are the only state, see runner.py):
- each task calls `runner.run_cell` (the local runner's cell function) in a worker process, which
  writes cells/<id>/ atomically on the study directory (a shared filesystem on a cluster);
- probes first: one task per seed computes out/probes/<hash> before any cell starts, and every cell
  of that seed reads it from there;
- a task whose worker process dies (killed, out of memory, node lost) is retried up to `max_retries`
  times, then its cell is marked failed with the error; a Python error inside a cell is recorded as
  failed at once, as the local runner does (it would only recur);
- a retried task whose cell already finished keeps it; the driver rebuilds results.json from the
  cell directories, so a study interrupted in any way and rerun loses and duplicates nothing.

Worker processes keep the base model of the last seed they trained (runner._Seeds), so tasks are
submitted grouped by seed, slowest first. Ray is imported only here, only when the engine runs.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingPackageError
from ..results import write_json
from .engine import RaySettings
from .grid import Cell
from .rows import CellRow, ProbeEnergy, cell_row, finished_run, rebuild_results
from .runner import _Seeds, run_cell
from .spec import StudySpec

INSTALL = "pip install 'intrinsic[ray]'"  # how the error for a missing Ray says to install it
CONNECT_TIMEOUT_S = 3.0  # an --address that does not answer within this is refused


@dataclass(frozen=True)
class Resources:
    """What each task asks of Ray, resolved against the cluster."""

    gpus: float  # GPUs per task
    cpus: float  # CPUs per task
    timing: str  # "exclusive" | "shared": whether a cell has its device to itself


# ----------------------------------------------------------------------------- connecting


def import_ray():
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise MissingPackageError(f"--engine ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within `timeout`, a HOST:PORT (or ray://HOST:PORT) address nothing listens on."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address must be auto, HOST:PORT or ray://HOST:PORT, got '{address}'.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"Ray address {address} is unreachable ({e.strerror or type(e).__name__}); start the "
                          "head node with `ray start --head`, or check the address.") from None
    if "://" not in address:  # HOST:PORT is the cluster's GCS: it must answer as one (ray.init would retry for ~20 s)
        _check_gcs(hostport, timeout)


def _check_gcs(hostport: str, timeout: float) -> None:
    """Refuse a HOST:PORT that accepts connections but does not answer as a Ray GCS within `timeout`. Ray's
    GCS client has no short timeout of its own, so it runs in a daemon thread that is abandoned on timeout."""
    try:
        from ray._raylet import GcsClient
    except ImportError:  # a Ray without this internal client: leave the check to ray.init
        return
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            GcsClient(address=hostport)
            outcome.append(None)
        except (TypeError, AttributeError):  # another client signature: no verdict
            outcome.append(None)
        except Exception as e:  # noqa: BLE001 - any other RPC failure means: not a Ray cluster
            asks_token = "auth" in type(e).__name__.lower() or "Unauthenticated" in str(e)
            outcome.append(None if asks_token else e)  # a Ray GCS asking for the token ray.init will send

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome or outcome[0] is not None:
        why = f"{type(outcome[0]).__name__}: {outcome[0]}" if outcome else f"no answer within {timeout:g} s"
        raise ConfigError(f"{hostport} accepts connections but is not a Ray cluster ({why.splitlines()[0]}); "
                          "check the address (the head's `ray start --head` prints it).")


def connect(settings: RaySettings) -> tuple[bool, str | None]:
    """Join the cluster at settings.address (or start a local instance): (started here, dashboard URL).
    A Ray already initialized in this process (a test's local cluster) is used as it is."""
    ray = import_ray()
    if settings.address not in (None, "auto", "local"):
        check_reachable(settings.address)
    if ray.is_initialized():
        return False, None
    try:
        ctx = ray.init(address=settings.address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as e:
        text = str(e.__cause__ or e).strip()
        first = text.splitlines()[0][:300] if text else type(e).__name__
        hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token and its token (`ray get-auth-token`)"
                if "auth" in text.lower() else "")
        raise ConfigError(f"Cannot join the Ray cluster at {settings.address}: {first}{hint}") from None
    return settings.address in (None, "local"), getattr(ctx, "dashboard_url", None) or None


def resolve_resources(settings: RaySettings, spec: StudySpec, nodes: list[dict[str, float]]) -> Resources:
    """Each task's GPUs and CPUs from the settings and the alive nodes' resources, and the timing
    that follows: exclusive when a task holds >= 1 whole GPU, or (no GPU) every CPU of its node."""
    max_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    max_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    gpus = settings.gpus_per_cell
    if gpus is None:
        gpus = 1.0 if max_gpus >= 1 and spec.device != "cpu" else 0.0
    if settings.exclusive_timing and gpus > 0:
        gpus = float(max(1, math.ceil(gpus)))
    if gpus > max_gpus:
        raise ConfigError(f"--gpus-per-cell {gpus:g} is more than the {max_gpus:g} GPUs of the largest node of "
                          "the Ray cluster.")
    if gpus == 0 and spec.device == "cuda":
        raise ConfigError("The study's device is cuda but its cells get no GPU (--gpus-per-cell 0, or a cluster "
                          "without GPUs).")
    cpus = max_cpus if settings.exclusive_timing and gpus == 0 else settings.cpus_per_cell
    if cpus > max_cpus:
        raise ConfigError(f"--cpus-per-cell {cpus:g} is more than the {max_cpus:g} CPUs of the largest node of "
                          "the Ray cluster.")
    exclusive = gpus >= 1 if gpus > 0 else cpus >= max_cpus
    return Resources(gpus=gpus, cpus=cpus, timing="exclusive" if exclusive else "shared")


# ----------------------------------------------------------------------------- in the worker

_WORKER: dict[tuple[str, str], _Seeds] = {}  # this worker process's pipelines and probes, one study at a time


def _worker_seeds(spec: StudySpec, out: str, threads: float) -> _Seeds:
    key = (spec.definition_hash, out)
    if key not in _WORKER:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        _WORKER.clear()
        _WORKER[key] = _Seeds(spec, Path(out), lambda _m: None)
    return _WORKER[key]


def probe_task(spec: StudySpec, out: str, seed: int, threads: float) -> str | None:
    """Compute (or find) one seed's probe under out/probes; its one-line error, or None."""
    try:
        _worker_seeds(spec, out, threads).probe(seed)
    except Exception as e:  # noqa: BLE001 - reported; the cells that need the probe record it themselves
        return f"{type(e).__name__}: {e}".splitlines()[0][:500]
    return None


def cell_task(cell_fn: Callable[..., None], spec: StudySpec, out: str, cell: Cell, timing: str,
              threads: float) -> str:
    """Run one cell through `cell_fn` (runner.run_cell); "kept" when an earlier attempt had finished it."""
    if finished_run(Path(out) / "cells" / cell.id) is not None:
        return "kept"
    cell_fn(cell, spec, _worker_seeds(spec, out, threads), Path(out), timing=timing)
    return "ran"


# ----------------------------------------------------------------------------- the driver


class RayEngine:
    """Runs cells as Ray tasks; see the module docstring. `cell_fn` is `runner.run_cell` (a test may wrap it)."""

    name = "ray"

    def __init__(self, settings: RaySettings, cell_fn: Callable[..., None] = run_cell):
        self.settings, self.cell_fn = settings, cell_fn
        self._started: bool | None = None  # None: not connected yet; True: this engine started Ray (and stops it)
        self.info: dict[str, Any] = {"engine": "ray", "address": settings.address, "max_retries": settings.max_retries}

    def describe(self) -> dict[str, Any]:
        return dict(self.info)

    def prepare(self, spec: StudySpec) -> Resources:
        """Join (or start) Ray and resolve each task's resources; bad settings fail here, before any work."""
        ray = import_ray()
        if self._started is None:
            self._started, dashboard = connect(self.settings)
            self.info["dashboard"] = dashboard
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        res = resolve_resources(self.settings, spec, nodes)
        self.info.update(nodes=len(nodes), gpus_per_cell=res.gpus, cpus_per_cell=res.cpus, timing=res.timing)
        return res

    def run_cells(self, spec: StudySpec, out: Path, todo: list[Cell], hooks: Any) -> list[CellRow]:
        ray = import_ray()
        say = hooks.on_message or (lambda _m: None)
        try:
            res = self.prepare(spec)
            if self.info.get("dashboard"):
                say(f"Ray dashboard: {self.info['dashboard']}")
            opts = {"num_cpus": res.cpus, "num_gpus": res.gpus, "max_retries": self.settings.max_retries,
                    "retry_exceptions": False}
            self._probes(ray, spec, out, todo, res, opts, say)
            return self._cells(ray, spec, out, todo, res, opts, hooks)
        finally:
            if self._started:
                ray.shutdown()
            self._started = None

    def _probes(self, ray, spec, out, todo, res, opts, say) -> None:
        """One task per seed that needs a probe, all finished before the first cell starts."""
        seeds = sorted({c.seed for c in todo if c.strategy != "full"}) if spec.probe_enabled else []
        if not seeds:
            return
        say(f"probing seeds {seeds}")
        task = ray.remote(probe_task).options(**opts)
        refs = [task.remote(spec, str(out), s, res.cpus) for s in seeds]
        for seed, ref in zip(seeds, refs):
            try:
                err = ray.get(ref)
            except ray.exceptions.RayError as e:
                err = _first_line(e)
            if err:  # the cells of this seed that need the probe will fail with it
                say(f"probe failed for seed {seed}: {err}")

    def _cells(self, ray, spec, out, todo, res, opts, hooks) -> list[CellRow]:
        """Submit every cell, then collect them as they finish (done / running / failed on the hooks)."""
        say = hooks.on_message or (lambda _m: None)
        task = ray.remote(cell_task).options(**opts)
        order = sorted(todo, key=lambda c: (c.seed, c.strategy != "full", -(c.rank or 0), c.id))
        t0 = time.time()
        pending = {task.remote(self.cell_fn, spec, str(out), c, res.timing, res.cpus): c for c in order}
        energy, started, done, failed = ProbeEnergy(spec, out), set(), 0, 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
                for ref in ready:
                    cell = pending.pop(ref)
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as e:  # its worker died max_retries + 1 times
                        self._lost(out / "cells" / cell.id, e, isinstance(e, ray.exceptions.RayTaskError))
                    row = cell_row(cell, out / "cells" / cell.id, energy)
                    failed += row.status == "failed"
                    if hooks.on_cell_end:
                        hooks.on_cell_end(cell, row, done, len(todo))
                    done += 1
                for cell in pending.values():  # running: its worker has written cell.json in this call
                    if cell.id not in started and _started_since(out / "cells" / cell.id, t0):
                        started.add(cell.id)
                        if hooks.on_cell_start:
                            hooks.on_cell_start(cell, len(started) - 1, len(todo))
                running = sum(c.id in started for c in pending.values())
                say(f"{done} done, {running} running, {failed} failed")
        except BaseException:
            for ref in pending:  # Ctrl-C or a failing hook: stop the rest; their cells stay pending
                ray.cancel(ref, force=True)
            raise
        finally:
            rows = rebuild_results(spec, out)
        return rows

    def _lost(self, cell_dir: Path, error: Exception, raised: bool) -> None:
        """Mark a cell whose task could not complete as failed (`raised`: the task raised instead of
        its worker dying), unless it had finished before its worker died."""
        if finished_run(cell_dir) is not None:
            return
        cell_dir.mkdir(parents=True, exist_ok=True)
        why = "cell task raised" if raised else f"worker lost after {self.settings.max_retries} retries"
        write_json(cell_dir / "status.json", {"status": "failed", "error": f"{why}: {_first_line(error)}"})


def _started_since(cell_dir: Path, t0: float) -> bool:
    try:
        return (cell_dir / "cell.json").stat().st_mtime >= t0 - 1
    except OSError:
        return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:500]
