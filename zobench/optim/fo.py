"""First-order baselines (FO-SGD, FO-Adam): backprop and a torch.optim optimizer, run as HF Trainer runs it.

One step on a batch B, with g = Σ_i w_i·∇L_i(θ) accumulated over micro-batches (zobench.optim.closure):
    g ← g · min(1, c / (‖g‖₂ + 1e-6))       global-norm clipping, c = ``max_grad_norm`` (null: off)
    θ ← θ − lr_t·λθ                         decoupled decay, not on biases and norms (every zobench optimizer)
    θ ← torch_optimizer(θ, g, lr_t)          SGD, AdamW, or HF's own AdamW (``variant: zobench_code``)
The clip is HF Trainer's (transformers 4.28.1 ``Trainer._inner_training_loop``, which MeZO's
large_models/trainer.py keeps for its FO runs and ZO-Bench's zo-bench/trainer.py ``gradient_update``
repeats): ``torch.nn.utils.clip_grad_norm_`` over the parameters, after accumulation, before the
step; ``TrainingArguments.max_grad_norm`` defaults to 1.0 and neither MeZO's finetune.sh nor
ZO-Bench's sweeps change it. Decay before the optimizer's update is AdamW's rule, so FO-Adam is
exactly torch's AdamW (for plain SGD it equals coupled L2); HF's AdamW decays after its update,
a difference of lr²·λ·u per step. A step counts one forward pass of the batch.

Dropout (``train_mode``): HF Trainer's ``training_step`` calls ``model.train()``, so MeZO's FT and
ZO-Bench's FO runs trained with dropout on; evaluation calls ``model.eval()``. zobench keeps models
in eval mode (the FO baselines comparable with ZO, which needs a deterministic loss at both
probes); ``train_mode: true`` runs the FO forward/backward in train mode and puts the model back
in the mode it had (eval) before the update, so evaluation and anything ZO stay in eval mode.
Dropout masks come from torch's global generator, which checkpoints do not save: a resumed run
with ``train_mode: true`` draws other masks than an uninterrupted one.

``variant: zobench_code`` (FO-SGD only): ZO-Bench's SST-2 "FO-SGD" FT and prompt-tuning sweeps
(zo-bench/sweeps/SST2_opt-1.3b/sgd/sgd_cls_ft.yml, sgd_cls_prompt.yml) pass ``--trainer=sgd`` and
no ``--optimizer``; run.py's default ``optimizer="adamw"`` matches neither branch of trainer.py
(``adam`` → torch Adam, ``sgd`` → torch SGD), so the optimizer stays the one HF Trainer created:
with transformers 4.28.1 (ZO-Bench's requirements.txt) ``optim="adamw_hf"``, HF's own AdamW with
TrainingArguments' defaults β = (0.9, 0.999), ε = 1e-8. ``HFAdamW`` below is that optimizer.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, Iterator, Sequence

import torch
from hydra.utils import instantiate

from zobench.errors import ConfigError, bad_choice, bad_value
from zobench.optim.closure import check_micro_batches, micro_batches
from zobench.optim.decay import decays
from zobench.optim.schedule import lr_factor

VARIANTS = ("paper", "zobench_code")
# TrainingArguments' defaults (adam_beta1, adam_beta2, adam_epsilon): what HF Trainer's AdamW ran with.
HF_TRAINER_ADAMW = dict(betas=(0.9, 0.999), eps=1e-8)


class HFAdamW(torch.optim.Optimizer):
    """AdamW as transformers ≤ 4.30 implements it (``transformers.optimization.AdamW``, ``optim="adamw_hf"``,
    HF Trainer's default optimizer until transformers PR #25109, 2023).

    m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  θ ← θ − lr·(√(1−β₂ᵗ)/(1−β₁ᵗ))·m/(√v + ε);  θ ← θ − lr·λθ.
    It differs from torch's AdamW (Loshchilov & Hutter 2019) in where ε sits: HF adds ε to √v and
    then bias-corrects, i.e. torch's rule with ε_t = ε/√(1−β₂ᵗ) (≈ 32ε at t = 1), and in decaying
    θ after its update instead of before.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size *= math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


class FOOptimizer:
    family = "fo"

    def __init__(self, named_params: Sequence[tuple[str, torch.Tensor]], torch_optimizer: Callable, *,
                 lr: float, weight_decay: float = 0.0, schedule: str = "constant", total_steps: int = 1,
                 accumulation_steps: int = 1, max_grad_norm: float | None = None, train_mode: bool = False,
                 model: torch.nn.Module | None = None):
        if train_mode and model is None:
            raise ConfigError("optimizer.train_mode=true needs the model (build_optimizer(..., model=model)).")
        self.params = [p for _, p in named_params]
        self.decayed = [p for n, p in named_params if decays(n)] if weight_decay else []
        self.weight_decay, self.accumulation_steps = weight_decay, accumulation_steps
        self.max_grad_norm, self.train_mode, self.model = max_grad_norm, train_mode, model
        self.opt = torch_optimizer(self.params, lr=lr, weight_decay=0.0)  # decay is applied here, decoupled
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda t: lr_factor(schedule, t, total_steps))

    def step(self, loss_fn: Callable) -> dict:
        check_micro_batches(loss_fn, self.accumulation_steps)
        lr = self.sched.get_last_lr()[0]
        self.opt.zero_grad(set_to_none=True)
        loss = 0.0
        with torch.enable_grad(), self.forward_mode():
            for weight, part in micro_batches(loss_fn):
                value = part()
                (value * weight).backward()
                loss += weight * float(value.detach())
        self.apply_update()
        return {"loss": loss, "forward_passes": 1, "lr": lr}

    @contextlib.contextmanager
    def forward_mode(self) -> Iterator[None]:
        """Train mode (dropout on) around the forward/backward when ``train_mode``; the model's mode is restored after."""
        if not self.train_mode:
            yield
            return
        was_training = self.model.training
        self.model.train()
        try:
            yield
        finally:
            self.model.train(was_training)

    def apply_update(self) -> None:
        """What follows the backward: clip the accumulated gradient, decay, step, advance the schedule."""
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        lr = self.sched.get_last_lr()[0]
        with torch.no_grad():
            for p in self.decayed:
                p.mul_(1 - lr * self.weight_decay)
        self.opt.step()
        self.sched.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.opt.state_dict(), "schedule": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["schedule"])

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.opt.state.values() for t in s.values() if torch.is_tensor(t))


