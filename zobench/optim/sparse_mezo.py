"""Sparse-MeZO: SPSA along z ⊙ m, m the entries of small magnitude, regenerated from the weights every step.

Liu, Zhu, Gong, Cheng, Hsieh & You, "Sparse MeZO: Less Parameters for Better Performance in Zeroth-Order LLM
Fine-Tuning" (arXiv:2402.15751, 2024; NeurIPS 2025). The paper names its code github.com/NUS-HPC-AI-Lab/SparseMeZO,
of which no copy could be had here: this follows the paper's algorithm boxes (Sparse-MeZO, PerturbParameters,
GetMask) and its §"Memory-Efficient Implementation". With s the sparsity (the share of entries NOT perturbed):

    before training, per tensor i ("layer"):  h_i = the k_i-th smallest |θ_i| of the weights the run starts from,
                                             k_i = ⌈(1 − s)·n_i⌉      (the paper: a percentile at the target sparsity)
                                             (``threshold_every: N``: h recomputed from θ_t every N steps)
    per step t:   m = 1(|θ_t| ≤ h)   (GetMask on the current weights: the paper's dynamic mask)
                  g_j = (L(θ + ε z_j⊙m) − L(θ − ε z_j⊙m)) / 2ε,   ĝ = (1/q) Σ_j g_j z_j⊙m   (2q forward passes)
                  θ ← θ − lr_t · (ĝ + λθ)                                (ZOOptimizer's sweep)

so s = 0 is MeZO, and the entries perturbed change as weights cross h_i. The paper writes GetMask as θ ≤ h; its text
("we only update parameters of smaller magnitude") is |θ| ≤ h, as here. Ties at h_i are all perturbed, so at least a
share 1 − s of each tensor is at the start. h_i is found exactly without a copy of the tensor: a bisection over the
bit patterns of |θ| (monotone for non-negative floats), one counting pass per bit, chunk by chunk.

Why it is an estimator: the direction is z(seed) ⊙ m with a 0/1 mask, the ``directions.Mask`` protocol that block-wise
and sparse ZO use, so probes and update are SPSA's and ZOOptimizer's sweeps (transforms, weight decay, schedules,
accumulation, the conservative option, the seed log and replay as for zo_sgd).

The mask within a step: the paper's memory-efficient implementation computes m(θ_t) layer by layer inside the forward
pass, never writing θ_t + εẑ to the weights. zobench perturbs the weights in place (as MeZO), and a perturbed weight
cannot tell whether it was perturbed: θ + εz of a masked entry and an unmasked θ' just above h can hold the same
value (for ε = 1e-3 and weights of std 0.02 about 1-2% of the entries lie that close to h). So m(θ_t) is computed
once, at the start of each step, from the unperturbed weights, and held for that step as 1 bit per trainable entry
(the paper's "1-bit quantization" option): Σ_i ⌈n_i/8⌉ bytes while a step runs, freed after its update, never
carried from one step to the next (no optimizer state; ``optimizer_state_bytes`` = 0; the bits are in the measured
peak). The passes over |θ| (thresholds, masks) work in one segment's scratch (|θ| and one byte an entry: 20 MiB in
fp32), allocated once per pass, and the bits of all tensors in one buffer: nothing is allocated per segment (fresh
temporaries there, ~5 GB of them per step for SmolLM2-135M with int64 sums, fragmented the CPU heap by ~200 MB).
Recomputing m from the perturbed weights in each sweep instead would leave every entry that crossed h displaced by
±εz after the restore, a drift of ε per step on those entries.

Thresholds follow from the weights the run starts from and the masks from the weights of each step, which follow
from the losses and the seeds: a checkpoint is the loss log (replay), as for zo_sgd. With LoRA, B = 0 at the start
gives h = 0 for B, and once B moves only its entries still at exactly 0 are perturbed: the paper fine-tunes full
weights (``threshold_every`` re-thresholds from the current weights: the paper's algorithm box names a
"sparsification interval" beside the thresholds without saying more; null, the default, keeps h from the start as its
text does). Weight decay, when set, follows zobench's one rule (every non-bias, non-norm entry; the paper has none).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from zobench.errors import bad_value
from zobench.optim.directions import flat
from zobench.optim.estimate import SeedEstimate
from zobench.optim.spsa import SPSA

SEGMENT = 1 << 22  # entries packed per pass (a multiple of 8: segment boundaries fall on byte boundaries)
UNPACKED = 1 << 18  # entries of a direction chunk masked at a time (``MagnitudeMask.apply_``)
_INT_OF = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
_shifts: dict[torch.device, torch.Tensor] = {}


def _shift(device: torch.device) -> torch.Tensor:
    if device not in _shifts:
        _shifts[device] = torch.arange(8, dtype=torch.uint8, device=device)
    return _shifts[device]


def unpack_bits(data: torch.Tensor) -> torch.Tensor:
    """The entries of bytes ``data`` as booleans, 8 per byte (bit b of byte k = entry 8k + b): one byte per entry,
    written once (the shifted bytes, masked to 0/1 in place and viewed as bool)."""
    return (data.unsqueeze(1) >> _shift(data.device)).bitwise_and_(1).view(-1).view(torch.bool)


Scratch = dict  # (device, dtype) -> (|θ| buffer, byte buffer), one segment each: ``_scratch``


def _scratch(params: Sequence[torch.Tensor]) -> Scratch:
    """The buffers a pass over |θ| works in, one pair per (device, dtype), sized to the largest segment: |θ| of a
    segment and its 0/1 flags (padded to whole bytes). Written by every segment of every tensor (``out=``), so a pass
    allocates nothing per segment: fresh per-segment temporaries (|θ|, flags, shifted bytes, ... up to 16 MiB each)
    interleaved with the bits kept would fragment the host allocator's heap, whose freed temporaries then stay
    resident (on CPU about 200 MB for SmolLM2-135M, ``make bench``'s opt_sparse_mezo phase before this)."""
    sizes: dict = {}
    for p in params:
        key = (p.device, p.dtype)
        sizes[key] = max(sizes.get(key, 0), min(p.numel(), SEGMENT))
    return {(d, t): (torch.empty(n, dtype=t, device=d), torch.empty(-(-n // 8) * 8, dtype=torch.uint8, device=d))
            for (d, t), n in sizes.items()}


def _at_most(seg: torch.Tensor, value, scratch: Scratch) -> torch.Tensor:
    """1(|seg| ≤ value) as 0/1 bytes: the scratch's first ``seg.numel()`` bytes (overwritten by the next call)."""
    mag, flags = scratch[(seg.device, seg.dtype)]
    n = seg.numel()
    torch.le(torch.abs(seg, out=mag[:n]), value, out=flags[:n].view(torch.bool))
    return flags[:n]


def _pack_at_most(seg: torch.Tensor, value, scratch: Scratch, out: torch.Tensor) -> None:
    """``out`` ← the bits of 1(|seg| ≤ value), bit b of byte k = entry 8k + b (zero-padded to a whole byte)."""
    n = seg.numel()
    flags = _at_most(seg, value, scratch)
    pad = (-n) % 8
    if pad:
        flags = scratch[(seg.device, seg.dtype)][1][:n + pad]
        flags[n:].zero_()
    torch.sum(flags.view(-1, 8).bitwise_left_shift_(_shift(seg.device)), 1, dtype=torch.uint8, out=out)


def _segments(numel: int):
    """(start, stop) of the segments of a flat tensor: the passes over |θ| go SEGMENT entries at a time."""
    for a in range(0, numel, SEGMENT):
        yield a, min(a + SEGMENT, numel)


@torch.no_grad()
def _count_at_most(view: torch.Tensor, value: torch.Tensor, scratch: Scratch) -> int:
    # count_nonzero: no copy (``.sum()`` of bytes or bools first converts them to int64, 8 bytes an entry)
    return sum(int(torch.count_nonzero(_at_most(view[a:b], value, scratch))) for a, b in _segments(view.numel()))


@torch.no_grad()
def kth_smallest_magnitude(p: torch.Tensor, k: int, scratch: Scratch | None = None) -> float:
    """The k-th smallest |θ| of tensor p (1 ≤ k ≤ numel), exactly, without sorting or copying p: bisection over the
    bit patterns of non-negative floats (ordered as integers), one counting pass per halving, segment by segment in
    ``scratch`` (``_scratch``; made for p alone when not given)."""
    view, ints = flat(p.detach()), _INT_OF[p.dtype]
    scratch = scratch if scratch is not None else _scratch([p])
    mag = scratch[(p.device, p.dtype)][0]
    top = torch.stack([torch.abs(view[a:b], out=mag[:b - a]).max() for a, b in _segments(view.numel())]).max()
    lo, hi = 0, int(top.reshape(1).view(ints))
    while lo < hi:  # invariant: the answer's bit pattern is in [lo, hi]
        mid = (lo + hi) // 2
        if _count_at_most(view, torch.tensor([mid], dtype=ints, device=p.device).view(p.dtype), scratch) >= k:
            hi = mid
        else:
            lo = mid + 1
    return float(torch.tensor([lo], dtype=ints).view(p.dtype))


def perturbed_count(numel: int, sparsity: float) -> int:
    """k = ⌈(1 − s)·n⌉ entries at or below the threshold (at least 1 of a non-empty tensor)."""
    return min(numel, max(1, math.ceil(round((1.0 - sparsity) * numel, 9))))


def magnitude_thresholds(params: Sequence[torch.Tensor], sparsity: float) -> list[float]:
    """h_i for each tensor: the ⌈(1 − s)·n_i⌉-th smallest |θ_i| (module docstring); inf for an empty tensor."""
    scratch = _scratch(params)
    return [kth_smallest_magnitude(p, perturbed_count(p.numel(), sparsity), scratch) if p.numel() else math.inf
            for p in params]


class MagnitudeMask:
    """m = 1(|θ_t| ≤ h_i) for tensor i, computed once from the step's weights and held as bits (``directions.Mask``)."""

    def __init__(self, bits: list[torch.Tensor]):
        self.bits = bits

    @classmethod
    @torch.no_grad()
    def of(cls, params: Sequence[torch.Tensor], thresholds: Sequence[float]) -> "MagnitudeMask":
        """The bits of every tensor in one buffer per device, allocated before the scratch (``_scratch``)."""
        sizes = [(p.numel() + 7) // 8 for p in params]
        totals: dict = {}
        for p, n in zip(params, sizes):
            totals[p.device] = totals.get(p.device, 0) + n
        stores = {d: torch.empty(n, dtype=torch.uint8, device=d) for d, n in totals.items()}
        scratch, used, bits = _scratch(params), dict.fromkeys(stores, 0), []
        for p, h, nbytes in zip(params, thresholds, sizes):
            view, at = flat(p.detach()), used[p.device]
            out, used[p.device] = stores[p.device][at:at + nbytes], at + nbytes
            for a, b in _segments(view.numel()):
                _pack_at_most(view[a:b], h, scratch, out[a // 8:(b + 7) // 8])
            bits.append(out)
        return cls(bits)

    def nbytes(self) -> int:
        return sum(b.numel() for b in self.bits)

    def covers(self, index: int) -> bool:
        return True  # every tensor is drawn (its mask may be empty): the sweeps keep their order

    def keep(self, index: int, start: int, n: int) -> torch.Tensor:
        """The mask of entries [start, start + n) of tensor ``index``, as booleans."""
        data = self.bits[index][start // 8:(start + n + 7) // 8]
        return unpack_bits(data)[start % 8:start % 8 + n]

    def apply_(self, z: torch.Tensor, index: int, chunk: int, start: int) -> torch.Tensor:
        """z ← z ⊙ m, UNPACKED entries at a time: on CPU ``mul_`` by booleans first converts them to z's dtype (a
        copy the size of z), so a slice at a time keeps that copy and the unpacked bytes small beside z's chunk."""
        for a in range(0, z.numel(), UNPACKED):
            part = z[a:a + UNPACKED]
            part.mul_(self.keep(index, start + a, part.numel()))
        return z


class SparseMeZO(SPSA):
    """Sparse-MeZO's estimator (Liu et al. 2024): SPSA along z ⊙ m(θ_t), m the entries at or below each tensor's
    magnitude threshold; the module docstring gives the math, the paper's algorithm it follows and the memory."""

    replayable = True  # thresholds from the starting weights, masks from each step's weights: the loss log replays

    def __init__(self, sparsity: float = 0.8, num_directions: int = 1, one_sided: bool = False,
                 threshold_every: int | None = None):
        self.check_config({"sparsity": sparsity, "num_directions": num_directions, "one_sided": one_sided,
                           "threshold_every": threshold_every})
        super().__init__(num_directions=num_directions, one_sided=one_sided)
        self.sparsity, self.threshold_every, self.t = float(sparsity), threshold_every, 0
        self.thresholds: list[float] | None = None
        self._mask: MagnitudeMask | None = None

    @staticmethod
    def check_config(est, key: str = "optimizer.estimator") -> None:
        """The YAML keys, checked before any model loads (called by zobench.validate)."""
        s = est.get("sparsity", 0.8)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise bad_value(f"{key}.sparsity", s, "a number in [0, 1): the share of each tensor's entries (the largest "
                            "in magnitude) left unperturbed; 0 is MeZO")
        q = est.get("num_directions", 1)
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise bad_value(f"{key}.num_directions", q, "an integer >= 1")
        if not isinstance(est.get("one_sided", False), bool):
            raise bad_value(f"{key}.one_sided", est.get("one_sided"), "true or false")
        n = est.get("threshold_every")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise bad_value(f"{key}.threshold_every", n, "null (the thresholds of the starting weights, kept) or an "
                            "integer >= 1 (steps between recomputations from the current weights)")

    def setup(self, named_params: Sequence[tuple[str, torch.Tensor]], model=None) -> None:
        """h_i from the weights the run starts from (the paper: "before training begins")."""
        self.thresholds = magnitude_thresholds([p for _, p in named_params], self.sparsity)

    def begin_step(self, run_seed: int, step: int) -> None:
        """Called by ZOOptimizer before each estimate: the step index, for ``threshold_every``."""
        self.t = step

    def direction_masks(self, seeds: list[int]) -> dict:
        if self._mask is None:
            raise RuntimeError("SparseMeZO: the step's mask is computed in __call__")
        return {s: self._mask for s in seeds}

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], loss_fn: Callable, eps: float, seed: int,
                 on_direction=None) -> SeedEstimate:
        if self.thresholds is None or (self.threshold_every and self.t > 0 and self.t % self.threshold_every == 0):
            self.setup([("", p) for p in params])
        self._mask = MagnitudeMask.of(params, self.thresholds)  # GetMask(θ_t, h), before any probe moves θ
        try:
            return super().__call__(params, loss_fn, eps, seed, on_direction)  # the estimate carries the mask
        finally:
            self._mask = None  # freed with the estimate once the update sweep is done
