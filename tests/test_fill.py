"""auto's `fill` knob: with fill = "raw", the budget left once every step with (tested) gain is bought is
water-filled on the raw mean-gradient spectrum, from each module's current rank (issue 13). Hand-computed
plans, invariants on random gains, the wiring from a probe report, the CLI's --fill, and study blocks that set
it (`[[grid]] placement = {fill = "raw"}`) without changing any existing cell id."""

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
from intrinsic.probes import probe
from intrinsic.study.spec import load_spec, parse_spec

from test_cli_train import assets, train_json  # noqa: F401 (a fixture)
from test_probe import FAST, _task

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
# module a: 4 x 4 (a rank step costs 8); module b: 8 x 4 (costs 12)
A, B = ModuleRef("a", 0, "attention", "q", (4, 4), 16), ModuleRef("b", 0, "ffn", "up", (8, 4), 32)
SIGNAL = {"a": np.array([10.0, 0, 0, 0]), "b": np.zeros(4)}  # one tested direction, in a
RAW = {"a": np.array([12.0, 3.0, 1.0, 0.5]), "b": np.array([9.0, 6.0, 0.1, 0.0])}


def ranks(plan) -> dict[str, int]:
    return {e.name: e.rank for e in plan.entries}


def test_fill_buys_the_raw_steps_greedy_would_from_the_bought_ranks():
    # signal: a r1 (8; 42 left of 50). Fill from a=1, b=0 by raw gain per parameter: b step 1 9/12 = .75
    # (30 left), b step 2 6/12 = .5 (18), a step 2 3/8 = .375 (10), a step 3 1/8 = .125 (2); then a step 4
    # (8) and b step 3 (12) no longer fit. a's first raw step (12) is not bought again.
    plan = auto_plan([A, B], SIGNAL, 50, max_rank=4, fill_gains=RAW, record={"gains": "signal"})
    assert ranks(plan) == {"a": 3, "b": 2} and plan.params == 48
    s = plan.settings
    assert (s["fill"], s["filled_params"], s["unspent"], s["gain_captured"]) == ("raw", 40, 2, 1.0)
    assert plan.unspent_note().startswith("2 params") and "--fill" not in plan.unspent_note()  # filled already
    # by gain per parameter, not by gain: a raw [12, 5, 4.9, .5], budget 38 (30 left after a r1): b step 1 .75
    # (18 left), a step 2 5/8 = .625 (10), a step 3 4.9/8 = .6125 (2); b step 2 (gain 6 > 5, but .5 per param)
    # no longer fits
    plan = auto_plan([A, B], SIGNAL, 38, max_rank=4, fill_gains={**RAW, "a": np.array([12.0, 5.0, 4.9, 0.5])})
    assert ranks(plan) == {"a": 3, "b": 1} and plan.settings["filled_params"] == 28 and plan.settings["unspent"] == 2
    # granularity 2 (max_rank 4): step gains a [15, 1.5] cost 16, b [15, .1] cost 24; signal a [10, 0].
    # signal: a r2 (44 left of 60); fill: b step 1 15/24 (20 left), a step 2 1.5/16 (4 left); b step 2 > 4.
    plan = auto_plan([A, B], SIGNAL, 60, max_rank=4, granularity=2, fill_gains=RAW)
    assert ranks(plan) == {"a": 4, "b": 2} and plan.settings["filled_params"] == 40 and plan.settings["unspent"] == 4
    # max_rank caps the fill too: a 2, b 2 (8 + 2 x 12 = 32 filled of 42)
    plan = auto_plan([A, B], SIGNAL, 50, max_rank=2, fill_gains=RAW)
    assert ranks(plan) == {"a": 2, "b": 2} and plan.settings["filled_params"] == 32 and plan.settings["unspent"] == 10


