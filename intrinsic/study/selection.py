"""Learning rate per arm, chosen on validation only.

An arm with an lr grid has one lr-sweep cell per (lr, lr seed), each trained on the train split
minus the validation carve and scored on the carve (`grid.py`). `select_lrs` reads those rows and
nothing else: it refuses any row that is not a validation-scored sweep row, so a test score can
never influence the choice. The chosen lr is the one with the best mean validation score over the
lr seeds (ties: the first in the grid); a sweep run that failed (e.g. diverged) counts as not
chosen. While any sweep cell of an arm is unfinished there is no choice yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .grid import SWEEP
from .rows import CellRow


@dataclass(frozen=True)
class LrChoice:
    """The learning rate of one arm, chosen on validation."""

    arm: str  # hash of the arm's settings without lr grid and seed (CellRow.arm)
    label: str  # the arm's config label, e.g. "ffn budget=all@8"
    lrs: tuple[float, ...]  # the lr grid, in the order written
    val_scores: tuple[float | None, ...]  # mean validation score per lr over its finished runs (None: none)
    runs: tuple[int, ...]  # finished validation runs per lr
    failed: int  # sweep runs that failed or were infeasible
    pending: int  # sweep runs not finished yet (no choice while > 0)
    chosen: float | None  # the lr with the best mean validation score; None while pending or if every run failed


def sweep_rows(rows: Iterable[CellRow]) -> list[CellRow]:
    """The lr-sweep rows of a study (validation runs only)."""
    return [r for r in rows if r.phase == SWEEP]


def _check(row: CellRow) -> None:
    if row.phase != SWEEP or row.eval_split != "validation":
        raise ValueError(f"select_lrs takes validation-scored lr-sweep rows only; row {row.id} ({row.label}) is "
                         f"phase {row.phase!r}, scored on {row.eval_split!r}")


def select_lrs(rows: Sequence[CellRow], arms: Mapping[str, tuple[float, ...]] | None = None) -> dict[str, LrChoice]:
    """{arm: LrChoice} from validation rows only. `arms` (arm -> its lr grid, from the cells' settings)
    restricts each arm to its own grid; by default the grid recorded in the rows is used."""
    by_arm: dict[str, list[CellRow]] = {}
    for r in rows:
        _check(r)
        by_arm.setdefault(r.arm, []).append(r)
    grids = dict(arms) if arms is not None else {a: rs[0].lr_grid for a, rs in by_arm.items()}
    out = {}
    for arm, lrs in grids.items():
        rs = [r for r in by_arm.get(arm, []) if r.lr in lrs]
        scores, runs = [], []
        for lr in lrs:
            got = [float(r.score) for r in rs if r.lr == lr and r.ok and r.score is not None
                   and math.isfinite(float(r.score))]
            scores.append(sum(got) / len(got) if got else None)
            runs.append(len(got))
        pending = sum(1 for r in rs if r.status == "pending") + sum(1 for lr in lrs if not any(r.lr == lr for r in rs))
        failed = sum(1 for r in rs if r.status in ("failed", "infeasible"))
        best = None
        for lr, s in zip(lrs, scores):
            if s is not None and (best is None or s > best[1]):
                best = (lr, s)
        label = rs[0].label.split(" lr=")[0] if rs else arm
        out[arm] = LrChoice(arm, label, tuple(lrs), tuple(scores), tuple(runs), failed, pending,
                            best[0] if best and not pending else None)
    return out
