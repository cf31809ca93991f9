"""Sparsity-induced ZO: SPSA along sparse directions z ⊙ m, m a random 0/1 mask with per-tensor density.

ZO-Bench (Zhang et al. 2024, "Revisiting Zeroth-Order Optimization for Memory-Efficient LLM
Fine-Tuning: A Benchmark", §"sparsity-induced ZO"; context: Sparse MeZO, Liu et al. 2024, which
perturbs a magnitude-chosen subset):
    m_i ~ Bernoulli(d_i) per element of tensor i,  redrawn every N steps (``resample_every``)
    g_j = (L(θ + ε z_j⊙m) − L(θ − ε z_j⊙m)) / 2ε,   ĝ = (1/q) Σ_j g_j z_j⊙m
Per-tensor density d_i (``group``):
  global  magnitude-derived (ZO-Bench's "global"): the global magnitude threshold t that a
          pruning of the trainable weights at ``sparsity`` would use (the share 1 − sparsity of
          all entries has |θ| > t), and d_i = the share of tensor i above t. Layers with large
          weights are perturbed densely, layers with small weights sparsely; Σ_i d_i n_i =
          (1 − sparsity)·n exactly (entries tied at t share the remainder in proportion). Computed
          once from the weights the run starts from, by bisection on t with one pass over the
          parameters per halving, chunk by chunk (no global sort, no copy of the weights).
  layer   d_i = 1 − sparsity for every tensor.
The mask is never stored: chunk c of tensor i is ``rand(n) < d_i`` from a generator seeded with
mix(run seed, mask salt, ⌊t/N⌋, i, c), regenerated wherever z is (probes and update), so the realized
density is d_i up to Bernoulli sampling error √(d_i(1 − d_i)/n_i). ZO-Bench's released code draws
``normal_() < ratio`` (``fast_random_mask_like``), whose density is Φ(ratio), not the ratio
(0.75 → 0.773); tests/test_enhancements.py checks that this is not reproduced.
Forward passes and memory are SPSA's (2q per step); the mask costs one uniform draw per element
per regeneration. With LoRA, ``global`` sees B = 0 at initialization: its entries tie at t = 0.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from zobench.errors import bad_choice, bad_value
from zobench.optim.directions import _generator, chunk_bounds, flat, mix
from zobench.optim.spsa import SIGNS, SPSA

GROUPS = ("global", "layer")
MASK_SALT = 0x5BA25E  # keeps mask seeds apart from direction seeds, which are mix(run seed, t, j)
BISECTIONS = 60  # halvings of the magnitude interval: t to 2⁻⁶⁰ of max|θ|


class SparseMask:
    """m ⊙ z for tensor i, chunk c: Bernoulli(d_i) elements from the generator seeded mix(seed, i, c)."""

    def __init__(self, seed: int, densities: Sequence[float]):
        self.seed, self.densities = seed, list(densities)

    def covers(self, index: int) -> bool:
        return self.densities[index] > 0.0

    def keep(self, index: int, chunk: int, n: int, device: torch.device) -> torch.Tensor:
        """The 0/1 mask of one chunk, as booleans."""
        gen = _generator(device)
        gen.manual_seed(mix(self.seed, index, chunk))
        return torch.rand(n, generator=gen, device=device, dtype=torch.float32) < self.densities[index]

    def apply_(self, z: torch.Tensor, index: int, chunk: int, start: int) -> torch.Tensor:
        if self.densities[index] >= 1.0:
            return z
        return z.mul_(self.keep(index, chunk, z.numel(), z.device))


@torch.no_grad()
def _count_above(params: Sequence[torch.Tensor], t: float, inclusive: bool = False) -> list[int]:
    counts = []
    for p in params:
        view, n = flat(p.detach()), 0
        for _, a, b in chunk_bounds(view.numel()):
            part = view[a:b].abs()
            n += int((part >= t).sum() if inclusive else (part > t).sum())
        counts.append(n)
    return counts


@torch.no_grad()
def magnitude_densities(params: Sequence[torch.Tensor], density: float) -> list[float]:
    """d_i: the share of tensor i above the global magnitude threshold that keeps ``density`` of all entries."""
    sizes = [p.numel() for p in params]
    target = density * sum(sizes)
    lo, hi = 0.0, max((float(p.detach().abs().max()) for p in params if p.numel()), default=0.0)
    for _ in range(BISECTIONS):  # invariant: count(|θ| > hi) <= target
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if sum(_count_above(params, mid)) > target:
            lo = mid
        else:
            hi = mid
    above = _count_above(params, hi)
    band = [a - b for a, b in zip(_count_above(params, lo, inclusive=True), above)]  # tied at t (|θ| in [lo, hi])
    share = (target - sum(above)) / sum(band) if sum(band) else 0.0
    share = min(max(share, 0.0), 1.0)
    return [(a + share * k) / n if n else 0.0 for a, k, n in zip(above, band, sizes)]


class SparseSPSA(SPSA):
    """SPSA along z ⊙ m (module docstring); m from the run seed and ⌊t / resample_every⌋."""

    def __init__(self, sparsity: float = 0.75, group: str = "global", resample_every: int = 1,
                 num_directions: int = 1, one_sided: bool = False, sign: str | None = None):
        if not 0.0 <= sparsity < 1.0:
            raise bad_value("optimizer.estimator.sparsity", sparsity, "a number in [0, 1)")
        if group not in GROUPS:
            raise bad_choice("optimizer.estimator.group", group, GROUPS)
        if resample_every < 1:
            raise bad_value("optimizer.estimator.resample_every", resample_every, "an integer >= 1")
        super().__init__(num_directions, one_sided, sign)
        self.sparsity, self.group, self.resample_every = sparsity, group, resample_every
        self.densities: list[float] | None = None
        self.mask: SparseMask | None = None

    @staticmethod
    def check_config(est, key: str = "optimizer.estimator") -> None:
        """The YAML keys, checked before any model loads (called by zobench.validate)."""
        s = est.get("sparsity", 0.75)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise bad_value(f"{key}.sparsity", s, "a number in [0, 1): the share of entries left unperturbed")
        if est.get("group", "global") not in GROUPS:
            raise bad_choice(f"{key}.group", est.group, GROUPS)
        n = est.get("resample_every", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise bad_value(f"{key}.resample_every", n, "an integer >= 1 (steps between mask redraws)")
        q = est.get("num_directions", 1)
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise bad_value(f"{key}.num_directions", q, "an integer >= 1")
        if not isinstance(est.get("one_sided", False), bool):
            raise bad_value(f"{key}.one_sided", est.one_sided, "true or false")
        if est.get("sign") not in SIGNS:
            raise bad_choice(f"{key}.sign", est.sign, ("null", "coordinate", "projected"))

    def setup(self, named_params: Sequence[tuple[str, torch.Tensor]], model=None) -> None:
        params = [p for _, p in named_params]
        density = 1.0 - self.sparsity
        self.densities = (magnitude_densities(params, density) if self.group == "global"
                          else [density] * len(params))

    def begin_step(self, run_seed: int, step: int) -> None:
        """Called by ZOOptimizer before each estimate: the mask of step ``step``'s epoch."""
        self.mask = SparseMask(mix(run_seed, MASK_SALT, step // self.resample_every), self.densities)

    def direction_masks(self, seeds: list[int]) -> dict:
        if self.mask is None:
            raise RuntimeError("SparseSPSA: setup() and begin_step() must run before an estimate (ZOOptimizer does it)")
        return {s: self.mask for s in seeds}

    def realized_density(self, params: Sequence[torch.Tensor]) -> list[float]:
        """The share of each tensor's entries the current mask keeps (for tests and logging)."""
        out = []
        for i, p in enumerate(params):
            kept = sum(int(self.mask.keep(i, c, b - a, p.device).sum()) for c, a, b in chunk_bounds(p.numel()))
            out.append(kept / p.numel() if p.numel() else math.nan)
        return out
