"""True-label vs shuffled-label contrast of the gradient probe, from the rows' stored norms.

The probe measures the mean gradient G on the calibration batches and G_shuffled on the same texts
with the labels permuted. Their energy ratio ||G_shuffled||^2 / ||G||^2 says how much of G is
label-independent: near or above 1, the gradient mostly pulls a random head towards the label
marginal, not towards the task (science review 2026-11: 1.26 on MiniLM, seed 0).

With a fitted head that ratio no longer measures noise: the shuffled-label gradient is then the pull
of confident predictions back towards the label prior, E[(p(x) - y_bar) J(x)], which grows as the head
fits. The label-dependent part is the difference: G - G_shuffled = -E[(y - y_bar) J(x)] to first order
(the shuffled labels are independent of x), the same whatever the head predicts. `label_share`,
||G - G_shuffled||^2 / ||G||^2, is the share of G's energy that depends on the labels (it includes the
two gradients' sampling noise). Totals and kinds sum energy over top-level rows.
"""

from __future__ import annotations

from typing import Any


def _ratio(noise2: float, grad2: float) -> float | None:
    return noise2 / grad2 if grad2 > 0 else None


def label_contrast(modules) -> dict[str, Any] | None:
    """{"total", "by_kind": {kind: ratio}, "modules": {name: ratio}} of ||G_shuffled||^2 / ||G||^2, or None
    when the rows carry no noise_norm. Per module for every row; total and kinds over top-level rows."""
    rows = [m for m in modules if m.noise_norm is not None]
    if not rows:
        return None
    top = [m for m in rows if m.block_of is None]
    by_kind: dict[str, list[float]] = {}
    for m in top:
        acc = by_kind.setdefault(m.kind, [0.0, 0.0])
        acc[0] += m.noise_norm ** 2
        acc[1] += m.grad_norm ** 2
    labelled = [m for m in top if m.label_norm is not None]
    share = {"label_share": _ratio(sum(m.label_norm ** 2 for m in labelled), sum(m.grad_norm ** 2 for m in labelled)),
             "label_share_by_kind": {k: _ratio(sum(m.label_norm ** 2 for m in labelled if m.kind == k),
                                               sum(m.grad_norm ** 2 for m in labelled if m.kind == k))
                                     for k in sorted({m.kind for m in labelled})}} if labelled else {}
    return {
        **share,
        "total": _ratio(sum(m.noise_norm ** 2 for m in top), sum(m.grad_norm ** 2 for m in top)),
        "by_kind": {k: _ratio(n2, g2) for k, (n2, g2) in sorted(by_kind.items())},
        "modules": {m.name: _ratio(m.noise_norm ** 2, m.grad_norm ** 2) for m in rows},
        "modules_above_1": sum(1 for m in top if m.noise_norm > m.grad_norm),
        "modules_total": len(top),
    }
