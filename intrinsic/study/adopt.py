"""Reuse what another results directory already holds: `intrinsic study adopt STUDY --from SRC --out DIR`.

A cell's id hashes everything that decides its outcome, and a probe's directory name (`rows.probe_key`) everything
that decides the probe, so two study definitions that share settings share those ids: smollm2-budgets-lm holds all
of smollm2-placement-lm's cells, smollm2-auto-fill 48 of smollm2-budgets-lm's. `adopt` claims DIR for STUDY
(`runner.claim_dir`), then copies every finished cell of SRC whose id is one of STUDY's cells (its run, plan,
truncation and saved model, whatever the cell folder holds) and every probe of SRC whose name STUDY uses. A copy
lands in a temporary folder first and is renamed into place, so an interrupted adopt leaves no half cell; what DIR
already has finished is kept. Nothing is trained; `study run` then trains only what is missing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fields import documented
from .rows import finished_run, probe_key
from .runner import claim_dir
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


def adopt(spec: StudySpec, source: str | Path, out: str | Path, *, force: bool = False) -> Adopted:
    """Copy SRC's finished cells and probes that `spec` shares into `out` (module docstring)."""
    src, dst = Path(source), Path(out)
    if not (src / "cells").is_dir() and not (src / "probes").is_dir():
        raise ConfigError(f"{src} is not a study results directory (no cells/ or probes/ in it).")
    if src.resolve() == dst.resolve():
        raise ConfigError(f"--from and --out are the same directory ({src}).")
    claim_dir(spec, dst, force)
    ids = [c.id for c in spec.cells()]
    copied, kept = [], []
    for cid in ids:
        here = dst / "cells" / cid
        if finished_run(here) is not None:
            kept.append(cid)
        elif finished_run(src / "cells" / cid) is not None:
            _copy_dir(src / "cells" / cid, here)
            copied.append(cid)
    probes = []
    for name in sorted({probe_key(spec, s) for s in spec.seeds}) if spec.probe_enabled else []:
        there, here = src / "probes" / name, dst / "probes" / name
        if (there / "probe.json").is_file() and not (here / "probe.json").is_file():
            _copy_dir(there, here)
            probes.append(name)
    missing = len(ids) - len(copied) - len(kept)
    return Adopted(spec.name, str(dst), str(src), tuple(copied), tuple(kept), tuple(probes), missing)


def _copy_dir(src: Path, dst: Path) -> None:
    """Copy a folder into place atomically: into a temporary sibling, then renamed over whatever was there."""
    tmp = dst.with_name(f".{dst.name}.adopting")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
