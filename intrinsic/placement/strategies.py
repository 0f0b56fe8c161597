"""The placement vocabulary: strategy words, their canonical form and validation, layer selections,
and which modules of a model a fixed strategy selects.

A strategy is `auto`, `full`, or a comma list of groups (`all`, `attention`, `ffn`) and roles
(`q k v qkv o gate up gate_up down`, in `arch.ROLE_ORDER`), e.g. "q,v" or "attention,up".
`check_strategy` is the one validation: `PlacementRequest` and the study files (`study/spec.py`)
both call it, so a study accepts exactly the strategies a placement accepts.

Fused weights (role qkv or gate_up): LoRA cannot adapt part of a matrix, so a role list that
names any block of a fused module (e.g. `q,v` on GPT-2's `c_attn`) selects the whole fused
module, with a note saying so.
"""

from __future__ import annotations

import re

from ..arch import ATTENTION_ROLES, FFN_ROLES, ROLE_ORDER, ModuleRef
from ..errors import ConfigError, did_you_mean

GROUPS = {"all": ATTENTION_ROLES + FFN_ROLES, "attention": ATTENTION_ROLES, "ffn": FFN_ROLES}
SPECIAL_STRATEGIES = ("auto", "full")  # strategies that stand alone: water-filling, and full fine-tuning
STRATEGY_WORDS = (*GROUPS, *ROLE_ORDER)  # words of a fixed strategy's comma list
FUSED_BLOCKS = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}  # block roles when a ref lists none


def canonical(strategy: str) -> str:
    """"Q, V " -> "q,v": lower case, no spaces, empty items dropped (equal requests get equal names)."""
    return ",".join(t.strip().lower() for t in str(strategy).split(",") if t.strip())


def check_strategy(strategy: str) -> str:
    """The canonical form of a valid strategy; ConfigError naming the unknown word otherwise."""
    canon = canonical(strategy)
    if not canon:
        raise ConfigError(f"Empty strategy '{strategy}': use all, attention, ffn, auto, full or a role list such as q,v.")
    if canon in SPECIAL_STRATEGIES:
        return canon
    for tok in canon.split(","):
        if tok in SPECIAL_STRATEGIES:
            raise ConfigError(f"Strategy '{tok}' stands alone; it cannot be combined with others in '{strategy}'.")
        if tok not in STRATEGY_WORDS:
            raise ConfigError(
                f"Unknown strategy '{tok}' in '{strategy}'.{did_you_mean(tok, STRATEGY_WORDS + SPECIAL_STRATEGIES)} "
                f"Use all, attention, ffn, auto, full or a role list such as q,v (roles: {', '.join(ROLE_ORDER)})."
            )
    return canon


def requested_roles(strategy: str) -> tuple[set[str], set[str]]:
    """(all requested roles, roles named explicitly) of a fixed strategy: "all", "q,v", "attention,up"."""
    canon = check_strategy(strategy)
    if canon == "auto":
        raise ConfigError("Strategy 'auto' takes gains and a budget: use auto_plan, not a fixed rank.")
    if canon == "full":
        raise ConfigError("Strategy 'full' trains every weight: it has no plan.")
    roles: set[str] = set()
    explicit: set[str] = set()
    for tok in canon.split(","):
        if tok in GROUPS:
            roles.update(GROUPS[tok])
        else:
            roles.add(tok)
            explicit.add(tok)
    return roles, explicit


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Layer indices from "0-5" (inclusive), "1,3,5", "lower" | "middle" | "upper", or a comma mix.

    Thirds: layer i belongs to third floor(3 * i / n_layers). When n_layers is not divisible by 3
    the lower thirds get the extra layers: n=7 -> 3,2,2 layers; n=8 -> 3,3,2; n=2 -> 1,1,0.
    """
    thirds = {"lower": 0, "middle": 1, "upper": 2}
    out: set[int] = set()
    for item in (s.strip().lower() for s in str(spec).split(",")):
        if not item:
            continue
        if item in thirds:
            chosen = [i for i in range(n_layers) if 3 * i // n_layers == thirds[item]]
            if not chosen:
                raise ConfigError(f"The {item} third of a {n_layers}-layer model is empty.")
            out.update(chosen)
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise ConfigError(
                f"Cannot parse layer selection '{item}': use 0-5, 1,3,5 or lower|middle|upper.{did_you_mean(item, thirds)}"
            )
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi:
            raise ConfigError(f"Layer selection '{item}' is reversed: write {hi}-{lo} (ranges run low-high).")
        if hi >= n_layers:
            raise ConfigError(f"Layer selection '{item}' is outside this model's layers 0-{n_layers - 1}.")
        out.update(range(lo, hi + 1))
    if not out:
        raise ConfigError(f"Layer selection '{spec}' selects no layer.")
    return sorted(out)


def _block_roles(ref: ModuleRef) -> tuple[str, ...]:
    """Roles inside a fused weight (empty for an unfused one)."""
    return tuple(b.role for b in ref.blocks) or FUSED_BLOCKS.get(ref.role, ())


def select_modules(refs: list[ModuleRef], strategy: str, layers: list[int] | None = None) -> list[tuple[ModuleRef, str]]:
    """(ref, note) for each module a fixed strategy adapts, in refs order. A fused module is
    selected when its own role or any of its block roles is requested (the note says which)."""
    roles, explicit = requested_roles(strategy)
    present_roles = {r.role for r in refs} | {b for r in refs for b in _block_roles(r)}
    missing = sorted(explicit - present_roles, key=ROLE_ORDER.index)
    if missing:
        have = ", ".join(r for r in ROLE_ORDER if r in present_roles)
        raise ConfigError(f"Strategy '{strategy}': role {', '.join(missing)} is not in this model (roles: {have}).")
    if layers is not None:
        present_layers = {r.layer for r in refs}
        absent = sorted(set(layers) - present_layers)
        if absent:
            raise ConfigError(f"Layers {absent} do not exist (this model has layers {span(present_layers)}).")
    chosen = []
    for ref in refs:
        if layers is not None and ref.layer not in layers:
            continue
        blocks = _block_roles(ref)
        hit = [b for b in blocks if b in roles]
        if ref.role in roles:
            chosen.append((ref, ""))
        elif hit:
            note = f"fused {ref.role} adapted whole for requested {','.join(hit)} (LoRA cannot adapt part of a matrix)"
            chosen.append((ref, note))
    if not chosen:
        have = ", ".join(r for r in ROLE_ORDER if r in present_roles) or "none"
        where = f" in layers {span(layers)}" if layers is not None else ""
        raise ConfigError(f"Strategy '{strategy}'{where} selected no module (roles in this model: {have}).")
    return chosen


def span(layers) -> str:
    """"0-5" for a contiguous run of layers, else "0,2,4"."""
    s = sorted(layers)
    return f"{s[0]}-{s[-1]}" if s and s == list(range(s[0], s[-1] + 1)) and len(s) > 1 else ",".join(map(str, s))
