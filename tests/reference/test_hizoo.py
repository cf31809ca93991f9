"""HiZOO (Zhao et al., ICLR 2025) against its authors' code.

``HiZOOTrainer`` transcribes github.com/Yanjun-Zhao/HiZOO (commit 4f99055) trainer.py, class OurTrainer:
the ``self.Hessian_matrix`` set-up of ``_inner_training_loop`` (``torch.ones`` per trainable parameter, in its
dtype), ``efficient_Hessian_perturb_parameters`` and ``zo_Hessian_step_update`` (HF Trainer stripped away),
with the constant α of Hessian_smooth_scheduler.py and run.py's ``set_seed`` (``np.random.seed``). Its z is
torch's global stream after ``torch.manual_seed(np.random.randint(1000000000))``, which is MeZO's stream, so
zobench with ``optimizer.direction_stream=mezo`` draws the same z; ``ChunkedHiZOOTrainer`` feeds it zobench's
own (chunked) z instead. Weight decay stays 0: the code decays biases and norms too, zobench never does.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.conftest import SMALL, compose_cfg
from tests.reference.test_mezo_stream import global_rngs, tiny_pair
from tests.test_optimizers import LeastSquares
from tests.test_resume import RESUMABLE, replay_resumes_identically
from zobench.optim import build_optimizer
from zobench.optim.directions import direction, mix
from zobench.optim.hizoo import HiZOO, HiZOOOptimizer
from zobench.run import run_cell


class HiZOOTrainer:
    """HiZOO trainer.py OurTrainer.efficient_Hessian_perturb_parameters / zo_Hessian_step_update, transcribed.

    ``zo_forward`` is the closure ``loss_fn`` (model in eval mode); ``zo_learning_rate`` is the constant lr
    (zo_lr_scheduler_type constant); ``Hessian_smooth`` the constant α. Two hooks name the code's random
    calls, whose bodies are the code's own: ``manual_seed`` and ``normal``."""

    def __init__(self, model, zo_eps: float, weight_decay: float = 0.0):
        self.zo_eps, self.weight_decay, self.forwards = zo_eps, weight_decay, 0
        self.Hessian_matrix = {}  # _inner_training_loop
        for name, param in model.named_parameters():
            if param.requires_grad:
                self.Hessian_matrix[name] = torch.ones(size=param.data.size(), device=param.data.device, dtype=param.data.dtype)

    def manual_seed(self, random_seed):
        torch.manual_seed(random_seed)

    def normal(self, name, param):
        return torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)

    def zo_forward(self, loss_fn):
        self.forwards += 1
        return loss_fn().detach()

    def efficient_Hessian_perturb_parameters(self, model, random_seed, Hessian_matrix=None, scaling_factor=1):
        self.manual_seed(random_seed)
        for name, param in self.named_parameters_to_optim:
            z = self.normal(name, param)
            param.data = param.data + scaling_factor / torch.sqrt(Hessian_matrix[name]) * z * self.zo_eps
        return model

    def zo_Hessian_step_update(self, model, loss_fn, zo_learning_rate, Hessian_smooth):
        self.named_parameters_to_optim = []
        for name, param in model.named_parameters():
            if param.requires_grad:
                self.named_parameters_to_optim.append((name, param))

        random_seed = np.random.randint(1000000000)
        with torch.no_grad():
            loss_original = self.zo_forward(loss_fn)
            model = self.efficient_Hessian_perturb_parameters(model, random_seed, self.Hessian_matrix, scaling_factor=1)
            loss1 = self.zo_forward(loss_fn)
            model = self.efficient_Hessian_perturb_parameters(model, random_seed, self.Hessian_matrix, scaling_factor=-2)
            loss2 = self.zo_forward(loss_fn)
            model = self.efficient_Hessian_perturb_parameters(model, random_seed, self.Hessian_matrix, scaling_factor=1)

            self.manual_seed(random_seed)
            for name, param in self.named_parameters_to_optim:
                z = self.normal(name, param)
                Hessian_temp = self.Hessian_matrix[name] * z * z
                Hessian_estimator = (torch.abs(loss1 + loss2 - 2 * loss_original) * Hessian_temp * Hessian_smooth
                                     / (2 * self.zo_eps * self.zo_eps))
                self.Hessian_matrix[name] = ((1 - Hessian_smooth) * self.Hessian_matrix[name] + Hessian_estimator)
                grad = (loss1 - loss2) / (2 * self.zo_eps) * z / torch.sqrt(self.Hessian_matrix[name])
                param.data = param.data - zo_learning_rate * (grad + self.weight_decay * param.data)

            loss_out = self.zo_forward(loss_fn)  # evaluated after the update, only to be logged
        return loss_out


