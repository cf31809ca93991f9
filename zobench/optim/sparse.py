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
density is d_i up to Bernoulli sampling error √(d_i(1 − d_i)/n_i). ZO-Bench's released code zeroes
the entries where ``normal_() < ratio`` (``fast_random_mask_like``), a share Φ(ratio), not the ratio
(0.75 → 77.3% zeroed); the default rule does not reproduce that (tests/test_enhancements.py checks
it), ``sparsity_rule: zo_bench`` does.

Two rules for the densities (``sparsity_rule``); ``sparsity`` is s:
  exact     (zobench's default) as above: the realized density is 1 − s (``layer``), or Σ_i d_i n_i =
            (1 − s)·n with the threshold over the trainable tensors (``global``).
  zo_bench  ZO-Bench's released code, to reproduce its runs. Its mask is ``fast_random_mask_like``
            (zo-bench/gradient_pruning/pruning_utils.py): an entry is zeroed where a standard normal
            draw is < s_i, so the kept share is 1 − Φ(s_i), not 1 − s_i (s = 0.75 keeps 22.7%, not 25%;
            s = 1 keeps 15.9%; s = 0 keeps 50%). Per tensor:
              layer   s_i = s                               (trainer.py, sparse_gradient_group="layer")
              global  s_i = the share of tensor i with |θ| ≤ t, t the s-quantile of |θ| over all the
                      model's parameters, frozen ones included
                      (``estimate_pretrained_model_magnitude_pruning_threshold`` then
                      ``compute_named_parameters_to_sparsity``), from the weights the run starts from.
            so d_i = 1 − Φ(s_i): a tensor of small weights (s_i → 1) keeps 15.9% of its entries, one of
            large weights (s_i → 0) 50%. ZO-Bench estimates t by ``torch.quantile`` of a random
            subsample of 10⁷ entries (all of them below that); zobench finds the quantile itself, by the
            bisection above over every entry (the subsample's target; its standard error at 10⁷ samples is
            ~√(s(1−s)/10⁷) in share). The mask is redrawn when step % N == 0 (its
            ``sparse_gradient_resample_steps``), as here. Its mask draws are Bernoulli(1 − Φ(s_i)) per
            entry from a generator reseeded for every pass, like ours; the numbers themselves differ.
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
RULES = ("exact", "zo_bench")
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
def _threshold_band(params: Sequence[torch.Tensor], density: float) -> tuple[float, float]:
    """(lo, hi) bracketing the global magnitude threshold t: count(|θ| > hi) ≤ density·n < count(|θ| ≥ lo)."""
    target = density * sum(p.numel() for p in params)
    lo, hi = 0.0, max((float(p.detach().abs().max()) for p in params if p.numel()), default=0.0)
    for _ in range(BISECTIONS):  # invariant: count(|θ| > hi) <= target
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if sum(_count_above(params, mid)) > target:
            lo = mid
        else:
            hi = mid
    return lo, hi


@torch.no_grad()
def magnitude_densities(params: Sequence[torch.Tensor], density: float) -> list[float]:
    """d_i: the share of tensor i above the global magnitude threshold that keeps ``density`` of all entries."""
    sizes = [p.numel() for p in params]
    target = density * sum(sizes)
    lo, hi = _threshold_band(params, density)
    above = _count_above(params, hi)
    band = [a - b for a, b in zip(_count_above(params, lo, inclusive=True), above)]  # tied at t (|θ| in [lo, hi])
    share = (target - sum(above)) / sum(band) if sum(band) else 0.0
    share = min(max(share, 0.0), 1.0)
    return [(a + share * k) / n if n else 0.0 for a, k, n in zip(above, band, sizes)]


def phi(x: float) -> float:
    """Φ, the standard normal CDF: P(N(0, 1) < x)."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@torch.no_grad()
def magnitude_quantile(params: Sequence[torch.Tensor], q: float) -> float:
    """t with a share q of all entries at |θ| ≤ t: the q-quantile of |θ| (ZO-Bench's pruning threshold)."""
    return _threshold_band(params, 1.0 - q)[1]


@torch.no_grad()
def zo_bench_densities(params: Sequence[torch.Tensor], sparsity: float, group: str,
                       threshold_params: Sequence[torch.Tensor] | None = None) -> list[float]:
    """ZO-Bench's kept shares d_i = 1 − Φ(s_i) (module docstring); ``threshold_params``: what t is the quantile of."""
    if group == "layer":
        return [1.0 - phi(sparsity)] * len(params)
    t = magnitude_quantile(list(threshold_params if threshold_params is not None else params), sparsity)
    out = []
    for p, above in zip(params, _count_above(params, t)):
        s_i = 1.0 - above / p.numel() if p.numel() else 0.0  # share of tensor i with |θ| ≤ t
        out.append(1.0 - phi(s_i))
    return out


def _top(rule: str) -> float:
    return 1.0 if rule == "zo_bench" else 1.0 - 1e-12  # exact: s = 1 would perturb nothing; ZO-Bench's keeps 1 − Φ(1)


def _range(rule: str) -> str:
    if rule == "zo_bench":
        return "a number in [0, 1] (sparsity_rule=zo_bench keeps a share 1 − Φ(s))"
    return "a number in [0, 1): the share of entries left unperturbed"


class SparseSPSA(SPSA):
    """SPSA along z ⊙ m (module docstring); m from the run seed and ⌊t / resample_every⌋."""

    def __init__(self, sparsity: float = 0.75, group: str = "global", resample_every: int = 1,
                 num_directions: int = 1, one_sided: bool = False, sign: str | None = None,
                 sparsity_rule: str = "exact"):
        if sparsity_rule not in RULES:
            raise bad_choice("optimizer.estimator.sparsity_rule", sparsity_rule, RULES)
        if not 0.0 <= sparsity <= _top(sparsity_rule):
            raise bad_value("optimizer.estimator.sparsity", sparsity, _range(sparsity_rule))
        if group not in GROUPS:
            raise bad_choice("optimizer.estimator.group", group, GROUPS)
        if resample_every < 1:
            raise bad_value("optimizer.estimator.resample_every", resample_every, "an integer >= 1")
        super().__init__(num_directions, one_sided, sign)
        self.sparsity, self.group, self.resample_every, self.rule = sparsity, group, resample_every, sparsity_rule
        self.densities: list[float] | None = None
        self.mask: SparseMask | None = None

    @staticmethod
    def check_config(est, key: str = "optimizer.estimator") -> None:
        """The YAML keys, checked before any model loads (called by zobench.validate)."""
        rule = est.get("sparsity_rule", "exact")
        if rule not in RULES:
            raise bad_choice(f"{key}.sparsity_rule", rule, RULES)
        s = est.get("sparsity", 0.75)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= _top(rule):
            raise bad_value(f"{key}.sparsity", s, _range(rule))
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
        """Per-tensor densities, once, from the weights the run starts from (``model``: all of its parameters set
        ZO-Bench's global threshold; without it, the trainable ones)."""
        params = [p for _, p in named_params]
        if self.rule == "zo_bench":
            everything = list(model.parameters()) if model is not None else None
            self.densities = zo_bench_densities(params, self.sparsity, self.group, everything)
            return
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
