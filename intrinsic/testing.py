"""Tiny random-init models for tests and examples: every mapped architecture at hidden size 32
with two layers, and a character-level tokenizer, built in-process with no download.

`build_tiny_model("bert")` returns the same `LoadedModel` as `intrinsic.models.load_model`, so
tests drive the real code paths on a model that runs in milliseconds. Nothing in the library
imports this module.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .models import LoadedModel, quiet_transformers

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(32, 127)]

_TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "electra": dict(hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=256),
    "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64),
    "mistral": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64),
    "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64),
    "qwen3": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, head_dim=8),
    "gemma": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, head_dim=8),
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "opt": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32),
    "phi3": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64),
}


def tiny_tokenizer():
    """A character-level tokenizer (printable ASCII) that needs no download."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(TINY_VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", eos_token="[SEP]", bos_token="[CLS]", model_max_length=256,
    )


def build_tiny_model(model_type: str, task_kind: str = "classification", num_labels: int = 2, seed: int = 0) -> LoadedModel:
    """Random-init tiny model of a mapped architecture with a character tokenizer (for tests)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    if model_type not in _TINY_OVERRIDES:
        raise ConfigError(f"No tiny config for '{model_type}'; known: {', '.join(_TINY_OVERRIDES)}")
    quiet_transformers()
    tok = tiny_tokenizer()
    config = AutoConfig.for_model(
        model_type, vocab_size=len(TINY_VOCAB), pad_token_id=0, bos_token_id=2, eos_token_id=3,
        num_labels=num_labels, **_TINY_OVERRIDES[model_type],
    )
    torch.manual_seed(seed)
    auto = AutoModelForSequenceClassification if task_kind == "classification" else AutoModelForCausalLM
    model = auto.from_config(config).eval()
    return LoadedModel(model, tok, f"tiny-{model_type}", "tiny", model_type, task_kind, "")
