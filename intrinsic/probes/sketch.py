"""Sketch mode of the gradient probe: two-sided streaming sketches of each mean gradient, dL/dW never formed.

A linear layer's gradient over a batch is G_b = D^T X (inputs X, T x in, backprops D = dL/d(output),
T x out, padding tokens masked out of X). Following Tropp, Yurtsever, Udell & Cevher (2017, "Practical
sketching algorithms for low-rank matrix approximation", SIAM J. Matrix Anal. Appl.), every row (module or
role block, m x n) keeps, per slot, a range sketch Y = G Omega (m x k) and a co-range sketch W = Psi G
(l x n), k = `ProbeSettings.sketch` (clamped to min(m, n)), l = 2k + 1, Omega (n x k) and Psi (l x m)
independent Gaussian test matrices, shared by the rows with the same n (Omega) or m (Psi). Hooks update them per batch without
forming G:

    Y += D^T (X Omega)         W += (Psi D^T) X          cost ~ 2 T (k + l)(m + n) per batch

Slots: the real batches go to slot b % S, S = K (the fold count; 2K when K is odd, 2 without folds), so
every fold mean and both half means are linear combinations of slots, and so are their sketches (a sketch
is linear in G: the sign-flip test's signed sums of fold means are signed sums of fold sketches); the
shuffled-label batches go to one more slot. State per row: (S + 1)(m k + l n) float32.

The probed weights get no .grad: every parameter has requires_grad False while the probe runs, the input
embeddings' output is made to require grad so the backward still reaches every hook (it computes the
backprops D, never a weight gradient). Several processes (`probes.distributed`) split the batches and sum the
sketches. `sketch_spectra` turns the sketches into `rank.Spectra`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..arch import ModuleRef
from ..arch.access import base_layer, get_module
from ..errors import ConfigError, NonFiniteError
from .base import RowKey, row_count, row_views
from .distributed import my_batches, sum_across, sum_values
from .example_energy import ExampleEnergy
from .gradient import check_accumulation
from .settings import SKETCH_AUTO as AUTO_SKETCH  # sketch size chosen when the exact accumulators do not fit
from .steps import Progress, device_of, fits, forward_loss

FIT_FRACTION = 0.5  # exact accumulators must fit in this share of the device's free memory (activations need the rest)


def sketch_sizes(shape: tuple[int, int], k: int) -> tuple[int, int]:
    """(k, l) for a row of `shape` (m, n): range size k clamped to min(m, n), co-range size l = 2k + 1."""
    k = max(1, min(int(k), *shape))
    return k, 2 * k + 1


def gaussian_maps(m: int, n: int, k: int, l: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(Omega (n, k), Psi (l, m)): independent standard Gaussian test matrices, Omega seeded by (seed, n) and Psi by
    (seed, m) from distinct streams, so the rows of one module (same n) share Omega and with it X Omega."""
    def stream(size: int, side: int):
        return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(size) * 7_919 + side) % 2**62)

    omega_t = torch.randn(k, n, generator=stream(n, 1))  # (k, n)
    psi = torch.randn(l, m, generator=stream(m, 2))  # (l, m)
    return omega_t.T.contiguous().to(device), psi.to(device)


@dataclass
class RowSketch:
    """The sketches of one row (module or role block): range Y = G Omega and co-range W = Psi G per slot."""

    key: RowKey
    rows: slice | list[int]  # the row's rows of the module's (out, in) matrix
    shape: tuple[int, int]  # (m, n)
    omega: torch.Tensor  # (n, k)
    psi: torch.Tensor  # (l, m)
    Y: torch.Tensor  # (S + 1, m, k) float32: slot sums of G Omega; the last slot holds the shuffled batches
    W: torch.Tensor  # (S + 1, l, n) float32: slot sums of Psi G

    @property
    def k(self) -> int:
        return int(self.omega.shape[1])


