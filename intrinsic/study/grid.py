"""A study's grid: the `[[grid]]` blocks (`GridBlock`), their expansion into training runs (`Cell`),
and the short settings hashes that name cells, configs, probes and the definition.

Normalisation (so equal settings get equal ids and are trained once):
- `full` ignores rank and budget;
- `auto` at rank r means auto under the budget of `all` at rank r (`all@r`, same layers);
- a fixed strategy S under budget "S@r" is S at rank r.

Cell ids are hashes of every setting that can change a result (not the device, not prose), so
a finished cell is recognised on resume and never trained twice.

Learning-rate grids (`lrs`, see `arm_lrs`): an arm (a config without its seed) with an lr grid gets,
besides its test cells, one *lr-sweep* cell per (lr, lr seed), trained on the train split minus the
validation carve and scored on the carve (`eval_split = "validation"`). Its test cells hold no lr:
the runner gives them the lr that `selection.select_lrs` picks from the arm's sweep rows. Specs
without lr grids expand exactly as before (same cells, same ids).

Data sizes (`train_examples`, see `size_train`): a block with `train_examples = [1000, "full"]` gets every
config once per size; the size is the cell's `TrainConfig.max_examples` (the trainer's one subsample, drawn
after the validation carve, so every size is scored on the same validation and test examples), and with the
block's `epochs` its steps are epochs x examples / (batch_size x grad_accum), counted by the runner when the
task is loaded (`steps_for`). Its comparison groups carry the size (`rank=8 n=1000`). Blocks without
`train_examples` expand exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..placement.request import KNOB_DEFAULTS
from ..placement.strategies import canonical
from .block_knobs import cell_knobs, knob_tag

LATER_KNOBS = ("gains", "normalize", "predictor", "fill")  # placement knobs newer than the first results
AUTO_IDS_ONLY = ("fill",)  # auto-only knobs in auto cells' ids only (older ones stay in every id, so ids hold)

if TYPE_CHECKING:
    from .spec import StudySpec

HASH_LEN = 12
SWEEP = "lr-sweep"  # Cell.phase of a validation run of an lr grid
FULL_DATA = "full"  # the train_examples value of the whole train split


def arm_lrs(spec: StudySpec, block: GridBlock, strategy: str) -> tuple[float, ...]:
    """The lr grid of one arm: `lrs` of [train_overrides.STRATEGY], else of its [[grid]] block, else the
    study's top-level `lrs`; empty = no lr selection (the [train] lr or the trainer's default)."""
    return spec.strategy_lrs.get(strategy) or block.lrs or spec.lrs


@dataclass(frozen=True)
class GridBlock:
    """One `[[grid]]` table: a product of strategies, ranks or budgets, layer selections and seeds."""

    name: str  # label used in the report, e.g. "equal-rank"
    strategies: tuple[str, ...]  # all | attention | ffn | role list "q,v" | auto | full
    ranks: tuple[int, ...]  # uniform LoRA ranks (empty when budgets are given)
    budgets: tuple[str, ...]  # parameter budgets "300k" | "0.5%" | "all@8" (empty when ranks are given)
    layers: tuple[str | None, ...]  # layer selections ("lower", "0-2"); None = every layer
    seeds: tuple[int, ...]  # replicate seeds
    lrs: tuple[float, ...] = ()  # learning-rate grid of this block's arms (empty: the study's or none)
    train_examples: tuple[int | str, ...] = ()  # data sizes: counts or "full" (empty: no data-size axis)
    epochs: float | None = None  # with train_examples: steps = epochs x examples / batch (None: [train] steps)
    placement: dict[str, Any] = field(default_factory=dict)  # knobs over [placement] for this block (block_knobs)


@dataclass(frozen=True)
class Cell:
    """One training run of the grid: a placement configuration at one seed."""

    id: str  # hash of every result-relevant setting, incl. the seed
    config_id: str  # the same hash without the seed: cells of one config are replicates
    strategy: str  # all | attention | ffn | "q,v" | auto | full
    rank: int | None  # uniform rank of a fixed strategy; None for auto, full and budget cells
    budget: str | None  # budget text for auto and budget cells; None otherwise
    layers: str | None  # layer selection text; None = every layer
    seed: int  # replicate seed (data order, adapter and head init, probe batches)
    groups: tuple[str, ...]  # comparison groups it belongs to: "rank=8", "budget=all@8"
    blocks: tuple[str, ...]  # grid blocks that asked for it
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields (seed excluded)
    phase: str = "test"  # "test": a run of the grid; "lr-sweep": a validation run of an lr grid
    lrs: tuple[float, ...] = ()  # the arm's lr grid: non-empty = lr chosen on validation (test cells)
    arm: str = ""  # hash of the arm's settings without lr grid and seed: sweep and test cells of one arm share it
    lr: float | None = None  # the lr of an lr-sweep cell (test cells: None, chosen at run time)
    train_examples: int | str | None = None  # data size: a count or "full" (None: the block has no data-size axis)
    epochs: float | None = None  # steps from epochs x examples (`steps_for`); None: train["steps"]
    placement: dict[str, Any] = field(default_factory=dict)  # its block's knobs that differ from [placement]

    @property
    def size_text(self) -> str:
        """' n=1000' or ' n=full' for a cell of a data-size axis, else ''."""
        return "" if self.train_examples is None else f" n={self.train_examples}"

    @property
    def variant(self) -> str:
        """Strategy, its block's knobs and layer selection: the row label within a comparison group."""
        name = self.strategy + knob_tag(self.placement)
        return f"{name}[{self.layers}]" if self.layers else name

    @property
    def label(self) -> str:
        """Human-readable config label without the seed, e.g. 'ffn budget=all@8'."""
        size = f"r={self.rank}" if self.rank is not None else (f"budget={self.budget}" if self.budget else "")
        sweep = f" lr={self.lr:g} (validation)" if self.phase == SWEEP else ""
        return f"{self.variant} {size}".strip() + self.size_text + sweep


