"""One formatter for numbers in tables and sentences, shared by the reports and the CLI.

`human(n)` writes a count for people (74496 -> '74.5k'); `cell(v)` writes any table value
(None, bool, int, float, text) as a short string. The options of `cell` are the only places
where the views differ on purpose: the study report abbreviates large numbers with `human`,
the terminal keeps exact counts with thousands separators, the probe report keeps them plain.
Standard library only: the CLI imports this at `--help` time.
"""

from __future__ import annotations

from typing import Any, Literal

Large = Literal["human", "comma", "plain"]


def human(n: float | None) -> str:
    """A count for people: 1234567 -> '1.23M', 74496 -> '74.5k', None -> 'n/a'."""
    if n is None:
        return "n/a"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def cell(v: Any, *, digits: int = 4, large: Large = "human", bools: bool = True) -> str:
    """A table value as text: None -> '-'; floats to `digits` significant digits.

    `large` says how numbers with |v| >= 1e4 are written: "human" ('74.5k', ints and floats),
    "comma" (ints with thousands separators, '74,496'; floats as usual) or "plain" (as is).
    `bools=True` writes booleans as yes/no, `False` as Python does (True/False).
    """
    if v is None:
        return "-"
    if isinstance(v, bool):
        return ("yes" if v else "no") if bools else str(v)
    if isinstance(v, float):
        return human(v) if large == "human" and abs(v) >= 1e4 else f"{v:.{digits}g}"
    if isinstance(v, int):
        if large == "comma":
            return f"{v:,}"
        return human(v) if large == "human" and abs(v) >= 1e4 else str(v)
    return str(v)


__all__ = ["human", "cell"]
