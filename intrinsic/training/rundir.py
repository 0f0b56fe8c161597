"""The run directory: its layout, the check before a run (refuse / overwrite / resume), atomic
directory saves, and the on-disk size of a saved adapter.

Layout of `out_dir` (the CLI and the study runner use these names instead of spelling them):

    run.json     RUN_FILE     the RunResult, written last and atomically (its presence = a run ended)
    adapter/     ADAPTER_DIR  the PEFT adapter of the last evaluation (`PeftModel.from_pretrained`)
    model/       MODEL_DIR    full fine-tuning with save_full_model: the whole model and tokenizer
    probe/       PROBE_DIR    the probe report `--placement auto` planned from (written by the CLI)
    plan.json    PLAN_FILE    the placement Plan (written by `train` before the first step)
    checkpoint/  CHECKPOINT_DIR  the resumable mid-run state (training.checkpoint), gone when complete

An out_dir that already holds a run.json is refused unless `overwrite` (start fresh) or `resume`;
`resume` returns a complete run as it is, restarts a failed one from step 0, and lets `train`
continue an interrupted one (no run.json) from its last checkpoint. A complete run is only
returned when its stored settings (model, task, placement, plan, TrainConfig) are the requested
ones (`run_differences`): a run with other settings is refused, naming what differs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .config import RunResult

RUN_FILE = "run.json"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
PROBE_DIR = "probe"
PLAN_FILE = "plan.json"
CHECKPOINT_DIR = "checkpoint"
RUN_LAYOUT = (RUN_FILE, ADAPTER_DIR, MODEL_DIR, PROBE_DIR, PLAN_FILE, CHECKPOINT_DIR)  # what a fresh start clears


def prepare_out_dir(out_dir: str | Path, *, overwrite: bool = False, resume: bool = False,
                    expected: dict[str, Any] | None = None) -> RunResult | None:
    """Check `out_dir` before a run: the complete run to return (resume), or None to train.

    A directory without run.json is used as it is (it may hold a probe from an earlier attempt).
    `expected`: the requested settings, keyword arguments of `run_differences`; a complete run
    that differs from them is refused on resume (ConfigError naming the differences).
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
            refuse_other_run(out, old, **(expected or {}))
            return old
        _clear(out)  # failed: start again from step 0
        return None
    if overwrite:
        _clear(out)
        return None
    if _status(out) == "failed":
        raise ConfigError(f"Output directory {out} holds a failed run ({RUN_FILE}); pass --overwrite to "
                          "replace it (--resume does the same), or choose another --out.")
    raise ConfigError(f"Output directory {out} already holds a run ({RUN_FILE}); "
                      "pass --overwrite to start fresh or --resume to keep a complete run.")


def _status(out: Path) -> str | None:
    """The status stored in out's run.json, None when it cannot be read."""
    from ..results import read_json

    try:
        return read_json(out / RUN_FILE).get("status")
    except (ConfigError, AttributeError):
        return None


def run_differences(old: RunResult, *, model: str | None = None, task: str | None = None,
                    placement: str | None = None, config=None, plan=None) -> list[str]:
    """What differs between a stored run and the requested settings, as "NAME STORED (asked: REQUESTED)";
    settings passed as None are not compared. `config` is the requested TrainConfig (its unresolved
    lr is compared as the default it resolves to; mixed precision only on a GPU, where it applies);
    `plan` the requested Plan or "full", compared by module, rank, alpha and scaling."""
    from dataclasses import asdict

    from ..results import to_dict

    diffs = []
    for name, stored, asked in (("model", old.model, model), ("task", old.task, task)):
        if asked is not None and not same_name(stored, str(asked)):
            diffs.append(f"{name} '{stored}' (asked: '{asked}')")
    if placement is not None and placement != old.placement:
        diffs.append(f"placement '{old.placement}' (asked: '{placement}')")
    if config is not None:
        full = old.placement == "full"
        asked_cfg = {**asdict(config), "lr": config.effective_lr(full)}
        on_gpu = str(old.env.get("device", "cpu")).startswith("cuda")
        for key, value in asked_cfg.items():
            if key in old.config and old.config[key] != value and (key != "mixed_precision" or on_gpu) \
                    and not (key == "rslora" and value is False):  # the plan decides rslora too
                diffs.append(f"{key} {old.config[key]} (asked: {value})")
    if plan is not None:
        def modules(p):
            return None if not p else {e["name"]: (e["rank"], e["alpha"]) for e in p["entries"]}

        stored, asked = modules(old.plan), modules(None if plan == "full" else to_dict(plan))
        scaling = None if plan == "full" else plan.rslora or bool(config is not None and config.rslora)
        if stored != asked or (old.plan or {}).get("rslora") != scaling:
            changed = sorted(n for n in set(stored or {}) | set(asked or {})
                             if (stored or {}).get(n) != (asked or {}).get(n))
            first = f" e.g. {changed[0]}: rank {(stored or {}).get(changed[0], (0,))[0]} " \
                    f"(asked: {(asked or {}).get(changed[0], (0,))[0]})" if changed else " (scaling)"
            diffs.append(f"plan: {len(changed)} module(s) differ,{first}")
    return diffs


def refuse_other_run(out: Path, old: RunResult, **expected: Any) -> None:
    """ConfigError when the complete run in `out` was made with other settings than `expected`."""
    diffs = run_differences(old, **expected)
    if diffs:
        raise ConfigError(f"{out} holds a run with other settings: {'; '.join(diffs)}. --resume only returns a run "
                          "made with the same settings: pass --overwrite to replace it, or choose another --out.")


def same_name(a: str, b: str) -> bool:
    """Equal names, or two spellings of one existing path."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


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
