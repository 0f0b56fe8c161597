"""What a user asks of a placement (`PlacementRequest`, each setting documented once) and the one
function that turns a request into a plan (`make_plan`).

The CLI (`intrinsic plan`, `intrinsic train`) and the study runner build a `PlacementRequest` and
call `make_plan`; the CLI reads its option help from `field_help(PlacementRequest)`. This module
imports only the standard library and the strategy vocabulary at load time (no torch, no numpy),
so `--help` stays fast; the plan builders are imported when a plan is made.

Defaults: a fixed strategy without rank or budget gets rank `DEFAULT_RANK`; `auto` without a
budget gets `DEFAULT_AUTO_BUDGET` (the parameters of `all` at the default rank); `full` takes
neither. The placement knobs (`KNOBS`: `max_rank`, `granularity`, `alpha_mult`, `rslora`, `gains`,
`normalize`, `predictor`, `fill`) have their defaults here and nowhere else. `fill` defaults to "none", so
every plan made before it existed is made again unchanged; "raw" and "spread" plans are made as before "spread"
existed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BudgetError, ConfigError, did_you_mean
from ..fields import documented, field_defaults
from .strategies import SPECIAL_STRATEGIES, check_strategy

if TYPE_CHECKING:
    from ..arch import ModuleRef
    from .plan import Plan

DEFAULT_RANK = 8  # fixed strategies without a rank or a budget
DEFAULT_AUTO_BUDGET = "all@8"  # auto without a budget: the parameters of `all` at the default rank
KNOBS = ("max_rank", "granularity", "alpha_mult", "rslora", "gains", "normalize",
         "predictor", "fill")  # strategy-independent settings
GAIN_SOURCES = ("raw", "signal")  # = probes.schema.GAIN_SOURCES (not imported: this module loads without numpy)
GAIN_NORMALIZE = ("none", "module")  # = probes.schema.GAIN_NORMALIZE
FILL_MODES = ("none", "raw", "spread")  # what auto spends the budget its gains leave on
PREDICTORS = ("gradient", "example_energy", "update", "activation", "weight_alpha",
              "params")  # = the names of placement.need.REGISTRY (checked there)


@dataclass(frozen=True)
class PlacementRequest:
    """Which modules get a LoRA adapter and how large: a strategy sized by a rank or a budget."""

    strategy: str = documented(help="all | attention | ffn | auto | full | a role list such as q,v "
                                    "(roles: q k v o qkv up gate down gate_up); stored in canonical form.")
    rank: int | None = documented(None, "Uniform rank of a fixed strategy (default 8 when no budget is given); "
                                        "not for auto, which chooses each module's rank.")
    budget: str | None = documented(None, "Parameter budget: 300k, 1.5M, 0.5% (of the base model) or STRATEGY@RANK "
                                          "(all@8); a fixed strategy takes the largest uniform rank that fits; "
                                          "auto defaults to all@8.")
    layers: str | None = documented(None, "Adapt only these layers: 0-2, 1,3, lower|middle|upper (None: every layer).")
    max_rank: int = documented(64, "auto: largest rank of one module.")
    granularity: int = documented(1, "auto: ranks are multiples of this.")
    alpha_mult: float = documented(2.0, "alpha = alpha_mult x rank (LoRA scales updates by alpha/r).")
    rslora: bool = documented(False, "Rank-stabilised scaling alpha/sqrt(r) instead of alpha/r.")
    gains: str | None = documented(None, "auto: what it water-fills on: signal (only the directions the sign-flip test "
                                         "keeps, each with its energy above the noise) or raw (every sigma^2 of the mean "
                                         "gradient, noise included); None: signal when the probe kept fold means, else raw.")
    normalize: str = documented("none", "auto: none, or module (each module's gains as shares of its own gradient "
                                        "energy, as Adam's per-parameter scaling equalises modules).")
    predictor: str | None = documented(None, "auto: the probe statistic it allocates rank by: gradient (mean-gradient "
                                             "energy), example_energy, update (dW energy), activation (input variance, "
                                             "as EVA), weight_alpha (WeightWatcher alpha) or params (null); None: "
                                             "gradient.")
    fill: str = documented("none", "auto: what it spends the budget left once every step with a gain is bought on: "
                                   "none (leave it unspent), raw (continue water-filling on the raw sigma^2 of the "
                                   "mean gradient, noise included, from the ranks bought; predictor gradient only) or "
                                   "spread (raise every candidate module one rank step at a time, lowest rank first, "
                                   "as `all` at the uniform rank the rest affords).")

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str):
            raise ConfigError(f"`strategy` must be a string such as 'all' or 'q,v', got {self.strategy!r}.")
        strategy = check_strategy(self.strategy)
        for name in KNOBS:
            problem = knob_problem(name, getattr(self, name))
            if problem:
                hint = did_you_mean(str(getattr(self, name)), PREDICTORS) if name == "predictor" else ""
                raise ConfigError(f"`{name}` must be {problem}, got {getattr(self, name)!r}.{hint}")
        if self.predictor not in (None, "gradient") and (self.gains is not None or self.normalize != "none"):
            raise ConfigError(f"`gains` and `normalize` choose how auto reads the mean gradient (predictor gradient); "
                              f"predictor {self.predictor} allocates by its own statistic: leave them out.")
        if self.fill == "raw" and self.predictor not in (None, "gradient"):
            raise ConfigError(f"`fill` continues water-filling on the raw mean-gradient spectrum (predictor gradient); "
                              f"predictor {self.predictor} allocates by its own statistic: leave `fill` out.")
        rank, budget = self.rank, self.budget
        if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
            raise ConfigError(f"`rank` must be an integer >= 1, got {rank!r}.")
        if budget is not None:
            if not isinstance(budget, str):
                raise ConfigError(f"`budget` must be a string such as '300k', '0.5%' or 'all@8', got {budget!r}.")
            budget = budget.strip()
            parse_budget_text(budget)
        if self.layers is not None and (not isinstance(self.layers, str) or not self.layers.strip()):
            raise ConfigError(f"`layers` must be a selection such as '0-2' or 'upper', got {self.layers!r}.")
        if strategy == "full":
            if rank is not None or budget is not None:
                raise ConfigError("Strategy full trains every weight: `rank` and `budget` do not apply.")
        elif strategy == "auto":
            if rank is not None:
                raise ConfigError("`rank` cannot be used with strategy auto: auto chooses each module's rank; "
                                  "set `budget` (and `max_rank` to cap it).")
            budget = DEFAULT_AUTO_BUDGET if budget is None else budget
        elif rank is not None and budget is not None:
            raise ConfigError(f"Strategy '{strategy}': give `rank` or `budget`, not both "
                              "(with a budget it takes the largest uniform rank that fits).")
        elif rank is None and budget is None:
            rank = DEFAULT_RANK
        for name, value in (("strategy", strategy), ("rank", rank), ("budget", budget),
                            ("alpha_mult", float(self.alpha_mult))):
            object.__setattr__(self, name, value)  # canonical strategy, defaults filled in, alpha a float


def knob_problem(name: str, value: Any) -> str | None:
    """What a value of placement knob `name` must be, when `value` is not that; None when it is fine.
    Shared with the study files' [placement] table, so both accept exactly the same values."""
    if name in ("max_rank", "granularity"):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "an integer >= 1"
    if name == "alpha_mult":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return None if ok else "a number > 0"
    if name == "rslora":
        return None if isinstance(value, bool) else "true or false"
    if name == "gains":
        return None if value is None or value in GAIN_SOURCES else " or ".join(GAIN_SOURCES)
    if name == "normalize":
        return None if value in GAIN_NORMALIZE else " or ".join(GAIN_NORMALIZE)
    if name == "predictor":
        return None if value is None or value in PREDICTORS else "one of " + ", ".join(PREDICTORS)
    if name == "fill":
        return None if value in FILL_MODES else ", ".join(FILL_MODES[:-1]) + " or " + FILL_MODES[-1]
    raise KeyError(name)


