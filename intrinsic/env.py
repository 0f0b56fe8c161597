"""The software and hardware a result was measured with, recorded in every probe and run file."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any


def _cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def environment(device: Any, dtype: Any, *, model_type: str | None = None) -> dict[str, Any]:
    """Versions of the libraries that decide the numbers, the device (and its name), dtype and threads."""
    import accelerate
    import peft
    import torch
    import transformers

    from . import __version__

    dev = str(device)
    env: dict[str, Any] = {
        "intrinsic": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__, "accelerate": accelerate.__version__,
        "device": dev, "device_name": torch.cuda.get_device_name(device) if dev.startswith("cuda") else _cpu_name(),
        "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
    }
    if model_type is not None:
        env["model_type"] = model_type
    return env
