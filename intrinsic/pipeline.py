"""One probe -> plan -> train pipeline for a (model, task, seed), shared by `intrinsic train`,
`intrinsic plan` and the study runner, so how `auto` gets its probe, where a plan is written and
how a run starts are decided in one place.

    from intrinsic import Pipeline, PlacementRequest, TrainConfig

    pipe = Pipeline("minilm", "rotten-tomatoes", seed=0)
    plan = pipe.plan(PlacementRequest("auto", budget="all@8"),
                     probe=lambda: pipe.probe(batches=12, update_steps=None, cache_dir="runs/auto/probe"))
    result = pipe.train(plan, TrainConfig(steps=200), "runs/auto")      # RunResult, also run.json

The model and task are loaded once, lazily. With `copy_per_use` (the study runner) the base model
stays on the CPU and every probe and training run gets a fresh deep copy on the device, so no
run sees another run's adapters and a run's peak GPU memory is its own. Without it (the CLI) the
loaded model is used in place: a probe leaves its weights as they were, training modifies them, so
a second `train` on such a pipeline is refused (use `copy_per_use=True` to train several plans).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

PROBE_FOR_AUTO = {"batches": 16, "update_steps": None}  # the quick gradient probe of `train --placement auto`


@dataclass
class Pipeline:
    """Probe, plan and train one model on one task with one seed."""

    model: Any  # packaged alias, local directory or hub id, or a LoadedModel
    task: Any  # task name (see `intrinsic tasks`), or a TaskData
    seed: int = 0  # seeds the data subsample, the head init, the probe and (through TrainConfig) training
    device: str = "auto"  # cpu | cuda | auto
    dtype: str = "float32"  # weights dtype
    data: Mapping[str, Any] = field(default_factory=dict)  # load_task options (max_examples, text_column, ...)
    copy_per_use: bool = False  # base model on the CPU, a fresh copy on `device` for every probe and run
    say: Callable[[str], None] = field(default=lambda _m: None, repr=False)  # phase messages
    _task: Any = field(default=None, init=False, repr=False)
    _loaded: Any = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ inputs
    @property
    def task_data(self):
        """The TaskData, loaded once (subsampled with this seed)."""
        if self._task is None:
            from .tasks import TaskData, load_task

            self._task = self.task if isinstance(self.task, TaskData) else load_task(
                self.task, seed=self.seed, **self.data)
        return self._task

    @property
    def loaded(self):
        """The LoadedModel with the head this task needs, loaded once (on the CPU with `copy_per_use`)."""
        if self._loaded is None:
            from .models import LoadedModel, load_model

            if isinstance(self.model, LoadedModel):
                self._loaded = self.model
            else:
                task = self.task_data
                self.say(f"loading {self.task} and {self.model} (seed {self.seed})")
                self._loaded = load_model(self.model, task_kind=task.kind, num_labels=max(2, task.num_labels),
                                          dtype=self.dtype, seed=self.seed,
                                          device="cpu" if self.copy_per_use else self.device)
        return self._loaded

    @cached_property
    def refs(self) -> list:
        """ModuleRefs of the model's attention and FFN linears (found once, before any training)."""
        from .arch import discover

        return discover(self.loaded.model)

    @cached_property
    def base_params(self) -> int:
        """Backbone parameters (the base of percentage budgets)."""
        from .models import base_param_count

        return base_param_count(self.loaded.model)

    def working(self):
        """The LoadedModel a probe or a run uses: a fresh copy on the device, or the loaded model itself."""
        if not self.copy_per_use:
            return self.loaded
        from .models import resolve_device

        return dataclasses.replace(self.loaded, model=copy.deepcopy(self.loaded.model).to(resolve_device(self.device)))

    # ------------------------------------------------------------------ steps
    def probe(self, settings: Any = None, *, cache_dir: str | Path | None = None, progress=None, **overrides):
        """The ProbeReport of this model on this task: read from `cache_dir` when a complete probe is
        there, else measured (ProbeSettings or its fields; the pipeline's seed unless given) and saved."""
        from .probes import ProbeReport, probe

        if cache_dir is not None and (Path(cache_dir) / "probe.json").is_file():
            return ProbeReport.load(cache_dir)
        given = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings or {})
        given = {"seed": self.seed, **given, **overrides}
        self.say(f"probing {self.model} on {self.task} (seed {given['seed']})")
        report = probe(self.working(), self.task_data, progress=progress, **given)
        if cache_dir is not None:
            report.save(cache_dir)
        return report

    def quick_probe(self, config, *, cache_dir: str | Path | None = None, progress=None, predictor: str | None = None):
        """The gradient probe `train --placement auto` uses when given none: PROBE_FOR_AUTO at the
        training batch shape of `config` (a TrainConfig), read from or saved to `cache_dir`; with a
        `predictor`, also what it reads (`placement.need.PROBE_SETTINGS`)."""
        extra = {}
        if predictor is not None:
            from .placement.need import PROBE_SETTINGS

            extra = PROBE_SETTINGS.get(predictor, {})
        return self.probe(cache_dir=cache_dir, progress=progress, batch_size=config.batch_size,
                          max_length=config.max_length, **{**PROBE_FOR_AUTO, **extra})

    def plan(self, request, *, probe: Callable[[], Any] | Any = None):
        """The Plan of a PlacementRequest (or "full"); `probe` (a ProbeReport, or a function returning
        one, called only when the strategy is auto) supplies auto's gains."""
        from .placement import make_plan

        def gains():
            report = probe() if callable(probe) else probe
            check_probe_matches(report, self.refs, self.loaded.name, self.task_data.name)
            return report

        return make_plan(self.refs, request, base_params=self.base_params,
                         gains=gains if probe is not None else None)

    def train(self, plan, config=None, out_dir: str | Path | None = None, *, callback=None, resume: bool = False):
        """Train `plan` ("full" or a Plan; the trainer also writes it to OUT/plan.json) and return the RunResult;
        `resume`: continue from OUT's mid-run checkpoint when there is one."""
        from .training import train

        return train(self.working(), self.task_data, plan, config, out_dir, callback=callback, resume=resume)