@dataclass
class SketchSums:
    """What sketch mode accumulates: per row its slot sketches, and how batches map to slots."""

    refs: list[ModuleRef]
    rows: list[RowSketch]  # in `row_views` order
    slots: int  # S real slots (the noise slot is index S)
    counts: list[int]  # batches per real slot
    n_noise: int  # shuffled-label batches
    folds: int  # K fold means (0: not kept); fold of slot s is s % K, half of slot s is s % 2
    requested: int  # the sketch size asked for (rows with min(m, n) below it were clamped)

    def weights(self, part: str) -> torch.Tensor:
        """(S + 1,) coefficients making the slot sums into the mean of `part`: mean | even | odd | noise."""
        w = torch.zeros(self.slots + 1, dtype=torch.float64)
        if part == "noise":
            w[self.slots] = 1.0 / max(self.n_noise, 1)
            return w
        pick = {"mean": lambda s: True, "even": lambda s: s % 2 == 0, "odd": lambda s: s % 2 == 1}[part]
        total = sum(c for s, c in enumerate(self.counts) if pick(s))
        for s in range(self.slots):
            if pick(s):
                w[s] = 1.0 / max(total, 1)
        return w

    def fold_weights(self) -> torch.Tensor:
        """(K, S + 1) coefficients making the slot sums into the K fold means."""
        w = torch.zeros(self.folds, self.slots + 1, dtype=torch.float64)
        per = [sum(c for s, c in enumerate(self.counts) if s % self.folds == j) for j in range(self.folds)]
        for s in range(self.slots):
            w[s % self.folds, s] = 1.0 / max(per[s % self.folds], 1)
        return w


class SketchHooks:
    """Forward hooks keeping each probed module's input X, tensor hooks on its output adding D^T X's sketches.

    Set `slot` (which slot the batch adds into) and `mask` (the batch's attention mask, None: every token
    counts) before each forward pass.
    """

    def __init__(self, model, sums: SketchSums) -> None:
        self.model, self.sums = model, sums
        self.slot = 0
        self.mask: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> SketchHooks:
        by_module: dict[str, list[RowSketch]] = {}
        for r in self.sums.rows:
            by_module.setdefault(r.key.name, []).append(r)
        for ref in self.sums.refs:
            mod = base_layer(get_module(self.model, ref))
            self._handles.append(mod.register_forward_hook(self._forward_hook(by_module[ref.name])))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _forward_hook(self, rows: list[RowSketch]):
        def hook(_mod, inputs, output):
            if not (torch.is_tensor(output) and output.requires_grad):
                return
            X, mask, slot = inputs[0].detach(), self.mask, self.slot
            output.register_hook(lambda g: self._add(rows, X, g, mask, slot))
        return hook

    @staticmethod
    def _add(rows: list[RowSketch], X: torch.Tensor, D: torch.Tensor, mask, slot: int) -> None:
        if mask is not None and tuple(mask.shape) == tuple(X.shape[:2]):
            X = X * mask.to(X.device, X.dtype)[..., None]  # padding tokens out
        X = X.reshape(-1, X.shape[-1]).float()  # (T, n)
        D = D.detach().reshape(-1, D.shape[-1]).float()  # (T, out)
        XO = {}  # id(Omega) -> X Omega (T, k); the rows of a module share Omega (same n) when they share k
        for r in rows:
            Dr = D if isinstance(r.rows, slice) and r.rows == slice(None) else D[:, r.rows]  # (T, m)
            if id(r.omega) not in XO:
                XO[id(r.omega)] = X @ r.omega  # (T, k)
            r.Y[slot].add_(Dr.T @ XO[id(r.omega)])  # (m, k): D^T X Omega = G Omega
            r.W[slot].add_((Dr @ r.psi.T).T @ X)  # (l, n): Psi D^T X = Psi G


def slot_count(folds: int) -> int:
    """S, the real slots: K folds (2K when K is odd, so both halves are unions of slots), 2 without folds."""
    return (folds if folds % 2 == 0 else 2 * folds) if folds else 2


def _rows(refs: Sequence[ModuleRef]):
    """(key, ref, selection, m, n) per row of `row_views` (a role block of a fused module has m of its own)."""
    for key, ref, sel in row_views(refs):
        yield key, ref, sel, row_count(ref, sel), int(ref.shape[1])