KNOB_DEFAULTS = {k: v for k, v in field_defaults(PlacementRequest).items() if k in KNOBS}

_COUNT = re.compile(r"([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([kKmMgGbB]?)")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def parse_budget_text(text: str) -> tuple[str, Any]:
    """The form of a budget, without a model: ("like", (strategy, rank)) for "all@8", ("share",
    Decimal percent) for "0.5%", ("count", params) for "300k" / "1.5M" / "12_000"."""
    s = str(text).strip()
    try:
        if "@" in s:
            strategy, r = s.rsplit("@", 1)
            like = check_strategy(strategy)
            if like in SPECIAL_STRATEGIES:
                raise ConfigError(f"Budget '{s}': STRATEGY@RANK needs a fixed strategy such as all or q,v.")
            return "like", (like, int(r))
        if s.endswith("%"):
            return "share", Decimal(s[:-1])
        m = _COUNT.fullmatch(s)
        if not m:
            raise ValueError(s)
        return "count", int(Decimal(m.group(1).replace("_", "").replace(",", "")) * _SUFFIX[m.group(2).lower()])
    except (ValueError, InvalidOperation):
        raise ConfigError(f"Cannot parse budget '{s}': use a parameter count (300k, 1.5M, 12000), "
                          "a share of the model (0.5%) or STRATEGY@RANK (all@8).") from None


