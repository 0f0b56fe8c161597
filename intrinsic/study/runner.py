"""Run a study's grid of cells with resume: every finished cell is kept, nothing is trained twice.

Layout of a results directory:

    study.json              the study record: name, definition hash, effective spec (written first)
    cells/<id>/cell.json    the cell's settings and its timing (exclusive | shared device), written before training
    cells/<id>/run.json     RunResult, written atomically by `train` last: its presence = finished
    cells/<id>/status.json  {status: failed|infeasible, error} when the cell did not finish
    probes/<hash>/          the gradient probe of one (model, task, data, probe settings, seed)
    results.json            one row per grid cell, rebuilt from cells/ after every cell
    cells/<id>/truncation.json   with [truncate]: r90 per component of a full fine-tuning test cell (`truncate.py`)

Because results.json is rebuilt from the cell directories (never appended to), an interrupted
study can neither lose nor duplicate a row. On resume a cell with a complete run.json is
skipped; any other cell directory (half-written, failed, infeasible) is removed and redone.

Learning-rate grids: the lr-sweep cells run first (`grid.expand` orders them so); a test cell of an
arm with an lr grid then trains with the lr `selection.select_lrs` chose from the arm's validation
rows. It waits (stays pending) while a sweep cell of its arm is unfinished, e.g. in another shard,
and counts as finished only if its run.json used the chosen lr.

Each cell trains a fresh deep copy of the base model loaded once per seed (the seed also seeds
the classification head), so no cell sees another cell's adapters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetError, ConfigError, did_you_mean
from ..pipeline import Pipeline
from ..results import ensure_writable_dir, read_json, to_dict, write_json
from .rows import RESULTS_SCHEMA, CellRow, finished_run, probe_key, rebuild_results
from .grid import SWEEP, Cell, steps_for
from .selection import select_lrs, sweep_rows
from .check import check_resources
from .spec import StudySpec
from .truncate import model_lost, truncate_cells


@dataclass(frozen=True)
class RunSummary:
    """What `run_study` did."""

    out_dir: str  # results directory
    study: str  # study name
    definition_hash: str  # hash of the effective definition
    cells: int  # cells in the grid (or selected by --only)
    ran: int  # cells trained (or attempted) in this call
    skipped: int  # cells already finished before this call
    counts: dict[str, int]  # rows by status after this call: ok, failed, infeasible, pending
    wall_s: float  # wall time of this call


@dataclass
class Hooks:
    """Callbacks for progress displays (and tests). Any may be None."""

    on_cell_start: Callable[[Cell, int, int], None] | None = None  # (cell, index, total)
    on_cell_end: Callable[[Cell, CellRow, int, int], None] | None = None  # (cell, row, index, total)
    on_message: Callable[[str], None] | None = None  # phase messages ("loading model", "probing seed 0")


# ----------------------------------------------------------------------------- study record


def study_record(spec: StudySpec) -> dict[str, Any]:
    stored = to_dict(spec)
    if spec.truncate is None:  # a study without [truncate] writes the study.json it always wrote
        stored.pop("truncate", None)
    for block in stored["grid"]:  # likewise a block without a data-size axis
        if not block.get("train_examples"):
            block.pop("train_examples", None)
            block.pop("epochs", None)
    return {"schema_version": RESULTS_SCHEMA, "name": spec.name, "question": spec.question, "model": spec.model,
            "task": spec.task, "quick": spec.quick, "definition_hash": spec.definition_hash,
            "metrics": list(spec.metrics), "source": spec.source, "spec": stored,
            "cells": len(spec.cells())}


def claim_dir(spec: StudySpec, out_dir: Path, force: bool) -> None:
    """Write study.json, refusing a directory made by a different definition unless `force` (or unless
    it holds no finished cell: then nothing would be lost, e.g. a definition whose every cell failed)."""
    ensure_writable_dir(out_dir)
    rec_path = out_dir / "study.json"
    if rec_path.exists():
        old = read_json(rec_path)
        finished = any(finished_run(d) is not None for d in (out_dir / "cells").glob("*/"))
        if old.get("definition_hash") != spec.definition_hash and finished and not force:
            raise ConfigError(
                f"{out_dir} holds results of a different study definition ('{old.get('name')}', hash "
                f"{old.get('definition_hash')}; this one is {spec.definition_hash}). Use another --out, "
                "or --force to reuse it (cells with identical settings are kept).")
    write_json(rec_path, study_record(spec))


# ----------------------------------------------------------------------------- running


class _Seeds:
    """The pipeline of the current seed (its base model loaded once, on the CPU, and deep-copied for
    every probe and cell) and each seed's probe, computed once and remembered."""

    def __init__(self, spec: StudySpec, out_dir: Path, say: Callable[[str], None]):
        self.spec, self.out_dir, self.say = spec, out_dir, say
        self.current: Pipeline | None = None
        self.probes: dict[int, Any] = {}

    def pipeline(self, seed: int) -> Pipeline:
        if self.current is None or self.current.seed != seed:
            self.current = None  # release the previous seed's model before loading the next
            self.current = Pipeline(self.spec.model, self.spec.task, seed=seed, device=self.spec.device,
                                    dtype=self.spec.dtype, data=self.spec.data, copy_per_use=True, say=self.say)
        return self.current

    def probe(self, seed: int):
        """The probe report of this seed: read from out/probes/<hash>, or computed once and saved there."""
        if seed not in self.probes:
            try:
                self.probes[seed] = self.pipeline(seed).probe(
                    cache_dir=self.out_dir / "probes" / probe_key(self.spec, seed),
                    progress=lambda phase, done, total: self.say(f"probe seed {seed}: {phase} {done}/{total}"),
                    **self.spec.probe_settings)
            except Exception as e:  # noqa: BLE001 - remembered, so a failing probe is not retried per cell
                self.probes[seed] = e
        got = self.probes[seed]
        if isinstance(got, Exception):
            raise got
        return got


