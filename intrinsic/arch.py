"""Architecture map: which linear modules of a transformer are attention or FFN, and their roles.

One table, `ARCH_MAP`, keyed by `config.model_type` maps module-name patterns to canonical
roles (attention: q k v o, fused qkv; FFN: up gate down, fused gate_up). `discover(model)`
returns typed `ModuleRef`s in layer order. Shapes are always (out, in), also for GPT-2's
Conv1D, which stores its weight transposed as (in, out).

Module names. Discovery works on a bare model (`encoder.layer.0...`), on a model with a
head (`bert.encoder.layer.0...`) and on a PEFT model (`base_model.model.bert.encoder...`);
`ModuleRef.name` is always the full name in the model it was discovered on. Under PEFT the
name is that of the LoRA wrapper (the name PEFT targets), and shape/weight come from its
`base_layer`. `peft_target_name` strips PEFT's `base_model.model.` prefix.

Fused weights. A fused module (GPT-2 `c_attn`, GPT-NeoX `query_key_value`, Phi-3 `qkv_proj`
and `gate_up_proj`) is one `ModuleRef` whose `blocks` are contiguous row ranges, each owned
by one role; together they cover the rows exactly once. GPT-NeoX interleaves per head
(rows [head0 q, k, v | head1 q, k, v | ...]), so it has one block per head and role, and
`roles_of` returns, per role, a list of row indices instead of a slice. Both index the
first dimension of a torch tensor or numpy array the same way: `W[rows]`.

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
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .errors import ConfigError, UnsupportedArchitectureError, did_you_mean

if TYPE_CHECKING:  # torch is imported where modules are walked, so the role vocabulary and ModuleRef stay light
    import torch

ATTENTION_ROLES = ("q", "k", "v", "o", "qkv")
FFN_ROLES = ("up", "gate", "down", "gate_up")
ROLE_ORDER = ("q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down")  # sort order within a layer
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class RoleBlock:
    """A row slice [start, stop) of a fused (out, in) weight that belongs to one role."""

    role: str  # q, k, v (of a fused qkv) or gate, up (of a fused gate_up)
    start: int  # first output row
    stop: int  # one past the last output row


@dataclass(frozen=True)
class ModuleRef:
    """One probed linear module of a transformer layer."""

    name: str  # full module name as in model.named_modules(), e.g. "bert.encoder.layer.0.attention.self.query"
    layer: int  # index of the transformer block
    kind: str  # "attention" or "ffn"
    role: str  # q k v o qkv | up gate down gate_up
    shape: tuple[int, int]  # weight shape as (out, in), whatever the storage
    params: int  # out * in (weights only; bias not counted)
    transposed: bool = False  # True for Conv1D (weight stored as (in, out))
    blocks: tuple[RoleBlock, ...] = field(default=())  # role blocks of a fused weight, else empty

    @property
    def short(self) -> str:
        """Compact label such as 'L3.q'."""
        return f"L{self.layer}.{self.role}"


@dataclass(frozen=True)
class ArchSpec:
    """How to find the probed linear modules of one architecture."""

    layers: str  # regex of the layer-list container; the layer index is the path component after it
    roles: dict[str, str]  # regex on the name relative to the layer (full match) -> role
    fused: dict[str, str] = field(default_factory=dict)  # fused role -> row layout: thirds | heads | gqa | halves


_BERT = ArchSpec(
    layers=r"encoder\.layer",
    roles={
        r"attention\.self\.query": "q",
        r"attention\.self\.key": "k",
        r"attention\.self\.value": "v",
        r"attention\.output\.dense": "o",
        r"intermediate\.dense": "up",
        r"output\.dense": "down",
    },
)
_LLAMA = ArchSpec(
    layers=r"layers",
    roles={
        r"self_attn\.q_proj": "q",
        r"self_attn\.k_proj": "k",
        r"self_attn\.v_proj": "v",
        r"self_attn\.o_proj": "o",
        r"mlp\.gate_proj": "gate",
        r"mlp\.up_proj": "up",
        r"mlp\.down_proj": "down",
    },
)

ARCH_MAP: dict[str, ArchSpec] = {
    "bert": _BERT,
    "roberta": _BERT,
    "electra": _BERT,
    "distilbert": ArchSpec(
        layers=r"transformer\.layer",
        roles={
            r"attention\.q_lin": "q",
            r"attention\.k_lin": "k",
            r"attention\.v_lin": "v",
            r"attention\.out_lin": "o",
            r"ffn\.lin1": "up",
            r"ffn\.lin2": "down",
        },
    ),
    "gpt2": ArchSpec(  # Conv1D; c_attn = [q; k; v] in equal thirds; cross-attention is not probed
        layers=r"h",
        roles={r"attn\.c_attn": "qkv", r"attn\.c_proj": "o", r"mlp\.c_fc": "up", r"mlp\.c_proj": "down"},
        fused={"qkv": "thirds"},
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gpt_neox": ArchSpec(  # query_key_value interleaved per head: [h0 q,k,v | h1 q,k,v | ...]
        layers=r"layers",
        roles={
            r"attention\.query_key_value": "qkv",
            r"attention\.dense": "o",
            r"mlp\.dense_h_to_4h": "up",
            r"mlp\.dense_4h_to_h": "down",
        },
        fused={"qkv": "heads"},
    ),
    "opt": ArchSpec(
        layers=r"decoder\.layers",
        roles={
            r"self_attn\.q_proj": "q",
            r"self_attn\.k_proj": "k",
            r"self_attn\.v_proj": "v",
            r"self_attn\.out_proj": "o",
            r"fc1": "up",
            r"fc2": "down",
        },
    ),
    "phi3": ArchSpec(  # qkv_proj = [q (H*d); k (KV*d); v (KV*d)]; gate_up_proj = [gate; up]
        layers=r"layers",
        roles={
            r"self_attn\.qkv_proj": "qkv",
            r"self_attn\.o_proj": "o",
            r"mlp\.gate_up_proj": "gate_up",
            r"mlp\.down_proj": "down",
        },
        fused={"qkv": "gqa", "gate_up": "halves"},
    ),
}

_LAYER_CONTAINERS = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")
_ANY_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
_EXAMPLE_SPEC = r"attention\.q_lin=q,attention\.k_lin=k,attention\.v_lin=v,attention\.out_lin=o,ffn\.lin1=up,ffn\.lin2=down"
_EXAMPLE = f"--modules '{_EXAMPLE_SPEC}'"


# ----------------------------------------------------------------------------- module enumeration


def _linear_types() -> tuple[type, ...]:
    import torch
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, Conv1D)


def _base(module: torch.nn.Module) -> torch.nn.Module:
    """The wrapped layer of a PEFT tuner layer (LoRA etc.), else the module itself."""
    import torch

    if isinstance(getattr(module, "base_layer", None), torch.nn.Module) and hasattr(module, "get_base_layer"):
        return module.get_base_layer()
    return module


def _linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every Linear/Conv1D, PEFT wrappers standing in for the layer they wrap."""
    types = _linear_types()
    out: list[tuple[str, torch.nn.Module]] = []
    wrapper = None  # name of the PEFT wrapper whose internals (base_layer, lora_A, ...) we skip
    for name, module in model.named_modules():
        if wrapper is not None and name.startswith(wrapper + "."):
            continue
        base = _base(module)
        if base is not module:
            wrapper = name
        if isinstance(base, types):
            out.append((name, module))
    return out


