"""LoRA (or full) fine-tuning of a loaded model on a task, with honest efficiency metrics.

`train(loaded, task, plan, config, out_dir)` builds the PEFT model from a placement `Plan`
(or trains every weight when `plan == "full"`), checks with `verify_peft_model` that every
module got exactly its planned rank, trains with AdamW (linear warmup, linear decay, grad
clipping) under `accelerate`, evaluates on the held-out split, and writes `out_dir/run.json`
(atomically) plus the adapter in standard PEFT format under `out_dir/adapter`, so that
`PeftModel.from_pretrained(base, out_dir / "adapter")` reproduces the score. The task head
(e.g. BERT's `classifier`, Llama's `score`) trains too and is saved via `modules_to_save`.

Multi-GPU data parallel works unchanged under `accelerate launch`: each process takes every
n-th batch (effective batch = batch_size x processes), DDP averages gradients, evaluation is
sharded and gathered, and only the main process writes files.

Defaults (`TrainConfig()`) are sized so that `intrinsic train minilm rotten-tomatoes` finishes
in a few minutes on a 2-core CPU and still lands near the plateau. Measured on MiniLM / Rotten
Tomatoes (LoRA all@8, eval on 1,000 test examples, majority class 0.595 there), mean of 4 seeds:
150 steps 0.796, 200 steps 0.807 (300: ~0.80-0.81, so little is left on the table).
- steps 200 x batch 16: 3,200 examples, about 1/3 epoch of the 10.2k training snippets.
- max_length 64: snippets have a median of 27 word pieces and a 99th percentile of 55.
- max_eval_examples 1000: the accuracy's standard error is ~1.3 points; the full 2,551 costs 2.5x.
- lr 1e-3 with LoRA: 7e-4 learns slower (0.79 at 150 steps); 1.5e-3 and above occasionally
  collapse to the majority class (one seed in four at 1.5e-3, 2e-3 and 4e-3 often).
  Full fine-tuning: 1e-4 (0.81-0.82 at 200 steps; 5e-5 is similar, slower to start).
Measured (benchmarks/bench_train.py, this 2-core CPU): `--placement auto` took 77 s end to end
(probe 11 s, 200 steps 54 s at 271 ms/step, eval 6 s) at load 1.3, accuracy 0.795; the same run
took 692 s at load ~4 from other sessions (2 OpenMP threads spin-wait badly when oversubscribed).

Failure handling: a NaN/inf loss or gradient norm stops training with `NonFiniteError`
naming the step; run.json is written with status "failed", and `out_dir/adapter` keeps the
checkpoint of the last evaluation (adapters are saved at every evaluation point). CUDA
out-of-memory raises `TrainingOOMError` naming the batch size. An out_dir that already holds
a run.json is refused unless `overwrite` (start fresh) or `resume`; `resume` returns a complete
run as it is and restarts an incomplete or failed one from step 0 (no optimizer checkpoints).

run.json (schema_version 1): every field of `RunResult`
    schema_version   1
    status           "complete" | "failed"
    error            the one-line error of a failed run, else null
    model, model_type, task, task_kind   what was trained on what ("classification" | "lm")
    placement        plan strategy ("all", "attention", "ffn", "auto", "q,v", ...) or "full"
    plan             the Plan as a dict (entries with name, layer, kind, role, shape, rank, alpha), null for full
    config           the TrainConfig actually used (lr and mixed_precision resolved)
    env              python/torch/transformers/peft/accelerate versions, device, device_name, dtype, processes
    score            final held-out score: accuracy (classification) or -perplexity (lm); higher is better
    metrics          final held-out metrics: accuracy, macro_f1, loss | perplexity, loss
    best_score, best_step   best score over all evaluation points, and its step
    baseline_score, baseline_kind   majority-class accuracy ("majority") or the untrained model's score ("untrained")
    untrained_score  score of the model before training when config.eval_at_start, else null
    base_params      backbone parameters (excluding the task head), from models.base_param_count
    trainable_params every parameter that received gradients (adapters + head, or all for full)
    lora_params, head_params   the LoRA matrices, and the trainable head copy (modules_to_save)
    trainable_pct    100 * trainable_params / base_params
    adapter_bytes    bytes of out_dir/adapter on disk, weights + config (0 for full fine-tuning unless saved)
    adapter_dir      path of the saved adapter (or full model), null if none was saved
    steps            optimizer steps completed
    train_time_s     wall time of the training steps only (no evaluation, no saving)
    time_per_step_s  train_time_s / steps
    train_tokens     non-padding tokens seen in training (all processes)
    tokens_per_s     train_tokens / train_time_s
    eval_time_s      wall time of all evaluation passes
    peak_memory_mb, memory_kind   see intrinsic.memory: "cuda" absolute peak allocated, "rss" peak growth
    loss_curve       training loss at every step
    eval_curve       one dict per evaluation: {"step": s, "score": ..., <metrics>}
    created          UTC timestamp (ISO 8601) when the run finished
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, IntrinsicError, NonFiniteError
from .evaluation import evaluate, macro_f1, majority_baseline, score_of  # noqa: F401 - re-exported
from .results import from_dict, read_json, write_json

SCHEMA_VERSION = 1
LORA_LR = 1e-3  # default learning rate with adapters
FULL_LR = 1e-4  # default learning rate for full fine-tuning
MIXED_PRECISION = ("no", "bf16", "fp16")
RUN_FILE = "run.json"


class TrainingOOMError(IntrinsicError):
    """Out of GPU memory during training (a user can fix it with smaller batches)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (model, task and placement are given separately)."""

    steps: int = 200  # optimizer steps (each sees batch_size x processes examples)
    lr: float | None = None  # peak learning rate; None: 1e-3 with LoRA, 1e-4 for full fine-tuning
    batch_size: int = 16  # examples per step and process
    max_length: int = 64  # tokens per example after truncation
    seed: int = 0  # seeds batches, dropout and adapter init: same seed, same loss curve on CPU
    eval_every: int = 0  # evaluate (and checkpoint) every N steps; 0: only at the end
    eval_batch_size: int = 64  # examples per evaluation batch
    max_examples: int | None = None  # cap on training examples (None: all)
    max_eval_examples: int | None = 1000  # cap on held-out examples (None: all)
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"; honoured on GPU only, CPU runs plain fp32
    rslora: bool = False  # rank-stabilised LoRA scaling alpha/sqrt(r) (recorded in the plan)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    warmup_ratio: float = 0.06  # fraction of steps with linear warmup, then linear decay to 0
    max_grad_norm: float = 1.0  # gradient clipping threshold (0: no clipping)
    eval_at_start: bool | None = None  # score the untrained model too; None: yes for lm, no for classification
    save_adapter: bool = True  # write out_dir/adapter at every evaluation
    save_full_model: bool = False  # full fine-tuning only: save the whole model under out_dir/model

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "max_length": self.max_length,
                    "eval_batch_size": self.eval_batch_size}
        for name, v in positive.items():
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        if self.lr is not None and not (self.lr > 0):
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.eval_every < 0:
            raise ConfigError(f"TrainConfig.eval_every must be >= 0, got {self.eval_every}")
        for name in ("max_examples", "max_eval_examples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1 or None, got {v}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"TrainConfig.mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                              f"got '{self.mixed_precision}'")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"TrainConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("TrainConfig.weight_decay and max_grad_norm must be >= 0")

    def effective_lr(self, full: bool) -> float:
        return self.lr if self.lr is not None else (FULL_LR if full else LORA_LR)


@dataclass(frozen=True)
class RunResult:
    """One finished (or failed) training run; the module docstring documents every field."""

    schema_version: int
    status: str  # "complete" | "failed"
    error: str | None
    model: str
    model_type: str
    task: str
    task_kind: str
    placement: str
    plan: dict | None
    config: dict
    env: dict
    score: float
    metrics: dict[str, float]
    best_score: float
    best_step: int
    baseline_score: float
    baseline_kind: str
    untrained_score: float | None
    base_params: int
    trainable_params: int
    lora_params: int
    head_params: int
    trainable_pct: float
    adapter_bytes: int
    adapter_dir: str | None
    steps: int
    train_time_s: float
    time_per_step_s: float
    train_tokens: int
    tokens_per_s: float
    eval_time_s: float
    peak_memory_mb: float
    memory_kind: str
    loss_curve: tuple[float, ...] = ()
    eval_curve: tuple[dict, ...] = ()
    created: str = ""

    def save(self, out_dir: str | Path) -> Path:
        return write_json(Path(out_dir) / RUN_FILE, self)

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Load run.json from a run directory or the file itself."""
        path = Path(path)
        data = read_json(path / RUN_FILE if path.is_dir() else path)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(f"{path}: run.json schema_version {data.get('schema_version')} is not {SCHEMA_VERSION}")
        return from_dict(cls, data)


