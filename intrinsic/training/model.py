"""The trainable model and where it runs: a PEFT LoRA model checked against its placement plan
(or every weight for full fine-tuning), the task head that trains alongside, the parameter
groups counted in a run, and the `accelerate` setup."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from ..errors import ConfigError


def head_module_names(model) -> list[str]:
    """Top-level children of a task model outside its backbone that hold parameters.

    'classifier' for BERT, 'score' for Llama/GPT-2, ['pre_classifier', 'classifier'] for
    DistilBERT. Causal-LM heads are excluded: lm_head is usually tied to the embeddings.
    """
    prefix = getattr(model, "base_model_prefix", "")
    names = []
    for name, child in model.named_children():
        if name == prefix or name == "lm_head" or not any(True for _ in child.parameters()):
            continue
        names.append(name)
    return names


def build_model(loaded, plan, seed: int = 0, gradient_checkpointing: bool = False):
    """The trainable model: a PEFT LoRA model checked against `plan`, or the model itself for "full".

    The model is modified in place (adapters injected); the head trains via modules_to_save. A model
    that already carries adapters (an earlier `train` on the same object) is refused.
    `gradient_checkpointing`: recompute each layer's activations in the backward pass (transformers'
    non-reentrant checkpointing, which needs no input gradients); ConfigError for a model without it.
    """
    import torch

    model = loaded.model
    check_unadapted(loaded)
    if gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError(f"Model '{loaded.name}' ({loaded.model_type}) does not support gradient "
                              "checkpointing: drop --gradient-checkpointing (or use a smaller --batch-size).")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if plan == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import get_peft_model

    from ..placement import verify_peft_model

    task_type = "SEQ_CLS" if loaded.task_kind == "classification" else "CAUSAL_LM"
    heads = head_module_names(model) if loaded.task_kind == "classification" else None
    peft_config = plan.to_peft_config(task_type, modules_to_save=heads)
    torch.manual_seed(seed)  # LoRA A matrices are initialised from the global generator
    with quiet_peft():
        peft_model = get_peft_model(model, peft_config)
    verify_peft_model(peft_model, plan)
    return peft_model


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Around peft's wrapping or loading of a model (`get_peft_model`, `PeftModel.from_pretrained`): peft reads
    transformers 5's deprecated alias `is_gradient_checkpointing`, a FutureWarning that is not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def check_unadapted(loaded) -> None:
    """ConfigError when PEFT has already injected adapters into `loaded.model` (an earlier `train` on
    the same LoadedModel): a second run would stack on the first one's adapters."""
    from peft.tuners.lora import LoraLayer

    model = loaded.model
    if hasattr(model, "peft_config") or any(isinstance(m, LoraLayer) for m in model.modules()):
        raise ConfigError(f"Model '{loaded.name}' already carries LoRA adapters from an earlier train(): training "
                          "changes loaded.model in place, so load the model again for another run (or use "
                          "Pipeline(..., copy_per_use=True), which trains a fresh copy every time).")


def adapter_param_names(model) -> set[str]:
    """Names of the LoRA parameters, by PEFT's declared contract: the `adapter_layer_names` of every
    `LoraLayer` (lora_A, lora_B, ...). Empty for a model without LoRA layers (full fine-tuning)."""
    from peft.tuners.lora import LoraLayer

    names = set()
    for module_name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for attr in module.adapter_layer_names:
            part = getattr(module, attr, None)
            if part is not None:
                names.update(f"{module_name}.{attr}.{p}" for p, _ in part.named_parameters())
    return names


def param_counts(model) -> tuple[list, int, int, int]:
    """(trainable parameters, their count, LoRA parameters, trainable head-copy parameters)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    adapters = adapter_param_names(model)
    trainable = sum(p.numel() for _, p in named)
    lora = sum(p.numel() for n, p in named if n in adapters)
    head = sum(p.numel() for n, p in named if "modules_to_save" in n)
    return [p for _, p in named], trainable, lora, head


def make_accelerator(cpu: bool, mixed_precision: str):
    """An `accelerate.Accelerator` (reset first when an earlier run in this process used other settings)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    except ValueError:  # an earlier run in this process used other settings
        AcceleratorState._reset_state()
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision)