def _make_ref(name: str, module: torch.nn.Module, layer: int, role: str) -> ModuleRef:
    from transformers.pytorch_utils import Conv1D

    base = _base(module)
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


# ----------------------------------------------------------------------------- access


def get_module(model, ref: ModuleRef) -> torch.nn.Module:
    """The module named by `ref` (for PEFT: the LoRA wrapper, not its base layer)."""
    try:
        return model.get_submodule(ref.name)
    except AttributeError:
        raise ConfigError(f"Module '{ref.name}' is not in this model (was it discovered on another one?).") from None


def weight_of(model, ref: ModuleRef) -> torch.Tensor:
    """The (out, in) view of the module's weight (Conv1D: its transpose; PEFT: the base layer's)."""
    w = _base(get_module(model, ref)).weight  # (out, in), or (in, out) for Conv1D
    return w.T if ref.transposed else w


def grad_of(model, ref: ModuleRef) -> torch.Tensor | None:
    """The (out, in) view of the weight's gradient, or None when there is none."""
    g = _base(get_module(model, ref)).weight.grad
    if g is None:
        return None
    return g.T if ref.transposed else g


def roles_of(ref: ModuleRef) -> list[tuple[str, slice | list[int]]]:
    """[(role, rows)] of a fused module's role blocks; [(ref.role, slice(None))] for an unfused one.

    `rows` is a slice when the role's rows are contiguous, else (GPT-NeoX) a sorted list of row
    indices; either indexes the first dimension: `weight_of(model, ref)[rows]` is that role's matrix.
    """
    if not ref.blocks:
        return [(ref.role, slice(None))]
    out = []
    for role in dict.fromkeys(b.role for b in ref.blocks):  # roles in order of first appearance
        mine = [b for b in ref.blocks if b.role == role]
        if len(mine) == 1:
            out.append((role, slice(mine[0].start, mine[0].stop)))
        else:
            out.append((role, [i for b in mine for i in range(b.start, b.stop)]))
    return out


def peft_target_name(name: str) -> str:
    """A module name as PEFT's `target_modules` sees it: without the `base_model.model.` prefix."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name


def select(
    refs: Iterable[ModuleRef],
    roles: Iterable[str] | None = None,
    layers: Iterable[int] | None = None,
    kinds: Iterable[str] | str | None = None,
) -> list[ModuleRef]:
    """The refs whose role, layer and kind are in the given lists (None: any). Order is kept."""
    roles = set(roles) if roles is not None else None
    layers = set(layers) if layers is not None else None
    kinds = {kinds} if isinstance(kinds, str) else (set(kinds) if kinds is not None else None)
    return [
        r for r in refs
        if (roles is None or r.role in roles)
        and (layers is None or r.layer in layers)
        and (kinds is None or r.kind in kinds)
    ]


def num_layers(model) -> int:
    """Number of transformer blocks, from the config (num_hidden_layers / n_layer / ...)."""
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        n = getattr(config, key, None)
        if isinstance(n, int):
            return n
    refs = discover(model)
    return max(r.layer for r in refs) + 1
