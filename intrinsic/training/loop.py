"""LoRA (or full) fine-tuning of a loaded model on a task, with honest efficiency metrics.

`train(loaded, task, plan, config, out_dir)` builds the PEFT model from a placement `Plan`
(or trains every weight when `plan == "full"`), checks with `verify_peft_model` that every
module got exactly its planned rank, trains with AdamW (the schedule of `training.schedule`,
grad clipping) under `accelerate`, evaluates on the held-out split, and writes `out_dir/run.json`
(atomically, a `RunResult`) plus the adapter in standard PEFT format under `out_dir/adapter`, so
that `PeftModel.from_pretrained(base, out_dir / "adapter")` reproduces the score. The task head
(e.g. BERT's `classifier`, Llama's `score`) trains too and is saved via `modules_to_save`.

Read top to bottom: `_setup` (fixed for the run: `_Run`) -> for each step `step_once` (`training.step`) ->
`maybe_evaluate` -> `finish`, over the mutable `RunState`.

A step is `grad_accum` micro-batches (loss scaled by 1/grad_accum, one optimizer and schedule step).
Under mixed precision on GPU, training and evaluation both run in accelerate's autocast (bf16/fp16
products, float32 master weights and logits). `fast` switches on the pieces of `training.fast`;
progress events and run.json carry tokens/s and MFU (`training.flops`). `resume=True` continues an
interrupted run from its last checkpoint (`training.checkpoint`).

Multi-GPU data parallel works unchanged under `accelerate launch`: each process takes every
n-th batch (effective batch = batch_size x processes), DDP averages gradients, evaluation is
sharded and gathered, and only the main process writes files.

Failure handling: a NaN/inf loss or gradient norm stops training with `NonFiniteError`
naming the step; run.json is written with status "failed", and `out_dir/adapter` keeps the
checkpoint of the last evaluation (adapters are saved at every evaluation point). CUDA
out-of-memory raises `TrainingOOMError` naming the batch size. See `training.rundir` for how an
existing out_dir is refused, overwritten or resumed.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NonFiniteError
from .config import SCHEMA_VERSION, RunResult, TrainConfig, TrainingOOMError
from .evaluation import ExtraEval, evaluate, majority_baseline, score_of
from .flops import mfu
from .rundir import ADAPTER_DIR, CHECKPOINT_DIR, MODEL_DIR, PLAN_FILE, dir_bytes, prepare_out_dir, \
    save_dir_atomically
from .schedule import lr_multiplier
from .step import step_once

Callback = Callable[[dict[str, Any]], None]


@dataclass
class RunState:
    """What changes while a run goes."""

    loss_curve: list[float] = field(default_factory=list)  # training loss of every completed step
    eval_curve: list[dict] = field(default_factory=list)  # {"step", "score", <metrics>} per evaluation
    step_times: list[float] = field(default_factory=list)  # wall time of every step taken (a failed one too)
    eval_time: float = 0.0  # wall time of all evaluation passes so far
    best: tuple[float, int] = (-math.inf, 0)  # best score so far and its step
    adapter_dir: str | None = None  # the last saved checkpoint, None before the first
    saved_step: int = 0  # the step of that checkpoint
    untrained: float | None = None  # score before training (config.eval_at_start)
    pending: tuple | None = None  # `fast`: (step, loss, grad norm, lr) of the last step, not yet read


@dataclass(frozen=True)
class _Run:
    """What is fixed once the run is set up."""

    loaded: Any  # models.LoadedModel: name, model_type, tokenizer
    task: Any  # the task as given (names the run)
    data: Any  # the task capped to config.max_examples / max_eval_examples
    plan: Any  # placement Plan, or "full"
    config: TrainConfig  # lr, mixed_precision and rslora resolved
    out: Path | None  # run directory, None: nothing written
    emit: Callback  # progress events
    accelerator: Any
    model: Any  # prepared by accelerate
    optimizer: Any  # prepared by accelerate
    scheduler: Any  # LambdaLR over lr_multiplier, unprepared (see _setup)
    params: list  # trainable parameters (clipped)
    batches: list  # this process's training batches, one per step
    eval_batches: list  # this process's shard of the held-out batches
    tokens_per_step: list[int]  # non-padding tokens of all processes' batches at each step
    lce: bool  # the chunked linear + cross-entropy loss of training.fast replaces the model's own
    flops: float  # model FLOPs per training token (training.flops)
    peak_tflops: float | None  # the peak MFU is measured against
    extra: Any  # evaluation.ExtraEval: exact match and forgetting, beyond `evaluate`
    base_params: int
    trainable: int
    lora_params: int
    head_params: int

    @property
    def full(self) -> bool:
        return self.plan == "full"

    @property
    def kind(self) -> str:
        return self.task.kind


def train(loaded, task, plan, config: TrainConfig | None = None, out_dir: str | Path | None = None, *,
          overwrite: bool = False, resume: bool = False, callback: Callback | None = None) -> RunResult:
    """Train `loaded.model` on `task` with placement `plan` (a Plan, or "full"); see the module docstring.

    `callback` receives {"event": "start"|"step"|"eval", ...} dicts (step, steps, loss, lr, metrics)
    for progress display. Returns the RunResult also written to run.json.

    `loaded.model` is modified in place: LoRA adapters are injected (or, for "full", every weight is
    trained), so a second `train` on the same LoadedModel is refused (ConfigError); load the model
    again, or use `Pipeline(..., copy_per_use=True)`, which trains a fresh copy for every run.
    """
    import torch

    from .memory import PeakMemory, check_run_fits
    from .model import check_unadapted

    config = config or TrainConfig()
    if plan != "full" and not hasattr(plan, "to_peft_config"):
        raise ConfigError(f"plan must be a placement Plan or 'full', got {plan!r}")
    if out_dir is not None:
        expected = dict(model=loaded.name, task=task.name, placement="full" if plan == "full" else plan.strategy,
                        config=config, plan=plan)
        done = prepare_out_dir(out_dir, overwrite=overwrite, resume=resume, expected=expected)
        if done is not None:
            return done
    if loaded.task_kind != task.kind:
        raise ConfigError(f"Model was loaded for '{loaded.task_kind}' but task '{task.name}' is '{task.kind}'.")
    check_unadapted(loaded)
    _check_data(task, config)
    check_run_fits(loaded.model, plan, config)  # before the adapters, gradients and batches are allocated
    run = _setup(loaded, task, plan, config, out_dir, callback or (lambda event: None))
    if run.out is not None and not run.full and run.accelerator.is_main_process:
        plan.save(run.out / PLAN_FILE)  # the placement beside the run it trains, before the first step
    state = RunState()
    start = _resume(run, state, config) if resume and run.out is not None else 0
    if not start and (run.config.eval_at_start if run.config.eval_at_start is not None
                      else run.kind != "classification"):
        state.untrained = score_of(_evaluate(run, state), run.kind)
    run.emit({"event": "start", "steps": run.config.steps, "trainable_params": run.trainable, "resumed_from": start})
    run.model.train()
    with PeakMemory(str(run.accelerator.device)) as mem:
        step = start
        try:
            for step in range(start + 1, run.config.steps + 1):
                step_once(run, state, step)
                maybe_evaluate(run, state, step, mem)
        except NonFiniteError as e:  # the steps whose loss was recorded (with `fast`, one less than `step - 1`)
            finish(run, state, mem, "failed", str(e), len(state.loss_curve), resumed_from=start)
            raise
        except torch.OutOfMemoryError:
            msg = _oom_message(run.config, step)
            finish(run, state, mem, "failed", msg, step - 1, metrics={}, resumed_from=start)
            raise TrainingOOMError(msg) from None
    return finish(run, state, mem, "complete", None, run.config.steps, resumed_from=start)


def _resume(run: _Run, state: RunState, requested: TrainConfig) -> int:
    """Continue from run.out's checkpoint when there is one (refused if made with other settings): its step."""
    from .checkpoint import load_checkpoint, refuse_other_settings, restore

    payload = load_checkpoint(run.out)
    if payload is None:
        return 0
    refuse_other_settings(run.out, payload, dict(model=run.loaded.name, task=run.task.name, config=requested,
                                                 placement="full" if run.full else run.plan.strategy,
                                                 plan=run.plan))
    return restore(run, state, payload)