def train_config(cell: Cell, lr: float | None = None, train_size: int | None = None):
    """The cell's TrainConfig; `lr`: the learning rate chosen on validation for a test cell of an lr grid;
    `train_size`: examples of the loaded train split, for a cell of a data-size axis (its count must fit, and
    with `epochs` its steps are counted from it, `grid.steps_for`)."""
    from ..training import TrainConfig

    try:
        config = TrainConfig(**{**cell.train, **({"lr": lr} if lr is not None else {})}, seed=cell.seed)
    except TypeError as e:  # an unknown [train] key that validation could not see
        raise ConfigError(f"[train] settings do not fit TrainConfig: {e}") from None
    if cell.train_examples is None or train_size is None:
        return config
    if isinstance(cell.train_examples, int) and cell.train_examples > train_size:
        raise ConfigError(f"train_examples {cell.train_examples} is more than the {train_size:,} training examples "
                          "of the task")
    if cell.epochs is None:
        return config
    return dataclasses.replace(config, steps=steps_for(cell, train_size, config.batch_size, config.grad_accum))


def chosen_lr(cell: Cell, rows: list[CellRow]) -> float | str | None:
    """For a test cell of an lr grid: the lr chosen on its arm's validation rows, "wait" while a sweep
    cell is unfinished, "failed" when every sweep run failed. None for any other cell."""
    if not cell.lrs or cell.phase == SWEEP:
        return None
    choice = select_lrs(sweep_rows(r for r in rows if r.arm == cell.arm), {cell.arm: cell.lrs})[cell.arm]
    if choice.pending:
        return "wait"
    return choice.chosen if choice.chosen is not None else "failed"


def is_done(cell: Cell, out: Path, rows: list[CellRow], spec: StudySpec) -> bool:
    """Finished, and (test cell of an lr grid) trained with the lr chosen now, and (full test cell of a study
    with [truncate]) not waiting for an r90 its lost model can no longer give (`model_lost`)."""
    run = finished_run(out / "cells" / cell.id)
    if run is not None and model_lost(spec, out, cell):
        return False
    if run is None or not cell.lrs or cell.phase == SWEEP:
        return run is not None
    lr = chosen_lr(cell, rows)
    return isinstance(lr, float) and run.config.get("lr") == lr


def cell_json(cell: Cell, spec: StudySpec, timing: str | None) -> dict[str, Any]:
    """What a cell's folder records about it (cell.json): its settings, the study, and how it was timed."""
    record = to_dict(cell)
    if cell.train_examples is None:  # no data-size axis: the cell.json it always wrote
        record.pop("train_examples", None)
        record.pop("epochs", None)
    return {"cell": record, "study": spec.name, "model": spec.model, "task": spec.task, "data": spec.data,
            "dtype": spec.dtype, "timing": timing}


