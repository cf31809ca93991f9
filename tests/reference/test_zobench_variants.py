"""ZO-SGD-Sign and ZO-SGD-Cons as ZO-Bench's code ran them (``optimizer.variant=zobench_code``).

``ZOBenchTrainer`` transcribes ZO-Bench/ZO-LLM zo-bench/trainer.py, class OurTrainer: ``zo_perturb_parameters``,
``zo_step`` (q = 1, two_side, the ``zo_sign_opt`` branch) and ``zo_conserv_step``, with the optimizer their
sweeps leave in place. Those sweeps (zo-bench/sweeps/*/sign_sgd/*.yml, */zo_sgd_conserv/*.yml) pass
``--trainer`` and never ``--optimizer``; run.py ``OurArguments.optimizer`` defaults to "adamw", which
trainer.py's override (``_inner_training_loop``: "adam" → torch Adam, "sgd" → torch SGD) does not match, so
``self.optimizer`` is HF Trainer's: transformers 4.28.1 (ZO-Bench's requirements.txt) ``optim="adamw_hf"``,
``transformers.optimization.AdamW`` with TrainingArguments' β = (0.9, 0.999), ε = 1e-8, weight decay 0 (every
sweep), constant schedule. ``HFAdamW`` transcribes that class's ``step``. The step seeds come from NumPy as in
MeZO, so zobench runs with ``optimizer.direction_stream=mezo`` to draw the same z.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import compose_cfg
from tests.reference.test_mezo_stream import global_rngs, tiny_pair
from zobench.errors import ConfigError
from zobench.optim import build_optimizer
from zobench.validate import validate_optimizer


class HFAdamW(torch.optim.Optimizer):
    """transformers 4.28.1 src/transformers/optimization.py AdamW.step, transcribed (correct_bias=True)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad, state = p.grad, self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=(1.0 - beta1))
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    bias_correction1 = 1.0 - beta1 ** state["step"]
                    bias_correction2 = 1.0 - beta2 ** state["step"]
                    step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=(-group["lr"] * group["weight_decay"]))


class ZOBenchTrainer:
    """ZO-Bench zo-bench/trainer.py OurTrainer.zo_perturb_parameters / zo_step / zo_conserv_step, transcribed
    (no gradient sparsity, q = 1, perturbation_mode two_side); ``zo_forward`` is the closure ``loss_fn``."""

    def __init__(self, model, trainer: str, lr: float, zo_eps: float):
        self.model, self.trainer, self.zo_eps = model, trainer, zo_eps
        # HF Trainer.create_optimizer: AdamW over the trainable parameters (decay group and no-decay group
        # both at weight_decay 0 in ZO-Bench's sweeps: one group is the same optimizer)
        self.optimizer = HFAdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def _params(self):
        self.named_parameters_to_optim = []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                self.named_parameters_to_optim.append((name, param))
                param.grad = None

    def zo_perturb_parameters(self, random_seed=None, scaling_factor=1):
        torch.manual_seed(random_seed if random_seed is not None else self.zo_random_seed)
        for name, param in self.named_parameters_to_optim:
            z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
            param.data = param.data + scaling_factor * z * self.zo_eps

    def _projected_grad(self, loss_fn):
        self.zo_perturb_parameters(scaling_factor=1)
        loss1 = loss_fn()
        self.zo_perturb_parameters(scaling_factor=-2)
        loss2 = loss_fn()
        self.projected_grad = ((loss1 - loss2) / (2 * self.zo_eps)).item()
        self.zo_perturb_parameters(scaling_factor=1)
        return loss1

    def zo_step(self, loss_fn):
        self._params()
        self.zo_random_seed = np.random.randint(1000000000)
        loss1 = self._projected_grad(loss_fn)
        torch.manual_seed(self.zo_random_seed)
        for name, param in self.named_parameters_to_optim:
            z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
            if self.trainer == "zo_sign_opt":
                graddiff_times_z = np.sign(self.projected_grad) * z
            else:
                graddiff_times_z = self.projected_grad * z
            param.grad = graddiff_times_z / 1  # args.q
            self.optimizer.step()
            param.grad = None
        return loss1

    def zo_conserv_step(self, loss_fn):
        self._params()
        loss0 = loss_fn()
        self.zo_random_seed = np.random.randint(1000000000)
        self._projected_grad(loss_fn)

        def update_params(sign=1.0):
            torch.manual_seed(self.zo_random_seed)
            for name, param in self.named_parameters_to_optim:
                z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
                graddiff_times_z = self.projected_grad * z
                param.grad = sign * graddiff_times_z
                self.optimizer.step()
                param.grad = None

        update_params()
        loss1 = loss_fn()
        update_params(sign=-2.0)
        loss2 = loss_fn()
        if loss1 > loss0:
            if loss0 < loss2:
                update_params()
        else:
            if loss1 < loss2:
                update_params(2.0)
        return loss1


