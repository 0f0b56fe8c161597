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
                    "peak_memory_mb", "memory_kind", "pareto"]


def test_no_runs_is_a_config_error():
    with pytest.raises(ConfigError, match="at least one"):
        compare_runs([])