def check_max_grad_norm(opt: Any) -> None:
    value = opt.get("max_grad_norm")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise bad_value("optimizer.max_grad_norm", value, "null (no clipping) or a number > 0 (HF Trainer: 1.0)")


def check_config(opt: Any) -> None:
    """The FO keys, checked before any model loads (called by zobench.validate)."""
    check_max_grad_norm(opt)
    if not isinstance(opt.get("train_mode", False), bool):
        raise bad_value("optimizer.train_mode", opt.train_mode, "true or false")
    variant = opt.get("variant", "paper")
    if variant not in VARIANTS:
        raise bad_choice("optimizer.variant", variant, VARIANTS)
    target = str((opt.get("torch_optimizer") or {}).get("_target_", ""))
    if variant == "zobench_code" and target.rsplit(".", 1)[-1] != "SGD":
        raise ConfigError(
            f"optimizer.variant='zobench_code' is not allowed with optimizer={opt.name} ({target}): it is FO-SGD's "
            "(ZO-Bench's SST-2 FT/prompt 'SGD' sweeps ran HF Trainer's AdamW); choose optimizer.variant=paper.")


def build_fo(cfg: Any, named_params: Sequence[tuple[str, torch.Tensor]], *, model: torch.nn.Module | None = None,
             **common) -> FOOptimizer:
    """The optimizer of a ``family: fo`` YAML; ``common``: lr, weight_decay, schedule, total_steps, accumulation_steps."""
    check_config(cfg)
    if cfg.get("variant", "paper") == "zobench_code":
        torch_optimizer = functools.partial(HFAdamW, **HF_TRAINER_ADAMW)
    else:
        torch_optimizer = instantiate(cfg.torch_optimizer, _partial_=True)
    return FOOptimizer(named_params, torch_optimizer, max_grad_norm=cfg.get("max_grad_norm"),
                       train_mode=cfg.get("train_mode", False), model=model, **common)