def zobench_run(model, loss_fn, optimizer, seed, steps, lr, eps, *overrides):
    cfg = compose_cfg(f"optimizer={optimizer}", "optimizer.variant=zobench_code", "optimizer.direction_stream=mezo",
                      f"optimizer.lr={lr}", f"optimizer.eps={eps}", *overrides)
    validate_optimizer(cfg.optimizer)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = build_optimizer(cfg.optimizer, named, steps, seed)
    passes = 0
    with torch.no_grad():
        for _ in range(steps):
            passes += opt.step(loss_fn)["forward_passes"]
    return opt, passes


def zobench_code_run(model, loss_fn, trainer, seed, steps, lr, eps):
    ref = ZOBenchTrainer(model, trainer, lr, eps)
    step = ref.zo_conserv_step if trainer == "zo_conserv" else ref.zo_step
    with global_rngs(), torch.no_grad():
        np.random.seed(seed)  # run.py set_seed(args.seed) / HF Trainer.__init__
        for _ in range(steps):
            step(loss_fn)


def assert_same_weights(model_a, model_b, atol):
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("optimizer, trainer", [("zo_sgd_sign", "zo_sign_opt"), ("zo_sgd_cons", "zo_conserv")])
def test_zobench_code_variant_follows_zobenchs_trajectory(optimizer, trainer):
    """ZO-Bench zo-bench/trainer.py OurTrainer.zo_step (zo_sign_opt) and zo_conserv_step, each stepping
    transformers 4.28.1 AdamW: 8 steps on a tiny OPT in float64 land on the same weights (to 1e-12, float
    rounding of in-place vs out-of-place updates) as zobench's variant=zobench_code with MeZO's stream."""
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    start = [p.detach().clone() for p in model_a.parameters()]
    steps, lr, eps = 8, 1e-3, 1e-3
    zobench_code_run(model_a, loss_of(model_a), trainer, 0, steps, lr, eps)
    _, passes = zobench_run(model_b, loss_of(model_b), optimizer, 0, steps, lr, eps)
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(model_a.parameters(), start))
    assert moved > 2 * lr  # Adam moves coordinates by up to ~lr per step: the comparison is not vacuous
    assert_same_weights(model_a, model_b, atol=1e-12)
    assert passes == steps * (2 if trainer == "zo_sign_opt" else 5)


def test_zobench_code_sign_differs_from_the_paper_rule():
    """The two variants of ZO-SGD-Sign are different algorithms: AdamW on sign(g)·z (ZO-Bench's
    zo-bench/trainer.py zo_step) vs SGD on sign(ĝ) per coordinate (the paper)."""
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    zobench_run(model_a, loss_of(model_a), "zo_sgd_sign", 0, 3, 1e-3, 1e-3)
    cfg = compose_cfg("optimizer=zo_sgd_sign", "optimizer.direction_stream=mezo", "optimizer.lr=1e-3")
    assert cfg.optimizer.sign == "coordinate"
    named = [(n, p) for n, p in model_b.named_parameters() if p.requires_grad]
    opt = build_optimizer(cfg.optimizer, named, 3, 0)
    with torch.no_grad():
        for _ in range(3):
            opt.step(loss_of(model_b))
    gap = max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(model_a.parameters(), model_b.parameters()))
    assert gap > 1e-4


def test_zobench_code_sets_the_projected_sign_and_hf_adamw():
    """One key, optimizer.variant, sets what ZO-Bench's code ran: sign=projected (zo_step's
    ``np.sign(self.projected_grad) * z``) and HF Trainer's AdamW after it; the paper variant keeps the
    coordinate sign and plain SGD."""
    code = compose_cfg("optimizer=zo_sgd_sign", "optimizer.variant=zobench_code").optimizer
    paper = compose_cfg("optimizer=zo_sgd_sign").optimizer
    assert (code.sign, code.estimator.sign, paper.sign) == ("projected", "projected", "coordinate")
    opt = build_optimizer(code, [("w", torch.zeros(3))], 1, 0)
    assert [type(tr).__name__ for tr in opt.transforms] == ["ScaleBySign", "HFAdam"]
    assert opt.state_bytes() == 2 * 3 * 4  # m and v
    opt = build_optimizer(paper, [("w", torch.zeros(3))], 1, 0)
    assert [type(tr).__name__ for tr in opt.transforms] == ["ScaleBySign"]


@pytest.mark.parametrize("overrides, words", [
    (["optimizer=zo_sgd", "optimizer.variant=zobench_code"], ["optimizer.variant='zobench_code'", "paper"]),
    (["optimizer=zo_adam", "optimizer.variant=zobench_code"], ["optimizer.variant='zobench_code'", "paper"]),
    (["optimizer=zo_sgd_sign", "optimizer.variant=code"], ["optimizer.variant='code'", "paper, zobench_code"]),
])
def test_bad_variants_fail_before_loading(overrides, words):
    """Bad input names the key and the allowed values (zobench/validate.py), before any model loads."""
    with pytest.raises(ConfigError) as info:
        validate_optimizer(compose_cfg(*overrides).optimizer)
    for word in words:
        assert word in str(info.value)
