"""Pooling several studies' test cells for the predictor check (intrinsic.study.pooled, `intrinsic study
predictors`): a cell shared by two studies counts once, lr-sweep cells stay out, a label naming different configs
in two studies is told apart, studies of another model or task are refused in one line, the pooled rho equals
scipy's over the placements' mean shares and gains, and the command's --json parses."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.errors import ConfigError
from intrinsic.results import write_json
from intrinsic.study.pooled import TARGET_RHO, pool_rows, pooled_statistics, render_markdown
from intrinsic.study.rows import RESULTS_SCHEMA, CellRow

SEEDS = 3


def row(config: int, seed: int, *, label: str | None = None, phase: str = "test", gain: float | None = None,
        share: float | None = None) -> CellRow:
    g = config + 1 + 0.05 * seed if gain is None else gain
    s = 0.1 * config if share is None else share
    return CellRow(id=f"c{config}-s{seed}-{phase}", config_id=f"c{config}", label=label or f"p{config} budget=all@4",
                   variant=f"p{config}", strategy="auto", seed=seed, phase=phase, groups=("budget=all@4",),
                   status="ok", score=g, untrained_score=0.0, gain=g, trainable_params=1000, modules=4,
                   predicted_share=s, predicted={"gradient": s, "activation": 0.1 * ((3 * config) % 5), "params": 0.5})


def study_dir(path: Path, name: str, rows: list[CellRow], *, task: str = "toy:lm") -> Path:
    path.mkdir(parents=True)
    write_json(path / "study.json", {"schema_version": RESULTS_SCHEMA, "name": name, "model": "tiny", "task": task,
                                     "definition_hash": name[-4:]})
    write_json(path / "results.json", {"schema_version": RESULTS_SCHEMA, "study": name,
                                       "rows": [r.to_record() for r in rows]})
    return path


def two_studies(tmp_path: Path) -> tuple[Path, Path]:
    a = [row(c, s) for c in range(3) for s in range(SEEDS)] + [row(9, 0, phase="lr-sweep", gain=-50.0)]
    b = [row(c, s) for c in range(2, 5) for s in range(SEEDS)]  # config 2 is a's too (same ids): once
    b.append(dataclasses.replace(row(4, SEEDS), status="pending", score=None, gain=None))  # unfinished: no outcome
    return study_dir(tmp_path / "a", "study-aaaa", a), study_dir(tmp_path / "b", "study-bbbb", b)


def test_shared_cells_count_once_and_sweeps_stay_out(tmp_path):
    a, b = two_studies(tmp_path)
    records, rows, shared = pool_rows([a, b])
    assert [r["name"] for r in records] == ["study-aaaa", "study-bbbb"]
    assert shared == SEEDS and len(rows) == 5 * SEEDS and all(r.phase == "test" for r in rows)
    p = pooled_statistics([a, b])
    assert p.placements == 5 and p.cells == 5 * SEEDS and p.groups["budget=all@4"] == tuple(f"p{c} budget=all@4"
                                                                                            for c in range(5))


def test_pooled_rho_is_scipys_over_the_mean_shares_and_gains(tmp_path):
    a, b = two_studies(tmp_path)
    p = pooled_statistics([a, b])
    checks = {(k.scope, k.statistic): k for k in p.checks}
    grad = checks[("budget=all@4", "gradient")]
    assert grad.rho.rho == pytest.approx(1.0) and len(grad.labels) == 5
    act = checks[("budget=all@4", "activation")]
    want = sps.spearmanr([0.1 * ((3 * c) % 5) for c in range(5)], [c + 1 + 0.05 for c in range(5)]).statistic
    assert act.rho.rho == pytest.approx(want)
    assert p.best["budget=all@4"] == "gradient" and p.meets_target["gradient"] == ("budget=all@4",)
    assert p.meets_target["activation"] == () and want < TARGET_RHO
    md = render_markdown(p)
    assert "`study-aaaa` (aaaa)" in md and "| budget=all@4 | gradient | 5 | 1.0 |" in md


def test_a_label_of_different_configs_is_told_apart(tmp_path):
    a = study_dir(tmp_path / "a", "study-aaaa", [row(0, s) for s in range(SEEDS)])
    other = [row(0, s) for s in range(SEEDS)]
    other = [CellRow(**{**r.__dict__, "id": r.id + "x", "config_id": "other"}) for r in other]  # same label
    b = study_dir(tmp_path / "b", "study-bbbb", other)
    labels = sorted({r.label for r in pool_rows([a, b])[1]})
    assert labels == ["p0 budget=all@4", "study-bbbb: p0 budget=all@4"]


def test_another_task_is_refused(tmp_path):
    a = study_dir(tmp_path / "a", "study-aaaa", [row(0, 0)])
    b = study_dir(tmp_path / "b", "study-bbbb", [row(1, 0)], task="other:lm")
    with pytest.raises(ConfigError, match="one model and task"):
        pool_rows([a, b])


def test_the_command_writes_markdown_and_json_and_refuses_bad_input_with_exit_2(tmp_path):
    a, b = two_studies(tmp_path)
    out = tmp_path / "pooled.md"
    res = CliRunner().invoke(app, ["study", "predictors", str(a), str(b), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["placements"] == 5 and got["best"]["budget=all@4"] == "gradient"
    assert np.isclose([c["rho"]["rho"] for c in got["checks"] if c["statistic"] == "gradient"][0], 1.0)
    assert out.read_text().startswith("# Which probe statistic predicts the gain")
    res = CliRunner().invoke(app, ["study", "predictors", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    c = study_dir(tmp_path / "c", "study-cccc", [row(1, 0)], task="other:lm")
    res = CliRunner().invoke(app, ["study", "predictors", str(a), str(c)])
    assert res.exit_code == 2 and "one model and task" in res.output


def test_a_ci_over_fewer_seeds_than_the_rho_says_so(tmp_path):
    """A placement with a pending seed: the rho's means use 3 seeds, the bootstrap only the 2 every config shares."""
    rows = [row(c, s) for c in range(4) for s in range(SEEDS) if not (c == 3 and s == 2)]
    p = pooled_statistics([study_dir(tmp_path / "a", "study-aaaa", rows)])
    k = {(k.scope, k.statistic): k for k in p.checks}[("budget=all@4", "activation")]
    assert (k.ci_seeds, k.seeds) == (SEEDS - 1, SEEDS)
    from intrinsic.study.predictors import ci_text
    assert ci_text(k).endswith(f"(on {SEEDS - 1} of {SEEDS} seeds)")
    full = pooled_statistics([study_dir(tmp_path / "b", "study-bbbb", [row(c, s) for c in range(4)
                                                                        for s in range(SEEDS)])])
    k = {(k.scope, k.statistic): k for k in full.checks}[("budget=all@4", "activation")]
    assert (k.ci_seeds, k.seeds) == (SEEDS, SEEDS) and "seeds)" not in ci_text(k)