# ----------------------------------------------------------------------------- helpers


def head_module_names(model) -> list[str]:
    """Top-level children of a task model outside its backbone that hold parameters.

    'classifier' for BERT, 'score' for Llama/GPT-2, ['pre_classifier', 'classifier'] for
    DistilBERT. Causal-LM heads are excluded: lm_head is usually tied to the embeddings.
    """
    prefix = getattr(model, "base_model_prefix", "")
    names = []
    for name, child in model.named_children():
        if name == prefix or name == "lm_head" or not any(True for _ in child.parameters()):
            continue
        names.append(name)
    return names


def subset_task(task, config: TrainConfig):
    """The task with its splits capped at config.max_examples / max_eval_examples.

    Draws the same seeded subsample as `tasks.load_task(seed=config.seed, max_examples=...)`,
    so capping here or at loading gives the same examples (and a pre-capped task is unchanged).
    """
    import numpy as np

    def sub(texts, labels, cap, stream):
        if cap is None or cap >= len(texts):
            return texts, labels
        idx = np.sort(np.random.default_rng([config.seed, stream]).choice(len(texts), size=cap, replace=False))
        return tuple(texts[i] for i in idx), tuple(labels[i] for i in idx) if labels else ()

    train_t, train_l = sub(task.train_texts, task.train_labels, config.max_examples, 0)
    test_t, test_l = sub(task.test_texts, task.test_labels, config.max_eval_examples, 1)
    return dataclasses.replace(task, train_texts=train_t, train_labels=train_l, test_texts=test_t, test_labels=test_l)


