"""Checks of a study definition beyond its TOML shape, run before anything is written.

- `check_tables`: every [train], [probe] and [data] key and value against the field it sets
  (`TrainConfig`, `ProbeSettings`, `load_task`): known keys, TOML types that fit the field's type.
- `check_settings`: the effective settings, by constructing `TrainConfig` (per strategy, overrides
  applied) and `ProbeSettings`, so ranges are checked by the classes that own them.
- `check_truncate_table`: [truncate] (`ranks`, `components`) against the names `intrinsic truncate` knows;
  `full_saves_model`, `truncate_table`: what [truncate] does to the effective settings.
- `data_sizes`: a [[grid]] block's data-size axis (`train_examples`, `epochs`); `check_resources` checks the
  sizes against the loaded train split.
- `check_resources`: the model name resolves (without loading weights) and the task loads (local
  files and built-ins; `hf:` data sets are left to the run, which would otherwise download them here).

Errors name the file, line and table of the offending key, like every other study error.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from typing import Any, Protocol

from ..errors import ConfigError

PROBE_META_KEYS = ("enabled",)  # probe keys the runner consumes; the rest go to probe(**settings)
PROBE_FROM_STUDY = ("seed", "device", "dtype", "max_examples", "text_column", "label_column")  # set by the study
DATA_FIELDS = {"max_examples": "ProbeSettings", "max_eval_examples": "TrainConfig", "text_column": "ProbeSettings",
               "label_column": "ProbeSettings", "prompt_column": "ProbeSettings",
               "completion_column": "ProbeSettings"}  # [data] key -> the class whose field of that name types it


class Ctx(Protocol):
    """spec._Ctx: knows the file, finds a key's line."""

    def fail(self, table: str, key: str, msg: str) -> ConfigError: ...

    def check_keys(self, table: str, data: dict, allowed: tuple[str, ...]) -> None: ...


