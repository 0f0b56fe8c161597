"""`ProbeSettings`: everything that decides a probe's result, validated, each field documented once.

Imports only the standard library (and `intrinsic.errors`/`intrinsic.fields`), so the CLI can
build its `--help` from `field_help(ProbeSettings)` without importing torch; the role and
estimator vocabularies (`arch.ROLE_ORDER`, `rank.ESTIMATORS`) are read when a setting is validated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..fields import documented

# Default intrinsic rank: sign_flip, the step-down sign-flip (Rademacher) test on K = 8 fold means of the
# gradient over disjoint batch sets (rank.signflip): a direction counts only if it beats the null
# distribution of the same statistic under random sign flips of the folds, so "rank >= 1" on pure noise
# happens at most 5% of the time whatever the noise's shape (measured: 3-6% over isotropic, anisotropic and
# heavy-tailed noise, benchmarks/calibrate_signflip.py). The other estimators stay in every row:
# half_difference (G's singular values above the largest of (G_even - G_odd) / 2) is one noise copy, a
# screen rather than a test (about half of pure-noise matrices read >= 1); split_half counts anisotropic
# noise that reproduces across halves; noise_floor compares against shuffled labels; the spectrum-shape
# estimators (energy, stable, entropy, participation ratio, Gavish-Donoho, Marchenko-Pastur) are
# descriptive. The head is fitted on frozen features first (fit_head), so the gradient measures the task
# and not a fresh head's pull to the class prior.
DEFAULT_ESTIMATOR = "sign_flip"
DEFAULT_FOLDS = 8
MIN_FOLDS = 8  # = rank.signflip.MIN_FOLDS (not imported: this module stays free of torch)
SPECTRA_MODES = ("auto", "exact", "topk")
SKETCH_AUTO = 128  # = probes.sketch.AUTO_SKETCH (not imported: this module stays free of torch); README "Sketch mode"
TOPK_MIN = 64  # = the largest rank split_half and sign_flip can report (floors.KMAX_CAP, signflip.KMAX_CAP)


@dataclass(frozen=True)
class ProbeSettings:
    """Everything that decides a probe's result. Each field's help (`field_help`) is also its CLI help."""

    batches: int = documented(32, "calibration batches N for the mean gradient (>= 2: the split halves need one each)")
    batch_size: int = documented(16, "examples per batch")
    max_length: int = documented(128, "tokens per example, longer texts are cut")
    update_steps: int | None = documented(100, "fine-tuning steps K of the update probe; None skips the update probe")
    update_lr: float = documented(5e-5, "AdamW learning rate of the update probe (constant, no weight decay)")
    update_checkpoints: tuple[int, ...] | None = documented(None, "steps at which dW's ranks are recorded; None: K/10, K/2, K")
    roles: tuple[str, ...] | None = documented(None, "probe only these roles (q k v o qkv up gate down gate_up); None: all")
    layers: tuple[int, ...] | None = documented(None, "probe only these layer indices; None: all")
    modules: str | None = documented(None, '"regex=role,..." module patterns for an architecture missing from the map')
    rank_estimator: str | None = documented(None, "estimator reported as each module's intrinsic rank; None: "
                                                  "sign_flip when fold means are kept, else half_difference (an "
                                                  "uncalibrated screen, noted in the report)")
    folds: int | None = documented(None, "fold means K kept for the sign_flip rank test (>= 8, dividing batches; "
                                         "costs 4K bytes per probed weight); 0: off; None: 8 when the batches (after "
                                         "capping at the data) are a multiple of 8, else off (noted)")
    fit_head: bool | None = documented(None, "classification: first fit the head on frozen features of held-out "
                                             "training examples (L2-regularised L-BFGS, on a copy); None: yes where "
                                             "the head is a pooled classifier, else skipped (noted); lm: no-op")
    spectra: str = documented("auto", "auto: topk when the model is on a GPU (or any device but the CPU), exact on "
                                      "the CPU or when rank_estimator needs the whole spectrum | exact: float64 "
                                      "spectra of every matrix (top half at least) | topk: randomized top-k in float32 "
                                      "on the probe's device, batched over equal shapes (entropy/participation/"
                                      "Gavish-Donoho/Marchenko-Pastur then read null)")
    topk: int = documented(128, f"singular values per spectrum in topk mode (>= {TOPK_MIN}, the largest rank a test "
                                "can report); energy ranks beyond them read null")
    sketch: int | None = documented(None, "sketch mode: two-sided streaming sketches of size K (range K, co-range 2K+1; "
                                          "Tropp et al. 2017) of every mean gradient, fold mean and shuffled copy, from "
                                          "hooks: dL/dW is never formed, O((m+n)K) memory per module; K above a "
                                          "module's min(m, n) is clamped (noted); None: exact accumulators, or sketch "
                                          f"mode with K={SKETCH_AUTO} when they would not fit the device (noted)")
    example_energy: bool = documented(False, "also measure the per-example gradient energy sum_i ||G_i||_F^2 of each "
                                             "module (ghost norms from hooks on inputs and backprops)")
    activations: bool = documented(False, "also measure each module's input-activation variance (as EVA: total "
                                          "variance and the covariance's eigenvalues, from forward hooks)")
    weight_alpha: bool = documented(False, "also fit the power-law exponent alpha of each weight's W^T W eigenvalues "
                                           "(WeightWatcher/AlphaLoRA: Hill MLE over the tail, xmin by KS)")
    max_sv: int = documented(512, "singular values kept per spectrum (at least the top half, which Gavish-Donoho needs)")
    seed: int = documented(0, "seeds batch order, label shuffling, head init and the update probe")
    device: str = documented("cpu", "cpu | cuda | auto, when the model is given by name")
    dtype: str = documented("float32", "float32 | bfloat16 | float16, when the model is given by name")
    max_examples: int | None = documented(None, "subsample the task's training split, when the task is given by name")
    text_column: str | None = documented(None, "text column of a local/hf task")
    label_column: str | None = documented(None, "label column of a local/hf task")
    prompt_column: str | None = documented(None, "prompt column of a local/hf completion task (detected: prompt, "
                                                 "instruction, question, input, query)")
    completion_column: str | None = documented(None, "completion column of a local/hf completion task (detected: "
                                                     "completion, response, answer, output, target)")

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("update_checkpoints", "roles", "layers"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                put(name, tuple(v) if isinstance(v, (list, set)) else (v,))
        for name, low in (("batches", 2), ("batch_size", 1), ("max_length", 2), ("max_sv", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                extra = " (split halves need one batch each)" if name == "batches" else ""
                raise ConfigError(f"`{name}` must be an integer >= {low}{extra}, got {v!r}")
        if self.update_steps is not None and (not isinstance(self.update_steps, int) or self.update_steps < 1):
            raise ConfigError(
                f"`update_steps` must be >= 1, got {self.update_steps!r}; to skip the update probe pass "
                "update_steps=None (CLI: --no-update)."
            )
        if not (isinstance(self.update_lr, (int, float)) and math.isfinite(self.update_lr) and self.update_lr > 0):
            raise ConfigError(f"`update_lr` must be a positive number, got {self.update_lr!r}")
        if self.update_checkpoints is not None:
            k = self.update_steps
            if k is None:
                raise ConfigError("`update_checkpoints` given but `update_steps` is None (update probe skipped).")
            bad = [c for c in self.update_checkpoints if not isinstance(c, int) or not 1 <= c <= k]
            if bad:
                raise ConfigError(f"`update_checkpoints` must be steps in 1..{k} (update_steps), got {bad}")
            put("update_checkpoints", tuple(sorted(set(self.update_checkpoints))))
        if self.roles is not None:
            from ..arch import ROLE_ORDER  # lazy: arch imports torch, and --help must not

            bad = [r for r in self.roles if r not in ROLE_ORDER]
            if bad or not self.roles:
                hint = did_you_mean(bad[0], ROLE_ORDER) if bad else ""
                raise ConfigError(f"`roles` must name roles among {', '.join(ROLE_ORDER)}, got {list(self.roles)}.{hint}")
        if self.layers is not None and (not self.layers or any(not isinstance(x, int) or x < 0 for x in self.layers)):
            raise ConfigError(f"`layers` must be non-negative layer indices, got {list(self.layers)}")
        if self.fit_head is not None and not isinstance(self.fit_head, bool):
            raise ConfigError(f"`fit_head` must be true or false (CLI: --fit-head/--no-fit-head), got {self.fit_head!r}")
        f = self.folds
        if f is not None and (not isinstance(f, int) or isinstance(f, bool) or (f != 0 and f < MIN_FOLDS)):
            raise ConfigError(f"`folds` must be 0 (off) or an integer >= {MIN_FOLDS} (the sign-flip test needs "
                              f"2^(K-1) distinct flips), got {f!r}")
        if self.rank_estimator == "sign_flip" and f is None and self.batches % DEFAULT_FOLDS:
            raise ConfigError(f"`rank_estimator` sign_flip needs fold means: `batches` ({self.batches}) must be a "
                              f"multiple of {DEFAULT_FOLDS}, e.g. batches={DEFAULT_FOLDS * max(1, round(self.batches / DEFAULT_FOLDS))}")
        if f and self.batches % f:
            raise ConfigError(f"`batches` ({self.batches}) must be a multiple of `folds` ({f}) so every fold "
                              f"averages as many batches, e.g. batches={f * max(1, round(self.batches / f))} "
                              "(or folds=0 and another rank_estimator, such as half_difference: an uncalibrated screen)")
        if self.rank_estimator == "sign_flip" and f == 0:
            raise ConfigError(f"`rank_estimator` sign_flip needs fold means: set `folds` >= {MIN_FOLDS} "
                              f"(CLI: --folds {MIN_FOLDS}), or choose another rank_estimator such as half_difference "
                              "(an uncalibrated screen).")
        if self.spectra not in SPECTRA_MODES:
            raise ConfigError(f"`spectra` must be one of {', '.join(SPECTRA_MODES)}, got {self.spectra!r}."
                              + did_you_mean(str(self.spectra), SPECTRA_MODES))
        if not isinstance(self.topk, int) or isinstance(self.topk, bool) or self.topk < TOPK_MIN:
            raise ConfigError(f"`topk` must be an integer >= {TOPK_MIN} (the largest rank a test can report), "
                              f"got {self.topk!r}")
        for name in ("example_energy", "activations", "weight_alpha"):
            if not isinstance(getattr(self, name), bool):
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"`{name}` must be true or false (CLI: {flag}), got {getattr(self, name)!r}")
        sk = self.sketch
        if sk is not None and (not isinstance(sk, int) or isinstance(sk, bool) or sk < 2):
            raise ConfigError(f"`sketch` must be an integer >= 2 (the sketch size K) or None, got {sk!r}")
        if sk is not None and self.spectra == "topk":
            raise ConfigError("`sketch` replaces the gradient accumulators and their spectra: leave `spectra` at auto "
                              "or exact (CLI: drop --topk).")
        from ..rank import ESTIMATORS  # lazy: the registry imports torch
        from ..rank.registry import EXACT_ONLY

        if sk is not None:
            self.check_sketch_estimator()

        if self.spectra == "topk" and self.rank_estimator in EXACT_ONLY:
            raise ConfigError(f"`rank_estimator` {self.rank_estimator} needs the whole spectrum: use spectra='exact' "
                              "(CLI: --exact) or a test estimator (half_difference, sign_flip, split_half, noise_floor).")

        names = tuple(ESTIMATORS)
        if self.rank_estimator is not None and self.rank_estimator not in names:
            raise ConfigError(
                f"`rank_estimator` must be one of {', '.join(names)}, got {self.rank_estimator!r}."
                + did_you_mean(self.rank_estimator, names)
            )

    def spectra_for(self, device_type: str) -> str:
        """The spectra mode a probe on a device of `device_type` ("cpu", "cuda", ...) uses: `spectra` unless it is
        "auto", which is "topk" off the CPU (the exact float64 spectra of a 1B model take 87 s on an H200, top-k
        2.7 s, with the same designated ranks) and "exact" on the CPU (small models, where exact is cheap and every
        estimator reads a value), or when the rank estimator needs the whole spectrum."""
        from ..rank.registry import EXACT_ONLY  # lazy: the registry imports torch

        if self.spectra != "auto":
            return self.spectra
        if device_type == "cpu" or self.rank_estimator in EXACT_ONLY or self.sketch is not None:
            return "exact"
        return "topk"

    def check_sketch_estimator(self) -> None:
        """ConfigError when `rank_estimator` needs more of the spectrum than sketch mode keeps."""
        from ..rank.registry import NOT_SKETCH  # lazy: the registry imports torch

        if self.rank_estimator in NOT_SKETCH:
            raise ConfigError(f"`rank_estimator` {self.rank_estimator} needs the tail of the spectrum, which sketch mode "
                              "does not keep: choose a test estimator (sign_flip, half_difference, split_half, "
                              "noise_floor), stable_rank, or exact accumulators (no --sketch).")

    def resolved(self, batches: int) -> tuple[ProbeSettings, list[str]]:
        """(settings with `batches` and concrete folds and rank_estimator, notes): the defaults (None) chosen
        for the batches the data really fills. fit_head stays as given (resolved by the head fit)."""
        folds = self.folds
        notes = []
        if folds is None:
            folds = DEFAULT_FOLDS if batches % DEFAULT_FOLDS == 0 else 0
            if not folds:
                notes.append(f"{batches} batches are not a multiple of {DEFAULT_FOLDS}: no fold means, so no sign-flip "
                             f"test; the rank is half_difference, an uncalibrated screen (use --batches "
                             f"{DEFAULT_FOLDS * max(2, round(batches / DEFAULT_FOLDS))} for the calibrated test)")
        if self.rank_estimator == "sign_flip" and not folds:
            raise ConfigError(f"`rank_estimator` sign_flip needs fold means, but only {batches} batches of distinct "
                              f"examples fit the data (not a multiple of {DEFAULT_FOLDS}): lower --batch-size or "
                              "choose another --rank-estimator.")
        estimator = self.rank_estimator or ("sign_flip" if folds else "half_difference")
        return replace(self, batches=batches, folds=folds, rank_estimator=estimator), notes

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The checkpoint steps in use (the default is K/10, K/2, K)."""
        if self.update_steps is None:
            return ()
        if self.update_checkpoints is not None:
            return tuple(sorted(set(self.update_checkpoints) | {self.update_steps}))
        k = self.update_steps
        return tuple(sorted({max(1, round(k / 10)), max(1, round(k / 2)), k}))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> ProbeSettings:
        names = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in names:
                raise ConfigError(f"Unknown probe setting '{key}'.{did_you_mean(key, names)}")
        return cls(**kwargs)
