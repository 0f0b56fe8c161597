"""What every probe shares: the row key, the batches it is given, and the `Probe` protocol.

A probe only measures: `measure(...)` returns one `rank.Spectra` per row, keyed by `RowKey`;
the orchestrator (`run.py`) applies the estimators (`rank.estimate`) and builds typed rows.
A row is a probed module, or one role block of a fused module (q, k, v of GPT-2's `c_attn`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..arch import ModuleRef, roles_of


class RowKey(NamedTuple):
    """A row of a probe: a module (block None) or one role block of a fused module."""

    name: str  # module name as in model.named_modules()
    block: str | None = None  # role of the block of a fused module (q, k, v, gate, up); None: the whole module

    @property
    def row_name(self) -> str:
        """The row's name in a ProbeReport: the module name, or "<fused name>:<role>" for a block."""
        return self.name if self.block is None else f"{self.name}:{self.block}"


def row_views(refs: Sequence[ModuleRef]) -> Iterator[tuple[RowKey, ModuleRef, Any]]:
    """(key, ref, rows) for every module and every role block of a fused module; rows: a slice or an index list."""
    for ref in refs:
        yield RowKey(ref.name), ref, slice(None)
        if ref.blocks:
            for role, rows in roles_of(ref):
                yield RowKey(ref.name, role), ref, rows


def row_count(ref: ModuleRef, rows) -> int:
    """m, the number of output rows a `row_views` selection (a slice or an index list) takes of `ref`'s weight."""
    return len(range(*rows.indices(ref.shape[0]))) if isinstance(rows, slice) else len(rows)


@dataclass(frozen=True)
class ProbeBatches:
    """The batches a probe run uses, made once by the orchestrator (same seed for all)."""

    real: Sequence[dict]  # N calibration batches with their labels
    shuffled: Sequence[dict]  # N batches with permuted labels (the noise-floor control)
    update: Sequence[dict]  # K fine-tuning batches of the update probe (empty when it is skipped)
    tokens: int  # non-pad tokens in `real`


class Probe(Protocol):
    """A measurement of every probed module: the gradient probe, the update probe, and later ones."""

    name: str  # the timing phase and the progress label of the measurement

    def measure(self, model, refs: Sequence[ModuleRef], batches: ProbeBatches, settings, progress) -> dict:
        """{RowKey: rank.Spectra} for every module and role block of `refs`; the model comes back unchanged."""
        ...
