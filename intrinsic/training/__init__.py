"""Training one placement: `train(loaded, task, plan, config, out_dir) -> RunResult`.

Files: `config` (TrainConfig, RunResult = run.json), `schedule` (the pure learning-rate schedule),
`rundir` (run-directory layout, refuse/overwrite/resume, atomic saves), `data` (the run's subsample
and held-out batches), `model` (PEFT model, head, accelerator), `loop` (the training loop),
`evaluation` (held-out metrics), `memory` (measured peak memory), `compare` (runs side by side,
Pareto flags: `compare_runs`). Stdlib only at import.
"""

from .config import FULL_LR, LORA_LR, SCHEMA_VERSION, RunResult, TrainConfig, TrainingOOMError
from .loop import train
from .rundir import prepare_out_dir
from .schedule import lr_at

__all__ = ["train", "TrainConfig", "RunResult", "TrainingOOMError", "SCHEMA_VERSION", "LORA_LR", "FULL_LR",
           "prepare_out_dir", "lr_at"]