def _check_data(task, config: TrainConfig) -> None:
    """A classification run needs two classes among the training examples it draws."""
    from ..tasks import check_classes
    from .data import subset_task

    data = subset_task(task, config)
    check_classes(data, subsampled=len(data.train_texts) < len(task.train_texts))


def _setup(loaded, task, plan, config: TrainConfig, out_dir, emit: Callback) -> _Run:
    """Resolve the config, seed, build the model, batches, optimizer and schedule (in this order: RNG)."""
    import torch
    from accelerate.utils import set_seed

    from ..models import base_param_count
    from ..tasks import count_tokens, make_batches
    from .data import make_eval_batches, subset_task
    from .fast import base_model, enable_fast, make_optimizer
    from .flops import flops_per_token, measured_peak_tflops
    from .model import build_model, make_accelerator, param_counts

    full = plan == "full"
    on_cpu = next(loaded.model.parameters()).device.type == "cpu"
    mp = "no" if on_cpu else config.mixed_precision  # mixed precision is honoured on GPU only
    if not full and config.rslora and not plan.rslora:
        plan = dataclasses.replace(plan, rslora=True)
    config = dataclasses.replace(config, lr=config.effective_lr(full), mixed_precision=mp,
                                 rslora=False if full else plan.rslora)
    accelerator = make_accelerator(cpu=on_cpu, mixed_precision=mp)
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(config.seed)
    data = subset_task(task, config)
    base_params = base_param_count(loaded.model)
    model = build_model(loaded, plan, seed=config.seed, gradient_checkpointing=config.gradient_checkpointing)
    params, trainable, lora_params, head_params = param_counts(model)
    micro = config.grad_accum * world  # batches of all processes per step
    batches = make_batches(data, loaded.tokenizer, split="train", batch_size=config.batch_size,
                           max_length=config.max_length, seed=config.seed, shuffle=True,
                           num_batches=config.steps * micro)
    eval_batches = make_eval_batches(task, loaded.tokenizer, config, rank=rank, world=world)
    lce = enable_fast(model, loaded, config.mixed_precision, world, emit) if config.fast else False
    extra = ExtraEval(model, loaded.tokenizer, data, config, rank=rank, world=world)
    optimizer = make_optimizer(params, lr=config.lr, weight_decay=config.weight_decay, fused=config.fast)
    warmup = config.warmup_steps()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, warmup_steps=warmup, total_steps=config.steps))
    # the scheduler stays unprepared: accelerate's wrapper would step it once per process, decaying
    # the rate num_processes times too fast; here one step = one optimizer step on every process
    model, optimizer = accelerator.prepare(model, optimizer)
    if config.compile:
        (base_model(model).get_decoder() if lce else model).compile()
    tokens_per_step = [count_tokens(batches[s * micro:(s + 1) * micro]) for s in range(config.steps)]
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mp, next(model.parameters()).dtype)
    peak = config.peak_tflops or measured_peak_tflops(accelerator.device, compute)
    return _Run(loaded=loaded, task=task, data=data, plan=plan, config=config,
                out=Path(out_dir) if out_dir is not None else None, emit=emit, accelerator=accelerator,
                model=model, optimizer=optimizer, scheduler=scheduler, params=params, batches=batches[rank::world],
                eval_batches=eval_batches, tokens_per_step=tokens_per_step, extra=extra, base_params=base_params,
                trainable=trainable, lora_params=lora_params, head_params=head_params, lce=lce,
                flops=flops_per_token(model), peak_tflops=peak)