def new_sums(refs: Sequence[ModuleRef], k: int, folds: int, seed: int, device) -> SketchSums:
    """Zero sketches for every row of `refs` (`row_views`), S real slots + 1 noise slot."""
    slots = slot_count(folds)
    rows, omegas, psis = [], {}, {}
    for key, ref, sel, m, n in _rows(refs):
        kk, ll = sketch_sizes((m, n), k)
        if (n, kk) not in omegas or (m, ll) not in psis:
            omegas[(n, kk)], psis[(m, ll)] = gaussian_maps(m, n, kk, ll, seed, device)
        omega, psi = omegas[(n, kk)], psis[(m, ll)]
        rows.append(RowSketch(key, sel, (m, n), omega, psi,
                              torch.zeros(slots + 1, m, kk, device=device), torch.zeros(slots + 1, ll, n, device=device)))
    return SketchSums(list(refs), rows, slots, [0] * slots, 0, folds, k)


@contextlib.contextmanager
def no_weight_grads(model) -> Iterator[None]:
    """Every parameter frozen (no .grad is ever formed), the input embeddings' output requiring grad so the
    backward reaches the hooks; eval mode. Flags and mode come back afterwards."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is None:
        raise ConfigError("Sketch mode needs the model's input embeddings (get_input_embeddings()) to start the backward.")
    params = list(model.parameters())
    flags, was_training = [p.requires_grad for p in params], model.training

    def start(_mod, _inputs, output):
        return output.detach().requires_grad_(True) if torch.is_tensor(output) else output

    handle = emb.register_forward_hook(start)
    try:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        handle.remove()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)


def _check_finite(sums: SketchSums, slot: int, phase: str, b: int) -> None:
    total = torch.stack([r.Y[slot].sum() + r.W[slot].sum() for r in sums.rows]).sum()
    if bool(torch.isfinite(total)):
        return
    for r in sums.rows:
        if not (bool(torch.isfinite(r.Y[slot]).all()) and bool(torch.isfinite(r.W[slot]).all())):
            raise NonFiniteError(f"Non-finite gradient in module {r.key.row_name} at {phase} batch {b}; nothing was written.")
    raise NonFiniteError(f"Gradient sketch overflowed at {phase} batch {b}; nothing was written.")


def accumulate_sketches(model, refs: Sequence[ModuleRef], batches: Sequence[dict], noise_batches: Sequence[dict], *,
                        k: int, folds: int = 0, seed: int = 0, progress: Progress | None = None,
                        example_energy: bool = False) -> tuple[SketchSums, dict | None]:
    """(sketches of every row, per-example energy {RowKey: mean over batches} or None): `batches` into the real
    slots (batch b into slot b % S), `noise_batches` into the noise slot."""
    check_accumulation(batches, folds, refs)
    sums = new_sums(refs, k, folds, seed, device_of(model))
    energy = ExampleEnergy(model, refs) if example_energy else None
    with torch.enable_grad(), no_weight_grads(model), SketchHooks(model, sums) as hooks:
        for phase, group in (("gradient", batches), ("noise", noise_batches)):
            with (energy if energy is not None and phase == "gradient" else contextlib.nullcontext()):
                mine = my_batches(group)  # several processes: every world-th batch, global index kept
                for i, (b, batch) in enumerate(mine):
                    slot = b % sums.slots if phase == "gradient" else sums.slots
                    hooks.slot, hooks.mask = slot, batch.get("attention_mask")
                    if energy is not None:
                        energy.mask = hooks.mask
                    forward_loss(model, batch, phase, b).backward()
                    _check_finite(sums, slot, phase, b)
                    if phase == "gradient":
                        sums.counts[slot] += 1
                    else:
                        sums.n_noise += 1
                    if progress:
                        progress(phase, i + 1, len(mine))
    counts = torch.tensor(sums.counts + [sums.n_noise], dtype=torch.float64, device=sums.rows[0].Y.device)
    sum_across([t for r in sums.rows for t in (r.Y, r.W)] + [counts])  # several processes: the sketches of all batches
    sums.counts, sums.n_noise = [int(c) for c in counts[:-1].tolist()], int(counts[-1])
    per_batch = None if energy is None else {key: v / len(batches) for key, v in
                                             sum_values(energy.totals(), counts.device).items()}
    return sums, per_batch


# ---------------------------------------------------------------------- memory: exact or sketch


def exact_bytes(refs: Sequence[ModuleRef], folds: int, weight_bytes: int) -> int:
    """Bytes the exact accumulators need: even, odd, noise and K fold sums in float32, plus each weight's .grad."""
    params = sum(int(r.shape[0]) * int(r.shape[1]) for r in refs)
    return params * (4 * (3 + folds) + weight_bytes)


