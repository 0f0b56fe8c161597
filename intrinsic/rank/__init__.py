"""Intrinsic-rank estimators: how many directions of a matrix carry signal.

- `descriptive.py`: pure functions of a spectrum (energy, stable, entropy rank, participation
  ratio, Gavish-Donoho, Marchenko-Pastur) plus `numerical_rank` and `token_cap`.
- `floors.py`: rank as a test against a noise floor measured on the same data (split-half,
  shuffled-label, half-difference).
- `signflip.py`: the calibrated sign-flip step-down rank test on K fold means (`sign_flip`).
- `registry.py`: the `Spectra` record a probe fills per row, the `ESTIMATORS` registry and
  `estimate(spectra)`; this face exposes those three (and the name lists).
"""

from __future__ import annotations

from .registry import DESCRIPTIVE, ESTIMATORS, TESTS, Estimator, Spectra, estimate

__all__ = ["Spectra", "Estimator", "ESTIMATORS", "DESCRIPTIVE", "TESTS", "estimate"]
