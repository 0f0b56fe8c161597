"""A study's results as typed rows: one `CellRow` per grid cell (its settings plus its outcome), rebuilt
from the cell directories into results.json and read back from it.

A row is built from what a cell directory holds: its run.json as a `RunResult`, the run's `Plan`
(or "full"), status.json for failed or infeasible cells, and the seed's probe for the predicted
share. results.json (schema_version `RESULTS_SCHEMA`) holds `CellRow.to_record()` of every row in
grid order: a finished row has every field, any other row only the cell's settings, status and error.

The two sides of the study's self-check are computed here:
- predicted share (`ProbeEnergy.share`): sum over the plan's modules of sum_{i<=rank} sigma_i^2 of the
  probe's mean gradient, over the total gradient energy (1.0 for full fine-tuning);
- gain (`CellRow.finished`): score minus the untrained score, or minus the trainer's baseline
  (majority class) when the untrained model was not scored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..fields import documented
from ..placement import Plan
from ..results import from_dict, read_json, to_dict, write_json
from ..training import RunResult
from ..training.rundir import RUN_FILE
from .grid import Cell, settings_hash
from .spec import StudySpec

RESULTS_SCHEMA = 1  # version of results.json (and study.json); newer files are refused with a clear error
ROW_METRICS = ("score", "baseline_score", "baseline_kind", "untrained_score", "trainable_params", "lora_params",
               "trainable_pct", "peak_memory_mb", "memory_kind", "train_time_s", "time_per_step_s", "tokens_per_s",
               "adapter_bytes")  # RunResult fields copied as they are into a finished row
STATUSES = ("ok", "failed", "infeasible", "pending")

PlanOf = Plan | Literal["full"] | None  # what a run trained: a LoRA plan, full fine-tuning, or unknown


@dataclass(frozen=True, kw_only=True)
class CellRow:
    """One results row: a grid cell's settings, then its outcome (outcome fields are None unless status is ok)."""

    id: str = documented(help="cell id: hash of every result-relevant setting, incl. the seed")
    config_id: str = documented(help="the same hash without the seed: rows of one config are replicates")
    label: str = documented(help="config label without the seed, e.g. 'ffn budget=all@8'")
    variant: str = documented(help="strategy plus layer selection, e.g. 'all[lower]'")
    strategy: str = documented(help='all | attention | ffn | "q,v" | auto | full')
    rank: int | None = documented(None, "uniform rank of a fixed strategy; None for auto, full and budget cells")
    budget: str | None = documented(None, "budget text of auto and budget cells, e.g. 'all@8'; else None")
    layers: str | None = documented(None, "layer selection text; None = every layer")
    seed: int = documented(help="replicate seed")
    groups: tuple[str, ...] = documented((), "comparison groups of the cell: 'rank=8', 'budget=all@8'")
    blocks: tuple[str, ...] = documented((), "grid blocks that asked for the cell")
    phase: str = documented("test", '"test": a run of the grid; "lr-sweep": a validation run of an lr grid')
    arm: str = documented("", "hash of the arm (settings without lr grid and seed) an lr-sweep row selects for")
    lr_grid: tuple[float, ...] = documented((), "the arm's lr grid; non-empty: the lr was chosen on validation")
    lr: float | None = documented(None, "peak learning rate of the run (a test row of an lr grid: the chosen "
                                        "one; None: the trainer's default, not yet run)")
    eval_split: str = documented("test", '"test" or "validation": the split `score` was measured on')
    status: str = documented("pending", "ok | failed | infeasible | pending (not run yet, or interrupted)")
    error: str | None = documented(None, "one-line error of a failed or infeasible cell, else None")
    score: float | None = documented(None, "RunResult.score: held-out accuracy, or -perplexity (higher is better)")
    baseline_score: float | None = documented(None, "RunResult.baseline_score: majority class, or untrained (lm)")
    baseline_kind: str | None = documented(None, 'RunResult.baseline_kind: "majority" | "untrained"')
    untrained_score: float | None = documented(None, "RunResult.untrained_score: the model before training, "
                                                     "when it was scored")
    trainable_params: int | None = documented(None, "RunResult.trainable_params: adapters + head, or all (full)")
    lora_params: int | None = documented(None, "RunResult.lora_params: parameters of the LoRA matrices")
    trainable_pct: float | None = documented(None, "RunResult.trainable_pct: 100 * trainable / base parameters")
    peak_memory_mb: float | None = documented(None, "RunResult.peak_memory_mb: peak memory of training, MiB")
    memory_kind: str | None = documented(None, 'RunResult.memory_kind: "cuda" | "rss"')
    train_time_s: float | None = documented(None, "RunResult.train_time_s: wall time of the training steps")
    time_per_step_s: float | None = documented(None, "RunResult.time_per_step_s: train_time_s / steps")
    tokens_per_s: float | None = documented(None, "RunResult.tokens_per_s: training throughput")
    adapter_bytes: int | None = documented(None, "RunResult.adapter_bytes: saved adapter size on disk")
    gain: float | None = documented(None, "score minus untrained_score, or minus baseline_score when the untrained "
                                          "model was not scored")
    rank_min: int | None = documented(None, "smallest rank of the plan (None for full fine-tuning)")
    rank_max: int | None = documented(None, "largest rank of the plan (None for full fine-tuning)")
    modules: int | None = documented(None, "adapted modules of the plan (None for full fine-tuning)")
    plan_params: int | None = documented(None, "LoRA parameters of the plan, Plan.params (None for full)")
    predicted_share: float | None = documented(None, "probe-predicted share of mean-gradient energy the plan "
                                                     "captures (1.0 for full; None without a probe)")
    timing: str | None = documented(None, '"exclusive": the cell had its device to itself; "shared": other cells '
                                          "ran on it, so its time and memory are not a dedicated device's; None: "
                                          "not recorded (older results)")
    exact_match: float | None = documented(None, "RunResult.metrics exact_match: greedy answers equal to the "
                                                 "reference (completion tasks; else None)")
    forgetting: float | None = documented(None, "RunResult.metrics forgetting: forgetting-corpus log-loss after "
                                                "minus before training (None without a forgetting corpus)")
    predicted: dict[str, float | None] | None = documented(None, "per predictor (placement.need), the share of its "
                                                                  "statistic the plan covers (1.0 each for full; "
                                                                  "None without a probe)")
    train_examples: int | str | None = documented(None, 'data size ([[grid]] train_examples): the count the train '
                                                        'split was cut to, or "full"; None (and left out of '
                                                        "results.json): the cell has no data-size axis")
    steps: int | None = documented(None, "RunResult.steps: optimizer steps trained (a row of a data-size axis "
                                         "only; with `epochs` they grow with the data size)")

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(f"CellRow {self.id}: status must be one of {', '.join(STATUSES)}, got '{self.status}'")

    @property
    def ok(self) -> bool:
        """Whether the cell finished (its outcome fields are filled)."""
        return self.status == "ok"

    @classmethod
    def unfinished(cls, cell: Cell, status: str = "pending", error: str | None = None) -> CellRow:
        """The row of a cell without a finished run: its settings, status and error."""
        return cls(**_settings(cell), status=status, error=error)

    @classmethod
    def finished(cls, cell: Cell, run: RunResult, plan: PlanOf, predicted_share: float | None,
                 timing: str | None = None, predicted: dict[str, float | None] | None = None) -> CellRow:
        """The row of a finished cell, from its RunResult and the Plan it trained ("full": full fine-tuning)."""
        # gain over the untrained model when it was scored, else over the trainer's baseline (majority class)
        base = run.untrained_score if run.untrained_score is not None else run.baseline_score
        ranks = [e.rank for e in plan.entries] if isinstance(plan, Plan) else []
        return cls(**{**_settings(cell), "lr": run.config.get("lr"), "eval_split": run.eval_split,
                      "steps": run.steps if cell.train_examples is not None else None},
                   status="ok", error=None, **{k: getattr(run, k) for k in ROW_METRICS},
                   gain=run.score - base if run.score is not None and base is not None else None,
                   rank_min=min(ranks) if ranks else None, rank_max=max(ranks) if ranks else None,
                   modules=len(ranks) if ranks else None,
                   plan_params=plan.params if isinstance(plan, Plan) else None, predicted_share=predicted_share,
                   timing=timing, predicted=predicted,
                   exact_match=(run.metrics or {}).get("exact_match"),
                   forgetting=(run.metrics or {}).get("forgetting"))

    def to_record(self) -> dict[str, Any]:
        """The row as stored in results.json: every field when ok, else the settings, status and error only."""
        rec = to_dict(self)
        if rec.get("predicted") is None:  # no probe: the row keeps the keys it had before predictors
            rec.pop("predicted", None)
        if rec.get("train_examples") is None:  # no data-size axis: the keys it had before the axis
            rec.pop("train_examples", None)
            rec.pop("steps", None)
        if self.ok:
            return rec
        return {k: rec[k] for k in _UNFINISHED_KEYS + ("train_examples",) if k in rec}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CellRow:
        """A row read back from results.json (missing outcome fields are None)."""
        try:
            return from_dict(cls, record)
        except TypeError as e:
            raise ConfigError(f"results.json row {record.get('id', '?')} is not a study row ({e}).") from None


