"""The probe run, end to end: load, select modules, make batches, measure, estimate, build the report.

Phases (each timed in `report.timings`, each reported to the optional `progress(phase, done,
total)` callback): load, batches, gradient (N real-label batches), noise (N shuffled-label
batches), spectra (SVDs of every module and role block), estimate (the estimators of
`rank.ESTIMATORS` on them), update (K fine-tuning steps on a copy), update_spectra (SVD of
W_step - W_0 at the checkpoints).

Intrinsic rank: every spectrum gets every estimator whose inputs it has (`rank.estimate`); the
mean gradient also gets the three data-driven floors, `split_half` (directions the two halves of
the batches agree on beyond random subspaces), `noise_floor` (singular values above the
shuffled-label spectrum) and `half_difference` (singular values above the largest of
(G_even - G_odd) / 2). With `folds` K > 0 (the default, K = 8) the gradient phase also keeps K fold means
and the rows get `sign_flip`, the calibrated step-down sign-flip test (`rank.signflip`, family-wise
level 5% for "rank >= 1"), with its per-direction p-values in `sign_flip_p`; every other number
is the same as without folds. `rank_estimator` picks the one reported as `intrinsic_rank`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .schema import SCHEMA_VERSION, ProbeReport, summarize
from .settings import ProbeSettings

if TYPE_CHECKING:  # steps imports torch; this module must not at import time
    from .steps import Progress


def load_inputs(model, task, settings: ProbeSettings):
    """(LoadedModel, TaskData) from names or already-loaded objects, checked against each other."""
    data = _load_task(task, settings)
    return _load_model(model, data, settings), data


def describe(model, task=None, **settings) -> list:
    """Dry run: the ModuleRefs a probe with these settings would measure (no gradients computed)."""
    s = ProbeSettings.from_kwargs(**settings)
    loaded = _load_model(model, _load_task(task, s) if task is not None else None, s)
    return _select(loaded, s)


def _settings(settings: ProbeSettings | None, overrides: dict[str, Any]) -> ProbeSettings:
    if settings is None:
        return ProbeSettings.from_kwargs(**overrides)
    if overrides:
        raise ConfigError(f"Pass ProbeSettings or keyword settings, not both (got {', '.join(overrides)} as well).")
    return settings


def probe(model, task, settings: ProbeSettings | None = None, *, progress: Progress | None = None,
          **overrides: Any) -> ProbeReport:
    """Measure per-module intrinsic ranks of `model` (name or LoadedModel) on `task` (name or TaskData).

    Settings: a `ProbeSettings`, or its fields as keywords (validated, with "did you mean").
    """
    import numpy as np

    from ..env import environment
    from ..tasks import count_tokens, make_batches
    from .base import ProbeBatches
    from .contrast import label_contrast
    from .gradient import GradientProbe
    from .head import fit_head
    from .rows import gradient_rows, with_extras, with_update
    from .update import UpdateProbe

    s = _settings(settings, overrides)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + now - clock, 4)
        clock = now

    loaded, data = load_inputs(model, task, s)
    s, examples_used, notes = distinct_batches(s, data)
    s, more = s.resolved(s.batches)
    notes += more
    refs = _select(loaded, s)
    if s.sketch is None:  # exact accumulators unless they would not fit the device
        from .sketch import auto_sketch

        k, note = auto_sketch(loaded.model, refs, s.folds)
        if k:
            try:
                s = replace(s, sketch=k)  # validated again: the estimator must not need the spectrum's tail
            except ConfigError as err:
                raise ConfigError(f"{note.split(':')[0]}, and {err}") from None
            notes.append(note)
    if s.sketch:  # sketch mode is the smallest: refused now when even its state cannot fit
        from .sketch import check_sketch_fits, free_bytes
        from .steps import device_of

        dev = device_of(loaded.model)
        check_sketch_fits(refs, s.sketch, s.folds, free_bytes(dev), str(dev))
    s = replace(s, spectra=s.spectra_for(next(loaded.model.parameters()).device.type))  # "auto" resolved
    if s.update_steps:  # refused now, not after the gradient probe, when it cannot fit
        from .sketch import free_bytes
        from .steps import device_of
        from .update import check_update_fits, update_bytes

        dev = device_of(loaded.model)
        check_update_fits(update_bytes(loaded.model, refs), free_bytes(dev), str(dev))
    lap("load")
    loaded, head_fit, head_notes = fit_head(loaded, data, s)  # on a copy of the model
    notes += head_notes
    if head_fit is not None:
        lap("fit_head")
    common = dict(batch_size=s.batch_size, max_length=s.max_length, seed=s.seed)
    real = make_batches(data, loaded.tokenizer, num_batches=s.batches, **common)
    batches = ProbeBatches(
        real=real, shuffled=make_batches(data, loaded.tokenizer, num_batches=s.batches, shuffle_labels=True, **common),
        update=make_batches(data, loaded.tokenizer, num_batches=s.update_steps, **common) if s.update_steps else [],
        tokens=count_tokens(real),
    )
    lap("batches")

    def on_phase(phase: str, done: int, total: int) -> None:
        if done == total:
            lap(phase)
        if progress:
            progress(phase, done, total)

    grad = GradientProbe()
    rows = gradient_rows(refs, grad.measure(loaded.model, refs, batches, s, on_phase), s.rank_estimator,
                         progress=on_phase, noise_norm=True, example_energy=grad.example_energy)
    rows = with_extras(rows, refs, loaded.model, batches.real, s, on_phase, lap)
    notes += grad.notes
    losses: list[float] = []
    if s.update_steps:
        update = UpdateProbe()
        rows = with_update(rows, update.measure(loaded.model, refs, batches, s, on_phase))
        lap("update")
        timings["update"] = round(timings["update"] - update.svd_seconds, 4)
        timings["update_spectra"] = round(update.svd_seconds, 4)
        losses = update.losses
    modules = tuple(rows)
    top = [m for m in modules if m.block_of is None]
    token_cap = min(batches.tokens, max(min(m.shape) for m in top))
    summary = summarize(modules)
    if head_fit is not None:
        summary["head_fit"] = head_fit
    summary["label_contrast"] = label_contrast(modules)  # true- vs shuffled-label energy
    if losses:  # did the update probe learn? first and last 10-step mean loss
        summary["update_loss"] = {"first": float(np.mean(losses[:10])), "last": float(np.mean(losses[-10:]))}
    param = next(loaded.model.parameters())
    return ProbeReport(
        schema_version=SCHEMA_VERSION, model=loaded.name, task=data.name, settings=_jsonable_settings(s, head_fit is not None),
        seed=s.seed, tokens=batches.tokens, token_cap=token_cap, modules=modules, summary=summary,
        timings=timings, env=environment(param.device, param.dtype, model_type=loaded.model_type),
        examples_used=examples_used, notes=tuple(notes), data=data.summary(),
    )


# ---------------------------------------------------------------------- helpers


def distinct_batches(s: ProbeSettings, data) -> tuple[ProbeSettings, int, list[str]]:
    """(settings, distinct texts used, notes): the calibration batches never reuse an example, so the split
    halves (even vs odd batches) never share one. With fewer training examples than batches x batch_size,
    the number of batches is capped at what the split fills (noted); below 2 batches, EmptyDatasetError."""
    from ..errors import EmptyDatasetError
    from ..tasks import example_order

    from .settings import DEFAULT_FOLDS

    n, notes = len(data.train_texts), []
    fit = n // s.batch_size
    k = s.folds if s.folds is not None else (DEFAULT_FOLDS if s.batches % DEFAULT_FOLDS == 0 else 0)
    if k and fit < s.batches and (s.folds or fit >= k):  # every fold averages as many batches, none shares an example
        fit = fit // k * k
        if fit < k:
            raise EmptyDatasetError(
                f"Task {data.name!r} has {n} distinct training examples, too few for the sign-flip test's {k} "
                f"folds of batches of {s.batch_size} ({k * s.batch_size} examples): lower --batch-size, raise "
                "--max-examples, or probe without folds (--folds 0 --rank-estimator half_difference: uncalibrated)."
            )
    if fit < 2:
        raise EmptyDatasetError(
            f"Task {data.name!r} has {n} distinct training examples, too few for 2 batches of {s.batch_size} (the "
            "split halves must not share an example): lower --batch-size or raise --max-examples."
        )
    if fit < s.batches:
        notes.append(f"{s.batches} batches of {s.batch_size} need {s.batches * s.batch_size} examples but the "
                     f"training split has {n}: probed {fit} batches of distinct examples instead"
                     + (f" (a multiple of the {k} folds)" if k and fit % k == 0 else ""))
        s = replace(s, batches=fit)
    slots = s.batches * s.batch_size
    order = example_order(n, seed=s.seed, batch_size=s.batch_size, num_batches=s.batches)
    used = len({data.train_texts[i] for i in order})
    if used < slots:
        notes.append(f"{slots - used} of the {slots} calibration examples repeat a text of another "
                     "(duplicates in the data)")
    return s, used, notes


def _jsonable_settings(s: ProbeSettings, head_fitted: bool) -> dict[str, Any]:
    from ..results import to_dict

    d = to_dict(asdict(s))
    d["update_checkpoints"] = list(s.checkpoints) or None
    if not s.folds:  # off: probe.json keeps the keys it had before folds existed
        del d["folds"]
    d["fit_head"] = head_fitted
    if s.spectra == "exact":  # the default: probe.json keeps the keys it had before top-k existed
        del d["spectra"], d["topk"]
    for name in ("example_energy", "activations", "weight_alpha"):  # off: probe.json keeps its keys
        if not d[name]:
            del d[name]
    if s.sketch is None:  # the default: probe.json keeps the keys it had before sketch mode existed
        del d["sketch"]
    return d


def _load_task(task, s: ProbeSettings):
    from ..tasks import TaskData, check_classes, load_task

    if isinstance(task, TaskData):
        check_classes(task)
        return task
    if not isinstance(task, str):
        raise ConfigError(f"task must be a task name or a TaskData, got {type(task).__name__}")
    return load_task(task, seed=s.seed, max_examples=s.max_examples, text_column=s.text_column, label_column=s.label_column,
                     prompt_column=s.prompt_column, completion_column=s.completion_column)


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
