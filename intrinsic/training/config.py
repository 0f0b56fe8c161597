"""What a training run takes and what it gives back: `TrainConfig` (the settings) and `RunResult`
(the schema of run.json), each field documented once with `fields.documented`.

Stdlib only at import: the CLI reads `field_help(TrainConfig)` for `--help` without loading torch.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, IntrinsicError
from ..fields import documented
from ..results import from_dict, read_json, write_json
from .rundir import RUN_FILE

SCHEMA_VERSION = 1  # version of run.json; files of another version are refused by RunResult.load
LORA_LR = 1e-3  # default peak learning rate with adapters
FULL_LR = 1e-4  # default peak learning rate for full fine-tuning
MIXED_PRECISION = ("no", "bf16", "fp16")
EVAL_SPLITS = ("test", "validation")


class TrainingOOMError(IntrinsicError):
    """Out of GPU memory during training (a user can fix it with smaller batches)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (model, task and placement are given separately)."""

    steps: int = documented(200, "optimizer steps (each sees batch_size x processes examples)")
    lr: float | None = documented(None, "peak learning rate (default: 1e-3 with LoRA, 1e-4 for full fine-tuning)")
    batch_size: int = documented(16, "examples per step and process")
    max_length: int = documented(64, "tokens per example after truncation")
    seed: int = documented(0, "seeds batches, dropout and adapter init: same seed, same loss curve on CPU")
    eval_every: int = documented(0, "evaluate (and checkpoint) every N steps; 0: only at the end")
    eval_batch_size: int = documented(64, "examples per evaluation batch")
    max_examples: int | None = documented(None, "cap on training examples (None: all)")
    max_eval_examples: int | None = documented(1000, "cap on held-out examples (None: all)")
    mixed_precision: str = documented("no", '"no" | "bf16" | "fp16"; honoured on GPU only, CPU runs plain fp32')
    rslora: bool = documented(False, "rank-stabilised LoRA scaling alpha/sqrt(r) (recorded in the plan)")
    weight_decay: float = documented(0.0, "AdamW decoupled weight decay")
    warmup_ratio: float = documented(0.06, "fraction of steps with linear warmup, then linear decay to 0")
    max_grad_norm: float = documented(1.0, "gradient clipping threshold (0: no clipping)")
    eval_at_start: bool | None = documented(None, "score the untrained model too; None: yes for lm and "
                                                  "completion, no for classification")
    forgetting_corpus: str = documented("auto", 'text task scored as causal LM before and after training '
                                        '(metrics forgetting_loss, forgetting); "auto": bbc-news for completion '
                                        'tasks (reuters-r8 for bbc-news-gen), none otherwise; "": off')
    save_adapter: bool = documented(True, "write out_dir/adapter at every evaluation")
    save_full_model: bool = documented(False, "full fine-tuning only: save the whole model under out_dir/model")
    grad_accum: int = documented(1, "micro-batches of `batch_size` per optimizer step (loss scaled by 1/N; "
                                    "steps and the LR schedule count optimizer steps)")
    gradient_checkpointing: bool = documented(False, "recompute activations in the backward pass (less memory, "
                                                     "about a third more compute)")
    checkpoint_every: int = documented(0, "save a resumable checkpoint (adapter, optimizer, schedule, RNG, step) "
                                          "every N steps, besides every `eval_every`; 0: only at evaluations")
    fast: bool = documented(False, "fast path: fused LoRA layers, no fp32 input cast under mixed precision, "
                                   "fused AdamW, chunked linear + cross-entropy for causal LMs (no B x T x V logits)")
    compile: bool = documented(False, "torch.compile the model (opt-in; pays off for small models on GPU)")
    peak_tflops: float | None = documented(None, "peak rate for MFU in TFLOP/s; None: a bf16 (fp32 without "
                                                 "mixed precision) matmul rate measured at the start on CUDA, "
                                                 "no MFU on CPU")
    eval_split: str = documented("test", '"test": score on the test split; "validation": train on the train split '
                                         "minus a fixed stratified carve and score on the carve (for choosing "
                                         "settings such as lr without reading the test split)")
    validation_fraction: float = documented(0.1, 'share of the train split carved out when eval_split = "validation"')
    max_validation_examples: int | None = documented(1000, "cap on the validation carve, in distinct texts "
                                                           "(None: no cap)")

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "max_length": self.max_length,
                    "eval_batch_size": self.eval_batch_size, "grad_accum": self.grad_accum}
        for name, v in positive.items():
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"`{name}` must be a positive integer, got {v!r}")
        if self.lr is not None and not (self.lr > 0):
            raise ConfigError(f"`lr` must be > 0, got {self.lr}")
        for name in ("eval_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"`{name}` must be an integer >= 0, got {getattr(self, name)!r}")
        if self.peak_tflops is not None and not (self.peak_tflops > 0):
            raise ConfigError(f"`peak_tflops` must be > 0, got {self.peak_tflops}")
        for name in ("max_examples", "max_eval_examples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"`{name}` must be >= 1 or None, got {v}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"`mixed_precision` must be one of {', '.join(MIXED_PRECISION)}, "
                              f"got '{self.mixed_precision}'")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}")
        if self.eval_split not in EVAL_SPLITS:
            raise ConfigError(f"`eval_split` must be one of {', '.join(EVAL_SPLITS)}, got '{self.eval_split}'")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"`validation_fraction` must be in (0, 1), got {self.validation_fraction}")
        if self.max_validation_examples is not None and self.max_validation_examples < 1:
            raise ConfigError(f"`max_validation_examples` must be >= 1 or None, got {self.max_validation_examples}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("`weight_decay` and `max_grad_norm` must be >= 0")

    def effective_lr(self, full: bool) -> float:
        """The peak learning rate: `lr`, or the default for adapters / full fine-tuning."""
        return self.lr if self.lr is not None else (FULL_LR if full else LORA_LR)

    def warmup_steps(self) -> int:
        """Optimizer steps of the linear warmup."""
        return int(self.warmup_ratio * self.steps)


@dataclass(frozen=True)
class RunResult:
    """One finished (or failed) training run: the content of run.json (schema_version 1)."""

    schema_version: int = documented(help="1")
    status: str = documented(help='"complete" | "failed"')
    error: str | None = documented(help="the one-line error of a failed run, else null")
    model: str = documented(help="the model trained (alias, path or hub id)")
    model_type: str = documented(help="its config.model_type")
    task: str = documented(help="the task trained on")
    task_kind: str = documented(help='"classification" | "lm" | "completion"')
    placement: str = documented(help='plan strategy ("all", "attention", "ffn", "auto", "q,v", ...) or "full"')
    plan: dict | None = documented(help="the Plan as a dict (entries with name, layer, kind, role, shape, rank, "
                                        "alpha), null for full")
    config: dict = documented(help="the TrainConfig actually used (lr and mixed_precision resolved)")
    env: dict = documented(help="intrinsic.env.environment (versions, device, device_name, dtype, threads) "
                                "plus processes and mixed_precision")
    score: float = documented(help="final held-out score: accuracy (classification), -perplexity (lm) or "
                                   "-loss (completion: mean NLL per completion token); higher is better")
    metrics: dict[str, float] = documented(help="final held-out metrics: accuracy, macro_f1, loss | perplexity, "
                                                "loss (+ completion: exact_match, prompts_truncated; with a "
                                                "forgetting corpus: forgetting_loss, forgetting = after - before)")
    best_score: float = documented(help="best score over all evaluation points")
    best_step: int = documented(help="the step of best_score")
    baseline_score: float = documented(help="majority-class accuracy, or the untrained model's score (lm, "
                                             "completion)")
    baseline_kind: str = documented(help='"majority" | "untrained"')
    untrained_score: float | None = documented(help="score of the model before training when "
                                                    "config.eval_at_start, else null")
    base_params: int = documented(help="backbone parameters (excluding the task head), from "
                                       "models.base_param_count")
    trainable_params: int = documented(help="every parameter that received gradients (adapters + head, "
                                            "or all for full)")
    lora_params: int = documented(help="parameters of the LoRA matrices")
    head_params: int = documented(help="parameters of the trainable head copy (modules_to_save)")
    trainable_pct: float = documented(help="100 * trainable_params / base_params")
    adapter_bytes: int = documented(help="bytes of out_dir/adapter on disk, weights + config (0 for full "
                                         "fine-tuning unless saved)")
    adapter_dir: str | None = documented(help="path of the saved adapter (or full model), null if none was saved")
    steps: int = documented(help="optimizer steps completed")
    train_time_s: float = documented(help="wall time of the training steps only (no evaluation, no saving)")
    time_per_step_s: float = documented(help="train_time_s / steps")
    train_tokens: int = documented(help="non-padding tokens seen in training (all processes)")
    tokens_per_s: float = documented(help="train_tokens / train_time_s")
    eval_time_s: float = documented(help="wall time of all evaluation passes")
    peak_memory_mb: float = documented(help="peak memory in MiB, see training.memory (evaluation excluded)")
    memory_kind: str = documented(help='"cuda": absolute peak allocated; "rss": peak growth of the process')
    loss_curve: tuple[float, ...] = documented((), "training loss at every step")
    eval_curve: tuple[dict, ...] = documented((), 'one dict per evaluation: {"step": s, "score": ..., <metrics>}')
    created: str = documented("", "UTC timestamp (ISO 8601) when the run finished")
    flops_per_token: float | None = documented(None, "model FLOPs per training token (training.flops: matmuls "
                                                     "of the linear layers, no attention scores)")
    peak_tflops: float | None = documented(None, "the peak MFU is measured against (config.peak_tflops or the "
                                                 "measured matmul rate), null on CPU unless given")
    mfu: float | None = documented(None, "model FLOPs utilization: flops_per_token x tokens_per_s / peak")
    resumed_from: int = documented(0, "the checkpoint step this run resumed from (0: trained from the start)")

    @property
    def eval_split(self) -> str:
        """The split `score` was measured on: "test" or "validation" (config.eval_split; "test" before it existed)."""
        return self.config.get("eval_split", "test")

    def save(self, out_dir: str | Path) -> Path:
        """Write run.json into the run directory `out_dir` (atomically)."""
        return write_json(Path(out_dir) / RUN_FILE, self)

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Load run.json from a run directory or the file itself."""
        path = Path(path)
        data = read_json(path / RUN_FILE if path.is_dir() else path)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(f"{path}: run.json schema_version {data.get('schema_version')} is not {SCHEMA_VERSION}")
        return from_dict(cls, data)
