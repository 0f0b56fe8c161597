"""Pareto front of runs: which placements no other run beats on both score and size.

A point is Pareto-optimal when no other point is at least as good on every objective and
strictly better on one. With the default ``maximize=(True, False)`` the objectives are
(score: higher is better, trainable params: lower is better). Equal points do not dominate
each other, so duplicates are all on the front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """True when `a` is at least as good as `b` on every objective and strictly better on one."""
    at_least = all((x >= y) if up else (x <= y) for x, y, up in zip(a, b, maximize, strict=True))
    strictly = any((x > y) if up else (x < y) for x, y, up in zip(a, b, maximize, strict=True))
    return at_least and strictly


def pareto_front(points: list[tuple[float, float]], maximize: tuple[bool, ...] = (True, False)) -> list[int]:
    """Indices (ascending) of the points no other point dominates.

    Points with a NaN coordinate (a failed run) are never on the front and never dominate.
    O(n^2), fine for the tens of runs a comparison holds.
    """
    ok = [all(not (isinstance(v, float) and math.isnan(v)) for v in p) for p in points]
    front = []
    for i, p in enumerate(points):
        if not ok[i]:
            continue
        if not any(ok[j] and j != i and dominates(q, p, maximize) for j, q in enumerate(points)):
            front.append(i)
    return front
