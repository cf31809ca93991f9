"""FZOO: batched one-sided estimates along Rademacher directions, the step normalised by the losses' spread.

Dang, Guo, Zhao, Ye, Zheng, Dai & Tsang, "FZOO: Fast Zeroth-Order Optimizer for Fine-Tuning Large Language Models
towards Adam-Scale Speed" (arXiv:2506.09034, 2025; ICLR 2026); code github.com/DKmiyan/FZOO (commit d4f8a8b),
trainer.py ``OurTrainer.zo_perturb_parameters``, ``zo_step`` and ``zo_update``; run script fzoo.sh. Per step, with
N directions u_j ∈ {−1, +1}^d (Rademacher) from the step's seeds:

    ℓ₀ = L(θ),   ℓ_j = L(θ + ε u_j),  j = 1 … N                       (N + 1 forward passes)
    σ  = sqrt((1/N) Σ_j (ℓ_j − ℓ̄)²),   ℓ̄ = (1/N) Σ_j ℓ_j          (the population std, ``torch.std(unbiased=False)``)
    c_j = (ℓ_j − ℓ₀) / (N σ)                                          (the code's ``projected_grad``)
    θ ← θ − lr_t · (Σ_j c_j u_j + λθ)                                  (ZOOptimizer's sweep, identity transform)

Why it is an estimator: it is zobench's one-sided SPSA with q = N (coefficients (ℓ_j − ℓ₀)/(εN)) times ε/σ, a scalar
per step, so the estimate stays in seed form Σ_j c_j u(s_j) and everything else (transforms, weight decay, schedules,
gradient accumulation, the conservative option, the seed log, replay) is ZOOptimizer's. With σ ≈ ε‖∇L‖·√((N−1)/N)
(the paper's Proposition 3.2, as summaries of it state it) the step is a normalised-SGD step along the N-direction
estimate: its length does not depend on the loss's scale (fzoo.sh's lr 1e-5 against MeZO's 1e-6 to 1e-7).

Differences from the code, none in the update rule:
  * the paper writes g = (1/(εN)) Σ (ℓ_j − ℓ₀) u_j and θ ← θ − η g/σ; the code (and zobench) drop the 1/ε, so its
    (and zobench's) lr is the paper's η/ε. Its σ is the population std (unbiased=False); a secondary summary of the
    paper writes 1/(N − 1). zobench follows the code, whose scripts' learning rates it takes.
  * σ = 0 (every probe returned the same loss, e.g. a flat loss or N = 1) makes the code divide by zero; zobench
    takes no step (c_j = 0). N ≥ 2 is required.
  * the code keeps the losses in float32 (``torch.tensor(loss1s, dtype=torch.float32)``) and evaluates ℓ₀ after the
    probes; zobench keeps Python floats (float64) and evaluates ℓ₀ first (the same numbers: L does not depend on the
    order). It restores each probe before the next; zobench undoes probe j and takes probe j+1 in one sweep.
  * the code's ``rand_values`` (a torch.rand per tensor, zipped but unused) and its half-size "loss reuse" branch
    (``perturbTimes = N // 2`` when ``self.losses`` is set, which the released code never sets) have no effect.
  * the paper's parallel forward (ParallelOPTForCausalLM.py: the N perturbed forwards of a layer batched into one,
    possible because u is ±1) is an implementation of the same N + 1 losses; zobench evaluates them one by one.
  * u: zobench's Rademacher directions (``optimizer.direction: rademacher``, from packed random bits, chunk by chunk);
    the code draws ``torch.randint(0, 2, size) * 2 - 1`` after ``torch.manual_seed(s_j)``.

Memory: no state (the estimate is N seeds and N scalars). Half precision: the code runs fp16 (fzoo.sh ``--load_float16``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from zobench.errors import bad_value
from zobench.optim.closure import batch_loss
from zobench.optim.directions import mix, perturb_many_
from zobench.optim.estimate import SeedEstimate
from zobench.optim.spsa import SPSA


class FZOO(SPSA):
    """FZOO's estimator (Dang et al. 2025): one-sided differences along N Rademacher directions, each coefficient
    divided by N·σ, σ the population std of the N perturbed losses; the module docstring gives the math and the code's
    functions it follows. N + 1 forward passes a step."""

    def __init__(self, num_directions: int = 8):
        self.check_config({"num_directions": num_directions})
        super().__init__(num_directions=num_directions, one_sided=True)

    @staticmethod
    def check_config(est, key: str = "optimizer.estimator") -> None:
        """The YAML keys, checked before any model loads (called by zobench.validate)."""
        n = est.get("num_directions", 8)
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise bad_value(f"{key}.num_directions", n,
                            "an integer >= 2 (N, the perturbed losses whose std normalises the step; fzoo.sh: 8)")

    @staticmethod
    def coefficients(base: float, losses: list[float]) -> list[float]:
        """c_j = (ℓ_j − ℓ₀)/(N σ), σ the population std of the ℓ_j; all 0 when σ = 0."""
        n = len(losses)
        mean = sum(losses) / n
        sigma = math.sqrt(sum((v - mean) ** 2 for v in losses) / n)
        if sigma == 0.0 or not math.isfinite(sigma):
            return [0.0 if sigma == 0.0 else math.nan] * n
        return [(v - base) / (n * sigma) for v in losses]

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], loss_fn: Callable, eps: float, seed: int,
                 on_direction=None) -> SeedEstimate:
        if on_direction is not None:
            raise ValueError("FZOO normalises all N coefficients by their joint spread: no per-direction updates")
        seeds = [mix(seed, j) for j in range(self.num_directions)]
        masks = self.direction_masks(seeds)
        base = batch_loss(loss_fn)
        losses, undo = [], []
        for s in seeds:
            perturb_many_(params, undo + [(s, eps)], self.distribution, masks)  # undo probe j−1, take probe j
            losses.append(batch_loss(loss_fn))
            undo = [(s, -eps)]
        return SeedEstimate(seeds, self.coefficients(base, losses), base, self.forward_passes_per_step(),
                            pending=undo, base_loss=base, masks=masks)
