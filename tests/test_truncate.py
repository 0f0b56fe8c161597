"""`intrinsic truncate` (issue 13 item 2): truncated SVD against numpy (Eckart-Young), a planted low-rank
update on a tiny model gives the planted r90 in its component and only there, fused blocks and exact restore,
and the CLI end to end (--json, the run's own scores, resume, one-line refusals)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from intrinsic.arch import discover, num_layers, weight_of
from intrinsic.testing import build_tiny_model
from intrinsic.truncation import (
    NOT_MEASURED,
    NOT_REACHED,
    REACHED,
    UNDEFINED,
    LowRank,
    TruncateSettings,
    Truncator,
    component_rows,
    layer_bands,
    measure,
    own_share,
    parse_ranks,
    r90,
    r90_own,
    truncated,
)

from test_cli_hardening import invoke, one_line_exit_2  # the CLI runner and the one-line refusal check


# ----------------------------------------------------------------------------- truncated SVD


@pytest.mark.parametrize("m,n,rank", [(20, 12, 5), (9, 30, 3), (16, 16, 16)])
def test_truncated_svd_is_the_eckart_young_optimum(m, n, rank):
    rng = np.random.default_rng(m * n + rank)
    a = (rng.standard_normal((m, rank)) * np.linspace(3, 1, rank)) @ rng.standard_normal((rank, n))
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    lr = LowRank.of(torch.tensor(a), max_rank=max(m, n))
    assert lr.full_rank == min(m, n)
    np.testing.assert_allclose(np.sqrt(lr.sv2), s, rtol=1e-5, atol=1e-5)
    scale = np.linalg.norm(a)
    for r in range(0, rank + 2):
        ref = (u[:, :r] * s[:r]) @ vt[:r]
        got = lr.at(r).double().numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5 * scale)
        # Eckart-Young: the squared error of the best rank-r approximation is the tail of the spectrum
        np.testing.assert_allclose(np.linalg.norm(a - got) ** 2, np.sum(s[r:] ** 2), atol=1e-8 * scale ** 2 + 1e-9)
        np.testing.assert_allclose(lr.energy_kept(r)[0], np.sum(s[:r] ** 2), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(truncated(torch.tensor(a), rank).double().numpy(), a, atol=1e-5 * scale)


def test_max_rank_keeps_only_the_leading_factors():
    a = torch.randn(12, 7, generator=torch.Generator().manual_seed(0))
    full, capped = LowRank.of(a, 7), LowRank.of(a, 3)
    assert capped.us.shape == (12, 3) and capped.vh.shape == (3, 7)
    torch.testing.assert_close(capped.at(3), full.at(3))
    torch.testing.assert_close(capped.at(5), full.at(3))  # clamped to what is kept
    assert capped.sv2 == full.sv2


def test_rank_grid_bands_and_r90_rule():
    assert parse_ranks("8, 1,2,2") == (1, 2, 8)
    assert TruncateSettings().ranks == (1, 2, 4, 8, 16, 32, 64)
    for bad in ("0,2", "a", "", "1.5"):
        with pytest.raises(Exception, match="ranks"):
            parse_ranks(bad)
    assert layer_bands(30) == {"first": tuple(range(10)), "middle": tuple(range(10, 20)),
                               "last": tuple(range(20, 30))}
    assert layer_bands(4) == {"first": (0,), "middle": (1, 2), "last": (3,)}
    assert layer_bands(2) == {"first": (0,), "last": (1,)}
    assert r90((1, 2, 4), (0.5, 0.89, 0.95), 1.0) == 4
    assert r90((1, 2, 4), (0.5, 0.9, 0.95), 1.0) == 2
    assert r90((1, 2), (0.1, 0.2), 1.0) is None
    assert r90((1, 2), (0.1, 0.2), -1.0) is None  # nothing gained: nothing to keep


# ----------------------------------------------------------------------------- planted update


PLANTED_RANK = 3


def _plant(model, refs, role: str, layer: int, rank: int, scale: float, seed: int = 1) -> None:
    """Add a rank-`rank` update with equal singular values to one module of `model`."""
    ref = next(r for r in refs if r.role == role and r.layer == layer)
    w = weight_of(model, ref)
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(w.shape[0], rank, generator=g))[0]
    v = torch.linalg.qr(torch.randn(w.shape[1], rank, generator=g))[0]
    with torch.no_grad():
        w += scale * u @ v.T


def _planted(*plants):
    """A tiny Llama (base) and a copy with planted updates (role, layer, rank, scale, seed) (the "fine-tuned"
    model), scored by closeness of the logits to the planted model's on fixed inputs: the planted model defines
    the targets, so only its updates carry the gain."""
    base = build_tiny_model("llama", task_kind="lm").model
    ft = copy.deepcopy(base)
    refs = discover(ft)
    for plant in plants:
        _plant(ft, refs, *plant)
    ids = torch.randint(5, 90, (8, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        target = ft(input_ids=ids).logits

    def score(model) -> float:
        with torch.no_grad():
            return -float(((model(input_ids=ids).logits - target) ** 2).mean())

    base_weights = {r.name: weight_of(base, r) for r in discover(base)}
    return base, ft, refs, base_weights, score


@pytest.fixture(scope="module")
def planted():
    """One rank-3 update on v of layer 1: it carries the whole gain."""
    return _planted(("v", 1, PLANTED_RANK, 4.0))


UNTOUCHED = ("q", "k", "o", "gate", "up")


def test_planted_low_rank_update_gives_the_planted_r90(planted):
    base, ft, refs, base_weights, score = planted
    before = {k: v.detach().clone() for k, v in ft.state_dict().items()}
    t = Truncator(ft, base_weights, refs, num_layers(ft), max_rank=8)
    grid = (1, 2, 3, 4, 8)
    names = list(t.components)
    assert names == ["attention", "ffn", "q", "k", "v", "o", "gate", "up", "down", "first", "last"]
    untrained, full = score(base), score(ft)
    assert full == 0.0 and untrained < -1e-3
    points = measure(t, names, grid, score)
    assert {(p.component, p.rank) for p in points} == {(c, r) for c in names for r in (0, *t.ranks(c, grid))}
    rows = {c.component: c for c in component_rows([t.describe(c, grid) for c in names], points, untrained, full)}
    for name in ("attention", "v", "last"):  # the components holding the planted update
        assert rows[name].r90 == PLANTED_RANK, (name, rows[name])
        gains = dict(zip(rows[name].ranks, rows[name].gains, strict=True))
        assert gains[PLANTED_RANK - 1] < 0.9 * (full - untrained) <= gains[PLANTED_RANK]
        assert gains[PLANTED_RANK] == pytest.approx(full - untrained, rel=1e-4)  # rank >= 3 keeps it all
        assert rows[name].energy[rows[name].ranks.index(PLANTED_RANK)] == pytest.approx(1.0, abs=1e-4)
        assert rows[name].energy_rank90 == PLANTED_RANK  # equal singular values: 2 of 3 keep 67%
        # without its update the model is the base model: the component carries the whole gain
        assert rows[name].score_without == pytest.approx(untrained, rel=1e-6) and rows[name].gain_without == \
            pytest.approx(0.0, abs=1e-6 * abs(untrained))
        assert rows[name].own_share == pytest.approx(1.0, abs=1e-6)
        assert (rows[name].r90_own, rows[name].own_status) == (PLANTED_RANK, REACHED)
    for name in ("ffn", *UNTOUCHED, "down", "first"):  # untouched: nothing to lose at rank 1, nothing of its own
        assert rows[name].r90 == 1, (name, rows[name])
        assert rows[name].gains[0] == pytest.approx(full - untrained, abs=1e-6)
        assert rows[name].energy_rank90 == 0  # no update at all
        assert rows[name].gain_without == pytest.approx(full - untrained, abs=1e-6)  # dW = 0: nothing removed
        assert (rows[name].r90_own, rows[name].own_status) == (None, UNDEFINED) and abs(rows[name].own_share) < 1e-6
    assert rows["v"].ranks == (1, 2, 3, 4, 8) and rows["k"].max_rank == 16 and rows["v"].blocks == 2
    after = ft.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # every weight restored bit for bit


def test_r90_own_reads_a_component_whose_literal_r90_saturates():
    """A small rank-3 update on v of layer 1 beside a large rank-6 update on down of layer 0 (about 93% of the
    gain): cutting v to rank 1 keeps >= 90% of the whole gain (the literal r90 saturates at 1, as on SmolLM2),
    while r90_own, 90% of v's own contribution, finds the planted rank 3; down reads 6 both ways."""
    base, ft, refs, base_weights, score = _planted(("v", 1, PLANTED_RANK, 0.5, 1), ("down", 0, 6, 16.0, 3))
    t = Truncator(ft, base_weights, refs, num_layers(ft), max_rank=8)
    grid, names = (1, 2, 3, 4, 6, 8), ["attention", "v", "down", "first", "last", "q", "up"]
    untrained, full = score(base), score(ft)
    rows = {c.component: c for c in component_rows([t.describe(c, grid) for c in names],
                                                   measure(t, names, grid, score), untrained, full)}
    gain = full - untrained
    for name in ("attention", "v", "last"):
        c = rows[name]
        assert c.r90 == 1 and c.gains[0] >= 0.9 * gain  # saturated
        assert (c.r90_own, c.own_status) == (PLANTED_RANK, REACHED)
        own = dict(zip(c.ranks, (g - c.gain_without for g in c.gains), strict=True))
        assert own[2] < 0.9 * (gain - c.gain_without) <= own[3]  # the rule, read off the gains by hand
        assert 0.02 < c.own_share < 0.2 and c.own_share == pytest.approx((gain - c.gain_without) / gain)
    for name in ("down", "first"):
        assert (rows[name].r90_own, rows[name].own_status) == (6, REACHED) and rows[name].own_share > 0.8
        assert rows[name].r90 == 6
    for name in ("q", "up"):
        assert (rows[name].r90_own, rows[name].own_status) == (None, UNDEFINED)