def shard_task(task, rank: int, world: int):
    """Every world-th test example starting at rank (evaluation sharding across processes)."""
    if world == 1:
        return task
    return dataclasses.replace(task, test_texts=task.test_texts[rank::world],
                               test_labels=task.test_labels[rank::world] if task.test_labels else ())


def make_eval_batches(task, tokenizer, config: TrainConfig, *, rank: int = 0, world: int = 1) -> list[dict]:
    """The held-out batches `train` evaluates on (this process's shard), for re-scoring a saved adapter."""
    from .tasks import make_batches

    data = subset_task(task, config)
    return make_batches(shard_task(data, rank, world), tokenizer, split="test", batch_size=config.eval_batch_size,
                        max_length=config.max_length, seed=config.seed, shuffle=False)


def environment(device, dtype) -> dict[str, Any]:
    import platform

    import accelerate
    import peft
    import torch
    import transformers

    dev = str(device)
    if dev.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "accelerate": accelerate.__version__, "device": dev, "device_name": name,
        "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
    }


def dir_bytes(path: Path) -> int:
    """Bytes of a saved adapter or model: weights and configs (PEFT's generated README.md not counted)."""
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "README.md")


def prepare_out_dir(out_dir: str | Path, *, overwrite: bool = False, resume: bool = False) -> RunResult | None:
    """Check `out_dir` before a run: the complete run to return (resume), or None to train.

    A directory without run.json is used as it is (it may hold a probe from an earlier attempt).
    """
    out = Path(out_dir)
    run_file = out / RUN_FILE
    if not run_file.is_file():
        return None
    if resume:
        try:
            old = RunResult.load(out)
        except (ConfigError, TypeError):
            old = None
        if old is not None and old.status == "complete":
            return old
        _clear(out)  # incomplete or failed: start again from step 0 (documented above)
        return None
    if overwrite:
        _clear(out)
        return None
    raise ConfigError(f"Output directory {out} already holds a run ({RUN_FILE}); "
                      "pass --overwrite to start fresh or --resume to keep a complete run.")


