"""Resumable mid-run checkpoints: `out_dir/checkpoint/state.pt`, written atomically at every
evaluation point and every `checkpoint_every` steps (never after the last step; a complete run
removes it).

It holds the trainable parameters (adapters and head copy, or every weight for full fine-tuning),
the optimizer and schedule state, the RNG states (Python, NumPy, torch, CUDA), the step (the
training batches are fixed by the seed, so the step is the data position), the run's curves and
clocks (`RunState`), and the settings the run was made with. `train(..., resume=True)` continues
from it; a checkpoint made with other settings is refused, naming what differs. On the CPU with
one process a resumed run ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import ConfigError

from .rundir import CHECKPOINT_DIR

STATE_FILE = "state.pt"


def settings_of(run) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (the resolved settings of `run`)."""
    from ..results import to_dict

    return {"model": run.loaded.name, "task": run.task.name, "placement": "full" if run.full else run.plan.strategy,
            "plan": None if run.full else to_dict(run.plan), "config": dataclasses.asdict(run.config),
            "env": {"device": str(run.accelerator.device)}}


def save_checkpoint(run, state, step: int) -> None:
    """Write the resumable state after `step` into run.out/checkpoint (main process, atomically)."""
    import numpy as np
    import torch

    from .rundir import save_dir_atomically

    if run.out is None or not run.accelerator.is_main_process:
        return
    model = run.accelerator.unwrap_model(run.model)
    payload = {
        "step": step,
        "settings": settings_of(run),
        "params": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "state": dataclasses.asdict(state),
    }
    save_dir_atomically(lambda d: (d.mkdir(parents=True), torch.save(payload, d / STATE_FILE)),
                        run.out / CHECKPOINT_DIR)


def load_checkpoint(out: Path) -> dict | None:
    """The checkpoint in `out`, None when there is none."""
    import torch

    path = Path(out) / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def refuse_other_settings(out: Path, payload: dict, requested: dict[str, Any]) -> None:
    """ConfigError naming the settings in which the checkpoint differs from `requested` (run_differences)."""
    from .rundir import run_differences

    stored = SimpleNamespace(**payload["settings"])
    diffs = run_differences(stored, **requested)
    if diffs:
        raise ConfigError(f"{out / CHECKPOINT_DIR} was saved by a run with other settings: {'; '.join(diffs)}. "
                          "Resume with the same settings, or pass --overwrite to start fresh.")


def restore(run, state, payload: dict) -> int:
    """Load parameters, optimizer, schedule, RNG and RunState from `payload`; returns its step."""
    import numpy as np
    import torch

    model = run.accelerator.unwrap_model(run.model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in payload["params"].items():
            if name not in params:
                raise ConfigError(f"checkpoint parameter {name} is not in the model: resume with the same settings")
            params[name].copy_(value)
    run.optimizer.load_state_dict(payload["optimizer"])
    run.scheduler.load_state_dict(payload["scheduler"])
    rng = payload["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    for key, value in payload["state"].items():
        setattr(state, key, tuple(value) if key == "best" else value)
    return int(payload["step"])
