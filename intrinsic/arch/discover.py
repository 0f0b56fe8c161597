"""Discovery: the attention and FFN linears of a model as typed `ModuleRef`s, from the map or by hand.

`discover(model)` looks `config.model_type` up in `table.ARCH_MAP` and returns `ModuleRef`s in
(layer, role) order. Shapes are always (out, in), also for GPT-2's Conv1D, which stores its
weight transposed as (in, out). Fused modules get their role blocks (`_fused_blocks`), checked
against the config.

Module names. Discovery works on a bare model (`encoder.layer.0...`), on a model with a
head (`bert.encoder.layer.0...`) and on a PEFT model (`base_model.model.bert.encoder...`);
`ModuleRef.name` is always the full name in the model it was discovered on. Under PEFT the
name is that of the LoRA wrapper (the name PEFT targets), and shape/weight come from its
`base_layer`.

Override (`--modules`). For a model type missing from the map, `parse_module_patterns`
reads "REGEX=ROLE,REGEX=ROLE" and `discover(model, patterns)` uses it. Each REGEX must match
a dotted suffix of the module name, as PEFT's `target_modules` do (`attention\\.q_lin` matches
`distilbert.transformer.layer.0.attention.q_lin`); the first pattern that matches a module
wins. The layer index is the first integer path component after a layers container
(`.layer.3.`, `.layers.3.`, `.h.3.`, `.block.3.`, `.blocks.3.`), else the first integer path
component at all. Fused roles given by hand get no blocks (their layout is unknown).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import ConfigError, UnsupportedArchitectureError, did_you_mean
from .access import base_layer
from .table import ARCH_MAP, ATTENTION_ROLES, ROLE_ORDER, ModuleRef, RoleBlock

if TYPE_CHECKING:  # torch is imported where modules are walked, so the role vocabulary and ModuleRef stay light
    import torch

_LAYER_CONTAINERS = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")
_ANY_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
_EXAMPLE_SPEC = r"attention\.q_lin=q,attention\.k_lin=k,attention\.v_lin=v,attention\.out_lin=o,ffn\.lin1=up,ffn\.lin2=down"
_EXAMPLE = f"--modules '{_EXAMPLE_SPEC}'"


# ----------------------------------------------------------------------------- module enumeration


def _linear_types() -> tuple[type, ...]:
    import torch
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, Conv1D)


def _linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every Linear/Conv1D, PEFT wrappers standing in for the layer they wrap."""
    types = _linear_types()
    out: list[tuple[str, torch.nn.Module]] = []
    wrapper = None  # name of the PEFT wrapper whose internals (base_layer, lora_A, ...) we skip
    for name, module in model.named_modules():
        if wrapper is not None and name.startswith(wrapper + "."):
            continue
        base = base_layer(module)
        if base is not module:
            wrapper = name
        if isinstance(base, types):
            out.append((name, module))
    return out


def _make_ref(name: str, module: torch.nn.Module, layer: int, role: str) -> ModuleRef:
    from transformers.pytorch_utils import Conv1D

    base = base_layer(module)
    transposed = isinstance(base, Conv1D)
    w_rows, w_cols = base.weight.shape
    shape = (int(w_cols), int(w_rows)) if transposed else (int(w_rows), int(w_cols))
    kind = "attention" if role in ATTENTION_ROLES else "ffn"
    return ModuleRef(name, layer, kind, role, shape, shape[0] * shape[1], transposed)


def _model_type(model) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def _sort(refs: list[ModuleRef]) -> list[ModuleRef]:
    return sorted(refs, key=lambda r: (r.layer, ROLE_ORDER.index(r.role), r.name))


# ----------------------------------------------------------------------------- fused layouts


