"""The gradient and weight-update probes on tiny random-init models and on planted-rank gradients."""

from __future__ import annotations

import random

import numpy as np
import pytest
import scipy.linalg
import torch

from intrinsic.arch import ModuleRef, discover, grad_of
from intrinsic.errors import ConfigError, NonFiniteError
from intrinsic.testing import build_tiny_model
from intrinsic.probes import ProbeSettings, describe, probe
from intrinsic.probes.gradient import GradientSums, accumulate_gradients, measure_sums
from intrinsic.probes.rows import gradient_rows
from intrinsic.spectra import spectrum
from intrinsic.tasks import TaskData, make_batches

FAST = dict(batches=4, batch_size=8, max_length=24, update_steps=None)


def analyze(sums: GradientSums, tokens: int, settings: ProbeSettings = ProbeSettings()):
    """The gradient probe's rows from given sums: measure the spectra, then apply the estimators."""
    return gradient_rows(sums.refs, measure_sums(sums, tokens, settings.max_sv, settings.seed),
                         settings.rank_estimator or "half_difference")  # no folds here: the default without them


def _task(kind: str = "planted", n: int = 96, seed: int = 0) -> TaskData:
    """planted: label 1 iff the text contains 'z'; random: labels independent of the text."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        t = "".join(rng.choice("abcdefghij") for _ in range(10))
        y = i % 2 if kind == "planted" else rng.randrange(2)
        if kind == "planted" and y:
            t = t[:5] + "z" + t[6:]
        texts.append(t)
        labels.append(y)
    return TaskData(kind, "classification", ("no", "yes"), tuple(texts), tuple(labels), (), ())


@pytest.fixture(scope="module")
def tiny_gpt2():
    return build_tiny_model("gpt2")


# ---------------------------------------------------------------------- accumulation


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_gpt2"])
def test_accumulator_matches_plain_loop(request, fixture):
    tiny = request.getfixturevalue(fixture)
    model, data = tiny.model, _task()
    refs = discover(model)
    batches = make_batches(data, tiny.tokenizer, batch_size=8, num_batches=5)
    noise = make_batches(data, tiny.tokenizer, batch_size=8, num_batches=5, shuffle_labels=True)
    flags = [p.requires_grad for p in model.parameters()]
    sums = accumulate_gradients(model, refs, batches, noise)
    assert [p.requires_grad for p in model.parameters()] == flags  # caller's flags restored
    assert all(p.grad is None for p in model.parameters())

    def per_batch(bs):  # reference: plain loops, every parameter requiring grad
        out = []
        for b in bs:
            model.zero_grad()
            model(**b).loss.backward()
            out.append([grad_of(model, r).detach().clone() for r in refs])
        model.zero_grad(set_to_none=True)
        return out

    real, shuffled = per_batch(batches), per_batch(noise)
    assert (sums.n_even, sums.n_odd, sums.n_noise) == (3, 2, 5)
    for i in range(len(refs)):
        G, Ge, Go, Gn = sums.means(i)
        close = dict(rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(G, torch.stack([g[i] for g in real]).mean(0), **close)
        torch.testing.assert_close(Ge, torch.stack([g[i] for g in real[0::2]]).mean(0), **close)
        torch.testing.assert_close(Go, torch.stack([g[i] for g in real[1::2]]).mean(0), **close)
        torch.testing.assert_close(Gn, torch.stack([g[i] for g in shuffled]).mean(0), **close)


def test_spectrum_matches_scipy():
    torch.manual_seed(0)
    for shape in [(48, 16), (16, 48), (40, 40)]:
        M = torch.randn(*shape) @ torch.diag(torch.logspace(0, -4, shape[1]))  # (m, n), decaying spectrum
        sv, U, V = spectrum(M, 512, vectors=4)
        ref = scipy.linalg.svdvals(M.double().numpy())
        np.testing.assert_allclose(sv, ref[: len(sv)], rtol=1e-6, atol=1e-9 * ref[0])
        assert len(sv) == min(shape)
        np.testing.assert_allclose(U.T @ M.double().numpy() @ V, np.diag(sv[:4]), atol=1e-8 * ref[0])


def _synthetic_sums(signal: tuple[float, ...], n: int = 32, dim: int = 64, seed: int = 0) -> GradientSums:
    """Per-batch gradients S + E_b, S of planted singular values `signal`, E_b i.i.d. N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(dim, dim, generator=g)).Q
    V = torch.linalg.qr(torch.randn(dim, dim, generator=g)).Q
    S = U[:, : len(signal)] @ torch.diag(torch.tensor(signal)) @ V[:, : len(signal)].T  # (dim, dim)
    E = torch.randn(n, dim, dim, generator=g)  # (N, dim, dim)
    noise = torch.randn(n, dim, dim, generator=g)  # shuffled labels: no signal
    ref = ModuleRef("layer.0.q", 0, "attention", "q", (dim, dim), dim * dim)
    even, odd = (S + E[0::2]).sum(0), (S + E[1::2]).sum(0)
    return GradientSums([ref], [even], [odd], [noise.sum(0)], n // 2, n - n // 2, n)


def test_planted_rank_is_recovered_by_the_data_driven_floors():
    rows = analyze(_synthetic_sums((30.0, 20.0, 12.0)), tokens=10_000, settings=ProbeSettings())
    ranks = rows[0].grad_ranks
    assert ranks["half_difference"] == 3
    assert ranks["noise_floor"] == 3
    assert ranks["split_half"] == 3
    assert rows[0].intrinsic_rank == 3
    assert rows[0].energy_share == pytest.approx(1.0)


def test_pure_noise_gives_rank_near_zero():
    rows = analyze(_synthetic_sums(()), tokens=10_000, settings=ProbeSettings())
    ranks = rows[0].grad_ranks
    assert ranks["split_half"] == 0
    assert ranks["half_difference"] <= 1 and ranks["noise_floor"] <= 1  # one-run max tests: P(>=1) = 1/2


def test_random_labels_stay_low_and_planted_labels_rise_on_a_tiny_model(tiny_bert):
    """What a random-init tiny model supports, honestly: with random labels the label-specific floor
    (noise_floor) is ~0 and the default (half_difference) at most 1 (it keeps the label-independent
    direction, pushing the head towards the label marginal); a planted label ('z' in the text) lifts
    both. split_half also counts label-independent structure that reproduces (1-4 here), so it is
    not asserted low."""
    settings = dict(batches=16, batch_size=16, max_length=16, update_steps=None)
    rand = probe(tiny_bert, _task("random", n=256), **settings)
    plant = probe(tiny_bert, _task("planted", n=256), **settings)

    def ranks(rep, est):
        return [m.grad_ranks[est] for m in rep.top_level()]

    assert np.median(ranks(rand, "noise_floor")) <= 1 and max(ranks(rand, "noise_floor")) <= 1
    assert max(ranks(rand, "half_difference")) <= 1
    for est in ("noise_floor", "half_difference"):
        assert sum(ranks(plant, est)) > sum(ranks(rand, est)), est
        assert max(ranks(plant, est)) <= 4  # low: a one-feature task


# ---------------------------------------------------------------------- probe end to end


def test_probe_report_rows_and_fused_blocks(tiny_gpt2):
    rep = probe(tiny_gpt2, _task(), **FAST)
    top, blocks = rep.top_level(), [m for m in rep.modules if m.block_of]
    assert len(top) == len(discover(tiny_gpt2.model)) == 8
    assert {m.role for m in blocks} == {"q", "k", "v"} and len(blocks) == 6
    assert sum(m.energy_share for m in top) == pytest.approx(1.0)
    for fused in (m for m in top if m.role == "qkv"):
        mine = [b for b in blocks if b.block_of == fused.name]
        assert sum(b.energy_share for b in mine) == pytest.approx(fused.energy_share, rel=1e-5)
        assert all(b.shape == (32, 32) for b in mine)
    for m in rep.modules:
        assert 0 <= m.intrinsic_rank <= m.rank_cap == min(rep.tokens, *m.shape)
        assert m.intrinsic_rank == int(m.grad_ranks["half_difference"])
        assert list(m.grad_sv) == sorted(m.grad_sv, reverse=True)
    assert set(rep.summary["by_kind"]) == {"attention", "ffn"}
    assert set(rep.timings) >= {"gradient", "noise", "spectra"}


def test_probe_is_deterministic(tiny_bert):
    a = probe(tiny_bert, _task(), **{**FAST, "update_steps": 3})
    b = probe(tiny_bert, _task(), **{**FAST, "update_steps": 3})
    strip = lambda r: {**r.to_json(), "timings": None}  # noqa: E731
    assert strip(a) == strip(b)


def test_update_probe_keeps_the_callers_model(tiny_bert):
    model = tiny_bert.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    rep = probe(tiny_bert, _task(), **{**FAST, "update_steps": 6, "update_checkpoints": (2, 4), "update_lr": 1e-3})
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    for m in rep.modules:
        assert set(m.update_checkpoints) == {"2", "4", "6"} == set(m.update_checkpoint_sv)
        assert m.update_ranks == m.update_checkpoints["6"]
        assert m.update_sv == m.update_checkpoint_sv["6"] and m.update_sv[0] > 0
    assert rep.settings["update_checkpoints"] == [2, 4, 6]


def test_roles_and_layers_select_a_subset(tiny_gpt2):
    rep = probe(tiny_gpt2, _task(), roles=("q", "v"), layers=(1,), **FAST)
    assert {m.layer for m in rep.modules} == {1}
    assert {m.role for m in rep.top_level()} == {"qkv"}  # a fused module is probed when a block role is asked
    assert [r.name for r in describe(tiny_gpt2, roles=("q", "v"), layers=(1,))] == [m.name for m in rep.top_level()]


def test_top_level_api_accepts_names(tiny_bert_dir, tiny_csv):
    import intrinsic

    rep = intrinsic.probe(str(tiny_bert_dir), str(tiny_csv), **FAST)
    assert rep.model == str(tiny_bert_dir) and rep.task == str(tiny_csv) and len(rep.modules) == 12


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "settings, field",
    [
        (dict(batches=1), "batches"),
        (dict(update_steps=0), "update_steps"),
        (dict(update_steps=10, update_checkpoints=(20,)), "update_checkpoints"),
        (dict(roles=("qq",)), "roles"),
        (dict(rank_estimator="splithalf"), "rank_estimator"),
        (dict(update_lr=-1.0), "update_lr"),
    ],
)
def test_settings_errors_name_the_field(settings, field):
    with pytest.raises(ConfigError, match=field):
        ProbeSettings(**settings)


