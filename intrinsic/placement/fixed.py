"""Plans of fixed strategies: a uniform rank on every selected module, or the largest uniform
ranks that fit a parameter budget (for equal-parameter comparisons such as `--budget-like all@8`)."""

from __future__ import annotations

from ..arch import ModuleRef
from ..errors import BudgetError, ConfigError
from .plan import Plan, plan_entry
from .request import KNOB_DEFAULTS
from .strategies import canonical, select_modules


def fixed_plan(refs: list[ModuleRef], strategy: str, rank: int, *, layers: list[int] | None = None,
               alpha_mult: float = KNOB_DEFAULTS["alpha_mult"], base_params: int = 0, rslora: bool = False,
               budget: int | None = None) -> Plan:
    """Uniform rank `rank` on every module the strategy selects (see `select_modules`)."""
    if not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"rank must be an integer >= 1 (got {rank!r}).")
    if alpha_mult <= 0:
        raise ConfigError(f"alpha_mult must be > 0 (got {alpha_mult}).")
    chosen = select_modules(refs, strategy, layers)
    entries = tuple(plan_entry(ref, rank, alpha_mult, note) for ref, note in chosen)
    check_ranks(entries, f"use --rank {min(min(e.shape) for e in entries)} or less")
    return Plan(strategy=canonical(strategy), entries=entries, budget=budget, params=sum(e.params for e in entries),
                base_params=base_params, rslora=rslora, layers=tuple(layers) if layers is not None else None,
                alpha_mult=alpha_mult)


def check_ranks(entries, hint: str) -> None:
    """ConfigError when an entry's rank exceeds min(out, in) of its weight (an adapter of higher rank
    than the matrix it updates only adds parameters); `hint` names the option that helps."""
    for e in entries:
        if e.rank > min(e.shape):
            raise ConfigError(f"LoRA rank {e.rank} is above {min(e.shape)} = min(out, in) of {e.name} "
                              f"({e.shape[0]}x{e.shape[1]}), the most a rank can be: {hint}.")


def fixed_plan_for_budget(refs: list[ModuleRef], strategy: str, budget: int, *, layers: list[int] | None = None,
                          alpha_mult: float = KNOB_DEFAULTS["alpha_mult"], base_params: int = 0,
                          rslora: bool = False) -> Plan:
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
        entries.append(plan_entry(ref, r, alpha_mult, note))
    top = min(min(ref.shape) for ref, _ in chosen)
    check_ranks(entries, f"strategy '{strategy}' at rank {top} costs {top * per_rank:,} params: give a budget of "
                         f"at most {top * per_rank:,} (--budget)")
    return Plan(strategy=canonical(strategy), entries=tuple(entries), budget=budget,
                params=sum(e.params for e in entries), base_params=base_params, rslora=rslora,
                layers=tuple(layers) if layers is not None else None, alpha_mult=alpha_mult)
