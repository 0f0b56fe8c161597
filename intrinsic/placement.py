"""LoRA placement plans: which modules get an adapter, at what rank and alpha, and proof that PEFT obeyed.

A `Plan` is a typed, JSON-serializable list of `PlanEntry` rows (module name -> rank, alpha).
Plans come from fixed strategies (`all`, `attention`, `ffn`, role lists such as `q,v`, optionally
restricted to layers) at a uniform rank or at the largest uniform rank that fits a budget, or
from `auto`, which water-fills rank under a parameter budget using the probe's gradient spectra.

A rank-r LoRA adapter on an (m, n) = (out, in) weight costs r * (m + n) parameters (A: r x n,
B: m x r; biases untouched). Plans export to PEFT's own format (full module names in
`target_modules`, escaped names in `rank_pattern` / `alpha_pattern`), and `verify_peft_model`
checks the adapters PEFT actually built, because PEFT silently ignores pattern keys that match
nothing.

Fused weights (role qkv or gate_up): LoRA cannot adapt part of a matrix, so a role list that
names any block of a fused module (e.g. `q,v` on GPT-2's `c_attn`) adapts the whole fused
module; its PlanEntry carries a note saying so.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from .arch import ATTENTION_ROLES, FFN_ROLES, ModuleRef
from .errors import BudgetError, ConfigError, did_you_mean
from .results import from_dict, read_json, write_json

ROLE_ORDER = ("q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down")  # canonical column order
GROUPS = {"all": ATTENTION_ROLES + FFN_ROLES, "attention": ATTENTION_ROLES, "ffn": FFN_ROLES}
FUSED_BLOCKS = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}  # block roles when a ref lists none
SCHEMA_VERSION = 1


def lora_cost(shape: tuple[int, int], rank: int) -> int:
    """Parameters of a rank-`rank` adapter on an (out, in) weight: rank * (out + in)."""
    return rank * (shape[0] + shape[1])


@dataclass(frozen=True)
class PlanEntry:
    """One adapted module."""

    name: str  # full module name as in model.named_modules()
    layer: int  # transformer block index
    kind: str  # "attention" or "ffn"
    role: str  # q k v o qkv | up gate down gate_up
    shape: tuple[int, int]  # weight shape (out, in)
    rank: int  # LoRA rank r >= 1
    alpha: float  # LoRA alpha (scaling alpha/r, or alpha/sqrt(r) with rsLoRA)
    note: str = ""  # e.g. why a fused module was included for a partial role list

    @property
    def params(self) -> int:
        return lora_cost(self.shape, self.rank)


@dataclass(frozen=True)
class Plan:
    """A LoRA placement: every adapted module with its rank and alpha."""

    strategy: str  # "all", "attention", "ffn", a role list such as "q,v", or "auto"
    entries: tuple[PlanEntry, ...]  # adapted modules in model order; unlisted modules get no adapter
    budget: int | None  # parameter budget the plan was made for; None for an explicit fixed rank
    params: int  # total LoRA parameters, sum of rank * (out + in)
    base_params: int  # base-model parameters, for percentages (0 = unknown)
    rslora: bool  # rank-stabilized scaling alpha/sqrt(r) instead of alpha/r
    layers: tuple[int, ...] | None = None  # layer selection; None = every layer
    alpha_mult: float = 2.0  # alpha = alpha_mult * rank
    settings: dict[str, Any] = field(default_factory=dict)  # auto: max_rank, granularity, gain_captured, ...
    schema_version: int = SCHEMA_VERSION  # bumped when fields change meaning

    def __post_init__(self) -> None:
        if not self.entries:
            raise ConfigError(f"Plan '{self.strategy}' has no entries: a placement must adapt at least one module.")
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ConfigError(f"Plan '{self.strategy}' lists a module twice.")
        bad = [e.name for e in self.entries if e.rank < 1]
        if bad:
            raise ConfigError(f"Plan '{self.strategy}': rank must be >= 1 (got {bad[0]}).")
        total = sum(e.params for e in self.entries)
        if total != self.params:
            raise ConfigError(f"Plan '{self.strategy}': `params` is {self.params} but the entries cost {total}.")

    @property
    def pct(self) -> float:
        """LoRA parameters as a percentage of the base model (nan when base_params is unknown)."""
        return 100.0 * self.params / self.base_params if self.base_params else float("nan")

    @property
    def ranks(self) -> dict[str, int]:
        return {e.name: e.rank for e in self.entries}

    def save(self, path: str | Path) -> Path:
        """Write JSON to `path` (a file, or a directory that receives plan.json)."""
        path = Path(path)
        return write_json(path / "plan.json" if path.is_dir() else path, self)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        return from_dict(cls, read_json(path / "plan.json" if path.is_dir() else path))

    def to_peft_dict(self) -> dict[str, Any]:
        """PEFT LoraConfig keyword arguments.

        `target_modules` holds full names: PEFT adapts a module whose name equals an entry or ends
        with "." + entry, so a full name hits exactly one module (also under a PeftModel prefix).
        `r` / `lora_alpha` are the most common rank / alpha; `rank_pattern` / `alpha_pattern` list
        only the modules that differ, keyed by the *escaped* full name. PEFT matches those keys as
        regexes, `re.match(rf"(.*\\.)?({key})$", name)`, so an escaped full name matches exactly
        its own module: "layer\\.1\\.attention..." can never hit "layer.11.attention...".
        """
        r = _most_common([e.rank for e in self.entries])
        alpha = _most_common([e.alpha for e in self.entries])
        return {
            "target_modules": [e.name for e in self.entries],
            "r": r,
            "lora_alpha": _num(alpha),
            "rank_pattern": {re.escape(e.name): e.rank for e in self.entries if e.rank != r},
            "alpha_pattern": {re.escape(e.name): _num(e.alpha) for e in self.entries if e.alpha != alpha},
            "use_rslora": self.rslora,
        }

    def to_peft_config(self, task_type: str | None = None, *, modules_to_save: list[str] | None = None, **kwargs):
        """The real `peft.LoraConfig`. `task_type` e.g. "SEQ_CLS" or "CAUSAL_LM"; the caller decides
        `modules_to_save` (e.g. ["classifier"]); extra kwargs (lora_dropout, ...) pass through."""
        from peft import LoraConfig

        return LoraConfig(task_type=task_type, modules_to_save=modules_to_save, **self.to_peft_dict(), **kwargs)

    def to_python_snippet(self, task_type: str | None = None) -> str:
        """A ready-to-paste `LoraConfig(...)` Python snippet equivalent to `to_peft_config`."""
        d = self.to_peft_dict()
        lines = ["from peft import LoraConfig", "", "config = LoraConfig("]
        if task_type:
            lines.append(f"    task_type={task_type!r},")
        lines += [f"    r={d['r']},", f"    lora_alpha={d['lora_alpha']!r},", "    target_modules=["]
        lines += [f"        {n!r}," for n in d["target_modules"]] + ["    ],"]
        for key in ("rank_pattern", "alpha_pattern"):
            if d[key]:
                lines.append(f"    {key}={{")
                lines += [f'        r"{k}": {v!r},' for k, v in d[key].items()]
                lines.append("    },")
        lines += [f"    use_rslora={d['use_rslora']},", ")"]
        return "\n".join(lines) + "\n"


def _most_common(values: list) -> Any:
    """Most frequent value; ties go to the smallest (deterministic)."""
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


# ----------------------------------------------------------------------------- selection


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
        if lo > hi or hi >= n_layers:
            raise ConfigError(f"Layer selection '{item}' is outside this model's layers 0-{n_layers - 1}.")
        out.update(range(lo, hi + 1))
    if not out:
        raise ConfigError(f"Layer selection '{spec}' selects no layer.")
    return sorted(out)


def _block_roles(ref: ModuleRef) -> tuple[str, ...]:
    """Roles inside a fused weight (empty for an unfused one)."""
    return tuple(b.role for b in ref.blocks) or FUSED_BLOCKS.get(ref.role, ())


def _requested_roles(strategy: str) -> tuple[set[str], set[str]]:
    """(all requested roles, roles named explicitly) for "all", "attention", "ffn", "q,v", "attention,up"."""
    known = set(GROUPS) | set(ROLE_ORDER)
    roles: set[str] = set()
    explicit: set[str] = set()
    for tok in (t.strip().lower() for t in strategy.split(",")):
        if tok in GROUPS:
            roles.update(GROUPS[tok])
        elif tok in ROLE_ORDER:
            roles.add(tok)
            explicit.add(tok)
        elif tok == "auto":
            raise ConfigError("Strategy 'auto' takes gains and a budget: use auto_plan, not a fixed rank.")
        else:
            raise ConfigError(
                f"Unknown strategy or role '{tok}' in '{strategy}' (strategies: all, attention, ffn, auto; "
                f"roles: {', '.join(ROLE_ORDER)}).{did_you_mean(tok, known)}"
            )
    return roles, explicit


def select_modules(refs: list[ModuleRef], strategy: str, layers: list[int] | None = None) -> list[tuple[ModuleRef, str]]:
    """(ref, note) for each module a fixed strategy adapts, in refs order. A fused module is
    selected when its own role or any of its block roles is requested (the note says which)."""
    roles, explicit = _requested_roles(strategy)
    present_roles = {r.role for r in refs} | {b for r in refs for b in _block_roles(r)}
    missing = sorted(explicit - present_roles, key=ROLE_ORDER.index)
    if missing:
        have = ", ".join(r for r in ROLE_ORDER if r in present_roles)
        raise ConfigError(f"Strategy '{strategy}': role {', '.join(missing)} is not in this model (roles: {have}).")
    if layers is not None:
        present_layers = {r.layer for r in refs}
        absent = sorted(set(layers) - present_layers)
        if absent:
            raise ConfigError(f"Layers {absent} do not exist (this model has layers {_span(present_layers)}).")
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
        where = f" in layers {_span(layers)}" if layers is not None else ""
        raise ConfigError(f"Strategy '{strategy}'{where} selected no module (roles in this model: {have}).")
    return chosen


def _span(layers) -> str:
    s = sorted(layers)
    return f"{s[0]}-{s[-1]}" if s and s == list(range(s[0], s[-1] + 1)) and len(s) > 1 else ",".join(map(str, s))


def _entry(ref: ModuleRef, rank: int, alpha_mult: float, note: str = "") -> PlanEntry:
    return PlanEntry(ref.name, ref.layer, ref.kind, ref.role, tuple(ref.shape), rank, alpha_mult * rank, note)


# ----------------------------------------------------------------------------- fixed strategies


def fixed_plan(refs: list[ModuleRef], strategy: str, rank: int, *, layers: list[int] | None = None,
               alpha_mult: float = 2.0, base_params: int = 0, rslora: bool = False,
               budget: int | None = None) -> Plan:
    """Uniform rank `rank` on every module the strategy selects (see `select_modules`)."""
    if not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"rank must be an integer >= 1 (got {rank!r}).")
    if alpha_mult <= 0:
        raise ConfigError(f"alpha_mult must be > 0 (got {alpha_mult}).")
    chosen = select_modules(refs, strategy, layers)
    entries = tuple(_entry(ref, rank, alpha_mult, note) for ref, note in chosen)
    return Plan(_normalize(strategy), entries, budget, sum(e.params for e in entries), base_params, rslora,
                tuple(layers) if layers is not None else None, alpha_mult)


def fixed_plan_for_budget(refs: list[ModuleRef], strategy: str, budget: int, *, layers: list[int] | None = None,
                          alpha_mult: float = 2.0, base_params: int = 0, rslora: bool = False) -> Plan:
    """The fixed placement that spends `budget` as fully as uniform ranks allow (for equal-parameter
    comparisons, e.g. --budget-like all@8).

    Every selected module gets r = floor(budget / sum(out + in)); then, in module order, modules are
    raised to r + 1 while the step still fits. The result satisfies
    budget - (largest selected out + in) < params <= budget, i.e. it lands within one module's
    rank-1 cost of the target, with ranks r or r + 1. r < 1 is reported as infeasible, never rounded up."""
    chosen = select_modules(refs, strategy, layers)
    per_rank = sum(ref.shape[0] + ref.shape[1] for ref, _ in chosen)
    rank = budget // per_rank
    if rank < 1:
        raise BudgetError(
            f"Budget {budget:,} params is too small for strategy '{strategy}' at rank 1, which costs {per_rank:,} params."
        )
    left = budget - rank * per_rank
    entries = []
    for ref, note in chosen:
        step = ref.shape[0] + ref.shape[1]
        r = rank + 1 if step <= left else rank
        left -= step * (r - rank)
        entries.append(_entry(ref, r, alpha_mult, note))
    return Plan(_normalize(strategy), tuple(entries), budget, sum(e.params for e in entries), base_params, rslora,
                tuple(layers) if layers is not None else None, alpha_mult)


def _normalize(strategy: str) -> str:
    return ",".join(t.strip().lower() for t in strategy.split(",") if t.strip())


def validate_strategy_args(strategy: str, rank: int | None, budget: int | str | None) -> None:
    """Check the CLI combination of --strategy, --rank and --budget.

    Fixed strategies need exactly one of rank or budget (with a budget they take the largest
    uniform rank that fits); auto needs a budget and rejects a rank (it chooses ranks itself).
    """
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        raise ConfigError(f"--rank must be an integer >= 1 (got {rank!r}).")
    if strategy.strip().lower() == "auto":
        if rank is not None:
            raise ConfigError("--rank cannot be used with strategy auto: auto chooses each module's rank; "
                              "set --budget (and --max-rank to cap it).")
        if budget is None:
            raise ConfigError("Strategy auto needs --budget (e.g. 300k, 0.5%, all@8).")
        return
    _requested_roles(strategy)  # raises on unknown names
    if rank is None and budget is None:
        raise ConfigError(f"Strategy '{strategy}' needs --rank or --budget.")
    if rank is not None and budget is not None:
        raise ConfigError(f"Strategy '{strategy}': give --rank or --budget, not both "
                          "(with a budget it takes the largest uniform rank that fits).")


# ----------------------------------------------------------------------------- budgets


_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def parse_budget(text: str, *, base_params: int, refs: list[ModuleRef]) -> int:
    """Parameter budget from "300k", "1.5M", "12000", "0.5%" (of base_params) or "STRATEGY@RANK"
    ("all@8" = what strategy `all` costs at rank 8). BudgetError if even the cheapest rank-1
    adapter (min over refs of out + in) does not fit."""
    s = str(text).strip()
    try:
        if "@" in s:
            strategy, r = s.rsplit("@", 1)
            value = fixed_plan(refs, strategy, int(r)).params
        elif s.endswith("%"):
            if base_params <= 0:
                raise ConfigError(f"Budget '{s}' is a share of the model, but the base parameter count is unknown.")
            value = int(Decimal(s[:-1]) * base_params / 100)
        else:
            m = re.fullmatch(r"([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([kKmMgGbB]?)", s)
            if not m:
                raise ValueError(s)
            value = int(Decimal(m.group(1).replace("_", "").replace(",", "")) * _SUFFIX[m.group(2).lower()])
    except (ValueError, InvalidOperation):
        raise ConfigError(f"Cannot parse budget '{s}': use a parameter count (300k, 1.5M, 12000), "
                          "a share of the model (0.5%) or STRATEGY@RANK (all@8).") from None
    if refs:
        cheapest = min(refs, key=lambda r: r.shape[0] + r.shape[1])
        minimum = cheapest.shape[0] + cheapest.shape[1]
        if value < minimum:
            raise BudgetError(f"Budget {value:,} params is below the minimum {minimum:,}: "
                              f"a rank-1 adapter on {cheapest.name} alone costs that much.")
    return value


# ----------------------------------------------------------------------------- auto


def auto_plan(refs: list[ModuleRef], gains: dict[str, np.ndarray], budget: int, *, max_rank: int = 64,
              granularity: int = 1, alpha_mult: float = 2.0, base_params: int = 0, rslora: bool = False) -> Plan:
    """Water-fill LoRA rank over modules under a parameter budget.

    gains[name] = sigma_i^2 of the module's mean gradient (descending). Under a first-order model
    the loss decrease of a rank-r update of module j is sum_{i<=r} sigma_{j,i}^2, so a step that
    grows module j from rank r to r+g gains sum_{r<i<=r+g} sigma_{j,i}^2 and costs g * (out + in).

    Greedy: repeatedly take the step with the largest gain per parameter (a heap; ties go to the
    module listed first in `refs`); a step that no longer fits the remaining budget retires its
    module (its later steps cost the same); stop when no step fits. Steps with zero gain are never
    bought (a spectrum shorter than the rank cap adds nothing), so the budget may be left unspent.
    Modules that end at rank 0 get no adapter; modules absent from `gains` are not candidates.

    Why greedy is right here: sigma is sorted, so each module's step gains are non-increasing
    while its step cost is constant, i.e. its gain per parameter is non-increasing. The problem is
    then a knapsack over steps in which taking steps in ratio order automatically respects each
    module's prefix order, so greedy solves the fractional relaxation exactly and the integer
    solution it returns is within one step's gain of the optimum. With equal step costs the
    budget buys a fixed number of steps and greedy takes the largest gains: exactly optimal.

    Rank cap per module: the largest multiple of `granularity` <= min(max_rank, out, in).
    """
    if max_rank < 1 or granularity < 1 or max_rank < granularity:
        raise ConfigError(f"Need 1 <= granularity <= max_rank (got granularity={granularity}, max_rank={max_rank}).")
    if alpha_mult <= 0:
        raise ConfigError(f"alpha_mult must be > 0 (got {alpha_mult}).")
    known = {r.name for r in refs}
    unknown = sorted(set(gains) - known)
    if unknown:
        raise ConfigError(f"Gains given for {len(unknown)} module(s) not in this model, e.g. {unknown[0]} "
                          "(was the probe report made for another model?).")
    cands = [r for r in refs if r.name in gains]
    if not cands:
        raise ConfigError("Strategy auto: no module of this model has gains (empty probe report?).")
    g = granularity
    steps, costs = [], []
    for ref in cands:
        sig2 = np.asarray(gains[ref.name], dtype=np.float64).ravel()  # (k,)
        if not np.all(np.isfinite(sig2)) or np.any(sig2 < 0):
            raise ConfigError(f"Gains for {ref.name} must be finite and >= 0.")
        cap = min(max_rank, *ref.shape) // g * g
        padded = np.zeros(cap)  # (cap,)
        top = np.sort(sig2)[::-1][:cap]
        padded[: len(top)] = top
        steps.append(padded.reshape(-1, g).sum(axis=1) if cap else padded)  # (cap // g,) gain of each step
        costs.append(lora_cost(ref.shape, g))
    cheapest = int(np.argmin(costs))
    if budget < costs[cheapest]:
        raise BudgetError(f"Budget {budget:,} params is below the minimum {costs[cheapest]:,}: "
                          f"a rank-{g} adapter on {cands[cheapest].name} alone costs that much.")

    ranks = [0] * len(cands)
    heap = [(-s[0] / c, j, 0) for j, (s, c) in enumerate(zip(steps, costs)) if len(s) and s[0] > 0]
    heapq.heapify(heap)  # entries: (-gain per param, module index, step index)
    left = budget
    while heap:
        _, j, k = heapq.heappop(heap)
        if costs[j] > left:
            continue  # this module's later steps cost the same: retire it
        ranks[j] += g
        left -= costs[j]
        if k + 1 < len(steps[j]) and steps[j][k + 1] > 0:
            heapq.heappush(heap, (-steps[j][k + 1] / costs[j], j, k + 1))

    entries = tuple(_entry(ref, r, alpha_mult) for ref, r in zip(cands, ranks) if r > 0)
    if not entries:
        raise ConfigError("Strategy auto placed no adapter: every module's gains are zero.")
    total_gain = sum(float(np.sum(np.asarray(gains[r.name], dtype=np.float64))) for r in cands)
    got = sum(float(s[: r // g].sum()) for s, r in zip(steps, ranks))
    settings = {"max_rank": max_rank, "granularity": g, "candidates": len(cands),
                "gain_captured": got / total_gain if total_gain > 0 else 0.0}
    return Plan("auto", entries, budget, sum(e.params for e in entries), base_params, rslora, None, alpha_mult, settings)


# ----------------------------------------------------------------------------- PEFT checks and tables


def actual_adapters(peft_model, adapter: str = "default") -> dict[str, tuple[int, float]]:
    """{module name: (rank, alpha)} of every LoRA layer PEFT built for `adapter`."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.r:
            out[name] = (int(module.r[adapter]), float(module.lora_alpha[adapter]))
    return out


