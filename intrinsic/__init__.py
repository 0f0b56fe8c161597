"""intrinsic: the intrinsic dimensionality of fine-tuning, module by module, turned into LoRA placements.

The names a user needs, importable from the top (lazily: importing `intrinsic` loads no torch):

    from intrinsic import Pipeline, PlacementRequest, ProbeSettings, TrainConfig, probe
"""

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "pipeline", "PlacementRequest": "placement", "TrainConfig": "training", "RunResult": "training",
    "ProbeSettings": "probes", "ProbeReport": "probes", "Plan": "placement",
}
__all__ = ["probe", *_LAZY]


def probe(*args, **kwargs):
    """`intrinsic.probe(model, task, **settings) -> ProbeReport`; see `intrinsic.probes.probe` (imported lazily)."""
    from .probes import probe as _probe

    return _probe(*args, **kwargs)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'intrinsic' has no attribute '{name}'")
