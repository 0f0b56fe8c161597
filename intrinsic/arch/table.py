"""The architecture map: per `config.model_type`, which linear modules are attention or FFN, and their roles.

One table, `ARCH_MAP`, keyed by `config.model_type` maps module-name patterns to canonical
roles (attention: q k v o, fused qkv; FFN: up gate down, fused gate_up), as PEFT's
`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` does. This file is data and the types
that describe it (`ArchSpec`, and `ModuleRef`/`RoleBlock`, what discovery returns); the code
that walks a model is `discover.py`, the weight access `access.py`.

Fused weights. A fused module (GPT-2 `c_attn`, GPT-NeoX `query_key_value`, Phi-3 `qkv_proj`
and `gate_up_proj`) is one `ModuleRef` whose `blocks` are contiguous row ranges, each owned
by one role; together they cover the rows exactly once. `ArchSpec.fused` names the row layout
of each fused role: `thirds` (GPT-2: [q; k; v]), `heads` (GPT-NeoX interleaves per head:
rows [head0 q, k, v | head1 q, k, v | ...], one block per head and role), `gqa` (Phi-3:
[q (H*d); k (KV*d); v (KV*d)]) and `halves` (Phi-3: [gate; up]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
