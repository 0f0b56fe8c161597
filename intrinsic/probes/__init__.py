"""Probes: measure per-module gradient and weight-update spectra and their intrinsic ranks.

The face of the package. `probe(model, task, settings) -> ProbeReport` (`run.py`) runs the
gradient probe (`gradient.py`) and the update probe (`update.py`), both `Probe`s (`base.py`) that
only measure; `rank.estimate` turns their spectra into ranks and `rows.py` into typed rows.
`ProbeSettings` (`settings.py`) is what decides a result; `schema.py` is the saved result.
Importing this package does not import torch (the CLI's --help reads `ProbeSettings`).
"""

from __future__ import annotations

from .run import describe, load_inputs, probe
from .schema import ModuleProbe, ProbeReport
from .settings import DEFAULT_ESTIMATOR, ProbeSettings

__all__ = ["probe", "describe", "load_inputs", "ProbeSettings", "ProbeReport", "ModuleProbe", "DEFAULT_ESTIMATOR"]