def run_cell(cell: Cell, spec: StudySpec, seeds: _Seeds, out_dir: Path, lr: float | str | None = None, *,
             timing: str = "exclusive") -> None:
    """Train one cell into out/cells/<id>, recording failure or infeasibility instead of raising. Every
    engine calls this (intrinsic/study/engine.py). `lr`: `chosen_lr` of the cell ("failed": record that no
    lr of the sweep trained). `timing`: "exclusive" when the cell has its device to itself, "shared" when
    other cells run on it (its time and memory are then not a dedicated device's)."""
    cell_dir = out_dir / "cells" / cell.id
    if cell_dir.exists():
        shutil.rmtree(cell_dir)  # half-written, failed or infeasible: redo from scratch
    cell_dir.mkdir(parents=True)
    write_json(cell_dir / "cell.json", cell_json(cell, spec, timing))
    try:
        if lr == "failed":
            raise RuntimeError(f"no learning rate of the grid {list(cell.lrs)} finished on validation")
        pipe = seeds.pipeline(cell.seed)
        config = train_config(cell, lr, len(pipe.task_data.train_texts) if cell.train_examples is not None else None)
        plan = pipe.plan(spec.placement_request(cell), probe=lambda: seeds.probe(cell.seed))
        result = pipe.train(plan, config, cell_dir)
        if finished_run(cell_dir) is None:  # the trainer did not write it: do it here, atomically
            write_json(cell_dir / "run.json", result)
    except BudgetError as e:
        write_json(cell_dir / "status.json", {"status": "infeasible", "error": str(e)})
    except Exception as e:  # noqa: BLE001 - one cell's failure must not stop the study
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        write_json(cell_dir / "status.json", {"status": "failed", "error": msg, "traceback": traceback.format_exc()})
    finally:
        _release_memory()


def _release_memory() -> None:
    """Free the cell's model copy and optimizer before the next cell (and the CUDA cache with them)."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def select_cells(cells: list[Cell], only: str | None) -> list[Cell]:
    """All cells, or those whose id or config id starts with `only` (>= 4 characters)."""
    if not only:
        return cells
    if len(only) < 4:
        raise ConfigError(f"--only needs at least 4 characters of a cell id, got '{only}'.")
    chosen = [c for c in cells if c.id.startswith(only) or c.config_id.startswith(only)]
    if not chosen:
        raise ConfigError(f"No cell id starts with '{only}'.{did_you_mean(only, [c.id for c in cells])} "
                          "List them with `intrinsic study run ... --list`.")
    return chosen


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N) with 0 <= K < N: this process takes every N-th cell starting at K."""
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like K/N (e.g. 0/4), got '{text}'.") from None
    if not 0 <= k < n:
        raise ConfigError(f"--shard K/N needs 0 <= K < N, got '{text}'.")
    return k, n


