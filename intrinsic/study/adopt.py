"""Reuse what another results directory already holds: `intrinsic study adopt STUDY --from SRC --out DIR`.

A cell's id hashes everything that decides its outcome, and a probe's directory name (`rows.probe_key`) everything
that decides the probe, so two study definitions that share settings share those ids: smollm2-budgets-lm holds all
of smollm2-placement-lm's cells, smollm2-auto-fill 48 of smollm2-budgets-lm's. `adopt` claims DIR for STUDY
(`runner.claim_dir`), then copies every finished cell of SRC whose id is one of STUDY's cells (its run, plan,
truncation and saved model, whatever the cell folder holds) and every probe of SRC whose name STUDY uses. A copy
lands in a temporary folder first and is renamed into place, so an interrupted adopt leaves no half cell; what DIR
already has finished is kept. Nothing is trained; `study run` then trains only what is missing.

A wider lr grid changes the ids of an arm's test cells (the grid is part of them) but not what a test run with a
given lr is: the same arm (`Cell.arm`: every setting but the grid and the seed), seed and lr train the same run. So
a finished test cell of SRC whose arm and seed match a test cell of STUDY and whose lr is in STUDY's grid is
copied under the new id too (`regridded`; its cell.json says `regridded_from`). It counts
only once the wider sweep chooses the same lr (`rows._unless_stale`: pending until then); otherwise `study run`
retrains it. Widening a grid thus costs the new sweep cells and the arms whose choice moved, not every test cell.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fields import documented
from ..results import read_json, write_json
from .grid import SWEEP, Cell
from .rows import finished_run, probe_key
from .runner import cell_json, claim_dir
from .spec import StudySpec


@dataclass(frozen=True)
class Adopted:
    """What `adopt` copied into a results directory."""

    study: str = documented(help="the study the directory was claimed for")
    out: str = documented(help="the results directory")
    source: str = documented(help="the results directory the cells and probes came from")
    cells: tuple[str, ...] = documented(help="ids of the finished cells copied")
    kept: tuple[str, ...] = documented(help="ids of cells the directory already had finished (not copied)")
    probes: tuple[str, ...] = documented(help="probe directories copied (probes/<name>)")
    missing: int = documented(help="cells of the study that neither directory has finished: `study run` trains them")
    regridded: tuple[str, ...] = documented((), "ids of test cells copied from the same arm, seed and lr under another "
                                                "lr grid: they count once the wider sweep chooses their lr")


def adopt(spec: StudySpec, source: str | Path, out: str | Path, *, force: bool = False) -> Adopted:
    """Copy SRC's finished cells and probes that `spec` shares into `out` (module docstring)."""
    src, dst = Path(source), Path(out)
    if not (src / "cells").is_dir() and not (src / "probes").is_dir():
        raise ConfigError(f"{src} is not a study results directory (no cells/ or probes/ in it).")
    if src.resolve() == dst.resolve():
        raise ConfigError(f"--from and --out are the same directory ({src}).")
    claim_dir(spec, dst, force)
    cells = spec.cells()
    ids = [c.id for c in cells]
    copied, kept, regridded = [], [], []
    earlier = None
    for cell in cells:
        cid = cell.id
        here = dst / "cells" / cid
        if finished_run(here) is not None:
            kept.append(cid)
        elif finished_run(src / "cells" / cid) is not None:
            _copy_dir(src / "cells" / cid, here)
            copied.append(cid)
        elif cell.lrs and cell.phase != SWEEP:
            earlier = _test_runs(src) if earlier is None else earlier
            if (old := _same_run(cell, earlier)) is not None:
                _copy_dir(src / "cells" / old, here, cell_json(cell, spec, earlier[old].get("timing")) |
                          {"regridded_from": old})
                regridded.append(cid)
    probes = []
    for name in sorted({probe_key(spec, s) for s in spec.seeds}) if spec.probe_enabled else []:
        there, here = src / "probes" / name, dst / "probes" / name
        if (there / "probe.json").is_file() and not (here / "probe.json").is_file():
            _copy_dir(there, here)
            probes.append(name)
    missing = len(ids) - len(copied) - len(kept) - len(regridded)
    return Adopted(spec.name, str(dst), str(src), tuple(copied), tuple(kept), tuple(probes), missing, tuple(regridded))


def _test_runs(src: Path) -> dict[str, dict]:
    """{cell id: cell.json, with the run's lr as "run_lr"} of SRC's finished test cells of an lr grid."""
    out = {}
    for d in sorted((src / "cells").glob("*/")) if (src / "cells").is_dir() else []:
        run = finished_run(d)
        try:
            record = read_json(d / "cell.json")
            cell = record["cell"]
        except (OSError, ValueError, KeyError, ConfigError):
            continue
        if run is not None and cell.get("phase") != SWEEP and cell.get("lrs"):
            out[d.name] = {**record, "run_lr": run.config.get("lr")}
    return out


def _same_run(cell: Cell, earlier: dict[str, dict]) -> str | None:
    """The id of an earlier test run that is this cell's run if its sweep chooses that lr: same arm and seed, an
    lr of this cell's grid (the other grid's extent does not matter: the run is the same)."""
    for cid, rec in earlier.items():
        c = rec["cell"]
        if c.get("arm") == cell.arm and c.get("seed") == cell.seed and rec["run_lr"] in cell.lrs:
            return cid
    return None


def _copy_dir(src: Path, dst: Path, cell_record: dict | None = None) -> None:
    """Copy a folder into place atomically: into a temporary sibling, then renamed over whatever was there;
    `cell_record` replaces its cell.json."""
    tmp = dst.with_name(f".{dst.name}.adopting")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if cell_record is not None:
        write_json(tmp / "cell.json", cell_record)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
