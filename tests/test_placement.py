"""Tests for intrinsic.placement: strategies, layers, budgets, auto water-filling, JSON, PEFT build + verify.
(`PlacementRequest` and `make_plan`: tests/test_placement_request.py.)"""

from __future__ import annotations

import itertools
import re
import warnings

import numpy as np
import pytest

from intrinsic.arch import ModuleRef, RoleBlock
from intrinsic.errors import BudgetError, ConfigError
from intrinsic.placement import (
    Plan,
    auto_plan,
    fixed_plan,
    fixed_plan_for_budget,
    lora_cost,
    parse_budget,
    parse_layers,
    plan_table,
    verify_peft_model,
)

BERT_NAMES = {  # role -> (suffix under bert.encoder.layer.N, kind, shape (out, in) as multiples of (h, h))
    "q": ("attention.self.query", "attention"),
    "k": ("attention.self.key", "attention"),
    "v": ("attention.self.value", "attention"),
    "o": ("attention.output.dense", "attention"),
    "up": ("intermediate.dense", "ffn"),
    "down": ("output.dense", "ffn"),
}


def bert_refs(n_layers=6, hidden=384, ffn=1536) -> list[ModuleRef]:
    refs = []
    for i in range(n_layers):
        for role, (suffix, kind) in BERT_NAMES.items():
            shape = {"up": (ffn, hidden), "down": (hidden, ffn)}.get(role, (hidden, hidden))
            refs.append(ModuleRef(f"bert.encoder.layer.{i}.{suffix}", i, kind, role, shape, shape[0] * shape[1]))
    return refs


MINILM = bert_refs()
MINILM_BASE = 22_713_216


def gpt2_refs(n_layers=2, h=64) -> list[ModuleRef]:
    refs = []
    for i in range(n_layers):
        blocks = (RoleBlock("q", 0, h), RoleBlock("k", h, 2 * h), RoleBlock("v", 2 * h, 3 * h))
        refs += [
            ModuleRef(f"transformer.h.{i}.attn.c_attn", i, "attention", "qkv", (3 * h, h), 3 * h * h, True, blocks),
            ModuleRef(f"transformer.h.{i}.attn.c_proj", i, "attention", "o", (h, h), h * h, True),
            ModuleRef(f"transformer.h.{i}.mlp.c_fc", i, "ffn", "up", (4 * h, h), 4 * h * h, True),
            ModuleRef(f"transformer.h.{i}.mlp.c_proj", i, "ffn", "down", (h, 4 * h), 4 * h * h, True),
        ]
    return refs


# ----------------------------------------------------------------------------- fixed strategies


@pytest.mark.parametrize(
    "strategy,count,params",
    [
        ("all", 36, 6 * (4 * 8 * 768 + 2 * 8 * 1920)),
        ("attention", 24, 6 * 4 * 8 * 768),
        ("ffn", 12, 6 * 2 * 8 * 1920),
        ("q,v", 12, 6 * 2 * 8 * 768),
        ("up,down", 12, 6 * 2 * 8 * 1920),
        ("Q, V", 12, 6 * 2 * 8 * 768),
        ("attention,up", 30, 6 * (4 * 8 * 768 + 8 * 1920)),
    ],
)
def test_fixed_strategies_minilm(strategy, count, params):
    plan = fixed_plan(MINILM, strategy, 8, base_params=MINILM_BASE)
    assert len(plan.entries) == count
    assert plan.params == params
    assert all(e.rank == 8 and e.alpha == 16.0 for e in plan.entries)
    assert plan.budget is None and not plan.rslora


def test_all_at_8_arithmetic():
    assert fixed_plan(MINILM, "all", 8).params == 331_776
    assert lora_cost((1536, 384), 8) == 8 * 1920
    plan = fixed_plan(MINILM, "all", 8, base_params=MINILM_BASE)
    assert plan.pct == pytest.approx(100 * 331_776 / MINILM_BASE)


def test_layer_selection_and_order():
    plan = fixed_plan(MINILM, "q,v", 4, layers=parse_layers("1,3", 6))
    assert [(e.layer, e.role) for e in plan.entries] == [(1, "q"), (1, "v"), (3, "q"), (3, "v")]
    assert plan.layers == (1, 3) and plan.strategy == "q,v"
    plan = fixed_plan(MINILM, "all", 2, layers=parse_layers("0-2", 6))
    assert {e.layer for e in plan.entries} == {0, 1, 2} and len(plan.entries) == 18


