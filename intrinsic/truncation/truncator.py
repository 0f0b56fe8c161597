"""The fine-tuned model with one component's update swapped for its best rank-r approximation.

    t = Truncator(ft_model, base_weights, refs, num_layers, max_rank=64)
    with t.truncated("attention", 8):      # W = W_base + SVD_8(W_ft - W_base) in every attention block
        score = evaluate(ft_model)          # everything else (other blocks, embeddings, norms, head) stays fine-tuned
    # on exit the fine-tuned weights are back, bit for bit

Every block's update dW = W_ft - W_base is factored once (`LowRank.of`, float32, on the model's
device) when the Truncator is built; each (component, r) then costs one matrix product per block.
The Truncator keeps, per block, the base weights (float32) and the fine-tuned weights (their own
dtype) to restore: about two copies of the probed linears on the device, beside the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from ..errors import ConfigError
from .components import Block, blocks_of, component_blocks, component_kind
from .lowrank import LowRank
from .result import KEEP, ComponentTruncation


class Truncator:
    """Truncated-update views of one fine-tuned model against its base weights."""

    def __init__(self, model, base_weights: dict, refs, num_layers: int, *, max_rank: int,
                 progress: Callable[[int, int], None] | None = None):
        """`base_weights`: {module name: the base model's (out, in) weight} for every ref in `refs` (modules
        of `model`, from `arch.discover`); `max_rank`: the largest r that will be asked for."""
        import torch

        from ..arch import weight_of

        self.model = model
        self.blocks: list[Block] = blocks_of(refs)
        self.base, self.orig, self.factors = [], [], []
        with torch.no_grad():
            for i, b in enumerate(self.blocks):
                if b.ref.name not in base_weights:
                    raise ConfigError(f"Module {b.ref.name} of the fine-tuned model is not in the base model.")
                w_base = base_weights[b.ref.name]
                w_ft = weight_of(model, b.ref)
                if tuple(w_base.shape) != tuple(w_ft.shape):
                    raise ConfigError(f"Module {b.ref.name} is {tuple(w_ft.shape)} in the fine-tuned model but "
                                      f"{tuple(w_base.shape)} in the base model: not the same architecture.")
                ft = w_ft[b.rows].detach().clone()
                base = w_base[b.rows].detach().to(device=ft.device, dtype=torch.float32)
                self.orig.append(ft)
                self.base.append(base)
                self.factors.append(LowRank.of(ft.float() - base, max_rank))
                if progress is not None:
                    progress(i + 1, len(self.blocks))
        index = {id(b): i for i, b in enumerate(self.blocks)}
        self.components = {name: [index[id(b)] for b in mine]
                           for name, mine in component_blocks(self.blocks, num_layers).items()}

    def _set(self, i: int, value) -> None:
        from ..arch import weight_of

        w = weight_of(self.model, self.blocks[i].ref)
        w[self.blocks[i].rows] = value.to(w.dtype)

    @contextlib.contextmanager
    def truncated(self, component: str, r: int) -> Iterator[None]:
        """Within the block: `component`'s blocks hold W_base + SVD_r(dW); the fine-tuned weights after."""
        import torch

        idx = self.components[component]
        try:
            with torch.no_grad():
                for i in idx:
                    self._set(i, self.base[i] + self.factors[i].at(r))
            yield
        finally:
            with torch.no_grad():
                for i in idx:
                    self._set(i, self.orig[i])

    def ranks(self, component: str, grid) -> tuple[int, ...]:
        """The grid clamped to the component's widest block (min(m, n)), distinct, ascending."""
        cap = self.max_rank(component)
        return tuple(sorted({min(int(r), cap) for r in grid}))

    def max_rank(self, component: str) -> int:
        return max(self.factors[i].full_rank for i in self.components[component])

    def energy(self, component: str, r: int) -> float:
        """Share of the component's ||dW||^2 kept at rank r (1.0 when dW = 0)."""
        kept, total = 0.0, 0.0
        for i in self.components[component]:
            k, t = self.factors[i].energy_kept(r)
            kept, total = kept + k, total + t
        return kept / total if total > 0 else 1.0

    def energy_rank(self, component: str, keep: float = KEEP) -> int:
        """The smallest r whose SVD_r keeps `keep` of the component's ||dW||^2 (every block cut to r); 0 if dW = 0."""
        if not any(sum(self.factors[i].sv2) > 0 for i in self.components[component]):
            return 0
        lo, hi = 1, self.max_rank(component)  # at max_rank every block keeps its whole update
        while lo < hi:  # the kept share grows with r: bisect
            mid = (lo + hi) // 2
            if self.energy(component, mid) >= keep:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def describe(self, component: str, grid) -> ComponentTruncation:
        """The component's row without gains (filled in by `measure.component_rows`)."""
        idx = self.components[component]
        ranks = self.ranks(component, grid)
        return ComponentTruncation(
            component=component, group=component_kind(component), blocks=len(idx),
            params=sum(int(self.orig[i].numel()) for i in idx),
            layers=tuple(sorted({self.blocks[i].ref.layer for i in idx})), max_rank=self.max_rank(component),
            ranks=ranks, gains=tuple(None for _ in ranks), energy=tuple(self.energy(component, r) for r in ranks),
            r90=None, energy_rank90=self.energy_rank(component))
