"""What a component is: the weight blocks whose update `truncate` replaces together.

A *block* is one role's rows of one discovered linear module (`arch.roles_of`): the whole weight of
an unfused module (Llama's q_proj), or one role's rows of a fused one (GPT-2's c_attn splits into
q, k and v). Each block's update is factored and truncated on its own, so the kind "attention" of
GPT-2 truncates q, k and v of c_attn separately, like the role components do.

Components, in this order (`component_names`):
- kinds: "attention" and "ffn" (alias "mlp"): every block of that kind;
- roles: "q", "k", "v", "o", "gate", "up", "down" (the roles the model has);
- layer bands: "first", "middle", "last": the blocks of the first, middle and last third of the
  layers (`layer_bands`; with fewer than three layers an empty band is left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, did_you_mean

KINDS = ("attention", "ffn")
BANDS = ("first", "middle", "last")
ALIASES = {"mlp": "ffn"}


@dataclass(frozen=True)
class Block:
    """One role's rows of one linear module."""

    ref: Any  # the arch.ModuleRef of the module
    role: str  # q k v o up gate down (a fused module's role block) or the module's own role
    rows: Any  # slice or list of row indices into the (out, in) weight (`arch.roles_of`)

    @property
    def name(self) -> str:
        return self.ref.name if self.role == self.ref.role else f"{self.ref.name}[{self.role}]"


def blocks_of(refs) -> list[Block]:
    """Every role block of the discovered modules `refs`, in discovery order."""
    from ..arch import roles_of

    return [Block(ref, role, rows) for ref in refs for role, rows in roles_of(ref)]


def layer_bands(num_layers: int) -> dict[str, tuple[int, ...]]:
    """{"first"|"middle"|"last": layers}: thirds of the layers, symmetric when they do not divide evenly
    (30 -> 10/10/10, 4 -> 1/2/1, 5 -> 2/1/2, 2 -> 1/0/1); empty bands are left out."""
    third, rest = divmod(num_layers, 3)
    sizes = {0: (third, third, third), 1: (third, third + 1, third), 2: (third + 1, third, third + 1)}[rest]
    out, start = {}, 0
    for name, size in zip(BANDS, sizes, strict=True):
        if size:
            out[name] = tuple(range(start, start + size))
        start += size
    return out


def component_blocks(blocks: list[Block], num_layers: int) -> dict[str, list[Block]]:
    """{component name: its blocks}, every component the model has, in the order of the module docstring."""
    from ..arch import ROLE_ORDER

    out: dict[str, list[Block]] = {}
    for kind in KINDS:
        mine = [b for b in blocks if b.ref.kind == kind]
        if mine:
            out[kind] = mine
    for role in ROLE_ORDER:
        mine = [b for b in blocks if b.role == role]
        if mine:
            out[role] = mine
    for band, layers in layer_bands(num_layers).items():
        mine = [b for b in blocks if b.ref.layer in layers]
        if mine:
            out[band] = mine
    return out


def component_kind(name: str) -> str:
    """"kind", "band" or "role"."""
    return "kind" if name in KINDS else "band" if name in BANDS else "role"


def select_components(available: list[str], wanted: str | None) -> list[str]:
    """The components of a comma list (None or "all": every available one), in the order given;
    ConfigError with a suggestion for an unknown name."""
    if wanted is None or wanted.strip() in ("", "all"):
        return list(available)
    out = []
    for raw in wanted.split(","):
        name = ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if not name:
            continue
        if name not in available:
            raise ConfigError(f"Unknown component '{raw.strip()}' in `components`; this model has: "
                              f"{', '.join(available)}.{did_you_mean(name, available)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("`components` names no component.")
    return out


def parse_ranks(text: str | tuple | list) -> tuple[int, ...]:
    """The rank grid of "1,2,4" (or a sequence): distinct positive integers, ascending; ConfigError else."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    ranks = set()
    for s in items:
        if s == "":
            continue
        try:
            r = int(s)
        except (TypeError, ValueError):
            raise ConfigError(f"`ranks` takes positive integers separated by commas (1,2,4,8), got '{text}'.") \
                from None
        if r < 1:
            raise ConfigError(f"`ranks` must be positive integers, got {r} in '{text}'.")
        ranks.add(r)
    if not ranks:
        raise ConfigError(f"`ranks` names no rank: '{text}'.")
    return tuple(sorted(ranks))
