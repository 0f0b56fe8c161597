"""Placement knobs of one `[[grid]]` block: `placement = {fill = "raw"}` sets knobs for that block's cells only,
over the study's `[placement]` table, so one study can hold auto with and without a knob in one Holm family.

- Validation is placement's own (`knob_problem`), as for `[placement]`.
- A cell carries only the knobs that differ from the study's (`cell_knobs`); knobs that only `auto` reads
  (`AUTO_ONLY`) are dropped for fixed strategies and `full`, so an `all` cell of such a block is the same
  cell (same id) as in a block without it.
- The knobs a cell carries enter its settings hash and its label (`knob_tag`: "auto+fill budget=all@32"); a
  block whose knobs equal the study's adds nothing, and the ids of every other cell are unchanged.
"""

from __future__ import annotations

from typing import Any

from ..placement.request import KNOB_DEFAULTS, KNOBS, knob_problem

AUTO_ONLY = ("max_rank", "granularity", "gains", "normalize", "predictor", "fill")  # knobs only auto reads


def block_knobs(ctx, table: str, block: dict[str, Any], name: str) -> dict[str, Any]:
    """The validated `placement` table of a [[grid]] block (empty when absent); errors name file and line."""
    v = block.get("placement", {})
    if not isinstance(v, dict):
        raise ctx.fail(table, "placement", f"grid block '{name}': 'placement' must be a table such as "
                                           f"{{fill = \"raw\"}}, got {v!r}.")
    ctx.check_keys(f"{table}.placement", v, KNOBS)
    for k, x in v.items():
        problem = knob_problem(k, x)
        if problem:
            raise ctx.fail(table, "placement", f"grid block '{name}': placement '{k}' must be {problem}, got {x!r}.")
    return dict(v)


def cell_knobs(study: dict[str, Any], block: dict[str, Any], strategy: str) -> dict[str, Any]:
    """The knobs of a block that change a cell of `strategy`: those differing from the study's [placement]
    (`study`, defaults filled where kept), auto-only knobs for auto alone, none for full."""
    if strategy == "full":
        return {}
    return {k: v for k, v in block.items()
            if (strategy == "auto" or k not in AUTO_ONLY) and v != study.get(k, KNOB_DEFAULTS[k])}


TAGS = {("fill", "raw"): "+fill", ("fill", "spread"): "+spread"}  # short tags of some knob values in labels


def knob_tag(knobs: dict[str, Any]) -> str:
    """A cell's knobs in its label: "+fill" for fill = "raw", "+spread" for fill = "spread", "+k=v" for any other,
    in KNOBS order."""
    return "".join(TAGS.get((k, knobs[k]), f"+{k}={knobs[k]}") for k in KNOBS if k in knobs)
