"""CPU smoke test of `benchmarks/sketch_agreement.py`: both sketch statistics, `--exact-from` and `--co-range` run on
a tiny random-init BERT and their JSON parses; the projected test with a co-range as large as a module's side is
the exact test there, so it agrees with exact mode on every module."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(monkeypatch, *args: str) -> dict:
    import sketch_agreement
    import torch

    threads = torch.get_num_threads()  # the benchmark pins one thread: give the rest of the suite its threads back
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", ""))
    monkeypatch.setattr(sys, "argv", ["sketch_agreement.py", *args])
    try:
        sketch_agreement.main()
    finally:
        torch.set_num_threads(threads)
    return json.loads(Path(args[args.index("--json") + 1]).read_text())


def test_sketch_agreement_runs_both_statistics_and_reuses_exact_ranks(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    common = ["--model", str(tiny_bert_dir), "--task", str(tiny_csv), "--batches", "8", "--kinds", "enum",
              "--ks", "8", "--seeds", "0"]
    first = _run(monkeypatch, *common, "--json", str(tmp_path / "a.json"))
    rows = {r["statistic"]: r for r in first["sketch"]}
    assert set(rows) == {"projection", "reconstruction"} and first["batches"] == 8
    n = len(first["modules"])
    for r in rows.values():
        v = r["vs_exact"]
        assert v["of"] == n and v["same"] + v["lower"] + v["higher"] == n
    # tiny BERT's sides are 32 or 64 wide: l = 8 * 8 + 1 = 65 covers them, so the projected test is the exact test
    again = _run(monkeypatch, *common, "--statistics", "projection", "--co-range", "8", "--exact-from",
                 str(tmp_path / "a.json"), "--json", str(tmp_path / "b.json"))
    assert again["exact"]["enum"] == first["exact"]["enum"]
    assert again["exact"]["enum_from"]["same"] == again["exact"]["enum_from"]["rechecked"] > 0
    assert again["sketch"][0]["co_range"] == 8 and again["sketch"][0]["vs_exact"]["same"] == n


def test_sketch_ranks_follow_the_statistic_and_the_co_range(monkeypatch):
    """On a decaying planted signal (96 x 192, K = 16): a co-range as large as the side (8K + 1 = 129 >= 96) gives the
    exact ranks; at 2K + 1 = 33 the projection loses some and the reconstruction statistic most."""
    monkeypatch.syspath_prepend(str(BENCH))
    import numpy as np
    import torch
    from sketch_agreement import sketch_ranks
    from test_signflip import planted_folds

    from intrinsic.rank.signflip import sign_flip_test

    rng = np.random.default_rng(5)
    folds = [torch.tensor(planted_folds(8, 96, 192, 24, 6.0, rng, spread=24 ** -0.7), dtype=torch.float32)
             for _ in range(2)]  # float32 like the probe's fold means
    exact = [sign_flip_test(F, seed=0).rank for F in folds]
    assert sketch_ranks(folds, 16, 0, "projection", co_range=8) == exact
    proj, recon = sketch_ranks(folds, 16, 0, "projection"), sketch_ranks(folds, 16, 0, "reconstruction")
    assert sum(recon) + 4 <= sum(proj) < sum(exact), (exact, proj, recon)
