"""First-order baselines (FO-SGD, FO-Adam): backprop and a torch.optim optimizer.

Weight decay skips biases and normalization weights (two parameter groups, as HF Trainer);
the lr schedule is the same function the ZO optimizers use.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from zobench.optim.decay import decays
from zobench.optim.schedule import lr_factor


class FOOptimizer:
    family = "fo"

    def __init__(self, named_params: Sequence[tuple[str, torch.Tensor]], torch_optimizer: Callable, *,
                 lr: float, weight_decay: float = 0.0, schedule: str = "constant", total_steps: int = 1):
        self.params = [p for _, p in named_params]
        groups = [
            {"params": [p for n, p in named_params if decays(n)], "weight_decay": weight_decay},
            {"params": [p for n, p in named_params if not decays(n)], "weight_decay": 0.0},
        ]
        self.opt = torch_optimizer([g for g in groups if g["params"]], lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda t: lr_factor(schedule, t, total_steps))

    def step(self, loss_fn: Callable[[], torch.Tensor]) -> dict:
        lr = self.sched.get_last_lr()[0]
        self.opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = loss_fn()
            loss.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": float(loss.detach()), "forward_passes": 1, "lr": lr}

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.opt.state.values() for t in s.values() if torch.is_tensor(t))