def sketch_bytes(refs: Sequence[ModuleRef], k: int, folds: int) -> int:
    """Bytes of sketch mode's state (`new_sums`): per row (S + 1)(m k' + l' n) float32, k' = min(k, m, n) and
    l' = 2k' + 1 clamped the same way (`sketch_sizes`), S slots as `new_sums` counts them."""
    total = 0
    for *_, m, n in _rows(refs):
        kk, ll = sketch_sizes((m, n), k)
        total += 4 * (slot_count(folds) + 1) * (m * kk + ll * n)
    return total


def check_sketch_fits(refs: Sequence[ModuleRef], k: int, folds: int, free: int | None, device: str) -> None:
    """Refuse, before any probing, a probe whose sketch state alone exceeds FIT_FRACTION of `free` (None: unknown,
    no check): it fits in no mode (sketch mode is the smallest), with the estimate and what helps."""
    need = sketch_bytes(refs, k, folds)
    if fits(need, free, FIT_FRACTION):
        return
    raise ConfigError(f"The probe fits in no mode on {device}: even sketch mode (--sketch {k}, {folds} folds) needs "
                      f"about {need / 1e9:.1f} GB for its sketches, more than {FIT_FRACTION:.0%} of the "
                      f"{free / 1e9:.1f} GB free (exact mode needs more): use a smaller --sketch K (the state grows with "
                      "K), probe fewer modules (--roles, --layers), or use a device with more memory.")


def free_bytes(device: torch.device) -> int | None:
    """Free memory of `device` in bytes (CUDA: the driver's count; CPU: available RAM), None when unknown (then the
    exact accumulators are kept)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:  # Linux: MemAvailable counts the page cache the kernel would give back
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def auto_sketch(model, refs: Sequence[ModuleRef], folds: int) -> tuple[int | None, str | None]:
    """(sketch size or None, note): sketch mode when the exact accumulators would not fit the device."""
    dev = device_of(model)
    need = exact_bytes(refs, folds, next(model.parameters()).element_size())
    free = free_bytes(dev)
    if fits(need, free, FIT_FRACTION):
        return None, None
    if sketch_bytes(refs, AUTO_SKETCH, folds) >= need:  # small matrices: the sketches would hold more than the sums
        raise ConfigError(f"The probe fits in no mode on {dev}: exact accumulators need about {need / 1e9:.1f} GB, more "
                          f"than {FIT_FRACTION:.0%} of the {free / 1e9:.1f} GB free, and sketch mode (--sketch "
                          f"{AUTO_SKETCH}) would need more for these small matrices: probe fewer modules (--roles, "
                          "--layers), use fewer folds, or a device with more memory.")
    return AUTO_SKETCH, (f"exact gradient accumulators would need {need / 1e9:.1f} GB, more than half of the "
                         f"{free / 1e9:.1f} GB free on {dev}: sketch mode (--sketch {AUTO_SKETCH}) chosen, dL/dW is "
                         "never formed; --sketch K sets the size")


def clamp_note(sums: SketchSums) -> str | None:
    """A note naming the rows whose min(m, n) is below the requested sketch size (clamped, sketched exactly)."""
    small = [r for r in sums.rows if r.k < sums.requested]
    if not small:
        return None
    r = min(small, key=lambda r: r.k)
    return (f"--sketch {sums.requested} exceeds min(m, n) of {len(small)} of {len(sums.rows)} rows (smallest "
            f"{r.shape[0]}x{r.shape[1]}, e.g. {r.key.row_name}): clamped to min(m, n) there, where the sketch "
            "holds the whole matrix")