def test_unknown_setting_and_mismatches(tiny_bert):
    with pytest.raises(ConfigError, match="Did you mean: batches"):
        probe(tiny_bert, _task(), batchs=4)
    with pytest.raises(ConfigError, match="names no module"):
        probe(tiny_bert, _task(), roles=("gate",), **FAST)
    three = TaskData("three", "classification", ("a", "b", "c"), ("x", "y", "z"), (0, 1, 2), (), ())
    with pytest.raises(ConfigError, match="labels"):
        probe(tiny_bert, three, **FAST)


def test_non_finite_gradient_names_module_and_batch(tiny_bert):
    model = tiny_bert.model
    ref = discover(model)[2]
    weight = model.get_submodule(ref.name).weight
    handle = weight.register_hook(lambda g: g * float("inf"))
    try:
        with pytest.raises(NonFiniteError, match=rf"{ref.name}.*gradient batch 0"):
            probe(tiny_bert, _task(), **FAST, fit_head=False)  # the hook is on the caller's model, not a copy
    finally:
        handle.remove()
    assert weight.requires_grad and weight.grad is None


def test_non_finite_loss(tiny_bert):
    model = tiny_bert.model
    w = model.classifier.weight  # (labels, hidden): a NaN here makes the logits and the loss NaN
    saved = w.detach().clone()
    with torch.no_grad():
        w[0, 0] = float("nan")
    try:
        with pytest.raises(NonFiniteError, match="loss .* gradient batch 0"):
            probe(tiny_bert, _task(), **FAST)
    finally:
        with torch.no_grad():
            w.copy_(saved)


