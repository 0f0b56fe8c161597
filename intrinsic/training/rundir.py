"""The run directory: its layout, the check before a run (refuse / overwrite / resume), atomic
directory saves, and the on-disk size of a saved adapter.

Layout of `out_dir` (the CLI and the study runner use these names instead of spelling them):

    run.json     RUN_FILE     the RunResult, written last and atomically (its presence = a run ended)
    adapter/     ADAPTER_DIR  the PEFT adapter of the last evaluation (`PeftModel.from_pretrained`)
    model/       MODEL_DIR    full fine-tuning with save_full_model: the whole model and tokenizer
    probe/       PROBE_DIR    the probe report `--placement auto` planned from (written by the CLI)
    plan.json    PLAN_FILE    the placement Plan (written by the CLI)

An out_dir that already holds a run.json is refused unless `overwrite` (start fresh) or `resume`;
`resume` returns a complete run as it is and restarts an incomplete or failed one from step 0
(there are no optimizer checkpoints).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .config import RunResult

RUN_FILE = "run.json"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
PROBE_DIR = "probe"
PLAN_FILE = "plan.json"
RUN_LAYOUT = (RUN_FILE, ADAPTER_DIR, MODEL_DIR, PROBE_DIR, PLAN_FILE)  # what a fresh start clears


def prepare_out_dir(out_dir: str | Path, *, overwrite: bool = False, resume: bool = False) -> RunResult | None:
    """Check `out_dir` before a run: the complete run to return (resume), or None to train.

    A directory without run.json is used as it is (it may hold a probe from an earlier attempt).
    """
    from .config import RunResult  # config imports this module's RUN_FILE

    out = Path(out_dir)
    if not (out / RUN_FILE).is_file():
        return None
    if resume:
        try:
            old = RunResult.load(out)
        except (ConfigError, TypeError):
            old = None
        if old is not None and old.status == "complete":
            return old
        _clear(out)  # incomplete or failed: start again from step 0
        return None
    if overwrite:
        _clear(out)
        return None
    raise ConfigError(f"Output directory {out} already holds a run ({RUN_FILE}); "
                      "pass --overwrite to start fresh or --resume to keep a complete run.")


def _clear(out: Path) -> None:
    """Remove everything of the run layout from `out` (other files are left alone)."""
    for name in RUN_LAYOUT:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def save_dir_atomically(save: Callable[[Path], None], target: Path) -> None:
    """Write a directory under a temporary name, then swap it in (a crash keeps the old one)."""
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    save(tmp)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


def dir_bytes(path: Path) -> int:
    """Bytes of a saved adapter or model: weights and configs (PEFT's generated README.md not counted)."""
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "README.md")
