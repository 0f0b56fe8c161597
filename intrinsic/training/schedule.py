"""The learning-rate schedule: linear warmup to the peak, then linear decay to 0 (pure functions).

`step` counts optimizer steps from 0: the first optimizer step runs at `lr_at(0)`. Over `warmup`
steps the rate ramps as (step + 1) / (warmup + 1) of the peak, reaches the peak at step == warmup,
then falls linearly to 0 at step == total_steps (the rate the scheduler holds after the last step;
the last step itself, total_steps - 1, runs at peak / (total_steps - warmup)).

The trainer hands `lr_multiplier` to `torch.optim.lr_scheduler.LambdaLR`, which sets the rate to
`peak * lr_multiplier(step)`: exactly the float `lr_at` returns.
"""

from __future__ import annotations


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The fraction of the peak learning rate at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def lr_at(step: int, *, peak: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based): `peak * lr_multiplier(step)`."""
    return peak * lr_multiplier(step, warmup_steps=warmup_steps, total_steps=total_steps)