def verify_peft_model(peft_model, plan: Plan, adapter: str = "default") -> None:
    """Raise ConfigError unless every planned module got exactly its planned rank and alpha and
    no other module got an adapter. Names match when equal or when the model's name ends with
    "." + planned name (PeftModel prefixes "base_model.model.")."""
    actual = actual_adapters(peft_model, adapter)
    planned = {e.name: e for e in plan.entries}
    problems, seen = [], set()
    for name, (r, alpha) in actual.items():
        e = planned.get(name) or next((p for n, p in planned.items() if name.endswith("." + n)), None)
        if e is None:
            problems.append(f"{name}: unplanned adapter r={r}")
            continue
        seen.add(e.name)
        if r != e.rank:
            problems.append(f"{e.name}: rank {r}, planned {e.rank}")
        elif abs(alpha - e.alpha) > 1e-9:
            problems.append(f"{e.name}: alpha {_num(alpha)}, planned {_num(e.alpha)}")
    problems += [f"{n}: planned r={planned[n].rank}, no adapter" for n in planned if n not in seen]
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigError(f"PEFT model does not match plan '{plan.strategy}': {'; '.join(problems[:5])}{more}.")


def plan_table(plan: Plan) -> list[dict[str, Any]]:
    """Rows by layer: {"layer", <role>: rank (0 = no adapter) for each role in the plan, "params"}."""
    roles = [r for r in ROLE_ORDER if any(e.role == r for e in plan.entries)]
    rows: dict[int, dict[str, Any]] = {}
    for e in plan.entries:
        row = rows.setdefault(e.layer, {"layer": e.layer, **{r: 0 for r in roles}, "params": 0})
        row[e.role] = e.rank
        row["params"] += e.params
    return [rows[k] for k in sorted(rows)]
