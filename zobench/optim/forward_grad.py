"""Forward-Grad: the directional derivative by forward-mode AD, in seed form.

    d_j = ∇L(θ)·z_j   (exact, one forward pass carrying tangents; no finite difference, no ε)
    ĝ = (1/q) Σ_j d_j · z_j,    z_j ~ N(0, I) regenerated from seeds
Baydin et al. 2022, "Gradients without Backpropagation"; ZO-Bench's Forward-Grad (Zhang et al.
2024), there with ``torch.func.jvp`` and q = 1. Unbiased: E[ĝ] = ∇L(θ).

The loss closure runs the model, so the trainable parameters are swapped for dual tensors
(primal θ, tangent z_j) around it with ``torch.func.functional_call``, and the tangent of the
loss is d_j. The model must run attention that supports forward AD: PyTorch's fused SDPA
kernels do not, so ``setup`` switches the model to eager attention (used for evaluation too).
Costs beyond a forward: the tangents z_j (one copy of the trainable parameters, built per
direction) and a tangent beside every activation; no backward graph is kept.

Not supported in fp16: PyTorch's forward-mode formula for layer_norm forms terms in 1/σ³ in the
input dtype, which overflow fp16's 65504 when activations are small (std ≲ 0.03 gives NaN
tangents). bf16 has fp32's exponent range and works.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from zobench.errors import ConfigError
from zobench.optim.closure import micro_batches
from zobench.optim.directions import direction, mix
from zobench.optim.estimate import SeedEstimate


def use_eager_attention(model: torch.nn.Module) -> None:
    """Switch a transformers model to eager attention (SDPA has no forward-AD formulas)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    elif getattr(model, "config", None) is not None and hasattr(model.config, "_attn_implementation"):
        model.config._attn_implementation = "eager"


class _Closure(torch.nn.Module):
    """Holds the model as a submodule, so functional_call can swap its parameters while ``fn`` runs."""

    def __init__(self, model: torch.nn.Module, fn: Callable[[], torch.Tensor]):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self) -> torch.Tensor:
        return self.fn()


class ForwardGrad:
    distribution = "gaussian"  # set by ZOOptimizer from optimizer.direction
    measures_base_loss = True  # the primal of the dual forward is L(θ) exactly
    replayable = False  # its coefficients are tangents, not functions of loss values: checkpoint the state

    def __init__(self, num_directions: int = 1):
        if num_directions < 1:
            raise ValueError("optimizer.estimator.num_directions must be >= 1")
        self.num_directions = num_directions
        self.model, self.names = None, []

    def setup(self, named_params: Sequence[tuple[str, torch.Tensor]], model: torch.nn.Module | None) -> None:
        if model is None:
            raise ConfigError("optimizer forward_grad needs the model (build_optimizer(..., model=model)): "
                              "it runs the loss with dual tensors in place of the trainable parameters.")
        use_eager_attention(model)
        self.model, self.names = model, [n for n, _ in named_params]

    def directional_derivative(self, params: list[torch.Tensor], loss_fn: Callable,
                               tangents: list[torch.Tensor]) -> tuple[float, float]:
        """(L(θ), ∇L(θ)·v) of the batch loss, for tangents v (one tensor per parameter)."""
        value = slope = 0.0
        with torch.no_grad(), fwAD.dual_level():  # forward AD does not need (or build) a backward graph
            duals = {f"model.{n}": fwAD.make_dual(p.detach(), v) for n, p, v in zip(self.names, params, tangents)}
            for weight, part in micro_batches(loss_fn):
                out = functional_call(_Closure(self.model, part), duals, (), tie_weights=True, strict=False)
                primal, tangent = fwAD.unpack_dual(out)
                value += weight * float(primal)
                slope += weight * (float(tangent) if tangent is not None else 0.0)
        return value, slope

    def __call__(self, params: list[torch.Tensor], loss_fn: Callable, eps, seed: int) -> SeedEstimate:
        q = self.num_directions
        seeds, coeffs, loss = [mix(seed, j) for j in range(q)], [], 0.0
        for s in seeds:
            loss, slope = self.directional_derivative(params, loss_fn, [direction(s, i, p, self.distribution) for i, p in enumerate(params)])
            coeffs.append(slope / q)
        return SeedEstimate(seeds, coeffs, loss, q, base_loss=loss)