def test_without_fill_or_budget_left_the_plan_is_unchanged():
    plain = auto_plan([A, B], SIGNAL, 50, max_rank=4, record={"gains": "signal"})
    assert ranks(plain) == {"a": 1} and plain.settings["unspent"] == 42
    assert "--fill spread spends it" in plain.unspent_note()  # the measured choice first
    assert "fill" not in plain.settings and "filled_params" not in plain.settings  # plans made before fill
    spent = {"a": np.array([5.0, 4, 3, 2]), "b": np.array([9.0, 8, 7, 6])}  # every step has gain: budget spent
    a = auto_plan([A, B], spent, 50, max_rank=4)
    b = auto_plan([A, B], spent, 50, max_rank=4, fill_gains=RAW)
    assert a.entries == b.entries and b.settings["filled_params"] == 0 and a.settings["unspent"] < 8


@pytest.mark.parametrize("seed", range(20))
def test_fill_never_exceeds_budget_or_cap_and_only_adds_rank(seed):
    rng = np.random.default_rng(seed)
    refs = [ModuleRef(f"m{i}", i, "attention", "q", tuple(int(x) for x in rng.integers(2, 9, 2)), 0) for i in range(5)]
    signal = {r.name: np.sort(rng.exponential(size=6) * (rng.random(6) < 0.3))[::-1] for r in refs}
    raw = {r.name: np.sort(rng.exponential(size=int(rng.integers(1, 9))))[::-1] for r in refs}
    max_rank, g = int(rng.integers(1, 7)), int(rng.integers(1, 3))
    budget = int(rng.integers(40, 200))
    if not any(v.any() for v in signal.values()):
        signal[refs[0].name][0] = 1.0
    base = auto_plan(refs, signal, budget, max_rank=max(max_rank, g), granularity=g)
    plan = auto_plan(refs, signal, budget, max_rank=max(max_rank, g), granularity=g, fill_gains=raw)
    assert plan.params <= budget and plan.settings["unspent"] == budget - plan.params >= 0
    assert plan.params - base.params == plan.settings["filled_params"] >= 0
    for r in refs:
        got = plan.ranks.get(r.name, 0)
        assert got >= base.ranks.get(r.name, 0) and got <= min(max(max_rank, g), *r.shape) and got % g == 0


# ----------------------------------------------------------------------------- from a probe report


@pytest.fixture(scope="module")
def folded(tiny_bert):
    return probe(tiny_bert, _task(n=160), **{**FAST, "batches": 16})


def test_fill_spends_what_signal_leaves_on_the_reports_raw_spectrum(folded):
    refs = folded.refs()
    plain = make_plan(refs, PlacementRequest("auto", budget="all@8"), base_params=0, gains=folded)
    filled = make_plan(refs, PlacementRequest("auto", budget="all@8", fill="raw"), base_params=0, gains=folded)
    assert plain.settings["gains"] == "signal" and plain.settings["unspent"] > 0
    # the same two phases by hand: signal gains, then the report's raw sigma^2 from the ranks bought
    by_hand = auto_plan(refs, folded.gains("signal"), plain.budget, max_rank=64, fill_gains=folded.gains("raw"))
    assert ranks(filled) == ranks(by_hand) and filled.settings["filled_params"] == by_hand.settings["filled_params"]
    assert filled.settings["filled_params"] == filled.params - plain.params > 0
    assert "--fill raw" in plain.unspent_note() and "--fill" not in filled.unspent_note()
    assert all(ranks(filled).get(n, 0) >= r for n, r in ranks(plain).items())
    # nothing left that a positive raw step could buy: each module at its cap, out of spectrum, or too costly
    raw = folded.gains("raw")
    for r in refs:
        have = ranks(filled).get(r.name, 0)
        if have < min(64, *r.shape) and have < len(raw[r.name]) and raw[r.name][have] > 0:
            assert r.shape[0] + r.shape[1] > filled.settings["unspent"]
    # gains raw already: nothing left to fill
    raw_plan = make_plan(refs, PlacementRequest("auto", budget="all@8", gains="raw"), base_params=0, gains=folded)
    raw_fill = make_plan(refs, PlacementRequest("auto", budget="all@8", gains="raw", fill="raw"), base_params=0,
                         gains=folded)
    assert raw_fill.entries == raw_plan.entries and raw_fill.settings["filled_params"] == 0
    # fixed strategies ignore it, as every auto knob
    assert make_plan(refs, PlacementRequest("all", rank=2, fill="raw"), base_params=0) == make_plan(
        refs, PlacementRequest("all", rank=2), base_params=0)


