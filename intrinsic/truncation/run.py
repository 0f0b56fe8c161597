"""`truncate_run(RUN_DIR)`: the outcome-measured intrinsic rank (r90, r90_own) of each component of a full
fine-tuning run, written to RUN_DIR/truncation.json.

What it needs from the run: run.json (placement "full", status "complete") and the fine-tuned model
under RUN_DIR/model (`intrinsic train ... --placement full --save-model`). It loads the base model
named in run.json the way the run did (same seed, so a classification head starts as the run's did),
rebuilds the run's held-out batches (`training.data.make_eval_batches`: the same split, cap and batch
size) and scores with the run's `evaluate` + `score_of`, under the run's autocast on a GPU.

Resumable: truncation.json is rewritten (atomically) after every point; a rerun on the same run and
device keeps the points measured and measures only the missing ones; when nothing is missing it
answers from the file without loading a model. A file written before the r = 0 point (the component's
update removed) was measured lacks it: it loads, and a rerun measures only those points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .measure import WITHOUT, Callback, component_rows, measure
from .result import KEEP, OWN_FLOOR, SCHEMA_VERSION, TruncationResult
from .settings import TruncateSettings

RERUN = "intrinsic train MODEL TASK --placement full --save-model"


def check_run(run_dir: str | Path):
    """The RunResult of a complete full fine-tuning run with its model saved; ConfigError (one line, naming
    the flags to rerun with) otherwise."""
    from ..training.config import RunResult
    from ..training.rundir import MODEL_DIR, RUN_FILE

    out = Path(run_dir)
    if not (out / RUN_FILE).is_file():
        raise ConfigError(f"{out} holds no {RUN_FILE}: not a training run; truncate takes the folder of a full "
                          f"fine-tuning run ({RERUN} --out DIR).")
    run = RunResult.load(out)
    if run.placement != "full":
        raise ConfigError(f"{out} is a LoRA run (placement '{run.placement}'), not full fine-tuning: truncate cuts "
                          f"the update of full fine-tuning; train one with `{RERUN}`.")
    if run.status != "complete":
        raise ConfigError(f"{out} holds a {run.status} run; truncate needs a complete one ({RERUN} --resume).")
    if not (out / MODEL_DIR / "config.json").is_file():
        raise ConfigError(f"{out} has no fine-tuned weights ({MODEL_DIR}/): the run was trained without "
                          f"--save-model; rerun it with `{RERUN} --out {out} --overwrite`.")
    return run


def is_complete(run_dir: str | Path, settings: TruncateSettings | None = None, *, any_device: bool = False) -> bool:
    """Whether RUN_DIR/truncation.json already holds every point `settings` asks for, of this run (its
    run.json stamp) and on the device the settings resolve to: then `truncate_run` measures nothing.
    `any_device`: measured on whatever device (the r90 exists, though `truncate_run` here would measure afresh)."""
    from ..models import resolve_device
    from ..training.config import RunResult
    from ..training.rundir import RUN_FILE

    settings = settings or TruncateSettings()
    out = Path(run_dir)
    old = TruncationResult.load(out)
    if old is None or not (out / RUN_FILE).is_file():
        return False
    if old.run_created != RunResult.load(out).created or (not any_device
                                                          and old.device != resolve_device(settings.device)):
        return False
    try:
        return _answer_from_file(old, settings) is not None
    except ConfigError:  # a component the stored model lacks: truncate_run says so
        return False


def truncate_run(run_dir: str | Path, settings: TruncateSettings | None = None, *,
                 callback: Callback | None = None) -> TruncationResult:
    """Measure r90 of each component of the full fine-tuning run in `run_dir` (see the module docstring).

    `callback` receives {"event": "phase", "message"}, {"event": "svd", "done", "total"} and
    {"event": "point", "done", "total", "component", "rank", "score"}."""
    from ..models import resolve_device

    settings = settings or TruncateSettings()
    emit = callback or (lambda event: None)
    t0 = time.perf_counter()
    out = Path(run_dir)
    run = check_run(out)
    device = resolve_device(settings.device)
    old = TruncationResult.load(out)
    if old is not None and (old.run_created != run.created or old.device != device):
        old = None  # another run in the same folder, or scores from another device: measure afresh
    ready = _answer_from_file(old, settings)
    if ready is not None:
        return ready
    return _measure_run(out, run, settings, device, old, emit, t0)


def _answer_from_file(old: TruncationResult | None, settings: TruncateSettings) -> TruncationResult | None:
    """The stored result re-read for this request when every point it needs is measured, else None."""
    if old is None or not old.available:
        return None
    from .components import select_components

    names = select_components(list(old.available), settings.components)
    rows = {c.component: c for c in old.components}
    have = {(p.component, p.rank) for p in old.points}
    described = []
    for name in names:
        row = rows.get(name)
        if row is None:
            return None
        ranks = tuple(sorted({min(r, row.max_rank) for r in settings.ranks}))
        if ranks != row.ranks or any((name, r) not in have for r in (WITHOUT, *ranks)):  # an old file lacks r=0
            return None
        described.append(row)
    comps = component_rows(described, old.points, old.untrained_score, old.full_score, old.keep, old.own_floor)
    return dataclasses.replace(old, grid=settings.ranks, components=comps, time_s=0.0)


def _measure_run(out: Path, run, settings: TruncateSettings, device: str, old, emit: Callback,
                 t0: float) -> TruncationResult:
    from ..arch import discover, num_layers, weight_of
    from ..models import load_model
    from ..training.rundir import MODEL_DIR
    from .components import blocks_of, component_blocks, select_components
    from .truncator import Truncator

    config, task = _config_and_task(run)
    dtype = run.env.get("dtype", "float32")
    num_labels = max(2, task.num_labels)
    emit({"event": "phase", "message": f"loading the fine-tuned model ({out / MODEL_DIR})"})
    ft = load_model(str(out / MODEL_DIR), task_kind=run.task_kind, num_labels=num_labels, dtype=dtype,
                    device=device, seed=config.seed)
    refs = discover(ft.model)
    layers = num_layers(ft.model)
    every = component_blocks(blocks_of(refs), layers)
    available = list(every)
    names = select_components(available, settings.components)  # a bad name is refused before the base loads
    needed = {b.ref.name for name in names for b in every[name]}
    refs = [r for r in refs if r.name in needed]  # factor only the modules of the components asked for
    emit({"event": "phase", "message": f"loading the base model {run.model}"})
    base = load_model(run.model, task_kind=run.task_kind, num_labels=num_labels, dtype=dtype, device=device,
                      seed=config.seed)
    score = _scorer(run, config, task, base.tokenizer, device)
    emit({"event": "phase", "message": "scoring the untrained model"})
    untrained = old.untrained_score if old is not None else score(base.model)
    base_refs = {r.name: r for r in discover(base.model)}
    base_weights = {r.name: weight_of(base.model, base_refs[r.name]) for r in refs if r.name in base_refs}
    emit({"event": "phase", "message": f"factoring the update of {len(refs)} modules"})
    truncator = Truncator(ft.model, base_weights, refs, layers, max_rank=max(settings.ranks),
                          progress=lambda d, n: emit({"event": "svd", "done": d, "total": n}))
    del base, base_weights  # the truncator holds the base blocks it needs
    emit({"event": "phase", "message": "scoring the full fine-tuned model"})
    full = old.full_score if old is not None else score(ft.model)
    described = [truncator.describe(c, settings.ranks) for c in names]
    eval_examples = len(_held_out(task, config).test_texts)
    points = {(p.component, p.rank): p for p in (old.points if old is not None else ())}

    def result(time_s: float) -> TruncationResult:
        rows = component_rows(described, tuple(points.values()), untrained, full)
        return TruncationResult(
            schema_version=SCHEMA_VERSION, run_dir=str(out), run_created=run.created, model=run.model,
            task=run.task, task_kind=run.task_kind, eval_split=run.eval_split, eval_examples=eval_examples,
            device=device, untrained_score=untrained, full_score=full, run_score=run.score,
            full_gain=full - untrained, keep=KEEP, grid=settings.ranks, components=rows, available=tuple(available),
            points=tuple(points.values()), time_s=time_s, own_floor=OWN_FLOOR,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))

    def on_point(p) -> None:
        points[(p.component, p.rank)] = p
        result(time.perf_counter() - t0).save(out)

    result(time.perf_counter() - t0).save(out)  # the untrained and full scores survive an interruption
    measure(truncator, names, settings.ranks, score, done=tuple(points.values()), on_point=on_point, callback=emit)
    final = result(time.perf_counter() - t0)
    final.save(out)
    return final


def _config_and_task(run):
    """The run's TrainConfig (as stored) and its task, loaded as `intrinsic train` loaded it."""
    from ..tasks import load_task
    from ..training.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in run.config.items() if k in known})
    task = load_task(run.task, seed=config.seed, max_examples=config.max_examples,
                     max_eval_examples=config.max_eval_examples)
    return config, task


def _held_out(task, config):
    from ..training.data import subset_task

    return subset_task(task, config)


def _scorer(run, config, task, tokenizer, device: str):
    """score(model): the run's held-out score (`evaluate` + `score_of` on the run's own eval batches)."""
    import torch

    from ..training.data import make_eval_batches
    from ..training.evaluation import evaluate, score_of

    batches = make_eval_batches(task, tokenizer, config)
    num_labels = len(_held_out(task, config).labels) if run.task_kind == "classification" else 0
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision)
    on_gpu = device.startswith("cuda")

    def score(model: Any) -> float:
        ctx = torch.autocast("cuda", dtype=dt) if on_gpu and dt is not None else contextlib.nullcontext()
        with ctx:
            return score_of(evaluate(model, batches, task_kind=run.task_kind, num_labels=num_labels), run.task_kind)

    return score
