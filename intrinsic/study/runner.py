"""Run a study's grid of cells with resume: every finished cell is kept, nothing is trained twice.

Layout of a results directory:

    study.json              the study record: name, definition hash, effective spec (written first)
    cells/<id>/cell.json    the cell's settings (written before training)
    cells/<id>/run.json     RunResult, written atomically by `train` last: its presence = finished
    cells/<id>/status.json  {status: failed|infeasible, error} when the cell did not finish
    probes/<hash>/          the gradient probe of one (model, task, data, probe settings, seed)
    results.json            one row per grid cell, rebuilt from cells/ after every cell

Because results.json is rebuilt from the cell directories (never appended to), an interrupted
study can neither lose nor duplicate a row. On resume a cell with a complete run.json is
skipped; any other cell directory (half-written, failed, infeasible) is removed and redone.

Each cell trains a fresh deep copy of the base model loaded once per seed (the seed also seeds
the classification head), so no cell sees another cell's adapters.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetError, ConfigError, did_you_mean
from ..pipeline import Pipeline
from ..results import ensure_writable_dir, read_json, to_dict, write_json
from .spec import Cell, StudySpec, settings_hash

RESULTS_SCHEMA = 1
ROW_METRICS = ("score", "baseline_score", "baseline_kind", "untrained_score", "trainable_params", "lora_params",
               "trainable_pct", "peak_memory_mb", "memory_kind", "train_time_s", "time_per_step_s", "tokens_per_s",
               "adapter_bytes")


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
    on_cell_end: Callable[[Cell, dict, int, int], None] | None = None  # (cell, row, index, total)
    on_message: Callable[[str], None] | None = None  # phase messages ("loading model", "probing seed 0")


# ----------------------------------------------------------------------------- study record


def study_record(spec: StudySpec) -> dict[str, Any]:
    return {"schema_version": RESULTS_SCHEMA, "name": spec.name, "question": spec.question, "model": spec.model,
            "task": spec.task, "quick": spec.quick, "definition_hash": spec.definition_hash,
            "metrics": list(spec.metrics), "source": spec.source, "spec": to_dict(spec),
            "cells": len(spec.cells())}


def claim_dir(spec: StudySpec, out_dir: Path, force: bool) -> None:
    """Write study.json, refusing a directory made by a different definition unless `force`."""
    ensure_writable_dir(out_dir)
    rec_path = out_dir / "study.json"
    if rec_path.exists():
        old = read_json(rec_path)
        if old.get("definition_hash") != spec.definition_hash and not force:
            raise ConfigError(
                f"{out_dir} holds results of a different study definition ('{old.get('name')}', hash "
                f"{old.get('definition_hash')}; this one is {spec.definition_hash}). Use another --out, "
                "or --force to reuse it (cells with identical settings are kept).")
    write_json(rec_path, study_record(spec))


# ----------------------------------------------------------------------------- rows


def _read_run(cell_dir: Path) -> dict | None:
    """The cell's run.json if it records a complete run, else None (missing, unreadable or failed)."""
    path = cell_dir / "run.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("status", "complete") == "complete" and data.get("score") is not None
    return data if ok else None


def probe_key(spec: StudySpec, seed: int) -> str:
    return settings_hash({"model": spec.model, "task": spec.task, "dtype": spec.dtype, "data": spec.data,
                          "probe": spec.probe_settings, "seed": seed})


class ProbeEnergy:
    """Per-seed probe spectra, loaded lazily: predicted energy share of a plan."""

    def __init__(self, spec: StudySpec, out_dir: Path):
        self.spec, self.out_dir, self._cache = spec, out_dir, {}

    def gains(self, seed: int) -> tuple[dict[str, Any], float] | None:
        if seed not in self._cache:
            self._cache[seed] = None
            path = self.out_dir / "probes" / probe_key(self.spec, seed)
            if (path / "probe.json").is_file():
                from ..probes.schema import ProbeReport

                rep = ProbeReport.load(path)
                gains = rep.gains()
                total = sum(float(m.grad_norm) ** 2 if m.grad_norm > 0 else float(gains[m.name].sum())
                            for m in rep.top_level())
                self._cache[seed] = (gains, total)
        return self._cache[seed]

    def share(self, seed: int, plan: Any) -> float | None:
        """Sum over adapted modules of sum_{i<=rank} sigma_i^2, over the total energy (full: 1.0)."""
        if _is_full(plan):
            return 1.0
        g = self.gains(seed)
        if g is None or not isinstance(plan, dict) or not plan.get("entries"):
            return None
        gains, total = g
        got = sum(float(gains[e["name"]][: int(e["rank"])].sum()) for e in plan["entries"] if e["name"] in gains)
        return got / total if total > 0 else None


def _is_full(plan: Any) -> bool:
    return plan == "full" or (isinstance(plan, dict) and plan.get("strategy") == "full")