_NAMES = [f.name for f in fields(CellRow)]
_UNFINISHED_KEYS = tuple(_NAMES[: _NAMES.index("error") + 1])  # what an unfinished row stores: settings, status, error


def _settings(cell: Cell) -> dict[str, Any]:
    return {"id": cell.id, "config_id": cell.config_id, "label": cell.label, "variant": cell.variant,
            "strategy": cell.strategy, "rank": cell.rank, "budget": cell.budget, "layers": cell.layers,
            "seed": cell.seed, "groups": tuple(cell.groups), "blocks": tuple(cell.blocks), "phase": cell.phase,
            "arm": cell.arm, "lr_grid": tuple(cell.lrs), "lr": cell.lr if cell.lr is not None else cell.train.get("lr"),
            "eval_split": cell.train.get("eval_split", "test"), "train_examples": cell.train_examples}


# ----------------------------------------------------------------------------- reading a cell directory


def read_run(cell_dir: Path) -> RunResult | None:
    """The cell's run.json (complete or failed), or None when it is missing, unreadable or of another schema."""
    try:
        return RunResult.load(Path(cell_dir) / RUN_FILE)
    except (ConfigError, TypeError):
        return None


def is_finished(run: RunResult | None) -> bool:
    """Whether a run counts as finished: complete and scored (a resumed study never retrains it)."""
    return run is not None and run.status == "complete" and run.score is not None