@pytest.mark.parametrize(
    "n,lower,middle,upper",
    [(6, [0, 1], [2, 3], [4, 5]), (7, [0, 1, 2], [3, 4], [5, 6]), (8, [0, 1, 2], [3, 4, 5], [6, 7]),
     (12, [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]), (4, [0, 1], [2], [3]), (30, list(range(10)), list(range(10, 20)), list(range(20, 30)))],
)
def test_thirds(n, lower, middle, upper):
    assert parse_layers("lower", n) == lower
    assert parse_layers("middle", n) == middle
    assert parse_layers("upper", n) == upper
    assert sorted(lower + middle + upper) == list(range(n))
    assert parse_layers("lower,upper", n) == lower + upper


def test_parse_layers_errors():
    assert parse_layers("0-5", 6) == [0, 1, 2, 3, 4, 5]
    assert parse_layers(" 2, 0-1 ", 6) == [0, 1, 2]
    for bad in ("0-6", "5-3", "x", "lowr", ""):
        with pytest.raises(ConfigError):
            parse_layers(bad, 6)
    with pytest.raises(ConfigError, match="upper third of a 2-layer model is empty"):
        parse_layers("upper", 2)
    with pytest.raises(ConfigError, match="Did you mean: lower"):
        parse_layers("lowr", 6)


def test_selection_errors():
    with pytest.raises(ConfigError, match="role gate is not in this model.*q, k, v, o, up, down"):
        fixed_plan(MINILM, "q,gate", 8)
    with pytest.raises(ConfigError, match="Did you mean: attention"):
        fixed_plan(MINILM, "atention", 8)
    with pytest.raises(ConfigError, match=r"Layers \[7\] do not exist.*0-5"):
        fixed_plan(MINILM, "all", 8, layers=[7])
    with pytest.raises(ConfigError, match="selected no module"):
        fixed_plan([r for r in MINILM if r.kind == "attention"], "ffn", 8)
    with pytest.raises(ConfigError, match="auto_plan"):
        fixed_plan(MINILM, "auto", 8)
    with pytest.raises(ConfigError, match="rank"):
        fixed_plan(MINILM, "all", 0)


def test_fused_module_included_for_partial_roles():
    refs = gpt2_refs()
    plan = fixed_plan(refs, "q,v", 4)
    assert [e.name for e in plan.entries] == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert "fused qkv adapted whole for requested q,v" in plan.entries[0].note
    plan = fixed_plan(refs, "attention", 4)
    assert len(plan.entries) == 4 and all(e.note == "" for e in plan.entries)
    assert plan.entries[0].params == 4 * (192 + 64)


# ----------------------------------------------------------------------------- budgets


def test_parse_budget():
    kw = dict(base_params=MINILM_BASE, refs=MINILM)
    assert parse_budget("300k", **kw) == 300_000
    assert parse_budget("1.5M", **kw) == 1_500_000
    assert parse_budget("0.3m", **kw) == 300_000
    assert parse_budget("12000", **kw) == 12_000
    assert parse_budget("12_000", **kw) == 12_000
    assert parse_budget("0.5%", **kw) == MINILM_BASE * 5 // 1000
    assert parse_budget("all@8", **kw) == 331_776
    assert parse_budget("attention@4", **kw) == 6 * 4 * 4 * 768
    assert parse_budget("q,v@2", **kw) == 6 * 2 * 2 * 768
    for bad in ("lots", "1.5X", "all@x", "-5k", ""):
        with pytest.raises(ConfigError, match="Cannot parse budget"):
            parse_budget(bad, **kw)
    with pytest.raises(ConfigError, match="base parameter count is unknown"):
        parse_budget("1%", base_params=0, refs=MINILM)
    with pytest.raises(BudgetError, match="minimum 768"):
        parse_budget("500", **kw)


