"""The measurement loop of `truncate`, on models already in memory: score every (component, rank) of a
`Truncator` with a given score function, skipping points already measured, and assemble the rows.

`measure` is what `truncate_run` (loading a run from disk) and the tests (tiny models with a planted
update) share: everything about r90 beyond loading lives here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .result import KEEP, OWN_FLOOR, ComponentTruncation, TruncationPoint, own_share, r90, r90_own

WITHOUT = 0  # the rank of the point with the component's update removed (always measured, not part of a grid)

Callback = Callable[[dict[str, Any]], None]


def measure(truncator, components: list[str], grid, score: Callable[[Any], float], *,
            done: tuple[TruncationPoint, ...] = (), on_point: Callable[[TruncationPoint], None] | None = None,
            callback: Callback | None = None) -> list[TruncationPoint]:
    """Score the model with each component's update removed (rank 0, always) and cut to each rank of the grid
    (clamped per component).

    `score(model)` is the held-out score (higher is better); `done` holds points measured before (kept,
    not measured again); `on_point` is called after each new point (to write the file); `callback` gets
    {"event": "point", "done": k, "total": n, "component", "rank", "score"}. Returns every point of
    the request, old and new, in (component, rank) order."""
    emit = callback or (lambda event: None)
    known = {(p.component, p.rank): p for p in done}
    todo = [(c, r) for c in components for r in (WITHOUT, *truncator.ranks(c, grid))]
    out, k = [], 0
    for c, r in todo:
        k += 1
        p = known.get((c, r))
        if p is None:
            with truncator.truncated(c, r):
                s = float(score(truncator.model))
            p = TruncationPoint(component=c, rank=r, score=s, energy=truncator.energy(c, r))
            if on_point is not None:
                on_point(p)
        out.append(p)
        emit({"event": "point", "done": k, "total": len(todo), "component": c, "rank": r, "score": p.score})
    return out


def component_rows(described: list[ComponentTruncation], points, untrained: float, full: float,
                   keep: float = KEEP, floor: float = OWN_FLOOR) -> tuple[ComponentTruncation, ...]:
    """Each described component with its gains at its ranks (None where not measured), its gain without its
    update (rank 0), its r90, r90_own and own share."""
    scores = {(p.component, p.rank): p.score for p in points}
    rows = []
    for d in described:
        gains = tuple(None if (d.component, r) not in scores else scores[(d.component, r)] - untrained
                      for r in d.ranks)
        without = scores.get((d.component, WITHOUT))
        g0 = None if without is None else without - untrained
        own, status = r90_own(d.ranks, gains, g0, full - untrained, keep, floor)
        rows.append(dataclasses.replace(d, gains=gains, r90=r90(d.ranks, gains, full - untrained, keep),
                                        score_without=without, gain_without=g0,
                                        own_share=own_share(g0, full - untrained), r90_own=own, own_status=status))
    return tuple(rows)