def _fused_blocks(layout: str, rows: int, config, name: str) -> tuple[RoleBlock, ...]:
    """Role blocks of a fused weight with `rows` output rows, checked against the config."""
    n_heads = getattr(config, "num_attention_heads", None)
    if layout == "thirds":
        parts = [("q", rows // 3), ("k", rows // 3), ("v", rows // 3)]
    elif layout == "halves":
        parts = [("gate", rows // 2), ("up", rows // 2)]
    elif layout == "gqa":
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        parts = [("q", n_heads * head_dim), ("k", n_kv * head_dim), ("v", n_kv * head_dim)]
    elif layout == "heads":
        head = rows // (3 * n_heads)
        parts = [(role, head) for _ in range(n_heads) for role in ("q", "k", "v")]
    else:
        raise ValueError(f"unknown fused layout {layout!r}")
    if sum(size for _, size in parts) != rows:
        raise UnsupportedArchitectureError(
            f"Fused module {name} has {rows} output rows, which does not fit the '{layout}' layout of its "
            f"config; pass --modules to probe it as one unsplit matrix."
        )
    blocks, start = [], 0
    for role, size in parts:
        blocks.append(RoleBlock(role, start, start + size))
        start += size
    return tuple(blocks)


# ----------------------------------------------------------------------------- discovery


def discover(model, patterns: dict[str, str] | None = None) -> list[ModuleRef]:
    """Typed references to the attention and FFN linears of `model`, sorted by (layer, role).

    `model` is any HF PreTrainedModel, with or without a task head or PEFT wrapper. `patterns`
    ({regex: role}, from `parse_module_patterns`) replaces the map, e.g. for unmapped types.
    """
    if patterns:
        return _discover_patterns(model, patterns)
    model_type = _model_type(model)
    spec = ARCH_MAP.get(model_type) if model_type else None
    if spec is None:
        what = f"Model type '{model_type}'" if model_type else "A model without config.model_type"
        raise UnsupportedArchitectureError(
            f"{what} is not in the architecture map (supported: {', '.join(sorted(ARCH_MAP))})."
            f"{did_you_mean(model_type or '', ARCH_MAP)} Name its modules by hand with --modules "
            f"'REGEX=ROLE,...', e.g. {_EXAMPLE} (roles: {' '.join(ROLE_ORDER)}; each REGEX matches a dotted "
            f"suffix of the module name). {_examples(model)}"
        )
    layer_re = re.compile(rf"(?:^|\.)(?:{spec.layers})\.(\d+)\.(.+)$")
    role_res = [(re.compile(p), role) for p, role in spec.roles.items()]
    refs = []
    for name, module in _linears(model):
        m = layer_re.search(name)
        if m is None:
            continue
        role = next((r for rx, r in role_res if rx.fullmatch(m.group(2))), None)
        if role is None:
            continue
        ref = _make_ref(name, module, int(m.group(1)), role)
        if role in spec.fused:
            ref = replace(ref, blocks=_fused_blocks(spec.fused[role], ref.shape[0], model.config, name))
        refs.append(ref)
    if not refs:
        raise UnsupportedArchitectureError(
            f"Model type '{model_type}' is in the architecture map, but none of its module names matched "
            f"(has this transformers version renamed them?). Name them by hand with --modules 'REGEX=ROLE,...'. "
            f"{_examples(model)}"
        )
    return _sort(refs)


def _examples(model) -> str:
    names = [n for n, _ in _linears(model)]
    if not names:
        return "The model has no Linear or Conv1D module."
    first = [n for n in names if _layer_index(n) == 0] or names
    return f"Its linear modules include: {', '.join(first[:8])}."


def _layer_index(name: str) -> int | None:
    m = _LAYER_CONTAINERS.search(name) or _ANY_INDEX.search(name)
    return int(m.group(1)) if m else None


def _discover_patterns(model, patterns: dict[str, str]) -> list[ModuleRef]:
    _check_patterns(patterns)
    compiled = [(p, re.compile(rf"(?:^|\.)(?:{p})$"), role) for p, role in patterns.items()]
    hits = {p: 0 for p in patterns}  # modules each pattern matched, claimed or not
    claimed = {p: 0 for p in patterns}  # modules each pattern was first to match
    refs = []
    for name, module in _linears(model):
        first = None
        for p, rx, role in compiled:
            if rx.search(name):
                hits[p] += 1
                first = first or (p, role)
        if first is None:
            continue
        claimed[first[0]] += 1
        layer = _layer_index(name)
        if layer is None:
            raise ConfigError(
                f"--modules pattern '{first[0]}' matches '{name}', which has no layer index "
                "(no integer path component such as '.layer.3.'); make the pattern more specific."
            )
        refs.append(_make_ref(name, module, layer, first[1]))
    unused = [p for p in patterns if claimed[p] == 0]
    if unused:
        shadowed = [p for p in unused if hits[p]]
        why = f" ({', '.join(shadowed)}: every match was taken by an earlier pattern)" if shadowed else ""
        raise ConfigError(
            f"--modules pattern(s) {', '.join(repr(p) for p in unused)} matched no Linear/Conv1D module{why}. "
            f"Each pattern must match a dotted suffix of a module name. {_examples(model)}"
        )
    return _sort(refs)


def _check_patterns(patterns: dict[str, str]) -> None:
    for p, role in patterns.items():
        if role not in ROLE_ORDER:
            raise ConfigError(
                f"Unknown role '{role}' for --modules pattern '{p}'; roles: {' '.join(ROLE_ORDER)}."
                + did_you_mean(role, ROLE_ORDER)
            )
        try:
            re.compile(p)
        except re.error as e:
            raise ConfigError(f"--modules pattern '{p}' is not a valid regular expression ({e}).") from None


_ITEM = re.compile(r"\s*(?P<pat>.+?)\s*=\s*(?P<role>[A-Za-z_]+)\s*(?:,|$)")


def parse_module_patterns(spec: str) -> dict[str, str]:
    """Parse "REGEX=ROLE,REGEX=ROLE" (the `--modules` option) into {regex: role}, in order.

    Commas inside a regex (e.g. `{1,2}`) are fine: an item ends at "=ROLE," or "=ROLE<end>".
    """
    patterns: dict[str, str] = {}
    pos, text = 0, spec.strip()
    if not text:
        raise ConfigError("--modules is empty; expected 'REGEX=ROLE,...', e.g. " + _EXAMPLE_SPEC)
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if m is None:
            raise ConfigError(
                f"Cannot parse --modules at '{text[pos:]}'; expected 'REGEX=ROLE,...', e.g. {_EXAMPLE_SPEC}"
            )
        if m.group("pat") in patterns:
            raise ConfigError(f"--modules pattern '{m.group('pat')}' is given twice.")
        patterns[m.group("pat")] = m.group("role")
        pos = m.end()
    _check_patterns(patterns)
    return patterns


def num_layers(model) -> int:
    """Number of transformer blocks, from the config (num_hidden_layers / n_layer / ...)."""
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        n = getattr(config, key, None)
        if isinstance(n, int):
            return n
    refs = discover(model)
    return max(r.layer for r in refs) + 1
