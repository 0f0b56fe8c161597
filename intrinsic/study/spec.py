"""Study definitions: parse and validate a study TOML file into a `StudySpec`, and find study files.

A study answers one question with a controlled grid of training runs. The file format is
documented in studies/README.md; in short:

    name, question, model, task, seeds, metrics, dtype, device   top-level keys
    [data]        load_task options (max_examples, max_eval_examples, text_column, label_column)
    [train]       TrainConfig fields shared by every cell (never `seed`: seeds come from the grid)
    [train_overrides.STRATEGY]   TrainConfig fields for one strategy only (e.g. a lower lr for `full`)
    [probe]       settings of the gradient probe used by `auto` and by the prediction check
    [placement]   max_rank, granularity, alpha_mult, rslora, ... fill (the knobs of placement.PlacementRequest)
    [[grid]]      blocks: strategies x (ranks | budgets) x layers x seeds (x lrs, train_examples, epochs, placement)
    lrs, lr_seeds lr grid chosen on validation (top, per [[grid]] block or [train_overrides.S]); its seeds
    [truncate]    after the grid, r90 of each component of every full fine-tuning test cell (`ranks`,
                  `components`); full cells then save their model (see `check_truncate_table`)
    [quick]       overrides for a fast CPU run: seeds, lrs, lr_seeds, data, train, probe, grid, truncate

Errors name the file and line of the offending key (`key_line`). The grid's expansion into cells
and the hashes that name them live in `grid.py`.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..models import DEVICES, DTYPES
from ..placement.request import KNOB_DEFAULTS, KNOBS, PREDICTORS, PlacementRequest, knob_problem
from ..placement.strategies import canonical, check_strategy
from .block_knobs import block_knobs  # [[grid]] placement = {fill = "raw"}: one block's knobs
from .check import (PROBE_META_KEYS, check_data_table, check_probe_table, check_settings, check_train_table,
                    check_truncate_table, data_sizes, full_saves_model, truncate_table)
from .grid import Cell, GridBlock, expand, settings_hash

TOP_KEYS = ("name", "question", "model", "task", "seeds", "metrics", "dtype", "device", "data", "train",
            "train_overrides", "probe", "placement", "grid", "quick", "lrs", "lr_seeds", "truncate")
GRID_KEYS = ("name", "strategies", "ranks", "budgets", "layers", "seeds", "lrs", "train_examples", "epochs", "placement")
QUICK_KEYS = ("seeds", "data", "train", "train_overrides", "probe", "placement", "grid", "lrs", "lr_seeds", "truncate")
METRICS = ("score", "trainable_params", "peak_memory_mb", "train_time_s", "time_per_step_s", "adapter_bytes")
COST_METRICS = ("trainable_params", "peak_memory_mb", "train_time_s", "time_per_step_s", "adapter_bytes")


@dataclass(frozen=True)
class StudySpec:
    """A validated study definition (after applying `[quick]` when asked)."""

    name: str  # study name, e.g. "placement-ablation"
    question: str  # the one-sentence question the study answers
    model: str  # load_model name or alias
    task: str  # load_task name
    seeds: tuple[int, ...]  # default replicate seeds of every block
    metrics: tuple[str, ...]  # "score" plus the cost axes of the Pareto frontiers
    dtype: str  # model dtype for load_model
    device: str  # cpu | cuda | auto (not part of any hash)
    data: dict[str, Any]  # load_task options
    train: dict[str, Any]  # TrainConfig fields shared by all cells
    train_overrides: dict[str, dict[str, Any]]  # strategy -> TrainConfig fields for it only
    probe: dict[str, Any]  # probe settings (+ `enabled`)
    placement: dict[str, Any]  # PlacementRequest knobs as written (defaults filled), raw so that hashes stay stable
    grid: tuple[GridBlock, ...]  # grid blocks, in file order
    quick: bool = False  # True when the [quick] overrides were applied
    source: str = ""  # the file it was read from
    lrs: tuple[float, ...] = ()  # top-level lr grid of every arm without its own (empty: no lr selection)
    lr_seeds: tuple[int, ...] = ()  # seeds of the lr-sweep cells (empty: each block's first seed)
    strategy_lrs: dict[str, tuple[float, ...]] = field(default_factory=dict)  # [train_overrides.S] lrs
    truncate: dict[str, Any] | None = None  # [truncate] {"ranks", "components"}, in no hash (changes no cell)

    def lr_seeds_of(self, block: GridBlock) -> tuple[int, ...]:
        """Seeds of the lr-sweep cells of a block's arms: `lr_seeds`, else the block's first seed."""
        return self.lr_seeds or block.seeds[:1]

    @property
    def probe_enabled(self) -> bool:
        """Whether a probe runs per seed: needed by auto, and by the prediction check (default on)."""
        return bool(self.probe.get("enabled", True)) or any("auto" in b.strategies for b in self.grid)

    @property
    def probe_settings(self) -> dict[str, Any]:
        """Keyword arguments of probes.probe (update_steps = 0 in TOML means None: no update probe)."""
        out = {k: v for k, v in self.probe.items() if k not in PROBE_META_KEYS}
        if out.get("update_steps") == 0:
            out["update_steps"] = None
        return out

    def placement_request(self, cell: Cell) -> PlacementRequest:
        """What a cell asks of placement: its strategy, size and layers, the [placement] knobs and its block's."""
        return PlacementRequest(cell.strategy, rank=cell.rank, budget=cell.budget, layers=cell.layers,
                                **{**self.placement, **cell.placement})

    @property
    def cost_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m in COST_METRICS)

    def hash_payload(self) -> dict[str, Any]:
        """Every setting that can change a result; prose, the device and the source path excluded."""
        return {"model": self.model, "task": self.task, "dtype": self.dtype, "data": self.data, "train": self.train,
                "train_overrides": self.train_overrides, "probe": self.probe_settings, "placement": self.placement,
                "cells": [c.id for c in self.cells()], "metrics": list(self.metrics)}

    @property
    def definition_hash(self) -> str:
        return settings_hash(self.hash_payload())

    def cells(self) -> list[Cell]:
        """Grid expansion, seed-major (all configs at the first seed, then the next), deduplicated by id."""
        return expand(self)