def shard_cells(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """The shard's share of the cells. Cells are ordered slowest first (full fine-tuning, then by
    rank/budget size) before dealing them out round-robin, so shards finish at about the same time."""
    if shard is None:
        return cells
    k, n = shard
    ordered = sorted(cells, key=lambda c: (c.strategy != "full", -(c.rank or 0), c.id))
    return ordered[k::n]


def run_probes(spec: StudySpec, out_dir: str | Path, *, shard: tuple[int, int] | None = None,
               force: bool = False, say: Callable[[str], None] | None = None) -> list[int]:
    """Compute (or find) the probe of every seed of the study, or of this shard's seeds[K::N].

    Run this before launching parallel shards, so that no two processes probe the same seed. A study that
    probes nothing (`[probe] enabled = false` and no auto) probes no seed."""
    out = Path(out_dir)
    check_resources(spec)
    seeds = sorted({c.seed for c in spec.cells()}) if spec.probe_enabled else []
    if shard is not None:
        seeds = seeds[shard[0]::shard[1]]
    with _claimed(spec, out, force):
        probes = _Seeds(spec, out, say or (lambda _m: None))
        for seed in seeds:
            probes.probe(seed)
    return seeds


def run_study(spec: StudySpec, out_dir: str | Path, *, only: str | None = None, force: bool = False,
              hooks: Hooks | None = None, shard: tuple[int, int] | None = None, engine: Any = None) -> RunSummary:
    """Run every unfinished cell of the grid (or the `only` selection, or one shard of it) and
    rebuild results.json. Shards of one study may run concurrently in separate processes (on one
    or several GPUs): each cell belongs to exactly one shard and writes only its own directory.
    The model and task are checked before the results directory is written. `engine` (an
    `engine.Engine`, e.g. Ray's) runs the pending cells; None runs them here, one after another."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    hooks = hooks or Hooks()
    cells = shard_cells(select_cells(spec.cells(), only), shard)
    check_resources(spec)
    with _claimed(spec, out, force):
        done = rebuild_results(spec, out) if any(c.lrs for c in cells) else []
        todo = sorted((c for c in cells if not is_done(c, out, done, spec)), key=lambda c: c.phase != SWEEP)
        for c in (c for c in todo if model_lost(spec, out, c)):
            (hooks.on_message or (lambda _m: None))(f"{c.label} seed {c.seed}: trained again: its r90 is not "
                                                     "measured and its saved model is gone")
        if engine is None:  # alone on its device, unless shards share it
            rows, ran = _run_cells(spec, out, todo, hooks, timing="shared" if shard else "exclusive")
        else:
            rows, ran = _engine_cells(engine, spec, out, todo, hooks)
        if spec.truncate is not None:  # after the grid: r90 of the finished full test cells, in this process
            truncate_cells(spec, out, cells, hooks.on_message or (lambda _m: None))
    sel = {c.id for c in cells}
    counts: dict[str, int] = {}
    for r in rows:
        if r.id in sel:
            counts[r.status] = counts.get(r.status, 0) + 1
    return RunSummary(str(out), spec.name, spec.definition_hash, len(cells), ran, len(cells) - len(todo),
                      counts, time.perf_counter() - t0)


def _engine_cells(engine: Any, spec: StudySpec, out: Path, todo: list[Cell], hooks: Hooks) -> tuple[list[CellRow], int]:
    """`todo` through an engine: the lr-sweep cells first, then the test cells with the lr their arm's
    sweep chose (baked into the cell's train settings, so the engine's cell function needs no lr)."""
    sweeps = [c for c in todo if c.phase == SWEEP]
    if sweeps:
        engine.run_cells(spec, out, sweeps, hooks)
    rows = rebuild_results(spec, out)
    tests, ran = [], len(sweeps)
    for cell in (c for c in todo if c.phase != SWEEP):
        lr = chosen_lr(cell, rows)
        if lr == "wait" or (lr is not None and is_done(cell, out, rows, spec)):
            continue
        if lr == "failed":  # recorded here: nothing to train
            run_cell(cell, spec, _Seeds(spec, out, lambda _m: None), out, lr)
            ran += 1
            continue
        tests.append(cell if lr is None else dataclasses.replace(cell, train={**cell.train, "lr": lr}))
    if tests:
        engine.run_cells(spec, out, tests, hooks)
    return rebuild_results(spec, out), ran + len(tests)


def _run_cells(spec: StudySpec, out: Path, todo: list[Cell], hooks: Hooks,
               timing: str = "exclusive") -> tuple[list[CellRow], int]:
    """Train `todo` in order (each seed's probe first when the study probes): (the rebuilt rows, cells run).
    A test cell of an lr grid that waited for its sweep is skipped if it already ran with the chosen lr."""
    say = hooks.on_message or (lambda _m: None)
    seeds = _Seeds(spec, out, say)
    rows = rebuild_results(spec, out) if any(c.lrs for c in todo) else []
    ran = 0
    try:
        for i, cell in enumerate(todo):
            lr = chosen_lr(cell, rows)
            if lr == "wait":
                say(f"{cell.label} seed {cell.seed}: waiting for its lr sweep (unfinished cells of the arm)")
                continue
            if lr is not None and is_done(cell, out, rows, spec):
                continue
            ran += 1
            if hooks.on_cell_start:
                hooks.on_cell_start(cell, i, len(todo))
            if spec.probe_enabled and cell.strategy != "full":
                try:
                    seeds.probe(cell.seed)
                except Exception as e:  # noqa: BLE001 - auto cells will record the failure themselves
                    say(f"probe failed for seed {cell.seed}: {e}")
            run_cell(cell, spec, seeds, out, lr, timing=timing)
            rows = rebuild_results(spec, out)
            row = next(r for r in rows if r.id == cell.id)
            if hooks.on_cell_end:
                hooks.on_cell_end(cell, row, i, len(todo))
    finally:
        rows = rebuild_results(spec, out)
    return rows, ran


@contextlib.contextmanager
def _claimed(spec: StudySpec, out: Path, force: bool) -> Iterator[None]:
    """claim_dir, and on any failure inside (Ctrl-C included) remove `out` again when this call
    created it and it holds no result yet: an early failure leaves no empty results folder."""
    created = not out.exists()
    try:
        claim_dir(spec, out, force)
        yield
    except BaseException:
        if created and out.is_dir() and not _holds_results(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _holds_results(out: Path) -> bool:
    """Whether a results directory holds anything worth keeping: a cell's run or status, or a probe."""
    cells = out / "cells"
    if any((d / name).exists() for d in cells.glob("*/") for name in ("run.json", "status.json")):
        return True
    probes = out / "probes"
    return probes.is_dir() and any(p.is_file() for p in probes.rglob("*"))
