"""BSZO: Bayesian subspace zeroth-order estimation, a Kalman filter over the projected gradient.

Each step draws k seeded directions z_1..z_k (the subspace) and treats g = (z_iᵀ∇L)_i ∈ ℝᵏ as
unknown, with prior N(0, σ_p² I) (reset every step). Each finite difference is a noisy
observation y = dᵀg + noise, noise variance σ_n²‖d‖², folded in by the Kalman update
    K = Σd / (dᵀΣd + σ_n²‖d‖²),   μ ← μ + K(y − dᵀμ),   Σ ← Σ − K dᵀΣ,
which is exact Bayesian conditioning (tests/test_optim_math.py checks it against the closed-form
posterior). m observations per step:
  - the first k along the coordinates of the subspace, d = e_i, y_i = the difference along z_i:
    one-sided (L(θ + εz_i) − L(θ))/ε (1 + k forward passes) or central (L(θ+εz_i) − L(θ−εz_i))/2ε (2k;
    the reference also evaluates the unused L(θ) there);
  - the other m − k along the posterior's top eigenvector v (most uncertain direction), d = v:
    ``extra_observations="reuse"``: y = Σ v_i y_i from the cached differences, no forward pass
    (the reference's "v3"; there v is snapped to its largest axis, which is the same thing while
    Σ stays diagonal, as it does after coordinate observations);
    ``"probe"``: a new difference along u = Σ v_i z_i, one (one-sided) or two (central) passes
    (the reference's "v4").
Residual-adaptive noise: before each update, r = (y − dᵀμ)/‖d‖; the EMA s ← (1−α)s + αr² persists
across steps and σ_n = max(noise_floor·σ_n⁰, √s). Update: θ ← θ − lr·Σ_i μ_i z_i (the posterior
mean, not averaged over k). ``sigma_prior``/``sigma_noise`` "auto" = √(n/10⁶), n = trainable
parameters, as the reference code does. Memory: k seeds and a k×k matrix beyond MeZO; the same
in-place perturbations, with ZO-SGD's half-precision rounding (zobench/optim/zo.py); the paper
reports BSZO robust in fp16/bf16. The posterior is kept in float64.

Reference: BSZO, "Robust and Efficient Zeroth-Order LLM Fine-Tuning via Adaptive Bayesian
Subspace Optimizer" (2026); code github.com/AeonianQuill/BSZO (bszo_optimizer_v3.py / v4.py).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from zobench.optim.closure import batch_loss
from zobench.optim.directions import mix, perturb_many_
from zobench.optim.estimate import SeedEstimate

EXTRA_OBSERVATIONS = ("reuse", "probe")


class KalmanPosterior:
    """Gaussian posterior N(μ, Σ) over g ∈ ℝᵏ under scalar linear observations y = dᵀg + noise."""

    def __init__(self, k: int, sigma_prior: float):
        self.mu = torch.zeros(k, dtype=torch.float64)
        self.cov = torch.eye(k, dtype=torch.float64) * sigma_prior ** 2

    def residual(self, d: torch.Tensor, y: float) -> float:
        return y - float(d @ self.mu)

    def observe(self, d: torch.Tensor, y: float, sigma_noise: float) -> None:
        cov_d = self.cov @ d
        gain = cov_d / (d @ cov_d + sigma_noise ** 2 * (d @ d))
        self.mu = self.mu + gain * (y - d @ self.mu)
        self.cov = self.cov - torch.outer(gain, cov_d)  # K dᵀΣ = K (Σd)ᵀ, Σ symmetric
        self.cov = (self.cov + self.cov.T) / 2

    def top_direction(self) -> torch.Tensor:
        return torch.linalg.eigh(self.cov).eigenvectors[:, -1]


class BSZO:
    distribution = "gaussian"  # set by ZOOptimizer from optimizer.direction

    def __init__(self, subspace_dim: int = 2, num_observations: int = 3, one_sided: bool = True,
                 extra_observations: str = "reuse", sigma_prior: float | str = "auto",
                 sigma_noise: float | str = "auto", adaptive_noise: bool = True, noise_ema: float = 0.1,
                 noise_floor: float = 0.1):
        if subspace_dim < 1 or num_observations < subspace_dim:
            raise ValueError("optimizer.estimator: need 1 <= subspace_dim <= num_observations")
        if extra_observations not in EXTRA_OBSERVATIONS:
            raise ValueError(f"optimizer.estimator.extra_observations={extra_observations!r}: choose reuse or probe")
        self.k, self.m, self.one_sided, self.extra = subspace_dim, num_observations, one_sided, extra_observations
        self.sigma_prior_cfg, self.sigma_noise_cfg = sigma_prior, sigma_noise
        self.adaptive_noise, self.noise_ema, self.noise_floor = adaptive_noise, noise_ema, noise_floor
        self.sigma_prior = self.sigma_noise0 = self.residual_sq = None

    def setup(self, named_params: Sequence[tuple[str, torch.Tensor]], model=None) -> None:
        auto = math.sqrt(sum(p.numel() for _, p in named_params) / 1e6)
        self.sigma_prior = auto if self.sigma_prior_cfg == "auto" else float(self.sigma_prior_cfg)
        self.sigma_noise0 = auto if self.sigma_noise_cfg == "auto" else float(self.sigma_noise_cfg)
        self.residual_sq = self.sigma_noise0 ** 2  # the EMA of squared residuals, kept across steps

    @property
    def measures_base_loss(self) -> bool:
        return self.one_sided

    def forward_passes_per_step(self) -> int:
        probes = self.k + (self.m - self.k if self.extra == "probe" else 0)
        return 1 + probes if self.one_sided else 2 * probes

    def sigma_noise(self) -> float:
        return max(self.noise_floor * self.sigma_noise0, math.sqrt(self.residual_sq))

    def observe(self, post: KalmanPosterior, d: torch.Tensor, y: float) -> None:
        if self.adaptive_noise:
            r = post.residual(d, y) / float(d.norm())
            self.residual_sq = (1 - self.noise_ema) * self.residual_sq + self.noise_ema * r * r
        post.observe(d, y, self.sigma_noise() if self.adaptive_noise else self.sigma_noise0)

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], loss_fn: Callable, eps: float, seed: int) -> SeedEstimate:
        if self.sigma_prior is None:
            self.setup([("", p) for p in params])
        seeds = [mix(seed, j) for j in range(self.k)]
        base = batch_loss(loss_fn) if self.one_sided else None
        at: list[tuple[int, float]] = []  # the perturbation currently applied, as (seed, scale)
        pair_means: list[float] = []

        def difference(w: torch.Tensor) -> float:
            """Finite difference along u = Σ w_i z_i (one sweep per move: undo + next probe)."""
            nonlocal at
            probe = [(s, eps * float(c)) for s, c in zip(seeds, w)]
            perturb_many_(params, [(s, -c) for s, c in at] + probe, self.distribution)
            plus = batch_loss(loss_fn)
            if self.one_sided:
                at = probe
                return (plus - base) / eps
            perturb_many_(params, [(s, -2 * c) for s, c in probe], self.distribution)
            minus = batch_loss(loss_fn)
            at = [(s, -c) for s, c in probe]
            pair_means.append((plus + minus) / 2)
            return (plus - minus) / (2 * eps)

        post, eye = KalmanPosterior(self.k, self.sigma_prior), torch.eye(self.k, dtype=torch.float64)
        cached = torch.tensor([difference(eye[i]) for i in range(self.k)], dtype=torch.float64)
        for i in range(self.k):
            self.observe(post, eye[i], float(cached[i]))
        for _ in range(self.m - self.k):
            v = post.top_direction()
            y = float(v @ cached) if self.extra == "reuse" else difference(v)
            self.observe(post, v, y)
        loss = base if self.one_sided else sum(pair_means) / len(pair_means)
        undo = [(s, -c) for s, c in at]
        return SeedEstimate(seeds, post.mu.tolist(), loss, self.forward_passes_per_step(), pending=undo, base_loss=base)