# ----------------------------------------------------------------------------- parsing and validation


def key_line(text: str, table: str, key: str) -> int | None:
    """1-based line of `key` inside TOML table `table` ("" = top level, "quick.train"), by scanning the
    text (tomllib reports no positions). Falls back to the first line mentioning the key."""
    current = ""
    pat_key = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*(=|\.)")
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")
    full = f"{table}.{key}" if table else key
    for i, line in enumerate(text.splitlines(), 1):
        m = header.match(line)
        if m:
            current = m.group(1).replace('"', "").replace("'", "")
            if current == full or current.startswith(full + "."):
                return i
            continue
        if current == table and pat_key.match(line):
            return i
    for i, line in enumerate(text.splitlines(), 1):
        if re.search(rf"\b{re.escape(key)}\b", line):
            return i
    return None


class _Ctx:
    """Where the text came from, for error messages that name file and line."""

    def __init__(self, text: str, source: str):
        self.text, self.source = text, source or "<study>"

    def fail(self, table: str, key: str, msg: str) -> ConfigError:
        line = key_line(self.text, table, key)
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {msg}")

    def check_keys(self, table: str, data: dict, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                name = f"[{table}]" if table else "the top level"
                raise self.fail(table, key, f"unknown key '{key}' in {name}.{did_you_mean(key, allowed)} "
                                            f"Allowed: {', '.join(allowed)}.")


def _type_error(ctx: _Ctx, table: str, key: str, want: str, got: Any) -> ConfigError:
    return ctx.fail(table, key, f"'{key}' must be {want}, got {got!r}.")


def _str(ctx, table, data, key, default=None, required=False) -> str | None:
    if key not in data:
        if required:
            raise ctx.fail(table, key, f"missing required key '{key}'.")
        return default
    v = data[key]
    if not isinstance(v, str) or not v.strip():
        raise _type_error(ctx, table, key, "a non-empty string", v)
    return v.strip()


def _int_list(ctx, table, data, key, minimum) -> tuple[int, ...]:
    v = data.get(key, [])
    if not isinstance(v, list) or any(not isinstance(x, int) or isinstance(x, bool) or x < minimum for x in v):
        raise _type_error(ctx, table, key, f"a list of integers >= {minimum}", v)
    if len(set(v)) != len(v):
        raise ctx.fail(table, key, f"'{key}' lists a value twice: {v}.")
    return tuple(v)


def _lr_list(ctx, table, data, key="lrs") -> tuple[float, ...]:
    v = data.get(key, [])
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0 for x in v):
        raise _type_error(ctx, table, key, "a list of learning rates > 0", v)
    if len(set(v)) != len(v):
        raise ctx.fail(table, key, f"'{key}' lists a value twice: {v}.")
    return tuple(float(x) for x in v)


