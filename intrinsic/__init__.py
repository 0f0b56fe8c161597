"""intrinsic: the intrinsic dimensionality of fine-tuning, module by module, turned into LoRA placements."""

__version__ = "0.1.0"


def probe(*args, **kwargs):
    """`intrinsic.probe(model, task, **settings) -> ProbeReport`; see `intrinsic.probes.probe` (imported lazily)."""
    from .probes import probe as _probe

    return _probe(*args, **kwargs)
