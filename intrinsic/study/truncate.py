"""A study's [truncate] stage: r90 of each component of every finished full fine-tuning test cell.

After the grid is done, `truncate_cells` runs `truncation.truncate_run` on each full fine-tuning cell of
phase "test" whose run is finished (run.json) and whose truncation.json does not yet hold every point
the study's [truncate] asks for; the result lands in the cell's own folder (cells/<id>/truncation.json),
written after every point, so an interrupted stage resumes where it stopped. It runs in the driver
process on the study's device (also after an engine's cells), with progress through the runner's `say`.
A cell that cannot be truncated (its model missing) is reported and skipped: the study's rows stand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .grid import SWEEP, Cell
from .rows import finished_run
from .spec import StudySpec


def truncate_settings(spec: StudySpec):
    """The TruncateSettings of the study's [truncate] (on the study's device); None without [truncate]."""
    if spec.truncate is None:
        return None
    from ..truncation import TruncateSettings

    comps = spec.truncate.get("components")
    return TruncateSettings(components=",".join(comps) if comps else None, ranks=tuple(spec.truncate["ranks"]),
                            device=spec.device)


def truncation_cells(cells: Sequence[Cell], out: Path) -> list[Cell]:
    """The full fine-tuning test cells among `cells` whose run is finished, in grid order."""
    return [c for c in cells if c.strategy == "full" and c.phase != SWEEP
            and finished_run(out / "cells" / c.id) is not None]


def model_lost(spec: StudySpec, out: Path, cell: Cell) -> bool:
    """Whether `cell` is a finished full test cell whose r90 this stage can no longer measure: its truncation.json
    lacks points the study asks for (on any device) and its saved model is gone (models are not committed, and a
    run trained before [truncate] saved none). Training it again is the only way to its r90, so `study run` does
    (`runner.is_done`); the same settings give the same run up to GPU nondeterminism."""
    settings = truncate_settings(spec)
    if settings is None or cell.strategy != "full" or cell.phase == SWEEP:
        return False
    from ..training.rundir import MODEL_DIR
    from ..truncation import is_complete

    d = out / "cells" / cell.id
    if finished_run(d) is None or (d / MODEL_DIR / "config.json").is_file():
        return False
    return not is_complete(d, settings, any_device=True)


def truncate_cells(spec: StudySpec, out: Path, cells: Sequence[Cell], say: Callable[[str], None]) -> int:
    """Measure (or complete) the truncation of every finished full test cell of `cells`; the number of
    cells that measured something in this call."""
    settings = truncate_settings(spec)
    if settings is None:
        return 0
    from ..errors import ConfigError
    from ..truncation import is_complete, truncate_run

    todo = [c for c in truncation_cells(cells, out) if not is_complete(out / "cells" / c.id, settings)]
    for i, cell in enumerate(todo, 1):
        head = f"truncate {i}/{len(todo)} ({cell.label} seed {cell.seed})"
        say(f"{head}: measuring r90 per component")

        def progress(e: dict, head: str = head) -> None:
            if e["event"] == "phase":
                say(f"{head}: {e['message']}")
            elif e["event"] == "point":
                say(f"{head}: {e['component']} r={e['rank']} score {e['score']:.4f} ({e['done']}/{e['total']})")

        try:
            truncate_run(out / "cells" / cell.id, settings, callback=progress)
        except ConfigError as e:  # e.g. a run trained before [truncate] was added, without its model
            say(f"{head}: skipped: {e}")
    return len(todo)