def _str_list(ctx, table, data, key) -> tuple[str, ...]:
    v = data.get(key, [])
    if not isinstance(v, list) or any(not isinstance(x, str) or not x.strip() for x in v):
        raise _type_error(ctx, table, key, "a list of non-empty strings", v)
    return tuple(x.strip() for x in v)


def _table(ctx, table, data, key) -> dict[str, Any]:
    v = data.get(key, {})
    if not isinstance(v, dict):
        raise _type_error(ctx, table, key, "a table", v)
    return v


def _check_strategy(ctx: _Ctx, table: str, s: str, key: str = "strategies") -> str:
    """The canonical strategy, validated by placement itself (so a study accepts what placement accepts)."""
    try:
        return check_strategy(s)
    except ConfigError as e:
        msg = str(e)
        where = "" if key == "strategies" else f"[{table}]: "
        raise ctx.fail(table, key, where + msg[:1].lower() + msg[1:]) from None


def _parse_grid(ctx: _Ctx, table: str, blocks: Any, seeds: tuple[int, ...]) -> tuple[GridBlock, ...]:
    if not isinstance(blocks, list) or not blocks:
        raise ctx.fail("", "grid", "the study has an empty grid: add at least one [[grid]] table with strategies.")
    out = []
    for i, b in enumerate(blocks):
        if not isinstance(b, dict):
            raise _type_error(ctx, "", "grid", "an array of tables ([[grid]])", b)
        ctx.check_keys(table, b, GRID_KEYS)
        name = _str(ctx, table, b, "name", default=f"block{i + 1}")
        strategies = tuple(dict.fromkeys(_check_strategy(ctx, table, s) for s in _str_list(ctx, table, b, "strategies")))
        ranks = _int_list(ctx, table, b, "ranks", 1)
        budgets = _str_list(ctx, table, b, "budgets")
        layers = _str_list(ctx, table, b, "layers")
        bseeds = _int_list(ctx, table, b, "seeds", 0) if "seeds" in b else seeds
        if not strategies:
            raise ctx.fail(table, "strategies", f"grid block '{name}' has no strategies: the grid is empty.")
        if not bseeds:
            raise ctx.fail(table, "seeds", f"grid block '{name}' has no seeds: the grid is empty.")
        if ranks and budgets:
            raise ctx.fail(table, "budgets", f"grid block '{name}' gives both ranks and budgets; use one per block.")
        if not ranks and not budgets and set(strategies) != {"full"}:
            raise ctx.fail(table, "strategies", f"grid block '{name}' needs `ranks` or `budgets` "
                                                f"(only `full` needs neither); an empty list makes the grid empty.")
        if "auto" in strategies and layers and ranks:
            raise ctx.fail(table, "layers", f"grid block '{name}': `auto` with `layers` needs `budgets` "
                                            f"(a rank means the budget of `all` at that rank over every layer).")
        if "full" in strategies and layers:
            raise ctx.fail(table, "layers", f"grid block '{name}': `full` fine-tunes every layer; drop `layers` or `full`.")
        out.append(GridBlock(name, strategies, ranks, budgets, tuple(layers) or (None,), bseeds,
                             _lr_list(ctx, table, b), *data_sizes(ctx, table, b, name), block_knobs(ctx, table, b, name)))
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise ctx.fail(table, "name", f"grid block names must be unique, got {names}.")
    return tuple(out)


