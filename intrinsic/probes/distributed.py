"""Several processes, one probe: each takes every world-th batch, the sums (or sketches) are added across processes.

When `torch.distributed` is initialized (e.g. `accelerate launch` or `torchrun`, NCCL on GPUs, gloo on CPUs)
process r of W measures the batches b with b % W == r, keeping the global index b (it decides the half, fold
or slot the batch goes to), and the accumulators are summed across processes before any spectrum: every
process then holds what one process would have accumulated over all the batches (up to the order of float
additions), so the spectra and ranks are the same. Without it (or with one process) nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def init_from_env() -> int:
    """Join the process group a launcher (`accelerate launch`, `torchrun`) describes in WORLD_SIZE, RANK and MASTER_*
    (NCCL with one GPU per LOCAL_RANK when CUDA is there, else gloo); this process's rank (0 without a launcher)."""
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank()


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when torch.distributed is not in use."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def my_batches(batches: Sequence) -> list[tuple[int, object]]:
    """[(global index b, batch)] of the batches this process measures: b % world size == rank."""
    rank, size = world()
    return [(b, x) for b, x in enumerate(batches) if b % size == rank]


def sum_across(tensors: Sequence[torch.Tensor]) -> None:
    """Sum every tensor in place across processes (a no-op for one process)."""
    if world()[1] == 1:
        return
    for t in tensors:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)


def my_share(n: int) -> range:
    """The indices of n items (e.g. the probe's rows, whose estimators cost most at LLM scale) this process
    computes: every world-th one, from its rank."""
    rank, size = world()
    return range(rank, n, size)


def gather_shares(mine: Sequence, n: int) -> list:
    """The n items in order, from each process's share `mine` (the items of `my_share(n)`, in that order), on every
    process (pickled and gathered; a no-op for one process)."""
    rank, size = world()
    if size == 1:
        return list(mine)
    parts: list = [None] * size
    torch.distributed.all_gather_object(parts, list(mine))
    out = [None] * n
    for r, part in enumerate(parts):
        out[r::size] = part
    return out


def sum_values(values: dict, device) -> dict:
    """{key: float} summed across processes, keys in sorted order on every process."""
    if world()[1] == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    sum_across([t])
    return dict(zip(keys, t.tolist()))