def make_plan(refs: list[ModuleRef], request: PlacementRequest, *, base_params: int,
              gains: Callable[[], Any] | Any = None,
              model_refs: list[ModuleRef] | None = None) -> Plan | Literal["full"]:
    """The Plan of `request` on a model's ModuleRefs, or "full" for full fine-tuning.

    `base_params` sizes percentage budgets (0 = unknown). `gains` (only read by auto) is a ProbeReport
    (whose `gains(request.gains, request.normalize)` auto water-fills on), or a mapping of module names
    to per-direction gains given as they are, or a function returning either, called once and only
    for auto, e.g. `lambda: ProbeReport.load(d)`. auto's candidates are the modules of the
    selected layers. A STRATEGY@RANK budget ("all@8") always means what that strategy costs over
    every module of the model: `model_refs` lists them when `refs` are fewer (a probe of a subset).

    Refused (ConfigError / BudgetError): a rank above min(out, in) of a target module, a budget
    above `base_params`, and a plan with more parameters than `base_params` (when known).
    """

    if request.strategy == "full":
        return "full"
    plan = _make_plan(refs, request, base_params, gains, model_refs or refs)
    if base_params > 0 and plan.params > base_params:
        raise BudgetError(f"Plan '{plan.strategy}' has {plan.params:,} LoRA params, more than the base model "
                          f"({base_params:,} params): use a smaller --rank or --budget.")
    return plan


def _make_plan(refs, request: PlacementRequest, base_params: int, gains, model_refs) -> Plan:
    from .auto import auto_plan, parse_budget
    from .fixed import fixed_plan, fixed_plan_for_budget
    from .strategies import parse_layers

    chosen = parse_layers(request.layers, max(r.layer for r in refs) + 1) if request.layers else None
    common = dict(alpha_mult=request.alpha_mult, base_params=base_params, rslora=request.rslora)
    if request.rank is not None:
        return fixed_plan(refs, request.strategy, request.rank, layers=chosen, **common)
    amount = parse_budget(request.budget, base_params=base_params, refs=model_refs)
    if request.strategy != "auto":
        return fixed_plan_for_budget(refs, request.strategy, amount, layers=chosen, **common)
    if gains is None:
        raise ConfigError("Placement auto needs gains from a probe report (--probe DIR).")
    cands = [r for r in refs if chosen is None or r.layer in chosen]
    names = {r.name for r in cands}
    source = gains() if callable(gains) else gains
    record = {}
    if request.predictor is not None:
        record["predictor"] = request.predictor
    if hasattr(source, "gains") and request.predictor not in (None, "gradient"):  # another statistic of the probe
        from .need import auto_gains

        kind, given = request.predictor, auto_gains(source, request.predictor, request.gains, request.normalize)
    elif hasattr(source, "gains"):  # a ProbeReport: its gains as the request asks
        kind = request.gains or source.default_gain_source()
        given = source.gains(kind, request.normalize)
    elif request.predictor is not None:
        raise ConfigError("`predictor` chooses which statistic of a probe report auto reads; these gains were "
                          "given as numbers.")
    elif request.gains is not None or request.normalize != "none" or request.fill == "raw":
        raise ConfigError("`gains`, `normalize` and `fill = raw` choose what auto reads from a probe report; "
                          "these gains were given as numbers.")
    else:
        kind, given = "given", source
    g = {k: v for k, v in given.items() if k in names}
    fill = None  # fill = raw: the raw spectrum of the same probe (for gains raw, nothing is left to fill)
    if request.fill == "raw":
        fill = {k: v for k, v in source.gains("raw", request.normalize).items() if k in names}
    return auto_plan(cands, g, amount, max_rank=request.max_rank, granularity=request.granularity,
                     record={"gains": kind, "normalize": request.normalize, **record}, fill_gains=fill,
                     spread=request.fill == "spread", **common)