def finished_run(cell_dir: Path) -> RunResult | None:
    """The cell's run if it is finished, else None (missing, unreadable or failed)."""
    run = read_run(cell_dir)
    return run if is_finished(run) else None


def plan_of(run: RunResult) -> PlanOf:
    """The placement a run trained: its Plan, "full" for full fine-tuning, None if run.json has none."""
    if run.placement == "full":
        return "full"
    return from_dict(Plan, run.plan) if run.plan else None


def probe_key(spec: StudySpec, seed: int) -> str:
    """Directory name under out/probes of the probe of one (model, task, dtype, data, probe settings, seed)."""
    return settings_hash({"model": spec.model, "task": spec.task, "dtype": spec.dtype, "data": spec.data,
                          "probe": spec.probe_settings, "seed": seed})


class ProbeEnergy:
    """Per-seed probe spectra, loaded lazily: the predicted energy share of a plan."""

    def __init__(self, spec: StudySpec, out_dir: Path):
        self.spec, self.out_dir, self._cache, self._reports, self._needs = spec, out_dir, {}, {}, {}

    def report(self, seed: int):
        """The seed's ProbeReport, None without a probe."""
        if seed not in self._reports:
            self._reports[seed] = None
            path = self.out_dir / "probes" / probe_key(self.spec, seed)
            if (path / "probe.json").is_file():
                from ..probes.schema import ProbeReport

                self._reports[seed] = ProbeReport.load(path)
        return self._reports[seed]

    def predicted(self, seed: int, plan: Plan | Literal["full"] | None) -> dict[str, float | None] | None:
        """{predictor: share of its statistic the plan covers} (placement.need.shares; full: 1.0 each)."""
        rep = self.report(seed)
        if rep is None or plan is None:
            return None
        if seed not in self._needs:
            from ..placement.need import available, need

            self._needs[seed] = {name: need(rep, name) for name in available(rep)}
        if plan == "full":
            return {name: 1.0 for name in self._needs[seed]}
        return {name: n.share(plan.entries) for name, n in self._needs[seed].items()}

    def gains(self, seed: int) -> tuple[dict[str, Any], float] | None:
        """({module: squared singular values}, total energy) of the seed's probe; None without a probe."""
        if seed not in self._cache:
            self._cache[seed] = None
            rep = self.report(seed)
            if rep is not None:
                gains = rep.gains()
                total = sum(float(m.grad_norm) ** 2 if m.grad_norm > 0 else float(gains[m.name].sum())
                            for m in rep.top_level())
                self._cache[seed] = (gains, total)
        return self._cache[seed]

    def share(self, seed: int, plan: Plan | Literal["full"] | None) -> float | None:
        """Sum over adapted modules of sum_{i<=rank} sigma_i^2, over the total energy (full: 1.0)."""
        if plan == "full":
            return 1.0
        g = self.gains(seed)
        if g is None or not isinstance(plan, Plan):
            return None
        gains, total = g
        got = sum(float(gains[e.name][: e.rank].sum()) for e in plan.entries if e.name in gains)
        return got / total if total > 0 else None


