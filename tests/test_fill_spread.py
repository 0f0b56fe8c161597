"""auto's `fill = "spread"`: once the greedy on the gains has bought every step with a gain, the budget left
raises every candidate module one rank step at a time, lowest current rank first (ties: the order of the
refs), each step at its module's cost, until no step fits or every module is at its cap (issue 13).
Hand-computed plans, a brute-force reference on random cases, "none" and "raw" plans equal to those made
before "spread" existed (tests/data/auto_plans_d7207f2.json), the wiring from a probe report, the CLI's
--fill spread --json, and the auto+spread arm of studies/smollm2-auto-fill.toml without any existing cell id
changing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from intrinsic.arch import ModuleRef
from intrinsic.cli.app import app
from intrinsic.errors import ConfigError
from intrinsic.placement import PlacementRequest, make_plan
from intrinsic.placement.auto import auto_plan
from intrinsic.placement.fixed import fixed_plan, fixed_plan_for_budget
from intrinsic.placement.plan import lora_cost
from intrinsic.probes import ProbeReport
from intrinsic.study.spec import load_spec

from test_cli_train import assets, train_json  # noqa: F401 (a fixture)

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
# a 4x4 (a rank step costs 8), b 8x4 (12), c 4x4 (8), d 6x2 (8; rank cap 2)
A, B = ModuleRef("a", 0, "attention", "q", (4, 4), 16), ModuleRef("b", 0, "ffn", "up", (8, 4), 32)
C, D = ModuleRef("c", 1, "attention", "q", (4, 4), 16), ModuleRef("d", 1, "ffn", "up", (6, 2), 12)
REFS = [A, B, C, D]
SIGNAL = {"a": np.array([10.0, 5.0, 0, 0]), "b": np.zeros(4), "c": np.array([4.0, 0, 0, 0]), "d": np.zeros(2)}


def ranks(plan) -> dict[str, int]:
    return {e.name: e.rank for e in plan.entries}


def test_spread_brings_the_modules_without_signal_up_first():
    # signal greedy: a step 1 (10/8), a step 2 (5/8), c step 1 (4/8): a 2, c 1, 24 params.
    plain = auto_plan(REFS, SIGNAL, 80, max_rank=4, record={"gains": "signal"})
    assert ranks(plain) == {"a": 2, "c": 1} and plain.settings["unspent"] == 56
    # spread 56 from a2 b0 c1 d0: b 0->1 (12; 44 left), d 0->1 (8; 36), then rank 1 in refs order: b 1->2 (24),
    # c 1->2 (16), d 1->2 (8; d at its cap 2), then rank 2: a 2->3 (0); nothing else fits
    plan = auto_plan(REFS, SIGNAL, 80, max_rank=4, spread=True, record={"gains": "signal"})
    assert ranks(plan) == {"a": 3, "b": 2, "c": 2, "d": 2} and plan.params == 80
    s = plan.settings
    assert (s["fill"], s["filled_params"], s["unspent"], s["gain_captured"]) == ("spread", 56, 0, 1.0)
    assert s["gains"] == "signal" and plan.unspent_note() == ""
    # 36 left (budget 60): b 0->1 (24 left), d 0->1 (16), b 1->2 (4); c's step (8) no longer fits: retired, and
    # so are d and a: the rank-1 level is cut in refs order
    plan = auto_plan(REFS, SIGNAL, 60, max_rank=4, spread=True)
    assert ranks(plan) == {"a": 2, "b": 2, "c": 1, "d": 1} and plan.settings["unspent"] == 4
    assert plan.settings["filled_params"] == 32 and "--fill" not in plan.unspent_note()
    # a retired module does not block a cheaper one: 8 left (budget 32): b's step (12) does not fit, b is
    # retired at rank 0; d 0->1 (0 left)
    plan = auto_plan(REFS, SIGNAL, 32, max_rank=4, spread=True)
    assert ranks(plan) == {"a": 2, "c": 1, "d": 1} and plan.settings["unspent"] == 0
    # granularity 2 (steps: a 16, b 24, c 16, d 16; signal a [15, 0], c [4, 0]): greedy a 2, c 2 (32 of 100);
    # spread 68: b 0->2 (44 left), d 0->2 (28; at cap), a 2->4 (12), c (16) and b (24) no longer fit
    plan = auto_plan(REFS, SIGNAL, 100, max_rank=4, granularity=2, spread=True)
    assert ranks(plan) == {"a": 4, "b": 2, "c": 2, "d": 2} and plan.settings["unspent"] == 12
    # max_rank caps the spread: at max_rank 2 every module ends at 2 and 80 - 2 x 36 = 8 is left
    plan = auto_plan(REFS, SIGNAL, 80, max_rank=2, spread=True)
    assert ranks(plan) == {"a": 2, "b": 2, "c": 2, "d": 2} and plan.settings["unspent"] == 8


def test_spread_is_all_at_the_uniform_rank_the_budget_affords():
    refs = [ModuleRef(f"m{i}", i, "attention", "q", (4, 4), 16) for i in range(4)]  # each step costs 8
    zero = {r.name: np.zeros(4) for r in refs}
    # no tested signal anywhere: fill first, then the check, so the whole budget is spread: all at rank 3
    plan = auto_plan(refs, zero, 96, max_rank=4, spread=True, record={"gains": "signal"})
    assert plan.entries == fixed_plan(refs, "all", 3).entries and plan.settings["filled_params"] == 96
    assert plan.entries == fixed_plan_for_budget(refs, "all", 96).entries
    with pytest.raises(ConfigError, match="kept no direction"):  # without a fill the refusal stands
        auto_plan(refs, zero, 96, max_rank=4, record={"gains": "signal"})
    # on top of auto's ranks: m1 gets 2 from the signal; the leftover 80 lifts m0, m2, m3 to 2 first (48), then
    # all four to 3 (32): max(auto's rank, the level the leftover affords)
    signal = {**zero, "m1": np.array([3.0, 2.0, 0, 0])}
    plan = auto_plan(refs, signal, 96, max_rank=4, spread=True)
    assert ranks(plan) == {"m0": 3, "m1": 3, "m2": 3, "m3": 3} and plan.settings["unspent"] == 0
    # 8 more than a level: the extra step goes to the first module in refs order
    plan = auto_plan(refs, zero, 104, max_rank=4, spread=True)
    assert ranks(plan) == {"m0": 4, "m1": 3, "m2": 3, "m3": 3}


def _reference(refs, gains, budget, max_rank, g):
    """The greedy plan's ranks, then spread by a plain loop: scan for the lowest (rank, index) among the modules
    neither retired nor at their cap; buy its step or retire it."""
    base = auto_plan(refs, gains, budget, max_rank=max_rank, granularity=g)
    r = [base.ranks.get(x.name, 0) for x in refs]
    caps = [min(max_rank, *x.shape) // g * g for x in refs]
    costs = [lora_cost(x.shape, g) for x in refs]
    left, retired = budget - base.params, set()
    while True:
        open_ = [j for j in range(len(refs)) if j not in retired and r[j] + g <= caps[j]]
        if not open_:
            return r, left
        j = min(open_, key=lambda i: (r[i], i))
        if costs[j] > left:
            retired.add(j)
        else:
            r[j], left = r[j] + g, left - costs[j]


@pytest.mark.parametrize("seed", range(30))
def test_spread_matches_a_plain_loop_and_keeps_budget_cap_and_ranks(seed):
    rng = np.random.default_rng(seed)
    refs = [ModuleRef(f"m{i}", i, "attention", "q", tuple(int(x) for x in rng.integers(2, 9, 2)), 0)
            for i in range(int(rng.integers(2, 7)))]
    gains = {r.name: np.sort(rng.exponential(size=6) * (rng.random(6) < 0.3))[::-1] for r in refs}
    gains[refs[0].name][0] = 1.0
    g = int(rng.integers(1, 3))
    max_rank = max(int(rng.integers(1, 7)), g)
    budget = int(rng.integers(40, 300))
    if budget < min(lora_cost(r.shape, g) for r in refs):
        budget = 300
    base = auto_plan(refs, gains, budget, max_rank=max_rank, granularity=g)
    plan = auto_plan(refs, gains, budget, max_rank=max_rank, granularity=g, spread=True)
    want, left = _reference(refs, gains, budget, max_rank, g)
    assert [plan.ranks.get(r.name, 0) for r in refs] == want and plan.settings["unspent"] == left
    assert plan.params <= budget and plan.settings["unspent"] == budget - plan.params
    assert plan.settings["filled_params"] == plan.params - base.params >= 0
    assert plan.settings["gain_captured"] == base.settings["gain_captured"]  # spread steps gain nothing here
    for r in refs:
        got = plan.ranks.get(r.name, 0)
        cap = min(max_rank, *r.shape) // g * g
        assert base.ranks.get(r.name, 0) <= got <= cap and got % g == 0
        assert got == cap or lora_cost(r.shape, g) > plan.settings["unspent"]  # nothing left that a step fits


def test_raw_and_spread_together_are_refused():
    with pytest.raises(ConfigError, match="not both"):
        auto_plan(REFS, SIGNAL, 80, fill_gains=SIGNAL, spread=True)


# ----------------------------------------------------------------------------- a committed probe report

PROBE = ROOT / "studies" / "results" / "placement-all8" / "probes" / "42766e64ab88"  # MiniLM, signal gains
GOLDEN = json.loads((ROOT / "tests" / "data" / "auto_plans_d7207f2.json").read_text())


@pytest.fixture(scope="module")
def report():
    return ProbeReport.load(PROBE)


def test_none_and_raw_plans_are_those_made_before_spread(report):
    """Every fill none / raw plan (4 budgets x granularity 1, 2 x gains signal, raw) equals the one main made at
    d7207f2, ranks, params and settings."""
    assert len(GOLDEN["plans"]) == 32
    for key, want in GOLDEN["plans"].items():
        fill, budget, g, gains = key.split(":")
        request = PlacementRequest("auto", budget=budget, fill=fill, granularity=int(g),
                                   gains=None if gains == "None" else gains)
        plan = make_plan(report.refs(), request, base_params=0, gains=report)
        assert (plan.ranks, plan.params, plan.settings) == (want["r"], want["p"], want["s"]), key


def test_spread_from_a_probe_report(report):
    refs = report.refs()
    plain = make_plan(refs, PlacementRequest("auto", budget="all@8"), base_params=0, gains=report)
    spread = make_plan(refs, PlacementRequest("auto", budget="all@8", fill="spread"), base_params=0, gains=report)
    assert plain.settings["gains"] == "signal" and plain.settings["unspent"] > 0 and len(plain.entries) < len(refs)
    by_hand = auto_plan(refs, report.gains("signal"), plain.budget, max_rank=64, spread=True)
    assert spread.ranks == by_hand.ranks and spread.settings["filled_params"] == spread.params - plain.params > 0
    assert len(spread.entries) == len(refs)  # every candidate module gets an adapter
    assert all(spread.ranks[n] >= r for n, r in plain.ranks.items())
    low = min(spread.ranks.values())  # a level: every module at max(its signal rank, low) or one above
    assert all(r <= max(plain.ranks.get(n, 0), low + 1) for n, r in spread.ranks.items())
    assert spread.settings["unspent"] < min(r.shape[0] + r.shape[1] for r in refs)
    # spread reads no probe statistic: numbers and other predictors take it (raw is refused for them)
    assert make_plan(refs, PlacementRequest("auto", budget="all@8", fill="spread"), base_params=0,
                     gains=report.gains("signal")).ranks == spread.ranks
    assert PlacementRequest("auto", predictor="update", fill="spread").fill == "spread"
    with pytest.raises(ConfigError, match="leave `fill` out"):
        PlacementRequest("auto", predictor="update", fill="raw")


def test_cli_plan_fill_spread_json(tmp_path):
    res = runner.invoke(app, ["plan", str(PROBE), "--budget-like", "all@8", "--fill", "spread",
                              "--out", str(tmp_path / "plan"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    s = out["settings"]
    assert s["fill"] == "spread" and s["filled_params"] > 0 and s["unspent"] == out["budget"] - out["params"]
    res = runner.invoke(app, ["plan", str(PROBE), "--budget-like", "all@8", "--fill", "spread",
                              "--out", str(tmp_path / "table")])
    assert res.exit_code == 0 and "over every module, lowest rank first" in res.output
    res = runner.invoke(app, ["plan", "--help"])
    assert "spread" in res.output


def test_cli_train_fill_spread_json(assets, tmp_path):  # noqa: F811
    """`train --placement auto --fill spread --json`: the run's plan carries fill, filled_params and unspent."""
    from intrinsic.probes import probe

    model, csv = assets
    probe(str(model), str(csv), batches=16, batch_size=8, max_length=16, update_steps=None).save(tmp_path / "probe")
    args = ["--placement", "auto", "--probe", tmp_path / "probe", "--budget-like", "all@16", "--steps", "2",
            "--fill", "spread"]
    plan = train_json(assets, tmp_path / "spread", *args)["plan"]
    s = plan["settings"]
    assert s["fill"] == "spread" and s["gains"] == "signal" and s["unspent"] == plan["budget"] - plan["params"]
    assert s["filled_params"] > 0


# ----------------------------------------------------------------------------- the study arm


def test_the_spread_arm_adds_cells_and_changes_no_committed_id():
    study = ROOT / "studies" / "smollm2-auto-fill.toml"
    cells = load_spec(study).cells()
    rows = json.loads((ROOT / "studies" / "results" / "smollm2-auto-fill" / "results.json").read_text())["rows"]
    first = {r["id"] for r in rows if r["variant"] != "auto+spread"}  # the 72 cells of the first run
    assert len(first) == 72 and first <= {c.id for c in cells}  # every cell of the first run keeps its id
    new = [c for c in cells if c.id not in first]
    assert {r["id"] for r in rows} == first | {c.id for c in new}  # the results hold the new arm's cells too
    assert {c.variant for c in new} == {"auto+spread"} and len(new) == 5 + 3  # all@32 only: 5 seeds + 3 lrs
    assert {c.label for c in new if c.phase == "test"} == {"auto+spread budget=all@32"}
    assert all(load_spec(study).placement_request(c).fill == "spread" for c in new)
    quick = load_spec(study, quick=True).cells()
    assert sorted(c.label for c in quick) == ["all r=2", "auto budget=all@2", "auto+fill budget=all@2",
                                              "auto+spread budget=all@2"]