def maybe_evaluate(run: _Run, state: RunState, step: int, mem) -> None:
    """At an evaluation point (every eval_every steps, and the last step): score, track the best, save the
    adapter; at an evaluation point or every checkpoint_every steps before the last: the resumable checkpoint."""
    cfg = run.config
    at_eval = step == cfg.steps or bool(cfg.eval_every and step % cfg.eval_every == 0)
    if at_eval:
        _evaluate_and_save(run, state, step, mem)
    if step < cfg.steps and run.out is not None and (at_eval or (cfg.checkpoint_every and
                                                                 step % cfg.checkpoint_every == 0)):
        from .checkpoint import save_checkpoint

        with mem.paused():
            save_checkpoint(run, state, step)


def _evaluate_and_save(run: _Run, state: RunState, step: int, mem) -> None:
    cfg = run.config
    with mem.paused():
        metrics = _evaluate(run, state)
        s = score_of(metrics, run.kind)
        state.eval_curve.append({"step": step, "score": s, **metrics})
        if s > state.best[0]:
            state.best = (s, step)
        finite = all(math.isfinite(v) for v in metrics.values())  # only a finite model is a good checkpoint
        if run.out is not None and run.accelerator.is_main_process and not run.full and cfg.save_adapter and finite:
            unwrapped = run.accelerator.unwrap_model(run.model)
            save_dir_atomically(lambda d: unwrapped.save_pretrained(str(d)), run.out / ADAPTER_DIR)
            state.adapter_dir, state.saved_step = str(run.out / ADAPTER_DIR), step
        run.emit({"event": "eval", "step": step, "metrics": metrics, "score": s})