def test_budget_like_fixed_strategies():
    target = parse_budget("all@8", base_params=MINILM_BASE, refs=MINILM)
    for strategy, per_rank, rank in [("q,v", 9216, 36), ("ffn", 23040, 14), ("all", 41472, 8), ("attention", 18432, 18)]:
        plan = fixed_plan_for_budget(MINILM, strategy, target)
        assert {e.rank for e in plan.entries} <= {rank, rank + 1}
        assert min(e.rank for e in plan.entries) == rank
        largest_rank1 = max(e.shape[0] + e.shape[1] for e in plan.entries)
        assert target - largest_rank1 < plan.params <= target  # within one module's rank-1 cost
        assert plan.budget == target
    plan = fixed_plan_for_budget(MINILM, "ffn", target)  # 331,776 = 14 * 23,040 + 9,216: four +1 steps of 1,920
    assert sorted(e.rank for e in plan.entries).count(15) == 4 and plan.params == target - 1536
    plan = fixed_plan_for_budget(MINILM, "q,v", target, layers=[0])
    assert plan.entries[0].rank == target // 1536
    with pytest.raises(BudgetError, match="rank 1, which costs 41,472"):
        fixed_plan_for_budget(MINILM, "all", 40_000)


# ----------------------------------------------------------------------------- auto water-filling


