"""Tests for `PlacementRequest` (validation, defaults, documented fields), `make_plan` against plans
computed by hand for every strategy kind, and that study files reject exactly what placement rejects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from intrinsic.arch import ModuleRef
from intrinsic.errors import BudgetError, ConfigError
from intrinsic.fields import field_help
from intrinsic.placement import DEFAULT_AUTO_BUDGET, DEFAULT_RANK, PlacementRequest, make_plan
from intrinsic.study.spec import parse_spec

# A 2-layer toy model: hidden 4, FFN 8. Rank-1 costs: q, k, v, o 4 + 4 = 8; up (8, 4) and down (4, 8) 12.
SHAPES = {"q": (4, 4), "k": (4, 4), "v": (4, 4), "o": (4, 4), "up": (8, 4), "down": (4, 8)}
REFS = [ModuleRef(f"l{i}.{role}", i, "ffn" if role in ("up", "down") else "attention", role, shape, shape[0] * shape[1])
        for i in range(2) for role, shape in SHAPES.items()]


def plan_of(strategy, gains=None, base_params=0, **kw):
    return make_plan(REFS, PlacementRequest(strategy, **kw), base_params=base_params, gains=gains)


def ranks(plan) -> dict[str, tuple[int, float]]:
    return {e.name: (e.rank, e.alpha) for e in plan.entries}


# ----------------------------------------------------------------------------- the request


@pytest.mark.parametrize("kw, needle", [
    (dict(strategy="qv"), "Unknown strategy 'qv'"),
    (dict(strategy="atention"), "Did you mean: attention"),
    (dict(strategy=5), "`strategy`"),
    (dict(strategy="all,auto"), "stands alone"),
    (dict(strategy="all", rank=0), "`rank` must be an integer >= 1"),
    (dict(strategy="all", rank="4"), "`rank` must be an integer >= 1"),
    (dict(strategy="all", rank=True), "`rank` must be an integer >= 1"),
    (dict(strategy="all", budget=300), "`budget` must be a string"),
    (dict(strategy="all", budget="lots"), "Cannot parse budget 'lots'"),
    (dict(strategy="all", budget="all@x"), "Cannot parse budget"),
    (dict(strategy="all", budget="qv@8"), "Unknown strategy 'qv'"),
    (dict(strategy="all", budget="auto@8"), "needs a fixed strategy"),
    (dict(strategy="all", layers=""), "`layers`"),
    (dict(strategy="auto", max_rank=0), "`max_rank` must be an integer >= 1"),
    (dict(strategy="auto", max_rank=2.5), "`max_rank` must be an integer >= 1"),
    (dict(strategy="auto", granularity=-1), "`granularity` must be an integer >= 1"),
    (dict(strategy="all", alpha_mult=0), "`alpha_mult` must be a number > 0"),
    (dict(strategy="all", alpha_mult="2"), "`alpha_mult` must be a number > 0"),
    (dict(strategy="all", rslora="yes"), "`rslora` must be true or false"),
    (dict(strategy="auto", rank=8), "`rank` cannot be used with strategy auto"),  # auto chooses ranks itself
    (dict(strategy="auto", rank=8, budget="300k"), "`rank` cannot be used with strategy auto"),
    (dict(strategy="full", rank=4), "`rank` and `budget` do not apply"),
    (dict(strategy="full", budget="all@8"), "`rank` and `budget` do not apply"),
    (dict(strategy="q,v", rank=8, budget="300k"), "not both"),
])
def test_request_rejects_and_names_the_field(kw, needle):
    with pytest.raises(ConfigError) as e:
        PlacementRequest(**kw)
    assert needle in str(e.value)


def test_request_defaults_and_canonical_form():
    assert PlacementRequest("Q, V").strategy == "q,v" and PlacementRequest("Q, V").rank == DEFAULT_RANK == 8
    auto = PlacementRequest(" AUTO ")
    assert auto.strategy == "auto" and auto.budget == DEFAULT_AUTO_BUDGET == "all@8" and auto.rank is None
    sized = PlacementRequest("all", budget=" 300k ")
    assert sized.rank is None and sized.budget == "300k"
    full = PlacementRequest("full")
    assert full.rank is None and full.budget is None
    req = PlacementRequest("all", rank=4, alpha_mult=3)
    assert req.rank == 4 and req.alpha_mult == 3.0 and isinstance(req.alpha_mult, float)
    assert (req.max_rank, req.granularity, req.rslora) == (64, 1, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.rank = 5  # type: ignore[misc]
    assert set(field_help(PlacementRequest)) == {f.name for f in dataclasses.fields(PlacementRequest)}


def test_request_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, intrinsic.placement.request; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- make_plan, computed by hand


def test_make_plan_fixed_rank():
    plan = plan_of("all", rank=2)
    assert ranks(plan) == {r.name: (2, 4.0) for r in REFS}  # alpha = 2.0 x rank
    assert plan.params == 2 * (4 * 2 * 8 + 2 * 2 * 12) == 224 and plan.strategy == "all" and plan.budget is None
    plan = plan_of("attention", rank=3, layers="1")
    assert ranks(plan) == {f"l1.{r}": (3, 6.0) for r in "qkvo"} and plan.params == 4 * 3 * 8 and plan.layers == (1,)
    plan = plan_of("V, Q", rank=2, alpha_mult=1.5, rslora=True)
    assert ranks(plan) == {f"l{i}.{r}": (2, 3.0) for i in range(2) for r in "qv"}
    assert plan.strategy == "v,q" and plan.rslora and plan.alpha_mult == 1.5
    assert plan_of("ffn", rank=4).params == 4 * 4 * 12  # up and down of both layers
    with pytest.raises(ConfigError, match="rank 8 is above 4"):
        plan_of("ffn")  # the default rank 8 does not fit this toy model's 4-wide weights


def test_make_plan_fixed_budget():
    # all@1 = 2 layers x (4 x 8 + 2 x 12) = 112. ffn costs 48 per rank: rank 2 (96), 16 left; in module
    # order l0.up steps to 3 (12, 4 left), the rest stay at 2: params 108.
    plan = plan_of("ffn", budget="all@1")
    assert ranks(plan) == {"l0.up": (3, 6.0), "l0.down": (2, 4.0), "l1.up": (2, 4.0), "l1.down": (2, 4.0)}
    assert plan.budget == 112 and plan.params == 108
    plan = plan_of("all", budget="2.24%", base_params=10_000)  # 224 params = all at rank 2 exactly
    assert plan.budget == 224 and set(ranks(plan).values()) == {(2, 4.0)} and plan.params == 224
    with pytest.raises(BudgetError, match="rank 1, which costs 112"):
        plan_of("all", budget="100")


def test_make_plan_auto_water_filling():
    gains = {r.name: np.zeros(4) for r in REFS}
    gains["l0.q"] = np.array([10.0, 1.0, 0, 0])  # steps cost 8: gain per parameter 1.25, then 0.125
    gains["l1.up"] = np.array([6.0, 5.0, 0, 0])  # steps cost 12: 0.5, then 0.417
    calls = []

    def probe():
        calls.append(1)
        return gains

    # budget 30: l0.q r1 (22 left), l1.up r1 (10 left), l1.up r2 costs 12 > 10: retired; l0.q r2 (2 left)
    plan = plan_of("auto", gains=probe, budget="30", max_rank=2)
    assert ranks(plan) == {"l0.q": (2, 4.0), "l1.up": (1, 2.0)} and plan.params == 28 and plan.budget == 30
    assert plan.settings["gain_captured"] == pytest.approx(17 / 22) and plan.settings["candidates"] == 12
    assert len(calls) == 1
    # layer 1 only: l0.q's gains are ignored, so l1.up takes both steps
    plan = plan_of("auto", gains=gains, budget="30", layers="1", granularity=1)
    assert ranks(plan) == {"l1.up": (2, 4.0)} and plan.settings["candidates"] == 6
    # max_rank 1 caps every module at one step: l0.q r1, l1.up r1 (10 left)
    assert ranks(plan_of("auto", gains=gains, budget="30", max_rank=1)) == {"l0.q": (1, 2.0), "l1.up": (1, 2.0)}


def test_make_plan_full_and_gains_only_for_auto():
    def never():
        raise AssertionError("gains read for a fixed strategy")

    assert plan_of("full", gains=never) == "full"
    assert plan_of("q,v", gains=never, rank=1).params == 4 * 8
    with pytest.raises(ConfigError, match="needs gains"):
        plan_of("auto", budget="30")


# ----------------------------------------------------------------------------- study files agree with placement


STUDY = """\
name = "t"
question = "q?"
model = "minilm"
task = "rotten-tomatoes"
{placement}
[[grid]]
strategies = [{strategy}]
{size}
"""


def _accepts(fn) -> bool:
    try:
        fn()
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("strategy", ["all", "q,v", "Q, V", "attention,up", "gate_up", "auto", "full", "fnn", "qv",
                                      "all,auto", "full,q", ",", "q,,v", "o,down"])
def test_study_strategies_match_placement(strategy):
    placement = _accepts(lambda: PlacementRequest(strategy))
    study = _accepts(lambda: parse_spec(STUDY.format(placement="", strategy=f'"{strategy}"', size="ranks = [4]")))
    assert study == placement


@pytest.mark.parametrize("budget", ["300k", "1.5M", "0.5%", "all@8", "q,v@2", "lots", "qv@8", "auto@8", "all@x", "12_000"])
def test_study_budgets_match_placement(budget):
    placement = _accepts(lambda: PlacementRequest("attention", budget=budget))
    study = _accepts(lambda: parse_spec(STUDY.format(placement="", strategy='"attention"', size=f'budgets = ["{budget}"]')))
    assert study == placement


@pytest.mark.parametrize("key, value, toml", [
    ("max_rank", 0, "0"), ("max_rank", 2, "2"), ("max_rank", True, "true"), ("max_rank", 1.5, "1.5"),
    ("granularity", -1, "-1"), ("granularity", 4, "4"), ("alpha_mult", 0, "0"), ("alpha_mult", 2, "2"),
    ("alpha_mult", 0.5, "0.5"), ("alpha_mult", "2", '"2"'), ("alpha_mult", True, "true"),
    ("rslora", "yes", '"yes"'), ("rslora", True, "true"), ("rslora", 1, "1"),
])
def test_study_placement_knobs_match_placement(key, value, toml):
    placement = _accepts(lambda: PlacementRequest("auto", **{key: value}))
    study = _accepts(lambda: parse_spec(STUDY.format(placement=f"[placement]\n{key} = {toml}\n", strategy='"auto"',
                                                     size='budgets = ["300k"]')))
    assert study == placement


def test_study_cell_request_carries_the_knobs():
    spec = parse_spec(STUDY.format(placement="[placement]\nmax_rank = 16\nalpha_mult = 1\n", strategy='"auto", "q,v"',
                                   size="ranks = [4]"))
    got = {c.strategy: spec.placement_request(c) for c in spec.cells()}
    assert got["auto"] == PlacementRequest("auto", budget="all@4", max_rank=16, alpha_mult=1.0)
    assert got["q,v"] == PlacementRequest("q,v", rank=4, max_rank=16, alpha_mult=1.0)
    assert spec.placement == {"max_rank": 16, "granularity": 1, "alpha_mult": 1, "rslora": False,  # raw: hashes stay
                              "gains": None, "normalize": "none"}


# ----------------------------------------------------------------------------- sizes a model cannot take (issue 15.1)


def test_rank_above_a_target_side_is_refused():
    with pytest.raises(ConfigError, match=r"rank 5 is above 4 = min\(out, in\) of l0.q \(4x4\).*--rank 4"):
        plan_of("all", rank=5)
    assert plan_of("all", rank=4).params == 4 * 112  # the largest rank every module can take
    with pytest.raises(ConfigError, match=r"rank 10 is above 4 = min\(out, in\) of l0.q.*at most 256"):
        plan_of("attention", budget="600")  # 600 // 64 per rank = rank 9 on 4x4 weights


def test_budget_or_plan_above_the_base_model_is_refused():
    with pytest.raises(BudgetError, match=r"Budget '200%' \(20,000 params\) is more than the base model \(10,000"):
        plan_of("all", budget="200%", base_params=10_000)
    with pytest.raises(BudgetError, match="more than the base model"):
        plan_of("auto", gains={r.name: np.ones(4) for r in REFS}, budget="20k", base_params=10_000)
    with pytest.raises(BudgetError, match=r"224 LoRA params, more than the base model \(100 params\).*--rank"):
        plan_of("all", rank=2, base_params=100)
    assert plan_of("all", rank=2, base_params=0).params == 224  # unknown base size: nothing to compare with
