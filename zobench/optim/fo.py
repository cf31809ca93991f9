"""First-order baselines (FO-SGD, FO-Adam): backprop and a torch.optim optimizer.

Weight decay follows the rule every zobench optimizer uses: decoupled, θ ← θ − lr_t·λθ before
the optimizer's own update (AdamW's rule, so FO-Adam is exactly torch's AdamW; for plain SGD it
equals coupled L2), not applied to biases and normalization weights. The lr schedule is the
same function the ZO optimizers use. Gradient accumulation over micro-batches sums
w_i·∇L_i (zobench.optim.closure); a step counts one forward pass of the batch.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from zobench.optim.closure import check_micro_batches, micro_batches
from zobench.optim.decay import decays
from zobench.optim.schedule import lr_factor


class FOOptimizer:
    family = "fo"

    def __init__(self, named_params: Sequence[tuple[str, torch.Tensor]], torch_optimizer: Callable, *,
                 lr: float, weight_decay: float = 0.0, schedule: str = "constant", total_steps: int = 1,
                 accumulation_steps: int = 1):
        self.params = [p for _, p in named_params]
        self.decayed = [p for n, p in named_params if decays(n)] if weight_decay else []
        self.weight_decay, self.accumulation_steps = weight_decay, accumulation_steps
        self.opt = torch_optimizer(self.params, lr=lr, weight_decay=0.0)  # decay is applied here, decoupled
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda t: lr_factor(schedule, t, total_steps))

    def step(self, loss_fn: Callable) -> dict:
        check_micro_batches(loss_fn, self.accumulation_steps)
        lr = self.sched.get_last_lr()[0]
        self.opt.zero_grad(set_to_none=True)
        loss = 0.0
        with torch.enable_grad():
            for weight, part in micro_batches(loss_fn):
                value = part()
                (value * weight).backward()
                loss += weight * float(value.detach())
        with torch.no_grad():
            for p in self.decayed:
                p.mul_(1 - lr * self.weight_decay)
        self.opt.step()
        self.sched.step()
        return {"loss": loss, "forward_passes": 1, "lr": lr}

    def state_dict(self) -> dict:
        return {"optimizer": self.opt.state_dict(), "schedule": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["schedule"])

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.opt.state.values() for t in s.values() if torch.is_tensor(t))