def parse_spec(text: str, *, quick: bool = False, source: str = "") -> StudySpec:
    """Parse and validate study TOML text; with `quick`, apply its [quick] overrides."""
    ctx = _Ctx(text, source)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{ctx.source}: not valid TOML ({e}).") from None
    ctx.check_keys("", raw, TOP_KEYS)
    q = _table(ctx, "", raw, "quick")
    ctx.check_keys("quick", q, QUICK_KEYS)
    for pre, src in (("", raw), ("quick.", q)):
        parent = pre.rstrip(".")
        ctx.check_keys(f"{pre}placement", _table(ctx, parent, src, "placement"), KNOBS)
        check_data_table(ctx, f"{pre}data", _table(ctx, parent, src, "data"))
        check_probe_table(ctx, f"{pre}probe", _table(ctx, parent, src, "probe"))
        check_train_table(ctx, f"{pre}train", _table(ctx, parent, src, "train"))
        _lr_list(ctx, parent, src)
        _int_list(ctx, parent, src, "lr_seeds", 0)
        for strat, tbl in _table(ctx, parent, src, "train_overrides").items():
            if not isinstance(tbl, dict):
                raise _type_error(ctx, f"{pre}train_overrides", strat, "a table", tbl)
            _check_strategy(ctx, f"{pre}train_overrides", strat, key=strat)
            _lr_list(ctx, f"{pre}train_overrides.{strat}", tbl)
            check_train_table(ctx, f"{pre}train_overrides.{strat}", {k: v for k, v in tbl.items() if k != "lrs"})
    if "grid" in q:
        _parse_grid(ctx, "quick.grid", q["grid"], (0,))  # validate even when not applied

    eff = copy.deepcopy(raw)
    for pre, src in (("", raw), ("quick.", q)):
        check_truncate_table(ctx, f"{pre}truncate", _table(ctx, pre.rstrip("."), src, "truncate"))
    if "truncate" in raw:  # full fine-tuning keeps its model for truncation, as if [train_overrides.full] said so
        full_saves_model(ctx, eff)
    if quick:
        if not q:
            raise ConfigError(f"{ctx.source}: --quick needs a [quick] table in the study file.")
        for key in ("data", "train", "probe", "placement") + (("truncate",) if "truncate" in eff else ()):
            eff[key] = {**eff.get(key, {}), **q.get(key, {})}
        for strat, tbl in q.get("train_overrides", {}).items():
            eff.setdefault("train_overrides", {})[strat] = {**eff.get("train_overrides", {}).get(strat, {}), **tbl}
        for key in ("seeds", "grid", "lrs", "lr_seeds"):
            if key in q:
                eff[key] = q[key]
                if key == "seeds":
                    eff["grid"] = [{k: v for k, v in b.items() if k != "seeds"} for b in eff.get("grid", [])]

    name = _str(ctx, "", eff, "name", required=True)
    seeds = _int_list(ctx, "", eff, "seeds", 0) if "seeds" in eff else (0,)
    if not seeds:
        raise ctx.fail("", "seeds", "'seeds' is empty: the grid is empty.")
    metrics = _str_list(ctx, "", eff, "metrics") if "metrics" in eff else ("score", "trainable_params",
                                                                             "peak_memory_mb", "train_time_s")
    for m in metrics:
        if m not in METRICS:
            raise ctx.fail("", "metrics", f"unknown metric '{m}'.{did_you_mean(m, METRICS)} Known: {', '.join(METRICS)}.")
    if "score" not in metrics:
        metrics = ("score", *metrics)
    placement = {**KNOB_DEFAULTS, **_table(ctx, "", eff, "placement")}
    for k in KNOBS:
        if knob_problem(k, placement[k]):
            err = _type_error(ctx, "placement", k, knob_problem(k, placement[k]), placement[k])
            if k == "predictor":  # an unknown name: the nearest known ones
                err = ConfigError(f"{err}{did_you_mean(str(placement[k]), PREDICTORS)}")
            raise err
    placement = {k: v for k, v in placement.items()  # predictor and fill at their defaults are kept out, so the
                 if k not in ("predictor", "fill") or v != KNOB_DEFAULTS[k]}  # definition hashes of earlier studies hold
    overrides = {canonical(k): {kk: vv for kk, vv in v.items() if kk != "lrs"}
                 for k, v in _table(ctx, "", eff, "train_overrides").items()}
    strategy_lrs = {canonical(k): _lr_list(ctx, "train_overrides." + k, v)
                    for k, v in _table(ctx, "", eff, "train_overrides").items() if v.get("lrs")}
    data = dict(_table(ctx, "", eff, "data"))
    dtype, device = _str(ctx, "", eff, "dtype", default="float32"), _str(ctx, "", eff, "device", default="auto")
    for key, value, allowed in (("dtype", dtype, DTYPES), ("device", device, DEVICES)):
        if value not in allowed:
            raise ctx.fail("", key, f"'{key}' must be one of {', '.join(allowed)}, got {value!r}."
                                    f"{did_you_mean(value, allowed)}")
    spec = StudySpec(
        name=name,
        question=_str(ctx, "", eff, "question", required=True),
        model=_str(ctx, "", eff, "model", required=True),
        task=_str(ctx, "", eff, "task", required=True),
        seeds=seeds,
        metrics=tuple(metrics),
        dtype=dtype,
        device=device,
        data=data,
        train=dict(_table(ctx, "", eff, "train")),
        train_overrides=overrides,
        probe=dict(_table(ctx, "", eff, "probe")),
        placement=placement,
        grid=_parse_grid(ctx, "grid", eff.get("grid"), seeds),
        quick=quick,
        source=source,
        lrs=_lr_list(ctx, "", eff),
        lr_seeds=_int_list(ctx, "", eff, "lr_seeds", 0),
        strategy_lrs=strategy_lrs,
        truncate=truncate_table(eff, overrides),
    )
    cells = spec.cells()
    if not cells:
        raise ConfigError(f"{ctx.source}: the grid expands to no cell.")
    check_settings(ctx, spec, raw, q)
    for cell in {c.config_id: c for c in cells}.values():
        try:
            spec.placement_request(cell)
        except ConfigError as e:
            raise ctx.fail("grid", "budgets" if cell.budget else "strategies",
                           f"grid block '{cell.blocks[0]}', {cell.label}: {e}") from None
    return spec


