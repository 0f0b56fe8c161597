"""CLI options that mirror a library config field show that field's help and default, so help cannot drift.

Each option below is the command line's spelling of one field of `ProbeSettings`, `TrainConfig` or
`PlacementRequest`; its help must contain the field's documentation (`field_help`) and state the
field's default, and leaving it out must leave the library's default in force.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.cli.common import cli_field_help
from intrinsic.fields import field_defaults, field_help
from intrinsic.placement.request import PlacementRequest
from intrinsic.probes.settings import ProbeSettings
from intrinsic.training.config import TrainConfig

P, T, R = ProbeSettings, TrainConfig, PlacementRequest
PLACEMENT = {"--placement": (R, "strategy"), "--rank": (R, "rank"), "--budget": (R, "budget"),
             "--layers": (R, "layers"), "--max-rank": (R, "max_rank"), "--granularity": (R, "granularity"),
             "--rslora": (R, "rslora"), "--gains": (R, "gains"), "--normalize": (R, "normalize"),
             "--predictor": (R, "predictor"), "--fill": (R, "fill")}
MIRRORS = {
    "probe": {"--batches": (P, "batches"), "--batch-size": (P, "batch_size"), "--max-length": (P, "max_length"),
              "--update-steps": (P, "update_steps"), "--update-checkpoints": (P, "update_checkpoints"),
              "--update-lr": (P, "update_lr"), "--roles": (P, "roles"), "--layers": (P, "layers"),
              "--estimator": (P, "rank_estimator"), "--folds": (P, "folds"), "--fit-head": (P, "fit_head"), "--topk": (P, "topk"),
              "--example-energy": (P, "example_energy"), "--activations": (P, "activations"),
              "--weight-alpha": (P, "weight_alpha"), "--sketch": (P, "sketch"), "--seed": (P, "seed"),
              "--device": (P, "device"),
              "--dtype": (P, "dtype"), "--max-examples": (P, "max_examples"), "--text-column": (P, "text_column"),
              "--label-column": (P, "label_column"), "--modules": (P, "modules"),
              "--prompt-column": (P, "prompt_column"), "--completion-column": (P, "completion_column")},
    "train": {**PLACEMENT, "--steps": (T, "steps"), "--lr": (T, "lr"), "--batch-size": (T, "batch_size"),
              "--max-length": (T, "max_length"), "--seed": (T, "seed"), "--eval-every": (T, "eval_every"),
              "--max-examples": (T, "max_examples"), "--max-eval-examples": (T, "max_eval_examples"),
              "--mixed-precision": (T, "mixed_precision"), "--save-model": (T, "save_full_model"),
              "--grad-accum": (T, "grad_accum"), "--gradient-checkpointing": (T, "gradient_checkpointing"),
              "--checkpoint-every": (T, "checkpoint_every"), "--fast": (T, "fast"), "--compile": (T, "compile"),
              "--peak-tflops": (T, "peak_tflops"),
              "--eval-split": (T, "eval_split"),
              "--forgetting-corpus": (T, "forgetting_corpus")},
    "plan": {**PLACEMENT, "--alpha-mult": (R, "alpha_mult")},
    "modules": {"--modules": (P, "modules")},
}
CONFIGS = {"probe": (P,), "train": (T, R), "plan": (R,), "modules": ()}
# options whose default is the command's own, not the config's (shown by typer): device of probe and train
OWN_DEFAULT = {("probe", "--device"): "auto", ("train", "--device"): "auto", ("train", "--dtype"): "float32", ("plan", "--placement"): "auto",
               ("train", "--placement"): "all"}


def options(command: str) -> dict[str, object]:
    cmd = typer.main.get_command(app).commands[command]
    return {flag: p for p in cmd.params for flag in p.opts if flag.startswith("--")}


@pytest.mark.parametrize("command", sorted(MIRRORS))
def test_mirrored_options_show_field_help_and_default(command):
    opts = options(command)
    for flag, (cls, name) in MIRRORS[command].items():
        assert flag in opts, f"{command} lost its {flag} option"
        opt = opts[flag]
        # the field's help, with None said as the CLI says it ("not given", --no-update)
        assert cli_field_help(cls, name) in opt.help, f"{command} {flag}: help is not {cls.__name__}.{name}'s"
        default = field_defaults(cls).get(name)
        if (command, flag) in OWN_DEFAULT:
            assert opt.default == OWN_DEFAULT[command, flag]
        elif opt.default is None:  # the library's default applies; the help must say what it is
            if default is not None and not isinstance(default, bool):
                assert f"\\[default: {default}]" in opt.help, f"{command} {flag}: default {default} not shown"
        else:
            assert opt.default == default, f"{command} {flag}: CLI default {opt.default!r} is not {default!r}"


@pytest.mark.parametrize("command", sorted(MIRRORS))
def test_every_option_named_like_a_config_field_is_checked(command):
    """A new option that mirrors a config field must be added to MIRRORS (and so get the field's help)."""
    fields = {name for cls in CONFIGS[command] for name in field_help(cls)}
    checked = {name for _, name in MIRRORS[command].values()}
    for flag, opt in options(command).items():
        if opt.name in fields:
            assert opt.name in checked, f"{command} {flag} mirrors a config field but is not in MIRRORS"


def test_rendered_help_states_library_defaults():
    """The escaped bracket survives rich rendering: the user reads `[default: 200]`."""
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    text = re.sub(r"\s+", " ", result.output)
    assert result.exit_code == 0
    assert f"[default: {field_defaults(TrainConfig)['steps']}]" in text
    assert f"[default: {field_defaults(TrainConfig)['max_eval_examples']}]" in text
    assert f"[default: {field_defaults(PlacementRequest)['max_rank']}]" in text
    assert field_help(PlacementRequest)["rank"] in text
