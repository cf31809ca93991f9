"""The ZO optimizer: an estimator (seed form) followed by one update sweep over the parameters.

Per step t, with base seed s_t = mix(run seed, t):
    ĝ = Σ_j c_j z(s_j)                         (estimator, e.g. SPSA)
    for each trainable tensor θ_i, in one sweep:
        θ_i ← θ_i + r·z_i(s_pending)            (undo the estimator's last probe)
        g_i ← Σ_j c_j z_i(s_j) + λ_i θ_i        (λ_i = weight decay, 0 for biases and norms)
        u_i ← transforms(g_i)                   (identity for ZO-SGD; sign, momentum, Adam, ...)
        θ_i ← θ_i − lr_t · u_i
For ZO-SGD (MeZO) with q = 1 the undo and the update regenerate z_i once, so a step costs two
forward passes and three passes of random-number generation (+ε, −2ε, undo+update), all in
place with one tensor-sized temporary. The (step, seeds, coeffs, lr) log reproduces the run.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from zobench.optim.decay import decays
from zobench.optim.directions import direction, mix
from zobench.optim.estimate import SeedEstimate
from zobench.optim.schedule import lr_factor


class ZOOptimizer:
    family = "zo"

    def __init__(self, named_params: Sequence[tuple[str, torch.Tensor]], estimator, transforms=(), *,
                 lr: float, eps: float, weight_decay: float = 0.0, schedule: str = "constant",
                 total_steps: int = 1, seed: int = 0):
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.estimator, self.transforms = estimator, list(transforms)
        self.lr, self.eps, self.schedule, self.total_steps = lr, eps, schedule, total_steps
        self.decay = [weight_decay if decays(n) else 0.0 for n in self.names]
        self.seed, self.t = seed, 0
        self.seed_log: list[tuple[int, list[int], list[float], float]] = []
        for tr in self.transforms:
            tr.init(self.params)

    def step(self, loss_fn: Callable[[], torch.Tensor]) -> dict:
        lr = self.lr * lr_factor(self.schedule, self.t, self.total_steps)
        est = self.estimator(self.params, loss_fn, self.eps, mix(self.seed, self.t))
        self.apply(est, lr)
        self.seed_log.append((self.t, est.seeds, est.coeffs, lr))
        self.t += 1
        return {"loss": est.loss, "forward_passes": est.forward_passes, "lr": lr}

    @torch.no_grad()
    def apply(self, est: SeedEstimate, lr: float) -> None:
        pending = dict(est.pending)
        for i, p in enumerate(self.params):
            g = None
            for s, c in zip(est.seeds, est.coeffs):
                z = direction(s, i, p)
                if s in pending:
                    p.add_(z, alpha=pending[s])
                g = z.mul_(c) if g is None else g.add_(z, alpha=c)
            for s, scale in pending.items():
                if s not in est.seeds:
                    p.add_(direction(s, i, p), alpha=scale)
            if g is None:
                continue
            if self.decay[i]:
                g.add_(p, alpha=self.decay[i])
            for tr in self.transforms:
                g = tr.apply(i, g, p)
            p.add_(g, alpha=-lr)

    def state_bytes(self) -> int:
        return sum(tr.state_bytes() for tr in self.transforms)