def size_train(train: dict[str, Any], n: int | str | None, epochs: float | None) -> dict[str, Any]:
    """A cell's train settings at data size `n`: max_examples = n (none for "full": the whole train split);
    with `epochs`, no `steps` (the runner counts them, `steps_for`). Unchanged without a data-size axis."""
    if n is None:
        return train
    out = {k: v for k, v in train.items() if k != "max_examples" and not (epochs is not None and k == "steps")}
    return out if n == FULL_DATA else {**out, "max_examples": n}


def steps_for(cell: Cell, train_size: int, batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps of a cell with `epochs`: ceil(epochs x examples / (batch_size x grad_accum)), at least 1;
    examples = its train_examples, or `train_size` (the loaded train split) for "full". lr-sweep cells count the
    same examples as their arm's test cells, so an arm's sweep and test runs take the same steps."""
    n = train_size if cell.train_examples == FULL_DATA else min(int(cell.train_examples), train_size)
    return max(1, math.ceil(cell.epochs * n / (batch_size * grad_accum)))

def settings_hash(obj: Any) -> str:
    """Short stable hash of JSON-able settings (sorted keys, so dict order never matters)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def _normalise(strategy: str, rank: int | None, budget: str | None, layers: str | None) -> tuple[int | None, str | None]:
    """Map equivalent requests onto one (rank, budget) pair (see the module docstring)."""
    if strategy == "full":
        return None, None
    if strategy == "auto":
        return None, (f"all@{rank}" if rank is not None else budget)
    if budget is not None and layers is None:  # "S@r" budgets count every layer
        m = re.fullmatch(r"(.+)@(\d+)", budget)
        if m and canonical(m.group(1)) == strategy:
            return int(m.group(2)), None
    return rank, budget


def _cell_payload(spec: StudySpec, strategy, rank, budget, layers, train, epochs=None, knobs=None) -> dict[str, Any]:
    payload = {"model": spec.model, "task": spec.task, "dtype": spec.dtype, "data": spec.data, "train": train,
               "strategy": strategy, "rank": rank, "budget": budget, "layers": layers}
    if epochs is not None:  # only with a data-size axis: absent, the payload (and every id) is as before
        payload["epochs"] = epochs
    if strategy == "auto":
        payload["probe"] = spec.probe_settings
    if strategy != "full":  # knobs added later count only when set, so earlier cells keep their ids
        payload["placement"] = {k: v for k, v in {**spec.placement, **(knobs or {})}.items()
                                if (k not in LATER_KNOBS or v != KNOB_DEFAULTS[k])
                                and (strategy == "auto" or k not in AUTO_IDS_ONLY)}
    return payload


def expand(spec: StudySpec) -> list[Cell]:
    found: dict[str, dict[str, Any]] = {}  # cell id -> fields, in first-seen order
    for block in spec.grid:
        sizes: list[tuple[int | None, str | None]] = [(r, None) for r in block.ranks] + [(None, b) for b in block.budgets]
        for strategy in block.strategies:
            for n in block.train_examples or (None,):
                train = size_train({**spec.train, **spec.train_overrides.get(strategy, {})}, n, block.epochs)
                _expand_sizes(spec, block, strategy, sizes, n, train, found)
    cells = [Cell(**{**f, "groups": tuple(f["groups"]), "blocks": tuple(f["blocks"])}) for f in found.values()]
    order = {s: i for i, s in enumerate(sorted({c.seed for c in cells}))}
    # lr sweeps first (their choice is needed by the test cells), then seed-major, grid order within a seed
    return sorted(cells, key=lambda c: (c.phase != SWEEP, order[c.seed]))


def _expand_sizes(spec: StudySpec, block: GridBlock, strategy: str, sizes, n, train, found) -> None:
    """The cells of one strategy (at one data size `n`) of a block into `found`."""
    epochs = block.epochs if n is not None else None
    knobs = cell_knobs(spec.placement, block.placement, strategy)
    for rank, budget in sizes or [(None, None)]:
        group = f"rank={rank}" if rank is not None else (f"budget={budget}" if budget else "full")
        group += "" if n is None else f" n={n}"
        for layers in block.layers:
            lay = None if strategy == "full" else layers
            r, b = _normalise(strategy, rank, budget, lay)
            lrs = arm_lrs(spec, block, strategy)
            base = _cell_payload(spec, strategy, r, b, lay, train, epochs, knobs)
            arm = settings_hash(base)  # the arm without its lr grid: sweep cells of equal arms are shared
            if lrs:
                base["lrs"] = list(lrs)
            config_id = settings_hash(base)
            runs = [(seed, train, "test", None, config_id, base) for seed in block.seeds]
            for lr in lrs:
                t = {**train, "lr": lr, "eval_split": "validation"}
                sweep = _cell_payload(spec, strategy, r, b, lay, t, epochs, knobs)
                runs += [(seed, t, SWEEP, lr, settings_hash(sweep), sweep) for seed in spec.lr_seeds_of(block)]
            for seed, t, phase, lr, cfg_id, payload in runs:
                cid = settings_hash({**payload, "seed": seed})
                f = found.setdefault(cid, dict(id=cid, config_id=cfg_id, strategy=strategy, rank=r,
                                              budget=b, layers=lay, seed=seed, groups=[], blocks=[],
                                              train=t, phase=phase, lrs=tuple(lrs), arm=arm, lr=lr, placement=knobs,
                                              **({"train_examples": n, "epochs": epochs} if n is not None else {})))
                if group not in f["groups"]:
                    f["groups"].append(group)
                if block.name not in f["blocks"]:
                    f["blocks"].append(block.name)