def brute_force(spectra, costs, budget, cap, g=1):
    """Best total gain over all rank vectors (ranks multiples of g, <= cap) that fit the budget."""
    best, best_ranks = -1.0, None
    for steps in itertools.product(*[range(cap // g + 1)] * len(spectra)):
        if sum(k * c for k, c in zip(steps, costs)) > budget:
            continue
        value = sum(float(np.sum(s[: k * g])) for s, k in zip(spectra, steps))
        if value > best:
            best, best_ranks = value, [k * g for k in steps]
    return best, best_ranks


def synthetic(rng, n_mod, shapes):
    refs, gains = [], {}
    for j in range(n_mod):
        ref = ModuleRef(f"m{j}", j, "attention", "q", shapes[j], shapes[j][0] * shapes[j][1])
        refs.append(ref)
        gains[ref.name] = np.sort(rng.exponential(1.0, size=8) ** 2)[::-1]
    return refs, gains


def plan_value(plan, gains):
    return sum(float(np.sum(gains[e.name][: e.rank])) for e in plan.entries)


@pytest.mark.parametrize("seed", range(12))
def test_auto_equal_costs_is_exactly_optimal(seed):
    rng = np.random.default_rng(seed)
    refs, gains = synthetic(rng, 3, [(8, 8)] * 3)  # every rank step costs 16
    budget = int(rng.integers(16, 16 * 12))
    plan = auto_plan(refs, gains, budget, max_rank=5)
    best, _ = brute_force([gains[r.name] for r in refs], [16] * 3, budget, 5)
    assert plan_value(plan, gains) == pytest.approx(best, rel=1e-12)
    assert max(e.rank for e in plan.entries) <= 5 and plan.params <= budget


@pytest.mark.parametrize("seed", range(12))
def test_auto_unequal_costs_within_one_step(seed):
    rng = np.random.default_rng(100 + seed)
    shapes = [(4, 4), (8, 8), (12, 4)]
    refs, gains = synthetic(rng, 3, shapes)
    costs = [8, 16, 16]
    budget = int(rng.integers(8, 120))
    plan = auto_plan(refs, gains, budget, max_rank=4)
    best, _ = brute_force([gains[r.name] for r in refs], costs, budget, 4)
    max_step = max(float(g[0]) for g in gains.values())
    value = plan_value(plan, gains)
    assert best - max_step - 1e-12 <= value <= best + 1e-12
    assert plan.params <= budget


@pytest.mark.parametrize("seed", range(6))
def test_auto_granularity_optimal_and_respected(seed):
    rng = np.random.default_rng(200 + seed)
    refs, gains = synthetic(rng, 3, [(8, 8)] * 3)
    budget = int(rng.integers(32, 32 * 6))
    plan = auto_plan(refs, gains, budget, max_rank=6, granularity=2)
    assert all(e.rank % 2 == 0 and e.rank <= 6 for e in plan.entries)
    best, _ = brute_force([gains[r.name] for r in refs], [32] * 3, budget, 6, g=2)
    assert plan_value(plan, gains) == pytest.approx(best, rel=1e-12)
    assert plan.settings["granularity"] == 2


def test_auto_known_allocation_and_ties():
    refs = [ModuleRef(f"m{j}", j, "ffn", "up", (4, 4), 16) for j in range(3)]
    gains = {"m0": np.array([9.0, 4, 1]), "m1": np.array([9.0, 4, 1]), "m2": np.array([5.0, 0, 0])}
    # each step costs 8. Budget 3 steps: 9 (m0), 9 (m1), 5 (m2) beats 4.
    plan = auto_plan(refs, gains, 24)
    assert plan.ranks == {"m0": 1, "m1": 1, "m2": 1}
    # budget 4 steps: next are m0's and m1's 4 (tie): module order picks m0; m2's zero gains never bought
    plan = auto_plan(refs, gains, 32)
    assert plan.ranks == {"m0": 2, "m1": 1, "m2": 1}
    plan = auto_plan(refs, gains, 1000)
    assert plan.ranks == {"m0": 3, "m1": 3, "m2": 1} and plan.params == 7 * 8  # zero-gain steps skipped
    assert plan.settings["gain_captured"] == pytest.approx(1.0)
    # a budget for 1 step: tie m0/m1 -> m0
    assert auto_plan(refs, gains, 8).ranks == {"m0": 1}


def test_auto_minilm_budget_and_caps():
    rng = np.random.default_rng(0)
    gains = {r.name: np.sort(rng.exponential(1.0, 384) ** 4)[::-1] for r in MINILM}
    budget = parse_budget("all@8", base_params=MINILM_BASE, refs=MINILM)
    plan = auto_plan(MINILM, gains, budget, max_rank=16, base_params=MINILM_BASE)
    assert plan.params <= budget and budget - plan.params < 768  # flat enough spectra: budget used up
    assert max(e.rank for e in plan.entries) <= 16
    assert all(e.alpha == 2 * e.rank for e in plan.entries)
    assert plan.strategy == "auto" and plan.budget == budget
    # modules without gains are not candidates
    some = {n: g for n, g in gains.items() if ".query" in n}
    plan = auto_plan(MINILM, some, 100_000)
    assert {e.role for e in plan.entries} == {"q"}


def test_auto_errors():
    refs = [ModuleRef("m0", 0, "ffn", "up", (4, 4), 16)]
    with pytest.raises(BudgetError, match="minimum 8"):
        auto_plan(refs, {"m0": np.ones(4)}, 7)
    with pytest.raises(BudgetError, match="minimum 16"):
        auto_plan(refs, {"m0": np.ones(4)}, 15, granularity=2)
    with pytest.raises(ConfigError, match="not in this model"):
        auto_plan(refs, {"zz": np.ones(4)}, 100)
    with pytest.raises(ConfigError, match="no adapter"):
        auto_plan(refs, {"m0": np.zeros(4)}, 100)
    with pytest.raises(ConfigError, match="granularity"):
        auto_plan(refs, {"m0": np.ones(4)}, 100, max_rank=2, granularity=4)
    with pytest.raises(ConfigError, match="finite"):
        auto_plan(refs, {"m0": np.array([1.0, np.nan])}, 100)


# ----------------------------------------------------------------------------- serialization and export


def test_json_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    refs = gpt2_refs()
    gains = {r.name: np.sort(rng.random(16))[::-1] for r in refs}
    for plan in (auto_plan(refs, gains, 5000, max_rank=8, base_params=123_456),
                 fixed_plan(refs, "q,v", 4, layers=[1], rslora=True)):
        path = plan.save(tmp_path / f"{plan.strategy}.json")
        assert Plan.load(path) == plan
        assert plan.to_peft_config("CAUSAL_LM").use_rslora is plan.rslora
    plan.save(tmp_path)
    assert Plan.load(tmp_path) == plan and Plan.load(tmp_path).entries[0].shape == (192, 64)


def test_peft_dict_and_pattern_keys():
    from peft.utils.other import get_pattern_key

    refs = bert_refs(n_layers=12, hidden=32, ffn=64)
    ranks = {r.name: 1 + i % 5 for i, r in enumerate(refs)}
    plan = fixed_plan(refs, "all", 2)
    d = plan.to_peft_dict()
    assert d["r"] == 2 and d["lora_alpha"] == 4 and d["rank_pattern"] == {} and d["alpha_pattern"] == {}
    assert d["target_modules"] == [r.name for r in refs]
    entries = tuple(e.__class__(**{**e.__dict__, "rank": ranks[e.name], "alpha": 2.0 * ranks[e.name]}) for e in plan.entries)
    plan = Plan("hand", entries, None, sum(e.params for e in entries), 0, False)
    d = plan.to_peft_dict()
    names = [r.name for r in refs]
    for name in names:  # every module resolves to its own key (or to the default r)
        key = get_pattern_key(d["rank_pattern"].keys(), name)
        assert d["rank_pattern"].get(key, d["r"]) == ranks[name]
        prefixed = get_pattern_key(d["rank_pattern"].keys(), "base_model.model." + name)
        assert d["rank_pattern"].get(prefixed, d["r"]) == ranks[name]
    for key in d["rank_pattern"]:  # and each key hits exactly one module
        assert sum(bool(re.match(rf"(.*\.)?({key})$", n)) for n in names) == 1
    key1 = re.escape("bert.encoder.layer.1.attention.self.query")
    assert not re.match(rf"(.*\.)?({key1})$", "bert.encoder.layer.11.attention.self.query")


def make_tiny_bert(n_layers=2):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(0)
    cfg = AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4,
                               intermediate_size=64, vocab_size=100, num_labels=2)
    return AutoModelForSequenceClassification.from_config(cfg)


def nonuniform_plan(n_layers=2):
    refs = bert_refs(n_layers=n_layers, hidden=32, ffn=64)
    base = fixed_plan(refs, "all", 1, base_params=10_000)
    entries = tuple(e.__class__(**{**e.__dict__, "rank": i + 1, "alpha": 2.0 * (i + 1)}) for i, e in enumerate(base.entries))
    return Plan("hand", entries, None, sum(e.params for e in entries), 10_000, False)


def test_peft_build_and_verify():
    from peft import get_peft_model

    plan = nonuniform_plan(n_layers=12)  # 72 modules, ranks 1..72: layer.1.* must not leak into layer.11.*
    from intrinsic.training.model import quiet_peft

    with warnings.catch_warnings(), quiet_peft():
        warnings.simplefilter("error", RuntimeWarning)  # no "pattern key matched nothing" warnings
        model = get_peft_model(make_tiny_bert(12), plan.to_peft_config("SEQ_CLS", modules_to_save=["classifier"]))
    verify_peft_model(model, plan)
    from intrinsic.placement import actual_adapters

    actual = actual_adapters(model)
    assert sorted(r for r, _ in actual.values()) == list(range(1, 73))
    lora_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora_params == plan.params
    # the snippet builds the same config
    ns: dict = {}
    exec(plan.to_python_snippet("SEQ_CLS"), ns)
    assert ns["config"].rank_pattern == plan.to_peft_config("SEQ_CLS").rank_pattern
    assert set(ns["config"].target_modules) == set(plan.to_peft_dict()["target_modules"])


def test_verify_catches_silently_ignored_pattern():
    from peft import LoraConfig, get_peft_model

    plan = nonuniform_plan()
    d = plan.to_peft_dict()
    d["rank_pattern"] = {k.replace("query", "querry"): v for k, v in d["rank_pattern"].items()}  # typo: matches nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(make_tiny_bert(), LoraConfig(task_type="SEQ_CLS", **d))
    with pytest.raises(ConfigError, match=r"layer\.1\.attention\.self\.query: rank 1, planned 7"):
        verify_peft_model(model, plan)
    # an adapter on an unplanned module is caught too
    from intrinsic.training.model import quiet_peft

    small = Plan("hand", plan.entries[1:], None, plan.params - plan.entries[0].params, 0, False)
    with quiet_peft():
        model = get_peft_model(make_tiny_bert(), plan.to_peft_config("SEQ_CLS"))
    with pytest.raises(ConfigError, match="unplanned adapter"):
        verify_peft_model(model, small)
    with pytest.raises(ConfigError, match="no adapter"):
        verify_peft_model(model, Plan("x", plan.entries + (plan.entries[0].__class__(
            "bert.pooler.dense", 0, "ffn", "up", (32, 32), 1, 2.0),), None, plan.params + 64, 0, False))


def test_plan_table():
    plan = fixed_plan(MINILM, "q,v", 4, layers=[0, 2])
    rows = plan_table(plan)
    assert rows == [{"layer": 0, "q": 4, "v": 4, "params": 2 * 4 * 768},
                    {"layer": 2, "q": 4, "v": 4, "params": 2 * 4 * 768}]
    rows = plan_table(fixed_plan(MINILM, "all", 1))
    assert list(rows[0]) == ["layer", "q", "k", "v", "o", "up", "down", "params"] and len(rows) == 6
