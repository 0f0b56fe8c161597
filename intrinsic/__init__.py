"""intrinsic: the intrinsic dimensionality of fine-tuning, module by module, turned into LoRA placements."""

__version__ = "0.1.0"
