"""Placement resolution for training runs (`resolve_placement`, `build_plan`); the trainer itself is
`intrinsic.training`. These functions move into `intrinsic.placement` (issue 8, placement seam)."""

from __future__ import annotations

from collections.abc import Callable

from .errors import ConfigError

DEFAULT_RANK = 8  # fixed strategies without --rank or --budget
DEFAULT_AUTO_BUDGET = "all@8"  # auto without a budget: the parameters of `all` at the default rank
PROBE_FOR_AUTO = dict(batches=12, update_steps=None)  # the quick gradient probe `train --placement auto` runs


def resolve_placement(placement: str, rank: int | None = None, budget: str | None = None,
                      budget_like: str | None = None) -> tuple[str, int | None, str | None]:
    """Check how a placement is sized and fill in defaults: (placement, rank, budget text).

    full takes nothing; auto takes a budget (default all@8) and no rank; fixed strategies take a
    rank or a budget (default rank 8). --budget-like S@R is a budget written as STRATEGY@RANK.
    """
    from .placement import validate_strategy_args

    p = placement.strip().lower()
    if budget is not None and budget_like is not None:
        raise ConfigError("Give --budget or --budget-like, not both.")
    if budget_like is not None and "@" not in budget_like:
        raise ConfigError(f"--budget-like takes STRATEGY@RANK such as all@8, got '{budget_like}'.")
    text = budget if budget is not None else budget_like
    if p == "full":
        if rank is not None or text is not None:
            raise ConfigError("--placement full trains every weight: --rank, --budget and --budget-like do not apply.")
        return p, None, None
    if p == "auto":
        text = text if text is not None else DEFAULT_AUTO_BUDGET
    elif rank is None and text is None:
        rank = DEFAULT_RANK
    validate_strategy_args(p, rank, text)
    return p, rank, text


def build_plan(refs, placement: str, *, rank: int | None = None, budget: str | None = None,
               layers: str | None = None, base_params: int = 0, gains: Callable[[], dict] | None = None,
               max_rank: int = 64, granularity: int = 1, alpha_mult: float = 2.0, rslora: bool = False):
    """The Plan (or "full") for a placement already checked by `resolve_placement`.

    `refs` are the model's ModuleRefs; `layers` a selection such as "0-2" or "upper"; `gains` is
    called (once, only for auto) for sigma^2 per module, e.g. `lambda: ProbeReport.load(d).gains()`.
    """
    from .placement import auto_plan, fixed_plan, fixed_plan_for_budget, parse_budget, parse_layers

    if placement == "full":
        return "full"
    chosen = parse_layers(layers, max(r.layer for r in refs) + 1) if layers else None
    common = dict(alpha_mult=alpha_mult, base_params=base_params, rslora=rslora)
    if rank is not None:
        return fixed_plan(refs, placement, rank, layers=chosen, **common)
    amount = parse_budget(budget, base_params=base_params, refs=refs)
    if placement != "auto":
        return fixed_plan_for_budget(refs, placement, amount, layers=chosen, **common)
    if gains is None:
        raise ConfigError("Placement auto needs a probe report (--probe DIR).")
    cands = [r for r in refs if chosen is None or r.layer in chosen]
    names = {r.name for r in cands}
    g = {k: v for k, v in gains().items() if k in names}
    return auto_plan(cands, g, amount, max_rank=max_rank, granularity=granularity, **common)
