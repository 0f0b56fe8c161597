"""Budgets and the `auto` strategy: parameter budgets from text, and water-filling of LoRA rank
over modules under a budget, from the probe's gradient spectra.

A budget is a parameter count ("300k", "1.5M"), a share of the base model ("0.5%") or what a
fixed strategy costs at a rank ("all@8"); `request.parse_budget_text` reads its form, `parse_budget`
resolves it against a model's modules.
"""

from __future__ import annotations

import heapq

import numpy as np

from ..arch import ModuleRef
from ..errors import BudgetError, ConfigError
from .fixed import fixed_plan
from .plan import Plan, lora_cost, plan_entry
from .request import KNOB_DEFAULTS, parse_budget_text


def parse_budget(text: str, *, base_params: int, refs: list[ModuleRef]) -> int:
    """Parameter budget from "300k", "1.5M", "12000", "0.5%" (of base_params) or "STRATEGY@RANK"
    ("all@8" = what strategy `all` costs at rank 8, counted over `refs`: every module of the
    model). BudgetError if even the cheapest rank-1 adapter (min over refs of out + in) does not
    fit, or if the budget is more than the base model (when `base_params` is known)."""
    s = str(text).strip()
    form, value = parse_budget_text(s)
    if form == "like":
        strategy, rank = value
        value = fixed_plan(refs, strategy, rank).params
    elif form == "share":
        if base_params <= 0:
            raise ConfigError(f"Budget '{s}' is a share of the model, but the base parameter count is unknown.")
        value = int(value * base_params / 100)
    if base_params > 0 and value > base_params:
        raise BudgetError(f"Budget '{s}' ({value:,} params) is more than the base model ({base_params:,} params): "
                          "LoRA adapters are meant to be a small part of the model; give a smaller --budget.")
    if refs:
        cheapest = min(refs, key=lambda r: r.shape[0] + r.shape[1])
        minimum = cheapest.shape[0] + cheapest.shape[1]
        if value < minimum:
            raise BudgetError(f"Budget {value:,} params is below the minimum {minimum:,}: "
                              f"a rank-1 adapter on {cheapest.name} alone costs that much.")
    return value