def cell_row(cell: Cell, cell_dir: Path, energy: ProbeEnergy | None = None) -> CellRow:
    """One results row: the cell's settings plus its outcome (ok | failed | infeasible | pending)."""
    run = read_run(cell_dir)
    if is_finished(run):
        plan = plan_of(run)
        return CellRow.finished(cell, run, plan, energy.share(cell.seed, plan) if energy else None,
                                _timing(cell_dir), energy.predicted(cell.seed, plan) if energy else None)
    status, error = "pending", None
    if run is not None:  # the trainer recorded a failed run (non-finite loss, out of memory)
        status, error = "failed", run.error
    path = cell_dir / "status.json"
    if path.is_file():  # the runner recorded a failure or an infeasible budget
        try:
            st = json.loads(path.read_text())
            status, error = st.get("status", "failed"), st.get("error")
        except ValueError:
            pass
    return CellRow.unfinished(cell, status, error)


def _kept_predictions(rows: list[CellRow], path: Path, energy: ProbeEnergy) -> list[CellRow]:
    """`rows` with `predicted_share` and `predicted` taken from the results file at `path` (same cell id) for
    finished rows whose seed has no probe here and which got none; unreadable or absent file: `rows` as given."""
    try:
        old = {r["id"]: r for r in json.loads(path.read_text())["rows"]}
    except (OSError, ValueError, KeyError, TypeError):
        return rows
    out = []
    for r in rows:
        rec = old.get(r.id)
        if rec and r.status == "ok" and energy.report(r.seed) is None:
            kept = {k: rec[k] for k in ("predicted_share", "predicted")
                    if getattr(r, k) is None and rec.get(k) is not None}
            r = replace(r, **kept) if kept else r
        out.append(r)
    return out