# ---------------------------------------------------------------------- the probe measures what rank.py defines


def _token_capped_halves(m: int, n: int, r: int, T: int, seed: int, eps: float):
    """Two half-mean gradients, each a sum of T rank-one token terms d_t x_t^T (rank <= T): the first r
    tokens carry planted directions s_i u_i v_i^T (s from 4 down to 1), every token carries noise of
    relative size eps. Plus a shuffled-label sum far above the signal (so noise_floor reads 0)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64)).Q  # (m, r)
    V = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64)).Q  # (n, r)
    s = torch.from_numpy(np.geomspace(4.0, 1.0, r))

    def half():
        D = torch.randn(m, T, generator=g, dtype=torch.float64) * eps / m**0.5  # (m, T) backprops
        X = torch.randn(n, T, generator=g, dtype=torch.float64) * eps / n**0.5  # (n, T) inputs
        D[:, :r] += U * s
        X[:, :r] += V
        return (D @ X.T).float()  # (m, n), rank <= T

    return half(), half(), 100 * torch.randn(m, n, generator=g)


# (m, n, planted rank, tokens per half, eps, seed); the first two are cases where calibrating the
# split-half null over dead k's (beyond the halves' numerical rank) changes the count.
_CAPPED = [(64, 64, 5, 5, 1.2, 0), (64, 64, 4, 5, 0.8, 1), (64, 64, 5, 5, 0.5, 0), (48, 96, 3, 5, 0.8, 2),
           (96, 48, 4, 4, 0.5, 1), (96, 48, 3, 3, 1.2, 0)]


@pytest.mark.parametrize("case", _CAPPED)
def test_probe_floors_equal_rank_py_on_token_capped_halves(case):
    from intrinsic.rank import floors

    m, n, r, T, eps, seed = case
    Ma, Mb, noise = _token_capped_halves(m, n, r, T, seed, eps)
    ref = ModuleRef("layer.0.q", 0, "attention", "q", (m, n), m * n)
    sums = GradientSums([ref], [Ma.clone()], [Mb.clone()], [noise], 1, 1, 1)
    _, Ge, Go, _ = sums.means(0)
    ranks = analyze(sums, tokens=2 * T, settings=ProbeSettings())[0].grad_ranks
    assert ranks["split_half"] == floors.split_half_rank(Ge, Go)
    assert ranks["half_difference"] == floors.half_difference_rank(Ge, Go)
    assert ranks["noise_floor"] == 0 < ranks["half_difference"]  # the two floors differ here


def test_update_sv_is_the_spectrum_of_the_weight_update(tiny_bert):
    """update_sv = svdvals(W_K - W_0) of a copy fine-tuned by hand the way the module docstring says:
    AdamW (no weight decay) on every parameter but the embeddings, gradient norm clipped at 1, eval mode."""
    import copy

    from intrinsic.arch import weight_of

    data, steps, lr = _task(), 3, 1e-3
    rep = probe(tiny_bert, data, **{**FAST, "update_steps": steps, "update_lr": lr, "fit_head": False})
    batches = make_batches(data, tiny_bert.tokenizer, num_batches=steps, batch_size=8, max_length=24, seed=0)
    torch.manual_seed(0)
    work = copy.deepcopy(tiny_bert.model).eval()
    for p in work.parameters():
        p.requires_grad_(True)
    for mod in work.modules():
        if isinstance(mod, torch.nn.Embedding):
            mod.weight.requires_grad_(False)
    refs = discover(work)
    w0 = {r.name: weight_of(work, r).detach().clone() for r in refs}
    trainable = [p for p in work.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    for b in batches:
        opt.zero_grad(set_to_none=True)
        work(**b).loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
    by_name = {m.name: m for m in rep.modules}
    for r in refs:
        dw = (weight_of(work, r).detach() - w0[r.name]).double().numpy()  # (out, in)
        want = scipy.linalg.svdvals(dw)
        got = np.asarray(by_name[r.name].update_sv)
        assert len(got) == len(want)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * want[0])


def test_probe_report_save_is_data_only_and_write_report_adds_plots(tmp_path):
    from intrinsic.probes import probe
    from intrinsic.testing import build_tiny_model
    from intrinsic.tasks import TaskData

    texts = tuple(("good " if i % 2 else "bad ") + "movie plot" for i in range(48))
    labels = tuple(i % 2 for i in range(48))
    task = TaskData("toy", "classification", ("neg", "pos"), texts, labels, texts[:8], labels[:8])
    report = probe(build_tiny_model("bert"), task, batches=2, batch_size=8, max_length=16, update_steps=None)
    report.save(tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["probe.json", "spectra.npz"]
    path = report.write_report(tmp_path / "full")
    assert path == tmp_path / "full" / "report.md" and path.is_file()
    assert (tmp_path / "full" / "probe.json").is_file() and (tmp_path / "full" / "rank_heatmap.png").is_file()


def test_update_probe_memory_estimate_and_refusal():
    """update_bytes counts the model copy, gradients + AdamW states of the non-embedding parameters and W_0 of the
    probed weights (float32); an update probe that would not fit is refused before anything runs, in one line."""
    import torch

    from intrinsic.errors import ConfigError
    from intrinsic.probes.update import check_update_fits, update_bytes

    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3))  # 40 + 12 + 3 float32
    ref = type("Ref", (), {"shape": (3, 4)})()
    assert update_bytes(model, [ref]) == 4 * 55 + 3 * 4 * 15 + 4 * 12
    check_update_fits(1000, 2000, "cpu")
    check_update_fits(1000, None, "cpu")
    with pytest.raises(ConfigError, match=r"about 0\.0 GB on cuda:0.*--no-update"):
        check_update_fits(1000, 1000, "cuda:0")
