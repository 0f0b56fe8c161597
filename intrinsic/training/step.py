"""One optimizer step of the training loop (`step_once`): the grad_accum micro-batches' forward and backward,
clipping, the optimizer and schedule step, and the check that the step's loss and gradient norm are finite.

The default path reads the loss (a device sync) before the optimizer step, so a non-finite step is never
applied. With `fast` the loss is read one step late (`RunState.pending`), so the host never waits for the
device between steps; curves are complete at every evaluation or checkpoint point and at the last step.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING

from ..errors import NonFiniteError
from .config import TrainConfig
from .flops import mfu

if TYPE_CHECKING:
    from .loop import RunState, _Run


def step_once(run: _Run, state: RunState, step: int) -> None:
    """One optimizer step on this process's micro-batches of step `step` (1-based); NonFiniteError on a NaN/inf.

    The default path reads the loss and gradient norm (a device sync) before the optimizer step, so a
    non-finite step is never applied. With `fast`, the step's loss is read one step later, after the next
    step's kernels are queued, so the host never waits for the device between steps; a non-finite step is
    then detected (and training stopped) one step later, after it was applied to the in-memory model (the
    checkpoints on disk are the last good ones). Pending values are read at every evaluation or checkpoint
    point and at the last step, so curves and checkpoints are complete there."""
    cfg, acc = run.config, run.accelerator
    t0 = time.perf_counter()
    loss = accumulate(run, step)
    gnorm = acc.clip_grad_norm_(run.params, cfg.max_grad_norm) if cfg.max_grad_norm else None
    if acc.num_processes > 1:
        loss = acc.reduce(loss.detach(), reduction="mean")
    if cfg.fast:
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        previous, state.pending = state.pending, (step, loss.detach(), gnorm, run.scheduler.get_last_lr()[0])
        if previous is not None:
            _record(run, state, *previous)
        if _flush_point(cfg, step):
            pending, state.pending = state.pending, None
            _record(run, state, *pending)
        state.step_times.append(time.perf_counter() - t0)
        return
    value = loss.item()  # syncs the device: the step's time is real
    # fp16's grad scaler skips steps with inf gradients by itself; elsewhere they are fatal
    bad = not math.isfinite(value) or _bad_grad(cfg, gnorm)
    if not bad:
        run.optimizer.step()
        run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.step_times.append(time.perf_counter() - t0)
    if bad:
        _non_finite(run, state, step, value, gnorm)
    _emit_step(run, state, step, value, run.scheduler.get_last_lr()[0])


def _bad_grad(cfg: TrainConfig, gnorm) -> bool:
    return gnorm is not None and cfg.mixed_precision != "fp16" and not math.isfinite(float(gnorm))


def _flush_point(cfg: TrainConfig, step: int) -> bool:
    """Steps after which the curves must be complete: evaluation and checkpoint points and the last step."""
    return (step == cfg.steps or bool(cfg.eval_every and step % cfg.eval_every == 0)
            or bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0))


def _record(run: _Run, state: RunState, step: int, loss, gnorm, lr: float) -> None:
    """`fast`: read step `step`'s loss and gradient norm (already computed) and record or refuse it."""
    value = loss.item()
    if not math.isfinite(value) or _bad_grad(run.config, gnorm):
        _non_finite(run, state, step, value, gnorm)
    _emit_step(run, state, step, value, lr)


def _non_finite(run: _Run, state: RunState, step: int, value: float, gnorm) -> None:
    what = f"loss {value}" if not math.isfinite(value) else f"gradient norm {float(gnorm)}"
    kept = (f"; the last good checkpoint (step {state.saved_step}) is kept in {state.adapter_dir}"
            if state.adapter_dir else "; no checkpoint had been saved yet")
    raise NonFiniteError(f"Non-finite {what} at step {step} (lr {run.config.lr:g}){kept}. Try a smaller --lr.")


def _emit_step(run: _Run, state: RunState, step: int, value: float, lr: float) -> None:
    state.loss_curve.append(value)
    tokens_per_s = sum(run.tokens_per_step[:step]) / max(sum(state.step_times), 1e-9)  # a resumed run: all steps
    run.emit({"event": "step", "step": step, "steps": run.config.steps, "loss": value, "lr": lr,
              "tokens_per_s": tokens_per_s, "mfu": mfu(run.flops, tokens_per_s, run.peak_tflops)})


def accumulate(run: _Run, step: int):
    """Forward and backward of the grad_accum micro-batches of step `step` (1-based): the gradients of their
    mean loss are left in the parameters (DDP syncs on the last micro-batch only); returns that mean loss."""
    acc, n = run.accelerator, run.config.grad_accum
    loss = None
    for m in range(n):
        batch = {k: v.to(acc.device) for k, v in run.batches[(step - 1) * n + m].items()}
        with acc.no_sync(run.model) if m < n - 1 else contextlib.nullcontext():
            micro = _loss(run, batch)
            acc.backward(micro / n if n > 1 else micro)
        loss = micro.detach() if loss is None else loss + micro.detach()
    return loss / n if n > 1 else loss


def _loss(run: _Run, batch: dict):
    """The training loss of one micro-batch: the model's own, or training.fast's chunked one."""
    if not run.lce:
        return run.model(**batch).loss
    from .fast import causal_lm_loss

    with run.accelerator.autocast():
        return causal_lm_loss(run.accelerator.unwrap_model(run.model), batch)