def _timing(cell_dir: Path) -> str | None:
    """The timing the runner recorded in cell.json (exclusive | shared), None when absent."""
    try:
        return json.loads((cell_dir / "cell.json").read_text()).get("timing")
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- results.json


def rebuild_results(spec: StudySpec, out_dir: Path) -> list[CellRow]:
    """Rebuild results.json from the cell directories (one row per grid cell, grid order). A finished cell whose
    seed's probe is absent (probes are large and often not kept) keeps the predicted shares the previous
    results.json recorded for it (`_kept_predictions`); with its probe present they are recomputed."""
    from .selection import select_lrs, sweep_rows

    energy = ProbeEnergy(spec, out_dir)
    cells = spec.cells()
    rows = [cell_row(c, out_dir / "cells" / c.id, energy) for c in cells]
    rows = _kept_predictions(rows, out_dir / "results.json", energy)
    choices = None
    if any(c.lrs for c in cells):
        arms = {c.arm: c.lrs for c in cells if c.lrs and c.phase == "test"}
        choices = select_lrs(sweep_rows(rows), arms)
        rows = [_unless_stale(c, r, choices.get(r.arm)) for c, r in zip(cells, rows)]
    record = {"schema_version": RESULTS_SCHEMA, "study": spec.name, "definition_hash": spec.definition_hash,
              "rows": [r.to_record() for r in rows]}
    if choices is not None:
        record["lr_selection"] = list(choices.values())
    write_json(out_dir / "results.json", record)
    return rows


def _unless_stale(cell: Cell, row: CellRow, choice: Any) -> CellRow:
    """A finished test row of an lr grid counts only if it trained with the lr its arm's sweep chooses now; else
    (a run `study adopt` kept from a narrower grid, or a sweep cell finished since) it is pending, with why, and
    `study run` retrains it once the choice is known (`runner.is_done`)."""
    if row.phase == "lr-sweep" or not row.lr_grid or row.status != "ok" or choice is None:
        return row
    if choice.pending:
        why = f"trained with lr {row.lr:g} before its arm's lr sweep finished; kept if the sweep chooses it"
    elif choice.chosen is None or choice.chosen == row.lr:
        return row
    else:
        why = f"trained with lr {row.lr:g}, but its arm's lr sweep chooses {choice.chosen:g}: `study run` retrains it"
    return CellRow.unfinished(cell, "pending", why)


def check_schema(data: dict[str, Any], path: Path) -> None:
    """Refuse a study.json or results.json written by a newer version of intrinsic."""
    version = data.get("schema_version", RESULTS_SCHEMA)
    if not isinstance(version, int) or version > RESULTS_SCHEMA:
        raise ConfigError(f"{path} has schema_version {version!r}; this version of intrinsic reads "
                          f"{RESULTS_SCHEMA} and older. Upgrade intrinsic to read it.")


def read_results(path: str | Path) -> list[CellRow]:
    """The rows of a results.json file (or of the results.json in a directory), as stored."""
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    data = read_json(path)
    check_schema(data, path)
    return [CellRow.from_record(r) for r in data["rows"]]


def load_results(out_dir: str | Path) -> tuple[dict[str, Any], list[CellRow]]:
    """(study record, rows) of a results directory; rows are rebuilt from cells/ when present."""
    out = Path(out_dir)
    if not (out / "study.json").is_file():
        raise ConfigError(f"{out} is not a study results directory (no study.json; run `intrinsic study run` first).")
    record = read_json(out / "study.json")
    check_schema(record, out / "study.json")
    if (out / "cells").is_dir() and record.get("spec"):
        from .spec import spec_from_record

        return record, rebuild_results(spec_from_record(record), out)
    if not (out / "results.json").is_file():
        raise ConfigError(f"{out} has no results.json yet.")
    return record, read_results(out / "results.json")


def status_counts(rows: Sequence[CellRow]) -> dict[str, int]:
    """{status: rows}, in order of first appearance."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