def plan_from_probe(report, request):
    """The Plan of `request` from a saved ProbeReport alone (`intrinsic plan`): the probed modules are
    the candidates and the backbone is counted from the model's config, no weights loaded."""
    from .errors import ConfigError
    from .models import base_param_count_of
    from .placement import make_plan

    if request.strategy == "full":
        raise ConfigError("Placement full has no plan: it trains every weight.")
    base_params = base_param_count_of(report.model)
    if base_params == 0 and request.budget and request.budget.endswith("%"):
        raise ConfigError(f"Budget '{request.budget}' is a share of the model, but model '{report.model}' of this "
                          "probe cannot be located to count its parameters; give an absolute budget (300k) or S@R.")
    return make_plan(report.refs(), request, base_params=base_params, gains=report,
                     model_refs=_model_refs(report, request))


def check_probe_matches(report, refs, model: str, task: str) -> None:
    """ConfigError unless `report` (a ProbeReport) was made for this model and task: every probed
    module exists among `refs` with the same shape, and the task names agree (a path in either form)."""
    from .errors import ConfigError
    from .training.rundir import same_name

    shapes = {r.name: tuple(r.shape) for r in refs}
    fix = f"give --probe a probe of {model} on {task} (intrinsic probe {model} {task}) or leave --probe out"
    for m in report.top_level():
        if shapes.get(m.name) != tuple(m.shape):
            here = "is not in" if m.name not in shapes else f"is {'x'.join(map(str, shapes[m.name]))} in"
            raise ConfigError(f"The probe report was made for model '{report.model}', not '{model}': its module "
                              f"{m.name} ({m.shape[0]}x{m.shape[1]}) {here} this model; {fix}.")
    if not same_name(report.task, task):
        raise ConfigError(f"The probe report was made on task '{report.task}', not '{task}'; {fix}.")


def _model_refs(report, request) -> list | None:
    """Every target module of the probed model, for a STRATEGY@RANK budget of a probe that covered a
    subset (--layers / --roles); the probed modules when it covered all; read from the model's config
    on the meta device (no weights)."""
    from .errors import ConfigError

    subset = report.settings.get("layers") is not None or report.settings.get("roles") is not None
    if not subset or request.budget is None or "@" not in request.budget:
        return None
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

        from .arch import discover, parse_module_patterns
        from .models import resolve

        source, path = resolve(report.model)
        config = AutoConfig.from_pretrained(path, local_files_only=source == "hub")
        auto = AutoModelForCausalLM if report.task.endswith(":lm") else AutoModelForSequenceClassification
        with torch.device("meta"):
            model = auto.from_config(config)
        patterns = report.settings.get("modules")
        return discover(model, patterns=parse_module_patterns(patterns) if patterns else None)
    except Exception:  # noqa: BLE001 - the model cannot be listed here: say so below
        raise ConfigError(f"Budget '{request.budget}' counts {request.budget.split('@')[0]} over every module of "
                          f"the model, but this probe covers a subset and model '{report.model}' cannot be located "
                          "to list the rest; give an absolute budget (--budget 300k).") from None


def peft_task_type(task: str) -> str:
    """PEFT's `task_type` for a task name as a probe records it: "CAUSAL_LM" for NAME:lm, else "SEQ_CLS"."""
    return "CAUSAL_LM" if task.endswith(":lm") else "SEQ_CLS"


def write_plan_files(plan, out_dir: str | Path, task_type: str) -> None:
    """OUT/plan.json (the Plan), OUT/peft_config.json (LoraConfig kwargs) and OUT/lora_config.py (a snippet)."""
    from .results import atomic_write_text, write_json
    from .training.rundir import PLAN_FILE

    out = Path(out_dir)
    plan.save(out / PLAN_FILE)
    write_json(out / "peft_config.json", {"task_type": task_type, **plan.to_peft_dict()})
    atomic_write_text(out / "lora_config.py", plan.to_python_snippet(task_type))