def auto_plan(refs: list[ModuleRef], gains: dict[str, np.ndarray], budget: int, *,
              max_rank: int = KNOB_DEFAULTS["max_rank"], granularity: int = KNOB_DEFAULTS["granularity"],
              alpha_mult: float = KNOB_DEFAULTS["alpha_mult"], base_params: int = 0, rslora: bool = False,
              record: dict | None = None, fill_gains: dict[str, np.ndarray] | None = None,
              spread: bool = False) -> Plan:
    """Water-fill LoRA rank over modules under a parameter budget.

    gains[name] = sigma_i^2 of the module's mean gradient (descending). Under a first-order model
    the loss decrease of a rank-r update of module j is sum_{i<=r} sigma_{j,i}^2, so a step that
    grows module j from rank r to r+g gains sum_{r<i<=r+g} sigma_{j,i}^2 and costs g * (out + in).

    Greedy: repeatedly take the step with the largest gain per parameter (a heap; ties go to the
    module listed first in `refs`); a step that no longer fits the remaining budget retires its
    module (its later steps cost the same); stop when no step fits. Steps with zero gain are never
    bought (a spectrum shorter than the rank cap adds nothing), so the budget may be left unspent:
    `settings["unspent"]` says how much.
    Modules that end at rank 0 get no adapter; modules absent from `gains` are not candidates.

    Why greedy is right here: sigma is sorted, so each module's step gains are non-increasing
    while its step cost is constant, i.e. its gain per parameter is non-increasing. The problem is
    then a knapsack over steps in which taking steps in ratio order automatically respects each
    module's prefix order, so greedy solves the fractional relaxation exactly and the integer
    solution it returns is within one step's gain of the optimum. With equal step costs the
    budget buys a fixed number of steps and greedy takes the largest gains: exactly optimal.

    Rank cap per module: the largest multiple of `granularity` <= min(max_rank, out, in).
    `record` is added to the plan's settings as it is (e.g. which gains were used).

    Fill (`fill_gains`, the knob `fill = "raw"`): when the greedy above stops with budget left, the same
    greedy continues on `fill_gains` (the raw sigma^2 of each module's mean gradient, noise included) from
    each module's current rank: only the steps beyond the rank already bought, with the same rank cap,
    granularity and cost, best gain per parameter first. Settings then record `fill`, `filled_params` (what
    the fill phase bought) and `unspent` after both phases; `gain_captured` stays a share of `gains`.
    Without `fill_gains` the plan (settings included) is exactly as before the knob existed.

    Spread (`spread=True`, the knob `fill = "spread"`): when the greedy stops with budget left, every candidate
    module is raised by one step of `granularity` at a time, lowest current rank first (ties: the order of
    `refs`), each step at its module's cost, up to its rank cap; a module whose step no longer fits is retired
    (`_spread`). With equal step costs this is a water level: every module ends at max(its greedy rank, L) or
    L + g, L the uniform rank the leftover affords. Settings record fill "spread" and `filled_params`. Both fill
    phases run before the check that some adapter was placed, so a plan with no tested signal spreads the whole
    budget (`all` at the uniform rank it affords).
    """
    if max_rank < 1 or granularity < 1 or max_rank < granularity:
        raise ConfigError(f"Need 1 <= granularity <= max_rank (got granularity={granularity}, max_rank={max_rank}).")
    if fill_gains is not None and spread:
        raise ConfigError("auto fills the budget left on the raw spectrum (fill raw) or by spreading it (fill spread), "
                          "not both.")
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
    steps = [_step_gains(ref, gains[ref.name], max_rank, g) for ref in cands]
    costs = [lora_cost(ref.shape, g) for ref in cands]
    cheapest = int(np.argmin(costs))
    if budget < costs[cheapest]:
        raise BudgetError(f"Budget {budget:,} params is below the minimum {costs[cheapest]:,}: "
                          f"a rank-{g} adapter on {cands[cheapest].name} alone costs that much.")

    ranks = [0] * len(cands)
    left = _water_fill(steps, costs, ranks, budget, g)
    filled = 0
    if fill_gains is not None:  # second phase: the raw spectrum, from the ranks bought so far
        raw = [_step_gains(ref, fill_gains.get(ref.name, ()), max_rank, g) for ref in cands]
        filled = left - _water_fill(raw, costs, ranks, left, g)
        left -= filled
    elif spread:  # second phase: one step at a time to the module of lowest rank, from the ranks bought so far
        filled = left - _spread([len(s) * g for s in steps], costs, ranks, left, g)
        left -= filled

    entries = tuple(plan_entry(ref, r, alpha_mult) for ref, r in zip(cands, ranks) if r > 0)
    if not entries and (record or {}).get("gains") == "signal":
        raise ConfigError("Strategy auto placed no adapter: the probe's sign-flip test kept no direction in any "
                          "module (no tested signal). Probe with more batches (--batches 64), or place on the raw "
                          "spectra with --gains raw.")
    if not entries:
        raise ConfigError("Strategy auto placed no adapter: every module's gains are zero.")
    total_gain = sum(float(np.sum(np.asarray(gains[r.name], dtype=np.float64))) for r in cands)
    got = sum(float(s[: r // g].sum()) for s, r in zip(steps, ranks))
    params = sum(e.params for e in entries)
    settings = {"max_rank": max_rank, "granularity": g, "candidates": len(cands),
                "gain_captured": got / total_gain if total_gain > 0 else 0.0,
                "unspent": budget - params,  # left when every candidate is at its cap or has no gain left
                **(record or {})}
    if fill_gains is not None or spread:
        settings.update(fill="spread" if spread else "raw", filled_params=filled)
    return Plan(strategy="auto", entries=entries, budget=budget, params=params,
                base_params=base_params, rslora=rslora, layers=None, alpha_mult=alpha_mult, settings=settings)


def _step_gains(ref: ModuleRef, gains, max_rank: int, g: int) -> np.ndarray:
    """(cap // g,) the gain of each rank step of `g` on module `ref`, its sigma^2 sorted descending, zero past
    the spectrum's end; cap = the largest multiple of g <= min(max_rank, out, in)."""
    sig2 = np.asarray(gains, dtype=np.float64).ravel()  # (k,)
    if not np.all(np.isfinite(sig2)) or np.any(sig2 < 0):
        raise ConfigError(f"Gains for {ref.name} must be finite and >= 0.")
    cap = min(max_rank, *ref.shape) // g * g
    padded = np.zeros(cap)  # (cap,)
    top = np.sort(sig2)[::-1][:cap]
    padded[: len(top)] = top
    return padded.reshape(-1, g).sum(axis=1) if cap else padded


def _water_fill(steps: list[np.ndarray], costs: list[int], ranks: list[int], budget: int, g: int) -> int:
    """Greedy by gain per parameter over the steps of each module beyond its current rank (`ranks`, grown in
    place by g per step bought); steps with zero gain are never bought; a module whose next step no longer fits
    is retired (its later steps cost the same). Returns the budget left."""
    heap = []  # entries: (-gain per param, module index, step index)
    for j, (s, c) in enumerate(zip(steps, costs)):
        k = ranks[j] // g
        if k < len(s) and s[k] > 0:
            heap.append((-s[k] / c, j, k))
    heapq.heapify(heap)
    left = budget
    while heap:
        _, j, k = heapq.heappop(heap)
        if costs[j] > left:
            continue  # this module's later steps cost the same: retire it
        ranks[j] += g
        left -= costs[j]
        if k + 1 < len(steps[j]) and steps[j][k + 1] > 0:
            heapq.heappush(heap, (-steps[j][k + 1] / costs[j], j, k + 1))
    return left


def _spread(caps: list[int], costs: list[int], ranks: list[int], budget: int, g: int) -> int:
    """Raise the module of lowest current rank (`ranks`, grown in place; ties: the lower index) by g at its cost,
    again and again, while its step fits and its rank stays <= its cap (`caps`, multiples of g); a module whose
    step no longer fits is retired (the budget only shrinks). Returns the budget left."""
    heap = [(r, j) for j, r in enumerate(ranks) if r + g <= caps[j]]  # (current rank, module index)
    heapq.heapify(heap)
    left = budget
    while heap:
        r, j = heapq.heappop(heap)
        if costs[j] > left:
            continue  # retired: its step will never fit again
        ranks[j] = r + g
        left -= costs[j]
        if r + 2 * g <= caps[j]:
            heapq.heappush(heap, (r + g, j))
    return left