def load_spec(path: str | Path, *, quick: bool = False) -> StudySpec:
    """Read and validate a study file (see `resolve_study` for bare names)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No such study file: {path}")
    return parse_spec(path.read_text(), quick=quick, source=str(path))


def spec_from_record(record: dict[str, Any]) -> StudySpec:
    """The StudySpec stored in a results directory's study.json (see runner.study_record)."""
    from ..results import from_dict

    try:
        return from_dict(StudySpec, record["spec"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"study.json holds no readable study definition ({e}).") from None


def packaged_studies() -> dict[str, Path]:
    """Studies shipped with the package (the repository's studies/ folder): name -> file."""
    from importlib.resources import files

    try:
        root = files("intrinsic.studies")
    except ModuleNotFoundError:
        return {}
    return {p.name[:-5]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_study(name_or_path: str) -> Path:
    """A study file path, or a bare name of a packaged study ("placement-ablation")."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    known = packaged_studies()
    key = p.name[:-5] if p.name.endswith(".toml") else p.name
    if key in known and (p.name == name_or_path or not p.parent.exists() or p.parent.name == "studies"):
        return known[key]
    raise ConfigError(f"No study file '{name_or_path}'.{did_you_mean(key, known)} "
                      f"Packaged studies: {', '.join(sorted(known)) or 'none'}.")
