"""`probe(model, task, **settings) -> ProbeReport`: the gradient and weight-update probes, end to end.

Phases (each timed in `report.timings`, each reported to the optional `progress(phase, done,
total)` callback): load, batches, gradient (N real-label batches), noise (N shuffled-label
batches), spectra (SVD + estimators of every module and role block), update (K fine-tuning
steps on a copy), update_spectra (SVD of W_step - W_0 at the checkpoints).

Intrinsic rank: every spectrum gets every estimator of `rank.estimate_all`; the mean gradient
also gets the three data-driven floors, `split_half` (directions the two halves of the batches
agree on beyond random subspaces), `noise_floor` (singular values above the shuffled-label
spectrum) and `half_difference` (singular values above the largest of (G_even - G_odd) / 2).
`rank_estimator` picks the one reported as `intrinsic_rank`; see DEFAULT_ESTIMATOR.
"""

from __future__ import annotations

import inspect
import math
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError, did_you_mean
from .report import SCHEMA_VERSION, ModuleProbe, ProbeReport, summarize

Progress = Callable[[str, int, int], None]  # (phase, done, total); the library never draws anything itself

# Default intrinsic rank: half_difference, the number of singular values of the mean gradient G above
# the largest singular value of (G_even - G_odd) / 2. With equal halves that difference has exactly
# the covariance of the sampling noise in G (anisotropy included) while any systematic part cancels,
# so it is a noise-only copy of G measured on the same batches at no extra cost; a direction counts
# if it beats the strongest pure-noise direction (a permutation max-statistic). The other floors
# stay in every row: split_half also counts anisotropic noise that reproduces across halves (MiniLM
# on Rotten Tomatoes: 10-39 per module), and noise_floor compares against shuffled labels, whose
# gradient keeps the label-independent part (pushing the head towards the label marginal) that
# dominates both spectra, so it reads 0 for 34 of MiniLM's 36 modules; it remains a diagnostic.
DEFAULT_ESTIMATOR = "half_difference"
_KNOWN_ROLES = ("q", "k", "v", "o", "qkv", "up", "gate", "down", "gate_up")


def _estimators() -> tuple[str, ...]:
    from .. import rank

    return tuple(rank.ESTIMATORS)