class ChunkedHiZOOTrainer(HiZOOTrainer):
    """The same update fed zobench's chunked z: step t's direction is z(mix(mix(seed, t), 0)) (zobench.optim.hizoo)."""

    def __init__(self, model, zo_eps: float, seed: int):
        super().__init__(model, zo_eps)
        self.index = {name: i for i, (name, p) in enumerate((n, p) for n, p in model.named_parameters() if p.requires_grad)}
        self.seed, self.t = seed, -1

    def zo_Hessian_step_update(self, *args):
        self.t += 1
        return super().zo_Hessian_step_update(*args)

    def manual_seed(self, random_seed):
        pass

    def normal(self, name, param):
        return direction(mix(mix(self.seed, self.t), 0), self.index[name], param)


def reference_run(trainer, model, loss_fn, seed, steps, lr, alpha):
    with global_rngs(), torch.no_grad():
        np.random.seed(seed)  # run.py set_seed(args.seed)
        for _ in range(steps):
            trainer.zo_Hessian_step_update(model, loss_fn, lr, alpha)
    return trainer


def zobench_run(model, loss_fn, seed, steps, lr, eps, alpha, *overrides):
    cfg = compose_cfg("optimizer=hizoo", f"optimizer.lr={lr}", f"optimizer.eps={eps}",
                      f"optimizer.estimator.hessian_smoothing={alpha}", *overrides)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = build_optimizer(cfg.optimizer, named, steps, seed)
    with torch.no_grad():
        stats = [opt.step(loss_fn) for _ in range(steps)]
    return opt, stats


def assert_same(model_a, model_b, atol):
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=atol, msg=name)


STEPS, LR, EPS, ALPHA = 6, 1e-3, 1e-3, 1e-3


def test_hizoo_follows_the_authors_trajectory_on_their_direction_stream():
    """HiZOO trainer.py OurTrainer.zo_Hessian_step_update, 6 steps on a tiny OPT in float64, against zobench's
    hizoo with direction_stream=mezo (the code's torch.manual_seed stream): the same weights and the same
    diagonal Hessian to 1e-12; 3 forward passes a step (the code's 4th only logs the updated loss)."""
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    start = [p.detach().clone() for p in model_a.parameters()]
    ref = reference_run(HiZOOTrainer(model_a, EPS), model_a, loss_of(model_a), 0, STEPS, LR, ALPHA)
    opt, stats = zobench_run(model_b, loss_of(model_b), 0, STEPS, LR, EPS, ALPHA, "optimizer.direction_stream=mezo")
    assert isinstance(opt, HiZOOOptimizer)
    assert_same(model_a, model_b, atol=1e-12)
    for (name, _), h in zip(model_b.named_parameters(), opt.estimator.hessian):
        torch.testing.assert_close(h, ref.Hessian_matrix[name], rtol=1e-10, atol=0, msg=name)
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(model_a.parameters(), start))
    curved = max(float((h - 1).abs().max()) for h in opt.estimator.hessian)
    assert moved > 1e-3 and curved > 0.1, (moved, curved)  # the comparison is not vacuous
    assert [s["forward_passes"] for s in stats] == [3] * STEPS and ref.forwards == 4 * STEPS


def test_hizoo_on_zobench_chunked_directions_is_the_same_update(monkeypatch):
    """The default chunked stream, with chunks small enough that the embedding spans several (H^{-1/2} is applied
    chunk by chunk): the authors' update fed zobench's z gives the same weights to 1e-12."""
    from zobench.optim import directions

    monkeypatch.setattr(directions, "CHUNK", 1000)
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    reference_run(ChunkedHiZOOTrainer(model_a, EPS, seed=3), model_a, loss_of(model_a), 3, STEPS, LR, ALPHA)
    zobench_run(model_b, loss_of(model_b), 3, STEPS, LR, EPS, ALPHA)
    assert_same(model_a, model_b, atol=1e-12)