def _evaluate(run: _Run, state: RunState) -> dict[str, float]:
    """Held-out metrics of the model now (timed into state.eval_time)."""
    t0 = time.perf_counter()
    num_labels = len(run.data.labels) if run.kind == "classification" else 0
    metrics = evaluate(run.model, run.eval_batches, task_kind=run.kind, num_labels=num_labels,
                       accelerator=run.accelerator)
    metrics.update(run.extra(run.model, run.accelerator))
    state.eval_time += time.perf_counter() - t0
    return metrics


def finish(run: _Run, state: RunState, mem, status: str, error: str | None, step: int,
           metrics: dict[str, float] | None = None, resumed_from: int = 0) -> RunResult:
    """Save the full model if asked, build the RunResult after `step` steps, write run.json (main process).

    `metrics` default to those of the last evaluation ({} before any)."""
    if metrics is None:
        metrics = {k: v for k, v in state.eval_curve[-1].items() if k not in ("step", "score")} \
            if state.eval_curve else {}
    main = run.accelerator.is_main_process
    if run.out is not None and main and run.full and run.config.save_full_model and status == "complete":
        unwrapped, tok = run.accelerator.unwrap_model(run.model), run.loaded.tokenizer
        save_dir_atomically(lambda d: (unwrapped.save_pretrained(str(d)), tok.save_pretrained(str(d))),
                            run.out / MODEL_DIR)
        state.adapter_dir = str(run.out / MODEL_DIR)
    result = dataclasses.replace(_result(run, state, mem, status, error, metrics, step), resumed_from=resumed_from)
    if run.out is not None and main:
        result.save(run.out)
        if status == "complete" and (run.out / CHECKPOINT_DIR).is_dir():
            shutil.rmtree(run.out / CHECKPOINT_DIR)  # run.json now answers --resume
    return result


def _result(run: _Run, state: RunState, mem, status: str, error: str | None, metrics: dict[str, float],
            step: int) -> RunResult:
    from ..env import environment
    from ..results import to_dict

    kind, acc, adapter_dir = run.kind, run.accelerator, state.adapter_dir
    train_time, tokens = sum(state.step_times), sum(run.tokens_per_step[:step])
    env = {**environment(acc.device, next(run.model.parameters()).dtype), "processes": acc.num_processes,
           "mixed_precision": run.config.mixed_precision}
    return RunResult(
        schema_version=SCHEMA_VERSION, status=status, error=error, model=run.loaded.name,
        model_type=run.loaded.model_type, task=run.task.name, task_kind=kind,
        placement="full" if run.full else run.plan.strategy, plan=None if run.full else to_dict(run.plan),
        config=dataclasses.asdict(run.config), env=env,
        score=score_of(metrics, kind) if metrics else float("nan"), metrics=metrics,
        best_score=state.best[0] if state.eval_curve else float("nan"), best_step=state.best[1],
        baseline_score=majority_baseline(run.data) if kind == "classification" else
        (state.untrained if state.untrained is not None else float("nan")),
        baseline_kind="majority" if kind == "classification" else "untrained",
        untrained_score=state.untrained, base_params=run.base_params, trainable_params=run.trainable,
        lora_params=run.lora_params, head_params=run.head_params,
        trainable_pct=100.0 * run.trainable / max(1, run.base_params),
        adapter_bytes=dir_bytes(Path(adapter_dir)) if adapter_dir else 0, adapter_dir=adapter_dir,
        steps=step, train_time_s=train_time, time_per_step_s=train_time / max(1, step),
        train_tokens=tokens, tokens_per_s=tokens / max(train_time, 1e-9),
        eval_time_s=state.eval_time, peak_memory_mb=mem.peak_mb, memory_kind=mem.kind,
        loss_curve=tuple(state.loss_curve), eval_curve=tuple(state.eval_curve),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        flops_per_token=run.flops, peak_tflops=run.peak_tflops,
        mfu=mfu(run.flops, tokens / max(train_time, 1e-9), run.peak_tflops),
    )


def _oom_message(config: TrainConfig, step: int) -> str:
    return (f"Out of GPU memory at step {step} with batch size {config.batch_size} and max length "
            f"{config.max_length}: try --batch-size {max(1, config.batch_size // 2)} or a smaller --max-length"
            + (" (or --mixed-precision bf16)" if config.mixed_precision == "no" else "") + ".")
