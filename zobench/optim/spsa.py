"""SPSA: the two-point (or one-point) zeroth-order gradient estimator.

Two-sided, q directions (Spall 1992; MeZO, Malladi et al. 2023, Alg. 1 for q = 1):
    ĝ = (1/q) Σ_j [(L(θ + ε z_j) − L(θ − ε z_j)) / (2ε)] · z_j,    z_j ~ N(0, I)
    2q forward passes; E[ĝ] = ∇L(θ) + O(ε²).
One-sided (ZO-Bench, Zhang et al. 2024, "forward difference"):
    ĝ = (1/q) Σ_j [(L(θ + ε z_j) − L(θ)) / ε] · z_j,    q + 1 forward passes.
The last probe is left in place (``pending``) for the update pass to undo.
"""
from __future__ import annotations

from typing import Callable

import torch

from zobench.optim.directions import mix, perturb_
from zobench.optim.estimate import SeedEstimate


class SPSA:
    def __init__(self, num_directions: int = 1, one_sided: bool = False):
        if num_directions < 1:
            raise ValueError("optimizer.estimator.num_directions must be >= 1")
        self.num_directions, self.one_sided = num_directions, one_sided

    def forward_passes_per_step(self) -> int:
        return self.num_directions + 1 if self.one_sided else 2 * self.num_directions

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], loss_fn: Callable[[], float], eps: float, seed: int) -> SeedEstimate:
        q = self.num_directions
        seeds = [mix(seed, j) for j in range(q)]
        coeffs, losses = [], []  # losses: the mean of each probe pair, ≈ L(θ) + O(ε²)
        base = float(loss_fn()) if self.one_sided else None
        for j, s in enumerate(seeds):
            perturb_(params, s, eps)
            plus = float(loss_fn())
            if self.one_sided:
                coeffs.append((plus - base) / (eps * q))
                undo = -eps
            else:
                perturb_(params, s, -2 * eps)
                minus = float(loss_fn())
                coeffs.append((plus - minus) / (2 * eps * q))
                losses.append((plus + minus) / 2)
                undo = eps
            if j < q - 1:
                perturb_(params, s, undo)
        loss = base if self.one_sided else sum(losses) / len(losses)
        return SeedEstimate(seeds, coeffs, loss, self.forward_passes_per_step(), pending=[(seeds[-1], undo)])
