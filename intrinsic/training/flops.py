"""Model FLOPs per training token and the peak rate MFU is measured against.

`flops_per_token(model)` counts the matrix products of every `nn.Linear` (LoRA's A and B included,
the output head included): forward 2n, gradient of the input 2n, gradient of the weight 2n only
when the weight trains (n = in x out). Attention scores (2 x T x d per layer and direction) and
elementwise work are not counted, and neither is the recomputation of gradient checkpointing, so
MFU = flops_per_token x tokens/s / peak is the usual conservative "model FLOPs" utilization (tokens
are the non-padding tokens). Full fine-tuning of a dense model gives the familiar ~6 N per token;
LoRA ~4 N + 6 N_lora.

`measured_peak_tflops(device, dtype)` times a large matrix product on a CUDA device (the ceiling
a training step can reach there, rather than a datasheet number); None on CPU.
"""

from __future__ import annotations

import functools


def flops_per_token(model) -> float:
    """Model FLOPs of one training token (forward + backward) of `model`'s linear layers."""
    import torch

    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            n = m.in_features * m.out_features
            total += (6 if m.weight.requires_grad else 4) * n
    return float(total)


def measured_peak_tflops(device, dtype, size: int = 8192, reps: int = 20) -> float | None:
    """TFLOP/s of a size x size matrix product in `dtype` on a CUDA `device` (median of `reps`); None off CUDA.
    Measured once per process, device and dtype; random operands from a private generator (the run's RNG
    streams are left as they were)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _measure(str(device), dtype, size, reps)


@functools.cache
def _measure(device: str, dtype, size: int, reps: int) -> float:
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del a, b
    times.sort()
    return 2 * size**3 / times[len(times) // 2] / 1e12


def mfu(flops: float, tokens_per_s: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilization (0..1), None without a peak."""
    if not peak_tflops:
        return None
    return flops * tokens_per_s / (peak_tflops * 1e12)