def test_r90_own_rule():
    assert r90_own((1, 2, 4), (0.5, 0.89, 0.95), 0.0, 1.0) == (4, REACHED)  # gain(0) = 0: the literal rule
    # gain(0) = 0.8 of 1.0: own contribution 0.2, 90% of it reached where gain >= 0.98
    assert r90_own((1, 2, 4), (0.9, 0.97, 0.985), 0.8, 1.0) == (4, REACHED)
    assert r90_own((1, 2, 4), (0.9, 0.97, 0.975), 0.8, 1.0) == (None, NOT_REACHED)
    assert r90((1, 2, 4), (0.9, 0.97, 0.975), 1.0) == 1  # the literal r90 of the same curve saturates
    assert r90_own((1, 2), (0.995, 1.0), 0.995, 1.0) == (None, UNDEFINED)  # own 0.5% < the 1% floor
    assert r90_own((1, 2), (0.995, 1.0), 0.995, 1.0, floor=0.001) == (2, REACHED)  # a lower floor reads it
    assert r90_own((1, 2), (1.0, 1.0), 1.2, 1.0) == (None, UNDEFINED)  # removing it helps: no contribution
    assert r90_own((1, 2), (0.5, 0.9), 0.0, -1.0) == (None, UNDEFINED)  # nothing gained
    assert r90_own((1, 2), (0.5, None), 0.0, 1.0) == (None, NOT_MEASURED)
    assert r90_own((1, 2), (0.5, 0.9), None, 1.0) == (None, NOT_MEASURED)
    assert own_share(0.25, 2.0) == 0.875 and own_share(None, 1.0) is None and own_share(0.0, 0.0) is None