def _clear(out: Path) -> None:
    for name in (RUN_FILE, "adapter", "model", "probe", "plan.json"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _save_dir_atomically(save: Callable[[Path], None], target: Path) -> None:
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


def _make_accelerator(cpu: bool, mixed_precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    except ValueError:  # an earlier run in this process used other settings
        AcceleratorState._reset_state()
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision)


def build_model(loaded, plan, seed: int = 0):
    """The trainable model: a PEFT LoRA model checked against `plan`, or the model itself for "full".

    The model is modified in place (adapters injected); the head trains via modules_to_save.
    """
    import torch

    model = loaded.model
    if plan == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import get_peft_model

    from .placement import verify_peft_model

    task_type = "SEQ_CLS" if loaded.task_kind == "classification" else "CAUSAL_LM"
    heads = head_module_names(model) if loaded.task_kind == "classification" else None
    peft_config = plan.to_peft_config(task_type, modules_to_save=heads)
    torch.manual_seed(seed)  # LoRA A matrices are initialised from the global generator
    peft_model = get_peft_model(model, peft_config)
    verify_peft_model(peft_model, plan)
    return peft_model


# ----------------------------------------------------------------------------- placements

PROBE_FOR_AUTO = dict(batches=12, update_steps=None)  # the quick gradient probe `train --placement auto` runs


# ----------------------------------------------------------------------------- training

Callback = Callable[[dict[str, Any]], None]


def train(loaded, task, plan, config: TrainConfig | None = None, out_dir: str | Path | None = None, *,
          overwrite: bool = False, resume: bool = False, callback: Callback | None = None) -> RunResult:
    """Train `loaded.model` on `task` with placement `plan` (a Plan, or "full"); see the module docstring.

    `callback` receives {"event": "start"|"step"|"eval", ...} dicts (step, steps, loss, lr, metrics)
    for progress display. The model is modified in place. Returns the RunResult also written to run.json.
    """
    import torch

    from .models import base_param_count
    from .tasks import count_tokens, make_batches

    config = config or TrainConfig()
    full = plan == "full"
    if not full and not hasattr(plan, "to_peft_config"):
        raise ConfigError(f"plan must be a placement Plan or 'full', got {plan!r}")
    if out_dir is not None:
        done = prepare_out_dir(out_dir, overwrite=overwrite, resume=resume)
        if done is not None:
            return done
    emit = callback or (lambda event: None)
    kind = loaded.task_kind
    if kind != task.kind:
        raise ConfigError(f"Model was loaded for '{kind}' but task '{task.name}' is '{task.kind}'.")

    on_cpu = next(loaded.model.parameters()).device.type == "cpu"
    mp = "no" if on_cpu else config.mixed_precision
    if not full and config.rslora and not plan.rslora:
        plan = dataclasses.replace(plan, rslora=True)
    config = dataclasses.replace(config, lr=config.effective_lr(full), mixed_precision=mp,
                                 rslora=False if full else plan.rslora)
    accelerator = _make_accelerator(cpu=on_cpu, mixed_precision=mp)
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    out = Path(out_dir) if out_dir is not None else None

    from accelerate.utils import set_seed

    set_seed(config.seed)
    data = subset_task(task, config)
    base_params = base_param_count(loaded.model)
    model = build_model(loaded, plan, seed=config.seed)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = sum(p.numel() for _, p in named)
    lora_params = sum(p.numel() for n, p in named if "lora_" in n)
    head_params = sum(p.numel() for n, p in named if "modules_to_save" in n)

    tok = loaded.tokenizer
    batches = make_batches(data, tok, split="train", batch_size=config.batch_size, max_length=config.max_length,
                           seed=config.seed, shuffle=True, num_batches=config.steps * world)
    train_tokens = count_tokens(batches)
    mine = batches[rank::world]  # (steps,) this process's batches
    eval_batches = make_eval_batches(task, tok, config, rank=rank, world=world)
    num_labels = len(data.labels) if kind == "classification" else 0

    params = [p for _, p in named]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(config.warmup_ratio * config.steps)

    def lr_lambda(step: int) -> float:  # step counts from 0 at the first optimizer step
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (config.steps - step) / max(1, config.steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    # the scheduler stays unprepared: accelerate's wrapper would step it once per process, decaying
    # the rate num_processes times too fast; here one step = one optimizer step on every process
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device

    from .memory import PeakMemory

    loss_curve: list[float] = []
    eval_curve: list[dict] = []
    state = {"eval_time": 0.0, "best": (-math.inf, 0), "adapter_dir": None, "saved_step": 0}
    untrained = None
    if config.eval_at_start if config.eval_at_start is not None else kind == "lm":
        t0 = time.perf_counter()
        untrained = score_of(evaluate(model, eval_batches, task_kind=kind, num_labels=num_labels,
                                      accelerator=accelerator), kind)
        state["eval_time"] += time.perf_counter() - t0

    def run_eval(step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        metrics = evaluate(model, eval_batches, task_kind=kind, num_labels=num_labels, accelerator=accelerator)
        state["eval_time"] += time.perf_counter() - t0
        s = score_of(metrics, kind)
        eval_curve.append({"step": step, "score": s, **metrics})
        if s > state["best"][0]:
            state["best"] = (s, step)
        finite = all(math.isfinite(v) for v in metrics.values())  # only a finite model is a good checkpoint
        if out is not None and main and not full and config.save_adapter and finite:
            unwrapped = accelerator.unwrap_model(model)
            _save_dir_atomically(lambda d: unwrapped.save_pretrained(str(d)), out / "adapter")
            state["adapter_dir"], state["saved_step"] = str(out / "adapter"), step
        emit({"event": "eval", "step": step, "metrics": metrics, "score": s})
        return metrics

    def finish(status: str, error: str | None, metrics: dict[str, float], step: int) -> RunResult:
        train_time = sum(step_times)
        if out is not None and main and full and config.save_full_model and status == "complete":
            unwrapped = accelerator.unwrap_model(model)
            _save_dir_atomically(lambda d: (unwrapped.save_pretrained(str(d)), tok.save_pretrained(str(d))),
                                 out / "model")
            state["adapter_dir"] = str(out / "model")
        adapter_dir = state["adapter_dir"]
        result = RunResult(
            schema_version=SCHEMA_VERSION, status=status, error=error, model=loaded.name,
            model_type=loaded.model_type, task=task.name, task_kind=kind,
            placement="full" if full else plan.strategy, plan=None if full else _plan_dict(plan),
            config=dataclasses.asdict(config), env={**environment(device, next(model.parameters()).dtype),
                                                   "processes": world, "mixed_precision": mp},
            score=score_of(metrics, kind) if metrics else float("nan"), metrics=metrics,
            best_score=state["best"][0] if eval_curve else float("nan"), best_step=state["best"][1],
            baseline_score=majority_baseline(data) if kind == "classification" else
            (untrained if untrained is not None else float("nan")),
            baseline_kind="majority" if kind == "classification" else "untrained",
            untrained_score=untrained, base_params=base_params, trainable_params=trainable,
            lora_params=lora_params, head_params=head_params, trainable_pct=100.0 * trainable / max(1, base_params),
            adapter_bytes=dir_bytes(Path(adapter_dir)) if adapter_dir else 0, adapter_dir=adapter_dir,
            steps=step, train_time_s=train_time, time_per_step_s=train_time / max(1, step),
            train_tokens=sum(tokens_per_step[:step]), tokens_per_s=sum(tokens_per_step[:step]) / max(train_time, 1e-9),
            eval_time_s=state["eval_time"], peak_memory_mb=mem.peak_mb, memory_kind=mem.kind,
            loss_curve=tuple(loss_curve), eval_curve=tuple(eval_curve),
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )
        if out is not None and main:
            result.save(out)
        return result

    # tokens of all processes' batches at each step, counted before the clock starts
    tokens_per_step = [count_tokens(batches[s * world:(s + 1) * world]) for s in range(config.steps)]
    assert sum(tokens_per_step) == train_tokens
    step_times: list[float] = []
    emit({"event": "start", "steps": config.steps, "trainable_params": trainable})
    metrics: dict[str, float] = {}
    model.train()
    with PeakMemory(str(device)) as mem:
        step = 0
        try:
            for step in range(1, config.steps + 1):
                batch = {k: v.to(device) for k, v in mine[step - 1].items()}
                t0 = time.perf_counter()
                loss = model(**batch).loss
                accelerator.backward(loss)
                gnorm = accelerator.clip_grad_norm_(params, config.max_grad_norm) if config.max_grad_norm else None
                if world > 1:
                    loss = accelerator.reduce(loss.detach(), reduction="mean")
                value = loss.item()  # syncs the device: the step's time is real
                # fp16's grad scaler skips steps with inf gradients by itself; elsewhere they are fatal
                bad_grad = gnorm is not None and mp != "fp16" and not math.isfinite(float(gnorm))
                bad = not math.isfinite(value) or bad_grad
                if not bad:
                    optimizer.step()
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_times.append(time.perf_counter() - t0)
                if bad:
                    what = f"loss {value}" if not math.isfinite(value) else f"gradient norm {float(gnorm)}"
                    kept = (f"; the last good checkpoint (step {state['saved_step']}) is kept in {state['adapter_dir']}"
                            if state["adapter_dir"] else "; no checkpoint had been saved yet")
                    raise NonFiniteError(f"Non-finite {what} at step {step} (lr {config.lr:g}){kept}. "
                                         "Try a smaller --lr.")
                loss_curve.append(value)
                emit({"event": "step", "step": step, "steps": config.steps, "loss": value,
                      "lr": scheduler.get_last_lr()[0]})
                if step == config.steps or (config.eval_every and step % config.eval_every == 0):
                    with mem.paused():
                        metrics = run_eval(step)
        except NonFiniteError as e:
            last = {k: v for k, v in eval_curve[-1].items() if k not in ("step", "score")} if eval_curve else {}
            finish("failed", str(e), last, step - 1)
            raise
        except torch.OutOfMemoryError:
            msg = (f"Out of GPU memory at step {step} with batch size {config.batch_size} and max length "
                   f"{config.max_length}: try --batch-size {max(1, config.batch_size // 2)} or a smaller --max-length"
                   + (" (or --mixed-precision bf16)" if mp == "no" else "") + ".")
            finish("failed", msg, {}, step - 1)
            raise TrainingOOMError(msg) from None
    metrics = {k: v for k, v in eval_curve[-1].items() if k not in ("step", "score")}
    return finish("complete", None, metrics, config.steps)


def _plan_dict(plan) -> dict:
    from .results import to_dict

    return to_dict(plan)