def _classes() -> dict[str, type]:
    from ..probes import ProbeSettings
    from ..training import TrainConfig

    return {"TrainConfig": TrainConfig, "ProbeSettings": ProbeSettings}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _want(tp: Any) -> tuple[str, typing.Callable[[Any], bool]]:
    """What a TOML value for a field of type `tp` must be (in words) and a test for it. TOML has no
    null, so `X | None` wants an X; a tuple field also takes one element (ProbeSettings wraps it)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        words, ok = _want(typing.get_args(tp)[0])
        return (f"a list of {words.removeprefix('a ').removeprefix('an ')}s",
                lambda v: ok(v) or (isinstance(v, list) and all(ok(x) for x in v)))
    if tp is bool:
        return "true or false", lambda v: isinstance(v, bool)
    if tp is int:
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is str:
        return "a string", lambda v: isinstance(v, str)
    return "a value", lambda v: True


def _check_types(ctx: Ctx, table: str, data: dict, hints: dict[str, Any]) -> None:
    for key, value in data.items():
        if key in hints:
            words, ok = _want(hints[key])
            if not ok(value):
                raise ctx.fail(table, key, f"[{table}]: `{key}` must be {words}, got {value!r}.")


def check_train_table(ctx: Ctx, table: str, train: dict) -> None:
    """A [train]-like table: known TrainConfig fields (never `seed`) with values of their types."""
    if "seed" in train:
        raise ctx.fail(table, "seed", f"'seed' cannot be set in [{table}]: seeds come from the grid (`seeds = [...]`).")
    train_cls = _classes()["TrainConfig"]
    ctx.check_keys(table, train, tuple(f.name for f in dataclasses.fields(train_cls) if f.name != "seed"))
    _check_types(ctx, table, train, _hints(train_cls))


def check_probe_table(ctx: Ctx, table: str, probe: dict) -> None:
    """A [probe]-like table: ProbeSettings fields the study does not set itself, plus `enabled`."""
    cls = _classes()["ProbeSettings"]
    allowed = tuple(f.name for f in dataclasses.fields(cls) if f.name not in PROBE_FROM_STUDY)
    ctx.check_keys(table, probe, allowed + PROBE_META_KEYS)
    _check_types(ctx, table, probe, {**_hints(cls), "enabled": bool})


def check_data_table(ctx: Ctx, table: str, data: dict) -> None:
    """A [data]-like table: load_task options typed like the fields of the same name."""
    ctx.check_keys(table, data, tuple(DATA_FIELDS))
    classes = _classes()
    hints = {k: _hints(classes[c])[k] for k, c in DATA_FIELDS.items()}
    _check_types(ctx, table, data, hints)
    for k in ("max_examples", "max_eval_examples"):
        if k in data and data[k] < 1:
            raise ctx.fail(table, k, f"[{table}]: `{k}` must be an integer >= 1, got {data[k]!r}.")


def data_sizes(ctx: Ctx, table: str, block: dict, name: str) -> tuple[tuple[int | str, ...], float | None]:
    """(train_examples, epochs) of a [[grid]] block: distinct counts >= 1 or "full" (the whole train split), and
    an optional number of epochs > 0 that needs them; ((), None) when the block has no data-size axis."""
    from .grid import FULL_DATA

    sizes = block.get("train_examples")
    if sizes is not None and (not isinstance(sizes, list) or not sizes or any(
            not (x == FULL_DATA or isinstance(x, int) and not isinstance(x, bool) and x >= 1) for x in sizes)):
        raise ctx.fail(table, "train_examples", f"grid block '{name}': `train_examples` must be a non-empty list of "
                                                f'training-example counts >= 1 or "{FULL_DATA}", got {sizes!r}.')
    if sizes is not None and len(set(map(str, sizes))) != len(sizes):
        raise ctx.fail(table, "train_examples", f"grid block '{name}': `train_examples` lists a size twice: {sizes}.")
    epochs = block.get("epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0):
        raise ctx.fail(table, "epochs", f"grid block '{name}': `epochs` must be a number > 0, got {epochs!r}.")
    if epochs is not None and sizes is None:
        raise ctx.fail(table, "epochs", f"grid block '{name}': `epochs` scales the steps with `train_examples`; "
                                        "give both, or set [train] steps.")
    return tuple(sizes or ()), None if epochs is None else float(epochs)


def check_data_sizes(spec, train_size: int) -> None:
    """Every `train_examples` count of the grid fits the loaded train split (`train_size` examples)."""
    for block in spec.grid:
        for n in block.train_examples:
            if isinstance(n, int) and n > train_size:
                raise ConfigError(f"{_where(spec, 'train_examples')}grid block '{block.name}': train_examples {n} is "
                                  f"more than the {train_size:,} training examples of task '{spec.task}'"
                                  + (f" (after [data] max_examples = {spec.data['max_examples']})"
                                     if spec.data.get("max_examples") else "") + f'; use "full" for all of them.')


def _where(spec, key: str) -> str:
    """'FILE:LINE: ' of `key` in the study file the spec was read from ('' when it cannot be read)."""
    from pathlib import Path

    from .spec import key_line

    try:
        line = key_line(Path(spec.source).read_text(), "grid", key) if spec.source else None
    except OSError:
        line = None
    return f"{spec.source}:{line}: " if line else (f"{spec.source}: " if spec.source else "")


TRUNCATE_KEYS = ("ranks", "components")


def check_truncate_table(ctx: Ctx, table: str, tbl: dict) -> None:
    """A [truncate]-like table: `ranks` a list of distinct integers >= 1, `components` a list of component
    names of `intrinsic truncate` (kinds, roles, layer bands; the model decides at run time which it has)."""
    from ..arch import ROLE_ORDER
    from ..errors import did_you_mean
    from ..truncation.components import ALIASES, BANDS, KINDS

    ctx.check_keys(table, tbl, TRUNCATE_KEYS)
    ranks = tbl.get("ranks", [1])
    if (not isinstance(ranks, list) or not ranks or len(set(map(str, ranks))) != len(ranks)
            or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in ranks)):
        raise ctx.fail(table, "ranks", f"[{table}]: `ranks` must be a non-empty list of distinct integers >= 1, "
                                       f"got {ranks!r}.")
    comps = tbl.get("components", ["attention"])
    if not isinstance(comps, list) or not comps or any(not isinstance(c, str) for c in comps):
        raise ctx.fail(table, "components", f"[{table}]: `components` must be a non-empty list of component names "
                                            f"(leave it out for all of them), got {comps!r}.")
    known = (*KINDS, *ALIASES, *ROLE_ORDER, *BANDS)
    for c in comps:
        if c.strip().lower() not in known:
            raise ctx.fail(table, "components", f"[{table}]: unknown component '{c}'.{did_you_mean(c, known)} "
                                                f"Known: {', '.join(known)}.")


def full_saves_model(ctx: Ctx, eff: dict[str, Any]) -> None:
    """[truncate] reads the full fine-tuned models: `save_full_model = true` in [train_overrides.full] (a
    [train] or [train_overrides.full] that says false contradicts it)."""
    for table, tbl in (("train", eff.get("train", {})), ("train_overrides.full", _full_table(eff))):
        if tbl.get("save_full_model") is False:
            raise ctx.fail(table, "save_full_model", f"[{table}] sets `save_full_model = false`, but [truncate] "
                                                     "needs the full fine-tuned models: drop it or drop [truncate].")
    from ..placement.strategies import canonical

    eff.setdefault("train_overrides", {})
    key = next((k for k in eff["train_overrides"] if canonical(k) == "full"), "full")
    eff["train_overrides"].setdefault(key, {})["save_full_model"] = True


def _full_table(eff: dict[str, Any]) -> dict[str, Any]:
    from ..placement.strategies import canonical

    return next((v for k, v in eff.get("train_overrides", {}).items() if canonical(k) == "full"), {})


def truncate_table(eff: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The effective [truncate] table (defaults filled); None without one, or when the effective settings of
    full fine-tuning do not save the model (a [quick] run that turns it off measures no r90)."""
    if "truncate" not in eff or not overrides.get("full", {}).get("save_full_model", eff.get("train", {}).get(
            "save_full_model", False)):
        return None
    from ..truncation.settings import DEFAULT_RANKS

    t = eff["truncate"]
    return {"ranks": sorted(t.get("ranks", DEFAULT_RANKS)), "components": t.get("components")}


