"""HiZOO: SPSA along Hessian-scaled directions, with a diagonal Hessian estimated from the same probes.

Zhao, Dang, Ye, Dai, Qian & Tsang, "Second-Order Fine-Tuning without Pain for LLMs: A Hessian Informed
Zeroth-Order Optimizer" (ICLR 2025, arXiv:2402.15173); code github.com/Yanjun-Zhao/HiZOO, trainer.py
``OurTrainer.zo_Hessian_step_update`` and ``efficient_Hessian_perturb_parameters``. With H the diagonal
Hessian estimate (initialised to 1, per trainable element), z ~ N(0, I) from the step's seed:

    ℓ₀ = L(θ),   ℓ± = L(θ ± ε z ⊙ H^{-1/2})                           (3 forward passes)
    H ← (1 − α)·H + α · |ℓ₊ + ℓ₋ − 2ℓ₀| / (2ε²) · H ⊙ z ⊙ z           (α: ``hessian_smoothing``)
    ĝ = (ℓ₊ − ℓ₋)/(2ε) · z ⊙ H^{-1/2}                                 (H after its update, as the code)
    θ ← θ − lr_t · (ĝ + λθ)                                            (ZOOptimizer's sweep)

Why it is an estimator: the second difference ℓ₊ + ℓ₋ − 2ℓ₀ ≈ ε² (H^{-1/2}z)ᵀ∇²L(H^{-1/2}z) needs the
unperturbed loss ℓ₀ (the extra forward pass), and the perturbation itself is scaled per coordinate.
Both fit the estimator × sweep composition: the scaled direction z ⊙ H^{-1/2} is z(seed) ⊙ m with a
real-valued mask m = H^{-1/2} (``HessianScale``, the ``directions.Mask`` protocol that block-wise and
sparse ZO use with 0/1 masks), so the probes are ``perturb_many_`` sweeps and the update is
ZOOptimizer's ordinary sweep with that mask; transforms, weight decay, schedules, the conservative
option and MeZO's direction stream work as for SPSA. The estimator restores θ (with the old H) and
updates H in one sweep before it returns, so the update sweep scales by the new H. RNG passes per
step: four (+ε, −2ε, restore and H, update), as the code's four ``torch.manual_seed`` loops.

State: H, one copy of the trainable parameters, in fp32 for fp16/bf16 runs (as the transforms keep
theirs: in half precision 1 − α with α = 1e-8 rounds to 1, and an increment below half an ulp of H,
≈ 5e-4 near 1 in fp16, is lost), else in θ's dtype: 4 bytes per trainable parameter in fp32 and
half-precision runs. The code keeps H in θ's dtype
(fp16 with its ``--load_float16``). ``HiZOOOptimizer`` adds H to ``state_bytes`` and ``state_dict``.
H follows from the losses observed and the seeds, so a checkpoint is the loss log (replay), as for SPSA.

Differences from the code, all outside the update rule: the code evaluates L once more after the update,
only to log it (zobench reports ℓ₀ and counts 3 passes); it decays every tensor when weight_decay > 0
(zobench never decays biases and norms; its scripts run λ = 0); its α comes from a "schedule" of
constants (Hessian_smooth_scheduler.py: ``constant0`` = MeZO's update, ``constant1e-8``, ...), here a
number.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from zobench.errors import ConfigError, bad_choice, bad_value
from zobench.optim.closure import batch_loss
from zobench.optim.directions import MEZO, STREAMS, chunk_bounds, draw, flat, mix, perturb_many_
from zobench.optim.estimate import SeedEstimate
from zobench.optim.zo import ZOOptimizer


def _state_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype


class HessianScale:
    """The mask of a HiZOO direction: z ↦ z ⊙ H^{-1/2}, chunk by chunk (``directions.Mask``, real-valued)."""

    def __init__(self, hessian: list[torch.Tensor]):
        self.hessian = hessian

    def covers(self, index: int) -> bool:
        return True

    def apply_(self, z: torch.Tensor, index: int, chunk: int, start: int) -> torch.Tensor:
        h = self.hessian[index].view(-1)[start:start + z.numel()]
        return z.div_(h.sqrt())


class HiZOO:
    """The HiZOO estimator (Zhao et al. 2025, ICLR): three forward passes, the Hessian-scaled SPSA difference and
    the diagonal Hessian's update; the module docstring gives the math and the authors' functions it follows."""

    distribution = "gaussian"  # set by ZOOptimizer from optimizer.direction (MEZO with direction_stream=mezo)
    measures_base_loss = True  # ℓ₀ = L(θ) is measured: the conservative option reuses it
    replayable = True  # H follows from the losses and the seeds: checkpoints are loss logs (zobench.train)

    def __init__(self, hessian_smoothing: float = 1e-8, direction_stream: str = "chunked"):
        self.check_config({"hessian_smoothing": hessian_smoothing, "direction_stream": direction_stream})
        self.alpha = float(hessian_smoothing)
        self.direction_stream = direction_stream  # read by ZOOptimizer, which then sets distribution = MEZO
        self.hessian: list[torch.Tensor] | None = None

    @staticmethod
    def check_config(est, key: str = "optimizer.estimator") -> None:
        """The YAML keys, checked before any model loads."""
        alpha = est.get("hessian_smoothing", 1e-8)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise bad_value(f"{key}.hessian_smoothing", alpha,
                            "a number in [0, 1] (the code's constants: 0, 1e-12 ... 1e-2)")
        stream = est.get("direction_stream", "chunked")
        if stream not in STREAMS:
            raise bad_choice("optimizer.direction_stream", stream, STREAMS)

    def setup(self, named_params: Sequence[tuple[str, torch.Tensor]], model=None) -> None:
        """H = 1 for every trainable element (the code's ``torch.ones`` per parameter)."""
        self.hessian = [torch.ones(p.shape, dtype=_state_dtype(p), device=p.device) for _, p in named_params]

    def forward_passes_per_step(self) -> int:
        return 3

    def state_bytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hessian or [])

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], loss_fn: Callable, eps: float, seed: int) -> SeedEstimate:
        if self.hessian is None:
            self.setup([("", p) for p in params])
        s = seed if self.distribution == MEZO else mix(seed, 0)  # as SPSA's one direction
        masks = {s: HessianScale(self.hessian)}
        base = batch_loss(loss_fn)
        perturb_many_(params, [(s, eps)], self.distribution, masks)
        plus = batch_loss(loss_fn)
        perturb_many_(params, [(s, -2 * eps)], self.distribution, masks)
        minus = batch_loss(loss_fn)
        self._restore_and_update(params, s, eps, abs(plus + minus - 2 * base) / (2 * eps * eps))
        g = (plus - minus) / (2 * eps)
        return SeedEstimate([s], [g], base, 3, pending=[], base_loss=base, masks=masks)

    def _restore_and_update(self, params: list[torch.Tensor], s: int, eps: float, curvature: float) -> None:
        """θ ← θ + ε z ⊙ H^{-1/2} (undo the −ε probe, old H), then H ← (1 − α)H + α·curvature·H ⊙ z²: one sweep."""
        alpha = self.alpha
        for i, p in enumerate(params):
            view, h = flat(p), self.hessian[i].view(-1)
            for c, a, b in chunk_bounds(view.numel(), self.distribution):
                z, hc = draw(s, i, c, b - a, p.device, p.dtype, self.distribution), h[a:b]
                z2 = z.to(hc.dtype, copy=True).square_() if alpha else None
                view[a:b].add_(z.div_(hc.sqrt()), alpha=eps)  # the probes' own operation (HessianScale), undone
                if alpha:
                    z2.mul_(hc)  # H ⊙ z², with the H the probes used
                    hc.mul_(1 - alpha).add_(z2, alpha=alpha * curvature)


class HiZOOOptimizer(ZOOptimizer):
    """ZOOptimizer whose estimator keeps state (HiZOO's H): counted in ``state_bytes``, kept in ``state_dict``."""

    def __init__(self, named_params, estimator, transforms=(), **kwargs):
        if not isinstance(estimator, HiZOO):
            raise ConfigError("zobench.optim.hizoo.HiZOOOptimizer needs the HiZOO estimator")
        super().__init__(named_params, estimator, transforms, **kwargs)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "hessian": self.estimator.hessian}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for h, saved in zip(self.estimator.hessian, state["hessian"]):
                h.copy_(saved)

    def state_bytes(self) -> int:
        return super().state_bytes() + self.estimator.state_bytes()


HiZOO.optimizer_class = HiZOOOptimizer  # zobench.optim.build_optimizer builds this instead of ZOOptimizer
