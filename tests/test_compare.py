"""`training.compare.compare_runs` against a Pareto front worked out by hand on five saved runs.

The expected flags are written down here, not computed with `pareto_front` or `compare_runs`.
"""

from __future__ import annotations

import json

import pytest

from intrinsic.errors import ConfigError
from intrinsic.training.compare import RunComparison, compare_runs

# name: (status, score, trainable params)
RUNS = {
    "small": ("complete", 0.80, 1_000),     # smallest complete run: on the front
    "mid": ("complete", 0.70, 2_000),       # small beats it on both: off
    "big": ("complete", 0.90, 5_000),       # best score: on the front
    "broken": ("failed", 0.95, 500),        # failed (with a stale score): never on the front, dominates nothing
    "twin": ("complete", 0.80, 1_000),      # equal to small: equal points do not dominate, both on
    "huge": ("complete", 0.90, 9_000),      # same score as big with more params: off
}
ON_FRONT = {"small": True, "mid": False, "big": True, "broken": False, "twin": True, "huge": False}


def run_json(status: str, score: float | None, params: int) -> dict:
    """A run.json with every RunResult field (values beyond status/score/params are placeholders; the best
    score is 1 - score, so ranking by it instead of the final score would move the front)."""
    return {
        "schema_version": 1, "status": status, "error": None if status == "complete" else "boom",
        "model": "tiny", "model_type": "bert", "task": "toy", "task_kind": "classification",
        "placement": "all", "plan": None, "config": {}, "env": {}, "score": score, "metrics": {},
        "best_score": None if score is None else round(1 - score, 2), "best_step": 10, "baseline_score": 0.5, "baseline_kind": "majority",
        "untrained_score": None, "base_params": 100_000, "trainable_params": params, "lora_params": params,
        "head_params": 0, "trainable_pct": params / 1000, "adapter_bytes": 4 * params, "adapter_dir": None,
        "steps": 10, "train_time_s": 2.0, "time_per_step_s": 0.2, "train_tokens": 640, "tokens_per_s": 320.0,
        "eval_time_s": 1.0, "peak_memory_mb": 12.5, "memory_kind": "rss", "loss_curve": [],
    }


@pytest.fixture()
def run_dirs(tmp_path):
    dirs = []
    for name, (status, score, params) in RUNS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(run_json(status, score, params)))
        dirs.append(tmp_path / name)
    return dirs


def test_pareto_flags_match_hand_computation(run_dirs):
    rows = compare_runs(run_dirs)
    assert all(isinstance(r, RunComparison) for r in rows)
    assert [r.run for r in rows] == list(RUNS)
    assert {r.run: r.pareto for r in rows} == ON_FRONT


def test_rows_copy_run_json_fields(run_dirs):
    rows = {r.run: r for r in compare_runs([*run_dirs[:2], run_dirs[2] / "run.json"])}
    assert set(rows) == {"small", "mid", "big"}  # a run.json file is named by its directory
    big = rows["big"]
    assert big.path.endswith("big/run.json") and big.score == 0.90 and big.best == 0.10
    assert big.trainable_params == 5_000 and big.adapter_bytes == 20_000 and big.trainable_pct == 5.0
    assert big.memory_kind == "rss" and big.peak_memory_mb == 12.5 and big.tokens_per_s == 320.0
    assert rows["mid"].pareto is False and rows["small"].pareto is True


def test_json_keys_are_the_cli_schema(run_dirs):
    """`intrinsic compare --json` prints these keys, in this order (a script may rely on them)."""
    from intrinsic.results import to_dict

    keys = list(to_dict(compare_runs(run_dirs[:1]))[0])
    assert keys == ["run", "path", "model", "task", "placement", "status", "score", "best", "trainable_params",
                    "trainable_pct", "adapter_bytes", "train_time_s", "time_per_step_s", "tokens_per_s",
                    "peak_memory_mb", "memory_kind", "pareto", "baseline", "steps", "seed", "eval_examples", "group",
                    "exact_match", "forgetting"]


def test_no_runs_is_a_config_error():
    with pytest.raises(ConfigError, match="at least one"):
        compare_runs([])


def write_run(root, name: str, **changes) -> object:
    """A run directory whose run.json is `run_json("complete", 0.8, 1000)` with `changes` applied
    (`config` entries are merged)."""
    data = run_json("complete", 0.8, 1_000)
    data["config"] = {"seed": 0, "max_eval_examples": 1000, **changes.pop("config", {})}
    data.update(changes)
    (root / name).mkdir()
    (root / name / "run.json").write_text(json.dumps(data))
    return root / name


def test_a_run_at_or_below_its_baseline_is_never_pareto(tmp_path):
    dirs = [write_run(tmp_path, "chance", score=0.5, trainable_params=10),        # = majority baseline
            write_run(tmp_path, "worse", score=0.4, trainable_params=5),          # below it
            write_run(tmp_path, "learned", score=0.8, trainable_params=1_000)]
    assert {r.run: r.pareto for r in compare_runs(dirs)} == {"chance": False, "worse": False, "learned": True}


def test_incomparable_runs_get_a_front_each_and_a_note_naming_what_differs(tmp_path):
    from intrinsic.training.compare import comparison_note

    dirs = [write_run(tmp_path, "short", steps=10, score=0.7, trainable_params=1_000),
            write_run(tmp_path, "long", steps=100, score=0.9, trainable_params=2_000),
            write_run(tmp_path, "long-small", steps=100, score=0.8, trainable_params=500),
            write_run(tmp_path, "seed1", steps=10, score=0.75, trainable_params=1_000, config={"seed": 1})]
    rows = compare_runs(dirs)
    # "short" is beaten by "long-small" on both axes, but they trained for different numbers of steps
    assert {r.run: r.pareto for r in rows} == {"short": True, "long": True, "long-small": True, "seed1": True}
    assert [r.group for r in rows] == [1, 2, 2, 3]
    note = comparison_note(rows)
    assert note is not None and "steps (10, 100)" in note and "seed (0, 1)" in note and "\n" not in note
    assert "model" not in note.split(":")[0] and comparison_note(rows[1:3]) is None


def test_compare_cli_warns_about_incomparable_runs(tmp_path):
    from typer.testing import CliRunner

    from intrinsic.cli.app import app

    dirs = [write_run(tmp_path, "a", steps=10), write_run(tmp_path, "b", steps=20, task="other")]
    res = CliRunner().invoke(app, ["compare", *map(str, dirs)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "warning:" in text and "task (other, toy)" in text and "steps (10, 20)" in text
