"""LoRA placement plans: the typed `Plan` (module name -> rank, alpha), its cost, its export to PEFT,
and proof that PEFT obeyed.

A `Plan` is a JSON-serializable list of `PlanEntry` rows. A rank-r LoRA adapter on an (m, n) =
(out, in) weight costs r * (m + n) parameters (A: r x n, B: m x r; biases untouched). Plans export
to PEFT's own format (full module names in `target_modules`, escaped names in `rank_pattern` /
`alpha_pattern`), and `verify_peft_model` checks the adapters PEFT actually built, because PEFT
silently ignores pattern keys that match nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arch import ROLE_ORDER, ModuleRef
from ..errors import ConfigError
from ..results import from_dict, read_json, write_json

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
    settings: dict[str, Any] = field(default_factory=dict)  # auto: max_rank, granularity, gain_captured, unspent, fill ...
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

    def unspent_note(self) -> str:
        """A sentence saying how much of auto's budget was left unspent ('' when none was)."""
        left = int(self.settings.get("unspent", 0))
        if left <= 0 or not self.budget:
            return ""
        filled = "fill" in self.settings or self.settings.get("gains") != "signal"
        hint = "" if filled else (" --fill spread spends it over every module, lowest rank first (on SmolLM2 at "
                                  "all@32 it closed auto's gap to `all`: 54.0 vs 53.9 perplexity, 5 seeds; plain "
                                  "auto 55.5); "
                                  "--fill raw, on the raw gradient spectrum, was worse than plain auto there.")
        return (f"{left:,} params of the {self.budget:,} budget ({100 * left / self.budget:.1f}%) left unspent: no "
                "candidate module could take another rank step (at its --max-rank cap, no gain left, or too costly)."
                + hint)

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


def plan_entry(ref: ModuleRef, rank: int, alpha_mult: float, note: str = "") -> PlanEntry:
    """The PlanEntry of `ref` at `rank`, with alpha = alpha_mult * rank."""
    return PlanEntry(ref.name, ref.layer, ref.kind, ref.role, tuple(ref.shape), rank, alpha_mult * rank, note)


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