def cell_row(cell: Cell, cell_dir: Path, energy: ProbeEnergy | None = None) -> dict[str, Any]:
    """One results row: the cell's settings plus its outcome (ok | failed | infeasible | pending)."""
    row: dict[str, Any] = {"id": cell.id, "config_id": cell.config_id, "label": cell.label, "variant": cell.variant,
                           "strategy": cell.strategy, "rank": cell.rank, "budget": cell.budget, "layers": cell.layers,
                           "seed": cell.seed, "groups": list(cell.groups), "blocks": list(cell.blocks),
                           "status": "pending", "error": None}
    run = _read_run(cell_dir)
    if run is not None:
        row["status"] = "ok"
        row.update({k: run.get(k) for k in ROW_METRICS})
        # gain over the untrained model when it was scored, else over the trainer's baseline (majority class)
        base = run.get("untrained_score") if run.get("untrained_score") is not None else run.get("baseline_score")
        row["gain"] = run["score"] - base if run.get("score") is not None and base is not None else None
        plan = "full" if run.get("placement") == "full" else run.get("plan")
        ranks = [int(e["rank"]) for e in plan.get("entries", [])] if isinstance(plan, dict) else []
        row["rank_min"], row["rank_max"] = (min(ranks), max(ranks)) if ranks else (None, None)
        row["modules"] = len(ranks) if ranks else None
        row["plan_params"] = plan.get("params") if isinstance(plan, dict) else None
        row["predicted_share"] = energy.share(cell.seed, plan) if energy else None
        return row
    failed_run = cell_dir / "run.json"
    if failed_run.is_file():  # the trainer recorded a failed run (non-finite loss, out of memory)
        try:
            row["status"], row["error"] = "failed", json.loads(failed_run.read_text()).get("error")
        except ValueError:
            pass
    status = cell_dir / "status.json"
    if status.is_file():
        try:
            st = json.loads(status.read_text())
            row["status"], row["error"] = st.get("status", "failed"), st.get("error")
        except ValueError:
            pass
    return row


def rebuild_results(spec: StudySpec, out_dir: Path) -> list[dict[str, Any]]:
    """Rebuild results.json from the cell directories (one row per grid cell, grid order)."""
    energy = ProbeEnergy(spec, out_dir)
    rows = [cell_row(c, out_dir / "cells" / c.id, energy) for c in spec.cells()]
    write_json(out_dir / "results.json", {"schema_version": RESULTS_SCHEMA, "study": spec.name,
                                          "definition_hash": spec.definition_hash, "rows": rows})
    return rows


def load_results(out_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(study record, rows) of a results directory; rows are rebuilt from cells/ when present."""
    out = Path(out_dir)
    if not (out / "study.json").is_file():
        raise ConfigError(f"{out} is not a study results directory (no study.json; run `intrinsic study run` first).")
    record = read_json(out / "study.json")
    if (out / "cells").is_dir() and record.get("spec"):
        from .spec import spec_from_record

        return record, rebuild_results(spec_from_record(record), out)
    if not (out / "results.json").is_file():
        raise ConfigError(f"{out} has no results.json yet.")
    return record, read_json(out / "results.json")["rows"]


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


def train_config(cell: Cell):
    from ..training import TrainConfig

    try:
        return TrainConfig(**cell.train, seed=cell.seed)
    except TypeError as e:  # an unknown [train] key that validation could not see
        raise ConfigError(f"[train] settings do not fit TrainConfig: {e}") from None


def run_cell(cell: Cell, spec: StudySpec, seeds: _Seeds, out_dir: Path) -> None:
    """Train one cell into out/cells/<id>, recording failure or infeasibility instead of raising."""
    cell_dir = out_dir / "cells" / cell.id
    if cell_dir.exists():
        shutil.rmtree(cell_dir)  # half-written, failed or infeasible: redo from scratch
    cell_dir.mkdir(parents=True)
    write_json(cell_dir / "cell.json", {"cell": to_dict(cell), "study": spec.name, "model": spec.model,
                                        "task": spec.task, "data": spec.data, "dtype": spec.dtype})
    try:
        config = train_config(cell)
        pipe = seeds.pipeline(cell.seed)
        plan = pipe.plan(spec.placement_request(cell), probe=lambda: seeds.probe(cell.seed))
        result = pipe.train(plan, config, cell_dir)
        if _read_run(cell_dir) is None:  # the trainer did not write it: do it here, atomically
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

    Run this before launching parallel shards, so that no two processes probe the same seed."""
    out = Path(out_dir)
    claim_dir(spec, out, force)
    seeds = sorted({c.seed for c in spec.cells()})
    if shard is not None:
        seeds = seeds[shard[0]::shard[1]]
    probes = _Seeds(spec, out, say or (lambda _m: None))
    for seed in seeds:
        probes.probe(seed)
    return seeds


def run_study(spec: StudySpec, out_dir: str | Path, *, only: str | None = None, force: bool = False,
              hooks: Hooks | None = None, shard: tuple[int, int] | None = None) -> RunSummary:
    """Run every unfinished cell of the grid (or the `only` selection, or one shard of it) and
    rebuild results.json. Shards of one study may run concurrently in separate processes (on one
    or several GPUs): each cell belongs to exactly one shard and writes only its own directory."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    hooks = hooks or Hooks()
    say = hooks.on_message or (lambda _m: None)
    cells = shard_cells(select_cells(spec.cells(), only), shard)
    claim_dir(spec, out, force)
    seeds = _Seeds(spec, out, say)
    todo = [c for c in cells if _read_run(out / "cells" / c.id) is None]
    skipped = len(cells) - len(todo)
    try:
        for i, cell in enumerate(todo):
            if hooks.on_cell_start:
                hooks.on_cell_start(cell, i, len(todo))
            if spec.probe_enabled and cell.strategy != "full":
                try:
                    seeds.probe(cell.seed)
                except Exception as e:  # noqa: BLE001 - auto cells will record the failure themselves
                    say(f"probe failed for seed {cell.seed}: {e}")
            run_cell(cell, spec, seeds, out)
            row = next(r for r in rebuild_results(spec, out) if r["id"] == cell.id)
            if hooks.on_cell_end:
                hooks.on_cell_end(cell, row, i, len(todo))
    finally:
        rows = rebuild_results(spec, out)
    sel = {c.id for c in cells}
    counts: dict[str, int] = {}
    for r in rows:
        if r["id"] in sel:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    return RunSummary(str(out), spec.name, spec.definition_hash, len(cells), len(todo), skipped, counts,
                      time.perf_counter() - t0)
