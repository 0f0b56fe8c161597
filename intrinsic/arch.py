"""Architecture map: which linear modules of a transformer are attention or FFN, and their roles.

One table keyed by `config.model_type` maps module-name patterns to canonical roles
(attention: q k v o, fused qkv; FFN: up gate down, fused gate_up). `discover(model)`
returns typed `ModuleRef`s in layer order. Shapes are always (out, in), also for GPT-2's
Conv1D, which stores its weight transposed as (in, out).

TODO(helper-arch): implement ARCH_MAP, discover, weight_of, parse_module_patterns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ATTENTION_ROLES = ("q", "k", "v", "o", "qkv")
FFN_ROLES = ("up", "gate", "down", "gate_up")


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
