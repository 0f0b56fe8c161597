"""Architecture map: which linear modules of a transformer are attention or FFN, and their roles.

    from intrinsic.arch import discover, weight_of
    refs = discover(model)                  # [ModuleRef(name, layer, kind, role, shape, ...)], by (layer, role)
    W = weight_of(model, refs[0])           # (out, in), whatever the storage

Files: `table.py` (the role vocabulary, `ModuleRef`, and `ARCH_MAP`, one `ArchSpec` per
`config.model_type`: data), `discover.py` (walking a model: `discover`, the `--modules` override
`parse_module_patterns`, fused role blocks, `num_layers`), `access.py` (a discovered module's
weight and gradient as (out, in), `roles_of`, `peft_target_name`).
"""

from .access import get_module, grad_of, peft_target_name, roles_of, weight_of
from .discover import discover, num_layers, parse_module_patterns
from .table import ARCH_MAP, ATTENTION_ROLES, FFN_ROLES, PEFT_PREFIX, ROLE_ORDER, ArchSpec, ModuleRef, RoleBlock

__all__ = [
    "ARCH_MAP", "ATTENTION_ROLES", "FFN_ROLES", "PEFT_PREFIX", "ROLE_ORDER", "ArchSpec", "ModuleRef", "RoleBlock",
    "discover", "get_module", "grad_of", "num_layers", "parse_module_patterns", "peft_target_name", "roles_of",
    "weight_of",
]