def test_fill_is_refused_where_it_means_nothing(folded):
    with pytest.raises(ConfigError, match="`fill` must be none, raw or spread"):
        PlacementRequest("auto", fill="signal")
    with pytest.raises(ConfigError, match="predictor update allocates by its own statistic: leave `fill` out"):
        PlacementRequest("auto", predictor="update", fill="raw")
    assert PlacementRequest("auto", predictor="gradient", fill="raw").fill == "raw"
    with pytest.raises(ConfigError, match="these gains were given as numbers"):
        make_plan(folded.refs(), PlacementRequest("auto", fill="raw"), base_params=0, gains=folded.gains())


def test_cli_plan_fill_json(folded, tmp_path):
    folded.save(tmp_path / "p")
    res = runner.invoke(app, ["plan", str(tmp_path / "p"), "--budget-like", "all@8", "--fill", "raw",
                              "--out", str(tmp_path / "plan"), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)["settings"]
    assert s["fill"] == "raw" and s["filled_params"] > 0 and s["gains"] == "signal"
    assert s["unspent"] == json.loads(res.stdout)["budget"] - json.loads(res.stdout)["params"]
    res = runner.invoke(app, ["plan", str(tmp_path / "p"), "--fill", "noise", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "Traceback" not in res.output and "--fill must be none, raw or spread" in res.output


# ----------------------------------------------------------------------------- studies


STUDY = """\
name = "t"
question = "q?"
model = "minilm"
task = "rotten-tomatoes"
{placement}
[[grid]]
name = "plain"
strategies = ["all", "auto"]
budgets = ["all@2", "all@8"]
{extra}"""
FILL_BLOCK = """
[[grid]]
name = "fill"
strategies = ["all", "auto", "full"]
budgets = ["all@8"]
placement = {fill = "raw"}
"""


def ids_of(spec) -> dict[str, str]:
    return {c.label: c.id for c in spec.cells()}


def test_a_grid_block_sets_fill_for_its_auto_cells_only():
    plain = parse_spec(STUDY.format(placement="", extra=""))
    both = parse_spec(STUDY.format(placement="", extra=FILL_BLOCK))
    ids = {c.id: c for c in both.cells()}
    assert {c.id for c in plain.cells()} <= set(ids)  # the plain block's cells keep their ids
    new = [c for c in both.cells() if c.id not in {x.id for x in plain.cells()}]
    assert sorted(c.label for c in new) == ["auto+fill budget=all@8", "full"]  # `all` there is the plain all r=8
    fill = next(c for c in new if c.strategy == "auto")
    assert fill.placement == {"fill": "raw"} and both.placement_request(fill).fill == "raw"
    assert "budget=all@8" in fill.groups and fill.blocks == ("fill",)
    auto8 = next(c for c in both.cells() if c.label == "auto budget=all@8")
    assert both.placement_request(auto8).fill == "none" and auto8.config_id != fill.config_id
    # a block whose knob equals the study's adds no cell; [placement] fill = "none" changes no id or hash
    same = parse_spec(STUDY.format(placement='[placement]\nfill = "none"\n', extra=FILL_BLOCK.replace('"raw"', '"none"')))
    assert [c.id for c in same.cells() if c.strategy != "full"] == [c.id for c in plain.cells()]
    assert parse_spec(STUDY.format(placement='[placement]\nfill = "none"\n', extra="")).definition_hash == \
        plain.definition_hash
    # knobs only auto reads leave fixed strategies' cells alone (max_rank here: an existing knob, in every id)
    capped = parse_spec(STUDY.format(placement="", extra=FILL_BLOCK.replace('fill = "raw"', "max_rank = 8")))
    capped_ids = {c.label: c.id for c in capped.cells()}
    assert set(capped_ids) - set(ids_of(plain)) == {"auto+max_rank=8 budget=all@8", "full"}
    assert capped_ids["all r=8"] == ids_of(plain)["all r=8"]
    # [placement] fill = "raw" for the whole study: its auto at all@8 is the block's auto+fill (same settings,
    # same id); its auto at all@2 is new; `all` is unchanged
    study_fill = {c.label: c.id for c in parse_spec(STUDY.format(placement='[placement]\nfill = "raw"\n',
                                                                 extra="")).cells()}
    assert study_fill["auto budget=all@8"] == fill.id and study_fill["auto budget=all@2"] not in ids
    assert study_fill["all r=8"] == ids_of(plain)["all r=8"]


@pytest.mark.parametrize("block, needle", [
    ('placement = {fill = "noise"}', "placement 'fill' must be none, raw or spread"),
    ('placement = {fil = "raw"}', "Did you mean: fill"),
    ('placement = "raw"', "'placement' must be a table"),
    ('placement = {fill = "raw", predictor = "update"}', "leave `fill` out"),
])
def test_bad_block_knobs_are_one_line_naming_the_file(block, needle):
    text = STUDY.format(placement="", extra="") + block + "\n"
    with pytest.raises(ConfigError, match=needle) as e:
        parse_spec(text, source="s.toml")
    assert str(e.value).startswith("s.toml:") and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["smollm2-budgets-lm", "smollm2-placement-lm", "placement-all8"])
def test_committed_results_still_match_their_study(name):
    """The definition hash and every cell id of studies with committed results are what they were when run."""
    spec = load_spec(ROOT / "studies" / f"{name}.toml")
    record = json.loads((ROOT / "studies" / "results" / name / "study.json").read_text())
    rows = json.loads((ROOT / "studies" / "results" / name / "results.json").read_text())["rows"]
    assert spec.definition_hash == record["definition_hash"]
    assert {r["id"] for r in rows} == {c.id for c in spec.cells()}


def test_the_auto_fill_study_shares_the_budgets_studys_cells():
    fill = load_spec(ROOT / "studies" / "smollm2-auto-fill.toml")
    budgets = {c.id for c in load_spec(ROOT / "studies" / "smollm2-budgets-lm.toml").cells()}
    new = [c for c in fill.cells() if c.id not in budgets]
    by_variant = {v: sum(c.variant == v for c in new) for v in {c.variant for c in new}}
    assert by_variant == {"auto+fill": 15 + 9, "auto+spread": 5 + 3}  # fill: 3 budgets x (5 seeds + 3 lrs); spread: all@32
    assert len(fill.cells()) - len(new) == 48  # all and auto at 3 budgets, test and lr-sweep cells
    assert {c.strategy for c in load_spec(ROOT / "studies" / "smollm2-auto-fill.toml", quick=True).cells()} == {
        "all", "auto"}


def test_cli_train_fill_json(assets, tmp_path):
    """`train --placement auto --fill raw --json`: the run's plan carries fill, filled_params and unspent."""
    model, csv = assets
    probe(str(model), str(csv), batches=16, batch_size=8, max_length=16, update_steps=None).save(tmp_path / "probe")
    args = ["--placement", "auto", "--probe", tmp_path / "probe", "--budget-like", "all@16", "--steps", "2"]
    plain = train_json(assets, tmp_path / "plain", *args)["plan"]
    filled = train_json(assets, tmp_path / "fill", *args, "--fill", "raw")["plan"]
    assert plain["settings"]["gains"] == "signal" and "fill" not in plain["settings"]
    s = filled["settings"]
    assert s["fill"] == "raw" and s["filled_params"] == filled["params"] - plain["params"] > 0
    assert s["unspent"] == filled["budget"] - filled["params"] < plain["settings"]["unspent"]