def _named_key(msg: str, keys) -> str | None:
    """The first `field` named in an error message that is one of `keys`."""
    return next((k for k in re.findall(r"`(\w+)`", msg) if k in keys), None)


def check_settings(ctx: Ctx, spec, raw: dict, quick: dict) -> None:
    """Construct TrainConfig for every strategy of the grid, and ProbeSettings, as the runner will."""
    from ..probes import ProbeSettings
    from ..training import TrainConfig

    def origin(key: str, names: list[str]) -> str:
        """The table a merged value came from: the first of `names` holding it, [quick] before the rest."""
        for name in names:
            for pre, src in ((("quick.", quick),) if spec.quick else ()) + (("", raw),):
                tbl = _dig(src, name)
                if isinstance(tbl, dict) and key in tbl:
                    return pre + name
        return names[-1]

    for strategy in dict.fromkeys(c.strategy for c in spec.cells()):
        merged = {**spec.train, **spec.train_overrides.get(strategy, {})}
        try:
            TrainConfig(**merged)
        except (ConfigError, TypeError, ValueError) as e:
            key = _named_key(str(e), merged) or next(iter(merged), "train")
            table = origin(key, [f"train_overrides.{strategy}", "train"])
            raise ctx.fail(table, key, f"[{table}]: {e}") from None
    try:
        ProbeSettings(**spec.probe_settings)
    except (ConfigError, TypeError, ValueError) as e:
        key = _named_key(str(e), spec.probe) or next(iter(spec.probe), "probe")
        table = origin(key, ["probe"])
        raise ctx.fail(table, key, f"[{table}]: {e}") from None


def _dig(tables: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tables = tables.get(part, {}) if isinstance(tables, dict) else {}
    return tables


# ----------------------------------------------------------------------------- model and task


@functools.lru_cache(maxsize=None)  # successes only: a refused name is checked again
def check_model(name: str) -> None:
    """Raise UnknownModelError/MissingPackageError unless `name` can be located: a packaged alias whose
    package is installed, a local save_pretrained folder, or a hub id whose config loads (from the
    local cache when the Hub is unreachable). Reads config.json at most; no weights."""
    import os

    from .. import models

    key = name.lower()
    if key in models.ALIASES:
        models.alias_path(key)
        return
    source, path = models.resolve(name)
    if source != "hub":
        return
    from transformers import AutoConfig

    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or not models.hub_reachable()
    try:
        AutoConfig.from_pretrained(path, **({"local_files_only": True} if offline else {}))
    except (OSError, ValueError):
        net = " (the Hub is unreachable from here and it is not in the local cache)" if offline else ""
        from ..errors import UnknownModelError, did_you_mean

        raise UnknownModelError(
            f"Unknown model '{name}': not a packaged alias ({', '.join(models.ALIASES)}), not a local directory, "
            f"and not loadable from the Hugging Face Hub{net}.{did_you_mean(key, models.ALIASES)}") from None


def check_task(name: str, data: dict[str, Any]):
    """Raise the task registry's error unless `name` loads with the study's [data] options, and return the
    TaskData (its train split as the run sees it); an `hf:` data set is only checked for its form (loading it
    here would download it before the run does): None."""
    from ..tasks import load_task

    base = name.removesuffix(":lm")
    if base.startswith("hf:") and len(base) > 3:
        return None
    columns = {k: data.get(k) for k in ("text_column", "label_column", "prompt_column", "completion_column")}
    return load_task(name, max_examples=data.get("max_examples"), max_eval_examples=1, **columns)


def check_resources(spec) -> None:
    """The study's model and task exist, and its data sizes fit the train split: called by the runner before
    it writes anything (an `hf:` task's sizes are checked per cell, when it is loaded)."""
    check_model(spec.model)
    task = check_task(spec.task, spec.data)
    if task is not None:
        check_data_sizes(spec, len(task.train_texts))
