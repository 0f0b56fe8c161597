"""LoRA placement: which modules get an adapter, at what rank and alpha.

Ask with a `PlacementRequest` (strategy, rank or budget, layers, knobs) and get a `Plan` from
`make_plan`. Inside: `plan` (Plan, PEFT export, verification), `strategies` (the strategy and role
vocabulary, layer selections), `fixed` (uniform-rank plans), `auto` (budgets, water-filling),
`request` (the request and `make_plan`).
"""

from .auto import auto_plan, parse_budget
from .fixed import fixed_plan, fixed_plan_for_budget
from .plan import Plan, PlanEntry, actual_adapters, lora_cost, plan_table, verify_peft_model
from .request import DEFAULT_AUTO_BUDGET, DEFAULT_RANK, PlacementRequest, make_plan
from .strategies import check_strategy, parse_layers, select_modules

__all__ = [
    "DEFAULT_AUTO_BUDGET", "DEFAULT_RANK", "Plan", "PlacementRequest", "PlanEntry", "actual_adapters", "auto_plan",
    "check_strategy", "fixed_plan", "fixed_plan_for_budget", "lora_cost", "make_plan", "parse_budget",
    "parse_layers", "plan_table", "select_modules", "verify_peft_model",
]
