"""Peak memory of a block of code, measured rather than estimated.

Two kinds, reported with the number so they are never mixed up:

- ``"cuda"``: ``torch.cuda.max_memory_allocated`` of the current device after
  ``reset_peak_memory_stats`` at the start: the absolute peak of tensor memory that torch
  allocated (weights, gradients, optimizer state, activations), in MiB.
- ``"rss"`` (CPU): the peak growth of this process's resident set size over its value at the
  start, sampled by a daemon thread every ``interval_s`` (10 ms). Weights already resident
  at the start are not counted; gradients, optimizer state and activations are. Before the
  baseline is read, freed heap memory is handed back to the OS (gc + glibc ``malloc_trim``), so
  that memory cached from earlier work in the process (a probe) does not hide growth. RSS includes
  allocator caches and fragmentation, and a peak shorter than the interval can be missed, so
  treat it as a measurement of this process on this machine, not a property of the model.

``PeakMemory.paused()`` excludes a stretch (evaluation inside a training loop) from the peak.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

MIB = 1024 * 1024


class PeakMemory:
    """Context manager: ``with PeakMemory(device) as pm: ...`` then ``pm.peak_mb``, ``pm.kind``."""

    def __init__(self, device: str = "cpu", interval_s: float = 0.01):
        self.kind = "cuda" if str(device).startswith("cuda") else "rss"  # what the number means
        self.device = device  # torch device string the CUDA counters are read from
        self.interval_s = interval_s  # RSS sampling period in seconds
        self._peak_bytes = 0  # running maximum over the measured stretches
        self._start_rss = 0  # RSS when measurement began (the "rss" baseline)
        self._active = threading.Event()  # set while samples count toward the peak
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public
    @property
    def peak_mb(self) -> float:
        """Peak so far in MiB (absolute for cuda, growth over the start for rss)."""
        if self.kind == "cuda" and self._active.is_set():
            self._fold_cuda()
        return self._peak_bytes / MIB

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            import psutil

            _release_freed_memory()
            self._proc = psutil.Process()
            self._start_rss = self._proc.memory_info().rss
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()
        self._active.set()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda":
            if self._active.is_set():
                self._fold_cuda()
        else:
            self._take_rss_sample()
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=1.0)
        self._active.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the enclosed code (e.g. an evaluation pass) out of the peak."""
        if self.kind == "cuda":
            self._fold_cuda()
        else:
            self._take_rss_sample()
        self._active.clear()
        try:
            yield
        finally:
            if self.kind == "cuda":
                import torch

                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            self._active.set()

    # ------------------------------------------------------------------ internals
    def _fold_cuda(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)
        self._peak_bytes = max(self._peak_bytes, torch.cuda.max_memory_allocated(self.device))

    def _take_rss_sample(self) -> None:
        if self._active.is_set():
            grown = self._proc.memory_info().rss - self._start_rss
            if grown > self._peak_bytes:
                self._peak_bytes = grown

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take_rss_sample()


def _release_freed_memory() -> None:
    """Collect garbage and return free heap pages to the OS (glibc only; a no-op elsewhere)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------------------- the estimate before a run

ACTIVATION_FLOATS = 4  # floats kept per token, hidden unit and layer for the backward pass (a low count:
# a transformer layer keeps ~15-35, so the estimate errs towards running rather than refusing)


def available_bytes(device: str) -> int:
    """Memory a run can still take: free memory of the CUDA device, or the RAM available (psutil) on the CPU."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def estimate_run_bytes(model, plan, config) -> dict[str, int]:
    """A conservative estimate of the memory a run takes beyond the loaded model's weights, by part:
    adapters (fp32), gradients + AdamW's two moments of every trainable parameter, and activations
    (batch x length x hidden x layers x ACTIVATION_FLOATS, at 2 bytes under GPU mixed precision)."""
    weights = list(model.parameters())
    on_gpu = weights[0].device.type == "cuda"
    full = plan == "full"
    trainable = sum(p.numel() for p in weights) if full else plan.params
    cfg = model.config
    hidden = next((getattr(cfg, k) for k in ("hidden_size", "n_embd", "dim", "d_model") if getattr(cfg, k, None)), 0)
    layers = next((getattr(cfg, k) for k in ("num_hidden_layers", "n_layer", "n_layers") if getattr(cfg, k, None)), 0)
    act_bytes = 2 if on_gpu and config.mixed_precision != "no" else 4
    return {"adapters": 0 if full else 4 * plan.params,
            "gradients and optimizer state": 3 * 4 * trainable,
            "activations": config.batch_size * config.max_length * hidden * layers * ACTIVATION_FLOATS * act_bytes}


def check_run_fits(model, plan, config) -> None:
    """Refuse (TrainingOOMError) a run whose estimate (`estimate_run_bytes`) exceeds the memory
    available on the model's device, before anything large is allocated."""
    from .config import TrainingOOMError

    device = str(next(model.parameters()).device)
    parts = estimate_run_bytes(model, plan, config)
    need, have = sum(parts.values()), available_bytes(device)
    if need <= have:
        return
    where = "free on the GPU" if device.startswith("cuda") else "of RAM available"
    detail = ", ".join(f"{k} {_gib(v)}" for k, v in parts.items() if v)
    raise TrainingOOMError(
        f"This run needs about {_gib(need)} beyond the model ({detail}) but only {_gib(have)} is {where}: "
        "use a smaller --rank or --budget, --batch-size or --max-length"
        + (", or --mixed-precision bf16." if device.startswith("cuda") else " (or a GPU with --mixed-precision bf16)."))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / MIB:.1f} MiB"