def test_hessian_smoothing_zero_is_mezos_update():
    """α = 0 keeps H = 1: the update is MeZO's (zo_sgd on the same stream), at one more forward pass a step."""
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    zobench_run(model_a, loss_of(model_a), 0, 4, LR, EPS, 0.0, "optimizer.direction_stream=mezo")
    cfg = compose_cfg("optimizer=zo_sgd", "optimizer.direction_stream=mezo", f"optimizer.lr={LR}", f"optimizer.eps={EPS}")
    opt = build_optimizer(cfg.optimizer, list(model_b.named_parameters()), 4, 0)
    with torch.no_grad():
        for _ in range(4):
            opt.step(loss_of(model_b))
    assert_same(model_a, model_b, atol=1e-12)
    model_c, _, _ = tiny_pair(torch.float64)
    zobench_run(model_c, loss_of(model_c), 0, 4, LR, EPS, ALPHA, "optimizer.direction_stream=mezo")
    gap = max(float((a.detach() - c.detach()).abs().max()) for a, c in zip(model_a.parameters(), model_c.parameters()))
    assert gap > 1e-6  # with α > 0 the Hessian changes the steps


@pytest.mark.parametrize("dtype, bytes_per_param", [(torch.float32, 4), (torch.bfloat16, 4), (torch.float64, 8)])
def test_hessian_state_is_one_copy_of_the_trainable_parameters(dtype, bytes_per_param):
    """H: one copy of the trainable parameters, fp32 in half-precision runs (θ's dtype otherwise)."""
    named = [("w", torch.zeros(3, 5, dtype=dtype)), ("b", torch.zeros(5, dtype=dtype))]
    opt = build_optimizer(compose_cfg("optimizer=hizoo").optimizer, named, 1, 0)
    assert opt.state_bytes() == 20 * bytes_per_param
    assert {h.dtype for h in opt.estimator.hessian} == {torch.float64 if dtype == torch.float64 else torch.float32}


def test_hessian_travels_in_the_state_dict():
    """A state checkpoint (train.py uses replay for HiZOO; state is the fallback) carries H: resumed from it, a copy
    takes the same steps as the uninterrupted optimizer."""
    a, b = LeastSquares(dtype=torch.float64), LeastSquares(dtype=torch.float64)
    cfg = compose_cfg("optimizer=hizoo", "optimizer.lr=0.03", "optimizer.estimator.hessian_smoothing=0.1").optimizer
    opt_a = build_optimizer(cfg, list(a.named_parameters()), 6, 0)
    for _ in range(3):
        opt_a.step(a.loss)
    state = copy.deepcopy(opt_a.state_dict())  # as torch.save would write it
    with torch.no_grad():
        for pb, pa in zip(b.parameters(), a.parameters()):
            pb.copy_(pa)
    opt_b = build_optimizer(cfg, list(b.named_parameters()), 6, 0)
    opt_b.load_state_dict(state)
    assert opt_b.t == 3 and any(not torch.equal(h, torch.ones_like(h)) for h in opt_b.estimator.hessian)
    for _ in range(3):
        opt_a.step(a.loss), opt_b.step(b.loss)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_bad_hessian_smoothing_is_named():
    from zobench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hessian_smoothing=1.5 is not allowed: expected a number in \[0, 1\]"):
        HiZOO(hessian_smoothing=1.5)


def test_a_tiny_hizoo_cell_runs_and_resumes_to_identical_parameters(native, tmp_path, monkeypatch):
    """The normal runner: a tiny cell completes with 3 forward passes a step and H's bytes in the summary; an
    interrupted one resumes from the loss log (replay: H follows from the losses) to the same weights."""
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=hizoo", "optimizer.lr=1e-3",
                      "optimizer.estimator.hessian_smoothing=1e-3", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")
    assert whole["forward_passes_per_step"] == 3 and whole["forward_passes"] == 3 * 6
    assert whole["optimizer_state_bytes"] == 4 * whole["trainable_params"]
    replay_resumes_identically(cfg, tmp_path, monkeypatch, whole)