def test_fused_blocks_truncate_only_their_rows_and_restore():
    """GPT-2's c_attn (Conv1D, stored transposed) splits into q, k, v blocks: truncating v touches v's rows only."""
    base = build_tiny_model("gpt2", task_kind="lm").model
    ft = copy.deepcopy(base)
    refs = discover(ft)
    with torch.no_grad():
        for r in refs:
            weight_of(ft, r).add_(0.1 * torch.randn(r.shape, generator=torch.Generator().manual_seed(r.layer)))
    t = Truncator(ft, {r.name: weight_of(base, r) for r in discover(base)}, refs, num_layers(ft), max_rank=4)
    assert [c for c in t.components if c in ("q", "k", "v", "qkv")] == ["q", "k", "v"]
    cattn = next(r for r in refs if r.role == "qkv" and r.layer == 0)
    w_ft = weight_of(ft, cattn).detach().clone()
    w_base = weight_of(base, cattn).detach()
    with t.truncated("v", 2):
        now = weight_of(ft, cattn).detach()
        torch.testing.assert_close(now[:64], w_ft[:64], rtol=0, atol=0)  # q, k rows untouched
        dv = (w_ft[64:] - w_base[64:]).double().numpy()
        u, s, vt = np.linalg.svd(dv, full_matrices=False)
        np.testing.assert_allclose((now[64:] - w_base[64:]).double().numpy(), (u[:, :2] * s[:2]) @ vt[:2], atol=1e-5)
    assert torch.equal(weight_of(ft, cattn), w_ft)
    # the spectral rank beside r90: smallest r keeping 90% of sum over v's blocks of ||dW||^2, by hand
    sv2 = [np.linalg.svd((weight_of(ft, r) - weight_of(base, r)).detach().double().numpy()[64:],
                         compute_uv=False) ** 2 for r in refs if r.role == "qkv"]
    share = [sum(s[:k].sum() for s in sv2) / sum(s.sum() for s in sv2) for k in range(1, 33)]
    assert t.energy_rank("v") == 1 + next(k for k, v in enumerate(share) if v >= 0.9)
    assert 1 < t.energy_rank("v") < 32 and t.describe("v", (1, 2)).energy_rank90 == t.energy_rank("v")


