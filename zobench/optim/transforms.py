"""Transforms: turn one parameter tensor's slice of the estimate into its update (optax style).

A transform has ``init(params)`` (allocates its state), ``begin_step()`` (once per step, before
the sweep), ``apply(i, g, p, sl) -> u`` for the flat elements ``sl`` of tensor i (g is that
chunk of ĝ, p the same chunk of the parameter, flat; the sweep goes chunk by chunk so that no
temporary is larger than a chunk) and ``state_bytes()``. The ZO optimizer chains them: u = T_n(... T_1(g_i)), then
θ_i ← θ_i − lr_t·(u + λ_i θ_i). State that a transform keeps is real memory and is reported.
In half-precision runs the state is kept in fp32 (bf16 cannot hold Adam's second moment:
1 − β₂ = 10⁻³ is below its 2⁻⁸ resolution, so v would stop moving).
"""
from __future__ import annotations

import math

import torch

from zobench.errors import bad_choice


def _state_like(p: torch.Tensor) -> torch.Tensor:
    dtype = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
    return torch.zeros(p.shape, dtype=dtype, device=p.device)


class Transform:
    stateful = False  # True: apply() advances state, so it may run once per step only

    def init(self, params: list[torch.Tensor]) -> None:
        pass

    def begin_step(self) -> None:
        pass

    def apply(self, i: int, g: torch.Tensor, p: torch.Tensor, sl: slice = slice(None)) -> torch.Tensor:
        raise NotImplementedError

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_tensors())

    def state_tensors(self) -> list[torch.Tensor]:
        return []


class Identity(Transform):
    """u = g: no transform (plain SGD on the estimate). ZOOptimizer drops it from the chain."""

    def apply(self, i, g, p, sl=slice(None)):
        return g


class ScaleBySign(Transform):
    """u = sign(g), coordinate-wise: ZO-signSGD (Liu et al., ICLR 2019), the ZO-SGD-Sign the ZO-Bench paper states.

    ``sign="projected"`` passes g through unchanged: the estimator already took the sign of
    the scalar projected gradient (ZO-Bench's code), see zobench.optim.spsa. One YAML key,
    ``optimizer.sign``, sets both so that they cannot disagree.
    """

    def __init__(self, sign: str = "coordinate"):
        if sign not in ("coordinate", "projected"):
            raise bad_choice("optimizer.sign", sign, ("coordinate", "projected"))
        self.sign = sign

    def apply(self, i, g, p, sl=slice(None)):
        return g.sign_() if self.sign == "coordinate" else g


class Momentum(Transform):
    """Heavy-ball momentum (Polyak 1964) as torch.optim.SGD(momentum=β): m ← β·m + g;  u = m.  One copy of θ."""

    stateful = True

    def __init__(self, beta: float = 0.9):
        self.beta = beta
        self.m: list[torch.Tensor] = []

    def init(self, params):
        self.m = [_state_like(p) for p in params]

    def apply(self, i, g, p, sl=slice(None)):
        m = self.m[i].view(-1)[sl]
        m.mul_(self.beta).add_(g.to(m.dtype))
        return m.to(g.dtype)

    def state_tensors(self):
        return self.m


class Adam(Transform):
    """Adam moments on the estimate (Kingma & Ba 2015; ZO-Adam of ZO-Bench, Zhang et al. 2024):

        m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²,   u = (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε).
    Two copies of θ. Weight decay is decoupled (AdamW-style), applied by the optimizer.
    """

    stateful = True

    def __init__(self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.b1, self.b2, self.eps = b1, b2, eps
        self.m: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.t = 0

    def init(self, params):
        self.m = [_state_like(p) for p in params]
        self.v = [_state_like(p) for p in params]

    def begin_step(self):
        self.t += 1

    def apply(self, i, g, p, sl=slice(None)):
        m, v = self.m[i].view(-1)[sl], self.v[i].view(-1)[sl]
        g32 = g.to(m.dtype)
        m.mul_(self.b1).add_(g32, alpha=1 - self.b1)
        v.mul_(self.b2).addcmul_(g32, g32, value=1 - self.b2)
        return self._direction(m, v).to(g.dtype)

    def _direction(self, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        denom = (v / (1 - self.b2 ** self.t)).sqrt_().add_(self.eps)
        return (m / (1 - self.b1 ** self.t)).div_(denom)

    def state_tensors(self):
        return self.m + self.v


class HFAdam(Adam):
    """Adam as HF Trainer's default optimizer computes it: ``transformers.optimization.AdamW`` (transformers
    4.28.1, ``TrainingArguments.optim="adamw_hf"``, defaults β = (0.9, 0.999), ε = 1e-8), ``step``:

        m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²,   u = (√(1−β₂ᵗ)/(1−β₁ᵗ)) · m / (√v + ε).
    θ ← θ − lr·u is then the optimizer's sweep. It is ``Adam`` with ε added to √v *before* the bias
    correction (torch's Adam with ε_t = ε/√(1−β₂ᵗ)). HF's AdamW decays θ after its update,
    θ ← (θ − lr·u)(1 − lr·λ); zobench decays first, θ(1 − lr·λ) − lr·u, a difference of lr²·λ·u (ZO-Bench's
    sweeps all run λ = 0). t counts this transform's steps (HF: each parameter's ``state["step"]``).
    What ZO-Bench's ZO-SGD-Sign and ZO-SGD-Cons ran (``optimizer.variant=zobench_code``, see
    ``inner_optimizer``). State: two copies of θ (fp32 in half-precision runs; HF keeps θ's dtype).
    """

    def _direction(self, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # the moments as Adam's; ε before correction
        scale = math.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        return torch.div(m, v.sqrt().add_(self.eps)).mul_(scale)


VARIANTS = ("paper", "zobench_code")


def inner_optimizer(variant: str = "paper", b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transform:
    """The optimizer the ZO update goes through, by ``optimizer.variant`` (ZO-Bench, Zhang et al., ICML 2024).

    paper         Identity: θ ← θ − lr·u, the algorithm the paper states (ZO-SGD-Sign, ZO-SGD-Cons).
    zobench_code  HFAdam: what ZO-Bench's code ran. Its ZO-SGD-Sign and ZO-SGD-Cons sweeps
                  (zo-bench/sweeps/*/sign_sgd/*, zo_sgd_conserv/*) set ``--trainer`` but never ``--optimizer``;
                  run.py's default ``optimizer="adamw"`` matches neither branch of trainer.py's optimizer
                  override (``adam`` → torch Adam, ``sgd`` → torch SGD), so ``self.optimizer`` stays the one HF
                  Trainer created: transformers 4.28.1's AdamW (optim="adamw_hf", lr = learning_rate,
                  weight decay 0 in every sweep, constant schedule without warm-up). ``zo_step`` and
                  ``zo_conserv_step`` write the ZO update into ``param.grad`` and call ``self.optimizer.step()``.
    """
    if variant not in VARIANTS:
        raise bad_choice("optimizer.variant", variant, VARIANTS)
    return Identity() if variant == "paper" else HFAdam(b1, b2, eps)