@dataclass(frozen=True)
class ProbeSettings:
    """Everything that decides a probe's result. Field comments double as CLI help."""

    batches: int = 32  # calibration batches N for the mean gradient (>= 2: the split halves need one each)
    batch_size: int = 16  # examples per batch
    max_length: int = 128  # tokens per example, longer texts are cut
    update_steps: int | None = 100  # fine-tuning steps K of the update probe; None skips the update probe
    update_lr: float = 5e-5  # AdamW learning rate of the update probe (constant, no weight decay)
    update_checkpoints: tuple[int, ...] | None = None  # steps at which dW's ranks are recorded; None: K/10, K/2, K
    roles: tuple[str, ...] | None = None  # probe only these roles (q k v o qkv up gate down gate_up); None: all
    layers: tuple[int, ...] | None = None  # probe only these layer indices; None: all
    modules: str | None = None  # "regex=role,..." module patterns for an architecture missing from the map
    rank_estimator: str = DEFAULT_ESTIMATOR  # estimator reported as each module's intrinsic rank
    max_sv: int = 512  # singular values kept per spectrum (at least the top half, which Gavish-Donoho needs)
    seed: int = 0  # seeds batch order, label shuffling, head init and the update probe
    device: str = "cpu"  # cpu | cuda | auto, when the model is given by name
    dtype: str = "float32"  # float32 | bfloat16 | float16, when the model is given by name
    max_examples: int | None = None  # subsample the task's training split, when the task is given by name
    text_column: str | None = None  # text column of a local/hf task
    label_column: str | None = None  # label column of a local/hf task

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("update_checkpoints", "roles", "layers"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                put(name, tuple(v) if isinstance(v, (list, set)) else (v,))
        for name, low in (("batches", 2), ("batch_size", 1), ("max_length", 2), ("max_sv", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                extra = " (split halves need one batch each)" if name == "batches" else ""
                raise ConfigError(f"`{name}` must be an integer >= {low}{extra}, got {v!r}")
        if self.update_steps is not None and (not isinstance(self.update_steps, int) or self.update_steps < 1):
            raise ConfigError(
                f"`update_steps` must be >= 1, got {self.update_steps!r}; to skip the update probe pass "
                "update_steps=None (CLI: --no-update)."
            )
        if not (isinstance(self.update_lr, (int, float)) and math.isfinite(self.update_lr) and self.update_lr > 0):
            raise ConfigError(f"`update_lr` must be a positive number, got {self.update_lr!r}")
        if self.update_checkpoints is not None:
            k = self.update_steps
            if k is None:
                raise ConfigError("`update_checkpoints` given but `update_steps` is None (update probe skipped).")
            bad = [c for c in self.update_checkpoints if not isinstance(c, int) or not 1 <= c <= k]
            if bad:
                raise ConfigError(f"`update_checkpoints` must be steps in 1..{k} (update_steps), got {bad}")
            put("update_checkpoints", tuple(sorted(set(self.update_checkpoints))))
        if self.roles is not None:
            bad = [r for r in self.roles if r not in _KNOWN_ROLES]
            if bad or not self.roles:
                hint = did_you_mean(bad[0], _KNOWN_ROLES) if bad else ""
                raise ConfigError(f"`roles` must name roles among {', '.join(_KNOWN_ROLES)}, got {list(self.roles)}.{hint}")
        if self.layers is not None and (not self.layers or any(not isinstance(x, int) or x < 0 for x in self.layers)):
            raise ConfigError(f"`layers` must be non-negative layer indices, got {list(self.layers)}")
        names = _estimators()
        if self.rank_estimator not in names:
            raise ConfigError(
                f"`rank_estimator` must be one of {', '.join(names)}, got {self.rank_estimator!r}."
                + did_you_mean(self.rank_estimator, names)
            )

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The checkpoint steps in use (the default is K/10, K/2, K)."""
        if self.update_steps is None:
            return ()
        if self.update_checkpoints is not None:
            return tuple(sorted(set(self.update_checkpoints) | {self.update_steps}))
        k = self.update_steps
        return tuple(sorted({max(1, round(k / 10)), max(1, round(k / 2)), k}))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> ProbeSettings:
        names = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in names:
                raise ConfigError(f"Unknown probe setting '{key}'.{did_you_mean(key, names)}")
        return cls(**kwargs)


def settings_help() -> dict[str, str]:
    """Each ProbeSettings field's comment, the single source of its documentation (the CLI's help)."""
    src = inspect.getsource(ProbeSettings)
    return dict(re.findall(r"^    (\w+): [^#\n]+#\s*(.+)$", src, flags=re.M))


def load_inputs(model, task, settings: ProbeSettings):
    """(LoadedModel, TaskData) from names or already-loaded objects, checked against each other."""
    data = _load_task(task, settings)
    return _load_model(model, data, settings), data


def describe(model, task=None, **settings) -> list:
    """Dry run: the ModuleRefs a probe with these settings would measure (no gradients computed)."""
    s = ProbeSettings.from_kwargs(**settings)
    loaded = _load_model(model, _load_task(task, s) if task is not None else None, s)
    return _select(loaded, s)


def probe(model, task, *, progress: Progress | None = None, **settings: Any) -> ProbeReport:
    """Measure per-module intrinsic ranks of `model` (name or LoadedModel) on `task` (name or TaskData)."""
    import numpy as np

    from ..tasks import count_tokens, make_batches
    from .gradient import accumulate_gradients, analyze_gradients
    from .update import analyze_update, update_probe

    s = ProbeSettings.from_kwargs(**settings)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + now - clock, 4)
        clock = now

    loaded, data = load_inputs(model, task, s)
    refs = _select(loaded, s)
    lap("load")
    common = dict(batch_size=s.batch_size, max_length=s.max_length, seed=s.seed)
    batches = make_batches(data, loaded.tokenizer, num_batches=s.batches, **common)
    noise_batches = make_batches(data, loaded.tokenizer, num_batches=s.batches, shuffle_labels=True, **common)
    update_batches = make_batches(data, loaded.tokenizer, num_batches=s.update_steps, **common) if s.update_steps else []
    tokens = count_tokens(batches)
    lap("batches")

    def on_phase(phase: str, done: int, total: int) -> None:
        if done == total:
            lap(phase)
        if progress:
            progress(phase, done, total)

    sums = accumulate_gradients(loaded.model, refs, batches, noise_batches, progress=on_phase)
    rows = analyze_gradients(sums, tokens, s, progress=on_phase)
    if s.update_steps:
        result = update_probe(
            loaded.model, refs, update_batches, lr=s.update_lr, checkpoints=s.checkpoints,
            max_sv=s.max_sv, seed=s.seed, progress=on_phase,
        )
        rows = analyze_update(rows, result)
        lap("update")
        timings["update"] = round(timings["update"] - result.svd_seconds, 4)
        timings["update_spectra"] = round(result.svd_seconds, 4)
        losses = result.losses
    else:
        losses = []
    del sums
    modules = tuple(ModuleProbe(**r) for r in rows)
    top = [m for m in modules if m.block_of is None]
    token_cap = min(tokens, max(min(m.shape) for m in top))
    summary = summarize(modules)
    if losses:  # did the update probe learn? first and last 10-step mean loss
        summary["update_loss"] = {"first": float(np.mean(losses[:10])), "last": float(np.mean(losses[-10:]))}
    return ProbeReport(
        schema_version=SCHEMA_VERSION, model=loaded.name, task=data.name, settings=_jsonable_settings(s),
        seed=s.seed, tokens=tokens, token_cap=token_cap, modules=modules, summary=summary,
        timings=timings, env=_env(loaded),
    )


# ---------------------------------------------------------------------- helpers


def _jsonable_settings(s: ProbeSettings) -> dict[str, Any]:
    from ..results import to_dict

    d = to_dict(asdict(s))
    d["update_checkpoints"] = list(s.checkpoints) or None
    return d


def _load_task(task, s: ProbeSettings):
    from ..tasks import TaskData, load_task

    if isinstance(task, TaskData):
        return task
    if not isinstance(task, str):
        raise ConfigError(f"task must be a task name or a TaskData, got {type(task).__name__}")
    return load_task(task, seed=s.seed, max_examples=s.max_examples, text_column=s.text_column, label_column=s.label_column)


def _load_model(model, data, s: ProbeSettings):
    from ..models import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        if data is not None and model.task_kind != data.kind:
            raise ConfigError(f"Model '{model.name}' has a {model.task_kind} head but task '{data.name}' is {data.kind}.")
        want = data.num_labels if data is not None and data.kind == "classification" else None
        have = getattr(model.model.config, "num_labels", None)
        if want and have != want:
            raise ConfigError(f"Model '{model.name}' has {have} labels but task '{data.name}' has {want}.")
        return model
    if not isinstance(model, str):
        raise ConfigError(f"model must be a model name or a LoadedModel, got {type(model).__name__}")
    kind = data.kind if data is not None else "classification"
    labels = max(data.num_labels, 2) if data is not None else 2
    return load_model(model, task_kind=kind, num_labels=labels, dtype=s.dtype, device=s.device, seed=s.seed)


def _select(loaded, s: ProbeSettings):
    from ..arch import discover, parse_module_patterns

    refs = discover(loaded.model, patterns=parse_module_patterns(s.modules) if s.modules else None)
    if s.roles is not None:
        want = set(s.roles)
        present = sorted({r.role for r in refs} | {b.role for r in refs for b in r.blocks})
        refs = [r for r in refs if r.role in want or any(b.role in want for b in r.blocks)]
        if not refs:
            raise ConfigError(f"--roles {','.join(s.roles)} names no module of {loaded.name}; its roles: {', '.join(present)}")
    if s.layers is not None:
        layers = sorted({r.layer for r in refs})
        refs = [r for r in refs if r.layer in set(s.layers)]
        if not refs:
            raise ConfigError(f"--layers {s.layers} selects no module of {loaded.name}; its layers: {layers[0]}-{layers[-1]}")
    return refs


def _env(loaded) -> dict[str, str]:
    import torch
    import transformers

    from .. import __version__

    dev = next(loaded.model.parameters()).device
    return {
        "intrinsic": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "device": str(dev),
        "dtype": str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
        "model_type": loaded.model_type, "threads": str(torch.get_num_threads()),
    }


__all__ = ["probe", "describe", "load_inputs", "settings_help", "ProbeSettings", "ProbeReport", "ModuleProbe",
           "DEFAULT_ESTIMATOR"]