# ----------------------------------------------------------------------------- CLI


FAST = ["--steps", "12", "--batch-size", "8", "--max-length", "24", "--device", "cpu", "--lr", "3e-3",
        "--max-eval-examples", "16"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny = build_tiny_model("llama", task_kind="lm")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def full_run(llama_dir, tiny_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    res = invoke("train", llama_dir, f"{tiny_csv}:lm", "--placement", "full", "--save-model", "--out", out, *FAST,
                 "--json")
    assert res.exit_code == 0, res.output
    return out


def test_cli_json_scores_like_the_run_and_resumes(full_run):
    run = json.loads((full_run / "run.json").read_text())
    res = invoke("truncate", full_run, "--json", "--ranks", "1,4,64", "-c", "attention,mlp,k,q,last,first",
                 "--device", "cpu")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["full_score"] == pytest.approx(run["score"], abs=1e-9)  # the run's own evaluation, same batches
    assert out["untrained_score"] == pytest.approx(run["untrained_score"], abs=1e-9)
    assert out["full_gain"] > 0 and out["eval_examples"] == 16
    rows = {c["component"]: c for c in out["components"]}
    assert list(rows) == ["attention", "ffn", "k", "q", "last", "first"]
    assert rows["attention"]["ranks"] == [1, 4, 32] and rows["k"]["ranks"] == [1, 4, 16]  # clamped to min(m, n)
    without = {p["component"]: p["score"] for p in out["points"] if p["rank"] == 0}
    for c in rows.values():
        assert c["r90"] == r90(c["ranks"], c["gains"], out["full_gain"])
        assert c["gains"][-1] == pytest.approx(out["full_gain"], abs=1e-4)  # full rank: the whole update
        assert c["score_without"] == without[c["component"]]  # the r = 0 point, measured for every component
        assert c["gain_without"] == pytest.approx(without[c["component"]] - out["untrained_score"])
        assert c["own_share"] == pytest.approx((out["full_gain"] - c["gain_without"]) / out["full_gain"])
        assert (c["r90_own"], c["own_status"]) == r90_own(c["ranks"], c["gains"], c["gain_without"], out["full_gain"])
    assert rows["attention"]["own_status"] == REACHED and rows["attention"]["own_share"] > 0.01
    assert len(out["points"]) == 24 and json.loads((full_run / "truncation.json").read_text()) == out

    # resume: a point lost from the file is measured again (same value on CPU), the others are kept
    stored = json.loads((full_run / "truncation.json").read_text())
    lost = stored["points"].pop(5)
    next(p for p in stored["points"] if (p["component"], p["rank"]) == ("attention", 1))["score"] = 123.0  # kept
    (full_run / "truncation.json").write_text(json.dumps(stored))
    again = json.loads(invoke("truncate", full_run, "--json", "--ranks", "1,4,64", "-c", "attention,mlp,k,q,last,first",
                              "--device", "cpu").output)
    points = {(p["component"], p["rank"]): p["score"] for p in again["points"]}
    assert points[(lost["component"], lost["rank"])] == pytest.approx(lost["score"], abs=1e-12)
    assert points[("attention", 1)] == 123.0

    # a file written before the r = 0 point existed (no rank-0 points, no r90_own fields) loads and is completed:
    # the r = 0 points are measured again, to the same values on CPU; the others are kept (the doctored one too)
    old = json.loads((full_run / "truncation.json").read_text())
    old["points"] = [p for p in old["points"] if p["rank"] != 0]
    for c in old["components"]:
        for key in ("score_without", "gain_without", "own_share", "r90_own", "own_status"):
            del c[key]
    del old["own_floor"]
    (full_run / "truncation.json").write_text(json.dumps(old))
    from intrinsic.truncation import TruncateSettings, TruncationResult, is_complete

    loaded = TruncationResult.load(full_run)
    assert loaded is not None and loaded.own_floor == 0.01
    assert all(c.score_without is None and c.own_status == NOT_MEASURED for c in loaded.components)
    asked = TruncateSettings(ranks=(1, 4, 64), components="attention,mlp,k,q,last,first", device="cpu")
    assert not is_complete(full_run, asked)
    said = invoke("truncate", full_run, "--ranks", "1,4,64", "-c", "attention,mlp,k,q,last,first", "--device", "cpu")
    assert said.exit_code == 0, said.output
    done = json.loads((full_run / "truncation.json").read_text())
    assert {(p["component"], p["rank"]): p["score"] for p in done["points"]} == points
    assert is_complete(full_run, asked)
    measured = (full_run / "truncation.json").read_text()
    (full_run / "truncation.json").write_text(json.dumps({**json.loads(measured), "device": "cuda"}))
    assert not is_complete(full_run, asked) and is_complete(full_run, asked, any_device=True)  # measured elsewhere
    (full_run / "truncation.json").write_text(measured)
    table = invoke("truncate", full_run, "--ranks", "1,4,64", "-c", "attention,mlp,k,q,last,first", "--device", "cpu")
    assert table.exit_code == 0 and "r90" in table.output and "attention" in table.output
    assert "r90_own" in table.output and "own share" in table.output


def test_cli_refusals_are_one_line(full_run, llama_dir, tiny_csv, tmp_path):
    one_line_exit_2(invoke("truncate", tmp_path), "no run.json", "--placement full --save-model")
    one_line_exit_2(invoke("truncate", full_run, "--ranks", "0,2"), "--ranks")
    one_line_exit_2(invoke("truncate", full_run, "--ranks", "x"), "--ranks")
    one_line_exit_2(invoke("truncate", full_run, "-c", "atention", "--device", "cpu"), "atention", "Did you mean")
    unsaved = tmp_path / "unsaved"
    assert invoke("train", llama_dir, f"{tiny_csv}:lm", "--placement", "full", "--out", unsaved, *FAST,
                  "--steps", "1").exit_code == 0
    one_line_exit_2(invoke("truncate", unsaved), "no fine-tuned weights", "--save-model")
    lora = tmp_path / "lora"
    assert invoke("train", llama_dir, f"{tiny_csv}:lm", "--rank", "2", "--out", lora, *FAST,
                  "--steps", "1").exit_code == 0
    one_line_exit_2(invoke("truncate", lora), "LoRA run", "--placement full")


# ----------------------------------------------------------------------------- over seeds


def _result(r90s: dict, gains: dict, full_gain: float, model="m", task="t", without: dict | None = None):
    """A TruncationResult by hand; `without`: {component: gain(0)} (r90_own and own share follow the rule)."""
    from intrinsic.truncation import ComponentTruncation, TruncationResult

    without = without or {}
    comps = tuple(ComponentTruncation(component=c, group="kind", blocks=1, params=1, layers=(0,), max_rank=8,
                                      ranks=(1, 2, 4, 8), gains=gains[c], energy=(0.5, 0.7, 0.9, 1.0), r90=r90s[c],
                                      energy_rank90=4, gain_without=without.get(c),
                                      own_share=own_share(without.get(c), full_gain),
                                      r90_own=r90_own((1, 2, 4, 8), gains[c], without.get(c), full_gain)[0],
                                      own_status=r90_own((1, 2, 4, 8), gains[c], without.get(c), full_gain)[1])
                  for c in r90s)
    return TruncationResult(schema_version=1, run_dir="x", run_created="", model=model, task=task, task_kind="lm",
                            eval_split="test", eval_examples=1, device="cpu", untrained_score=0.0,
                            full_score=full_gain, run_score=full_gain, full_gain=full_gain, keep=0.9, grid=(1, 2, 4, 8),
                            components=comps, available=tuple(r90s), points=(), time_s=0.0, created="")


def test_summary_over_seeds_by_hand():
    from scipy import stats

    from intrinsic.truncation import summarize_runs

    g = (0.1, 0.5, 0.95, 1.0)
    runs = [_result({"attention": 2, "ffn": 2}, {"attention": (0.5, 0.95, 1.0, 1.0), "ffn": g}, 1.0,
                    without={"attention": 0.0, "ffn": 0.995}),  # r90_own 2, ffn's own 0.5%: undefined
            _result({"attention": 4, "ffn": None}, {"attention": (0.2, 0.6, 1.8, 2.0), "ffn": g}, 2.0,
                    without={"attention": 1.0, "ffn": 0.5}),  # own 1.0: 1.8 - 1.0 < 0.9, reached at 8; ffn n/r
            _result({"attention": 8, "ffn": 4}, {"attention": (0.0, 0.2, 0.5, 0.98), "ffn": g}, 1.0,
                    without={"attention": 0.5})]  # own 0.5: 0.98 - 0.5 >= 0.45 at 8; ffn not measured
    s = {c.component: c for c in summarize_runs(runs).summary}
    a = s["attention"]
    assert a.r90s == (2, 4, 8) and a.median == 4 and a.not_reached == 0
    logs = np.log2([2, 4, 8])
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
    assert a.geomean == pytest.approx(4.0)
    assert (a.ci_low, a.ci_high) == pytest.approx((2 ** (2 - half), 2 ** (2 + half)))
    shares = {k.rank: k for k in a.kept}
    assert shares[1].mean == pytest.approx((0.5 + 0.1 + 0.0) / 3)  # gain(r) / gain(full), run by run
    assert shares[4].mean == pytest.approx((1.0 + 0.9 + 0.5) / 3) and shares[4].n == 3
    f = s["ffn"]
    assert f.r90s == (2, None, 4) and f.not_reached == 1 and f.median == 4
    assert f.geomean is None and f.ci_low is None
    o = a.own  # r90_own 2, 8, 8 (r90 2, 4, 8); own shares 1.0, 0.5, 0.5
    assert o.r90s == (2, 8, 8) and o.status == (REACHED,) * 3 and o.median == 8
    logs = np.log2([2, 8, 8])
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
    assert (o.geomean, o.ci_low, o.ci_high) == pytest.approx(2 ** (logs.mean() + np.array([0, -half, half])))
    shares = np.array([1.0, 0.5, 0.5])
    half = stats.t.ppf(0.975, 2) * shares.std(ddof=1) / np.sqrt(3)
    assert (o.share, o.share_ci_low, o.share_ci_high) == pytest.approx((2 / 3, 2 / 3 - half, 2 / 3 + half))
    fo = f.own  # undefined (left out), not reached, not measured (left out)
    assert fo.status == (UNDEFINED, NOT_REACHED, NOT_MEASURED) and fo.r90s == (None, None, None)
    assert (fo.undefined, fo.not_reached, fo.median, fo.geomean) == (1, 1, None, None)
    assert fo.share == pytest.approx((0.005 + 0.75) / 2)  # the runs with gain(0)
    # a seed where the component's own contribution is below the floor is left out, not counted as not reached
    q = summarize_runs([_result({"q": 1}, {"q": (0.995, 0.996, 0.999, 1.0)}, 1.0, without={"q": 0.995}),
                        _result({"q": 2}, {"q": (1.5, 1.95, 2.0, 2.0)}, 2.0, without={"q": 1.0}),
                        _result({"q": 4}, {"q": (0.6, 0.8, 0.96, 1.0)}, 1.0, without={"q": 0.5})]).summary[0].own
    assert q.status == (UNDEFINED, REACHED, REACHED) and q.r90s == (None, 2, 4) and q.undefined == 1
    assert q.median == 3 and q.geomean == pytest.approx(2 ** 1.5)
    assert summarize_runs(runs[:1] * 2).summary[0].median == 2
    with pytest.raises(Exception, match="different models or tasks"):
        summarize_runs([runs[0], _result({"attention": 2}, {"attention": g}, 1.0, task="other")])


def test_cli_several_runs_are_summarized(full_run, tmp_path):
    import shutil

    second = tmp_path / "second"
    shutil.copytree(full_run, second, ignore=shutil.ignore_patterns("truncation.json"))
    res = invoke("truncate", full_run, second, "--json", "--ranks", "1,4", "-c", "q,first", "--device", "cpu")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert len(out["runs"]) == 2 and [c["component"] for c in out["summary"]] == ["q", "first"]
    for c in out["summary"]:
        one = [next(x for x in r["components"] if x["component"] == c["component"]) for r in out["runs"]]
        # the same run twice: q and first of the first run read from its file (every module factored), of the copy
        # measured with only the modules of q and the first third factored
        assert c["r90s"] == [x["r90"] for x in one] and one[0]["gains"] == one[1]["gains"]
        assert c["own"]["r90s"] == [x["r90_own"] for x in one] and c["own"]["status"] == [x["own_status"] for x in one]
        assert one[0]["gain_without"] == one[1]["gain_without"]
        assert c["own"]["share"] == pytest.approx(one[0]["own_share"])
    table = invoke("truncate", full_run, second, "--ranks", "1,4", "-c", "q,first", "--device", "cpu")
    assert table.exit_code == 0 and "r90 over 2 runs" in " ".join(table.output.split())
    assert "r90_own" in table.output and "own share" in table.output
    one_line_exit_2(invoke("truncate", full_run, tmp_path / "nothing"), "no run.json")
