"""Engines: what runs a study's pending cells. The local runner (one cell after another, in this
process) is the default and the reference; Ray (`engine_ray.py`) spreads cells over the CPUs and GPUs
of one machine or a cluster.

Both go through the same contract, so there is one cell function (`runner.run_cell`) and one
directory layout: `run_study` claims the results directory and picks the cells still to run, the
engine runs each of them through `run_cell` (which writes only cells/<id>/), and results.json is
rebuilt from the cell directories. An interrupted engine therefore loses and duplicates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, did_you_mean
from ..fields import documented

if TYPE_CHECKING:  # this module stays light: the CLI reads RaySettings' help without importing torch
    from .grid import Cell
    from .rows import CellRow
    from .spec import StudySpec

ENGINES = ("local", "ray")  # names accepted by `intrinsic study run --engine`


class Engine(Protocol):
    """Runs the pending cells of a claimed results directory and returns the rebuilt rows."""

    name: str  # "local" | "ray"

    def prepare(self, spec: StudySpec) -> Any:
        """Check the engine's settings against the study and the machines (one-line errors before any work)."""
        ...

    def run_cells(self, spec: StudySpec, out: Path, todo: list[Cell], hooks: Any) -> list[CellRow]:
        """Run every cell of `todo` through `runner.run_cell` (probes first), calling the `runner.Hooks`;
        return the rows rebuilt from the cell directories (results.json rewritten)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the engine ran on, for --json: address, dashboard, resources per cell, timing."""
        ...


@dataclass(frozen=True)
class RaySettings:
    """How cells are scheduled on Ray (`intrinsic study run --engine ray`)."""

    address: str | None = documented(None, "Ray cluster to join: auto (the cluster `ray start --head` started "
                                           "on this machine), HOST:PORT or ray://HOST:PORT; None starts a Ray "
                                           "instance on this machine for the run")
    gpus_per_cell: float | None = documented(None, "GPUs of each cell task, fractional below 1 so small models "
                                                   "share a GPU (0.25: four cells per GPU); None: 1 when the "
                                                   "cluster has GPUs and the study's device is not cpu, else 0")
    cpus_per_cell: float = documented(1.0, "CPUs of each cell task (its torch threads too)")
    max_retries: int = documented(2, "retries of a cell whose worker process died (killed, out of memory, node "
                                     "lost) before the cell is marked failed")
    exclusive_timing: bool = documented(False, "one cell per GPU (per node on a CPU-only cluster), so every "
                                               "time and memory figure comes from an unshared device; without "
                                               "it, rows of cells that shared a device say timing=shared")

    def __post_init__(self) -> None:
        g = self.gpus_per_cell
        if g is not None and (g < 0 or (g > 1 and g != int(g))):
            raise ConfigError(f"--gpus-per-cell must be >= 0, and a whole number above 1, got {g:g}.")
        if self.cpus_per_cell <= 0:
            raise ConfigError(f"--cpus-per-cell must be > 0, got {self.cpus_per_cell:g}.")
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries must be >= 0, got {self.max_retries}.")


def check_engine(name: str) -> str:
    """`name` when it is a known engine, else a ConfigError with the nearest names."""
    if name not in ENGINES:
        raise ConfigError(f"Unknown engine '{name}'; choose one of {', '.join(ENGINES)}.{did_you_mean(name, ENGINES)}")
    return name


def make_engine(name: str, settings: Any = None) -> Engine | None:
    """The engine called `name`: None for the local runner (run_study's default), a `RayEngine` built
    from `settings` (an `engine_ray.RaySettings`, default settings when None) for "ray"."""
    if check_engine(name) == "local":
        return None
    from .engine_ray import RayEngine

    return RayEngine(settings or RaySettings())
