"""FZOO (Dang et al. 2025) against its authors' code.

``FZOOTrainer`` transcribes github.com/DKmiyan/FZOO (commit d4f8a8b) trainer.py, class OurTrainer: ``__init__``'s
state, ``zo_perturb_parameters``, ``zo_step`` and ``zo_update`` (HF Trainer stripped away; ``zo_forward`` is the
closure; the constant lr of fzoo.sh's ``--lr_scheduler_type constant``). Three hooks name the code's random calls,
whose bodies are the code's own: ``randint`` (``np.random.randint(1000000000)``), ``manual_seed`` and ``rademacher``
(``torch.randint(0, 2, size) * 2 - 1``); one names its loss dtype (``torch.tensor(loss1s, dtype=torch.float32)``).
``FedFZOOTrainer`` feeds the transcription zobench's seeds and Rademacher directions and keeps the losses in float64
(the code's float32 would round the normalised coefficients at 1e-7), and zobench must then land on the same weights
to 1e-12 in float64.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import SMALL, compose_cfg
from tests.reference.test_mezo_stream import global_rngs, tiny_pair
from tests.test_optimizers import LeastSquares
from tests.test_resume import RESUMABLE, replay_resumes_identically
from tests.reference import common
from zobench.errors import ConfigError
from zobench.optim import build_optimizer
from zobench.optim.directions import direction, mix
from zobench.optim.fzoo import FZOO
from zobench.optim.zo import ZOOptimizer
from zobench.run import run_cell


class FZOOTrainer:
    """FZOO trainer.py OurTrainer.zo_perturb_parameters / zo_step / zo_update, transcribed."""

    LOSS_DTYPE = torch.float32  # zo_step: loss1s = torch.tensor(loss1s, dtype=torch.float32)

    def __init__(self, lr, zo_eps, N):
        self.rand_values = None
        self.zo_random_seeds = None
        self.N = N
        self.losses = None
        self.current_lr = lr
        self.zo_eps = zo_eps
        self.forwards = 0

    def _get_learning_rate(self):
        return self.current_lr

    def randint(self):
        return np.random.randint(1000000000)

    def manual_seed(self, random_seed):
        torch.manual_seed(random_seed)

    def rademacher(self, name, param):
        return torch.randint(0, 2, size=param.data.size(), device=param.data.device, dtype=param.data.dtype) * 2 - 1

    def zo_forward(self, model, loss_fn):
        self.forwards += 1
        return loss_fn().detach()

    def zo_perturb_parameters(self, random_seed=None, scaling_factor=1):
        self.manual_seed(random_seed if random_seed is not None else self.zo_random_seed)
        for (name, param), rand_value in zip(self.named_parameters_to_optim, self.rand_values):
            z = self.rademacher(name, param)
            param.data = param.data + scaling_factor * z * self.zo_eps

    def zo_step(self, model, loss_fn):
        self.named_parameters_to_optim = []
        for name, param in model.named_parameters():
            if param.requires_grad:
                self.named_parameters_to_optim.append((name, param))
        self.rand_values = [torch.rand(1).item() for _ in range(len(self.named_parameters_to_optim))]
        self.zo_random_seeds = []
        loss1s = []
        perturbTimes = self.N // 2
        if self.losses is None:
            perturbTimes = self.N
        with torch.no_grad():
            for i in range(perturbTimes):
                self.zo_random_seed = self.randint()
                self.zo_random_seeds.append(self.zo_random_seed)
                self.zo_perturb_parameters(scaling_factor=1)
                loss1 = self.zo_forward(model, loss_fn).detach()
                loss1s.append(loss1)
                self.zo_perturb_parameters(scaling_factor=-1)
            loss1s = torch.tensor(loss1s, dtype=self.LOSS_DTYPE)
            std = torch.std(loss1s, unbiased=False)
            loss_tensor = self.zo_forward(model, loss_fn).detach().cpu()
        self.projected_grad = (loss1s - loss_tensor) / (perturbTimes * std)
        return loss_tensor

    def zo_update(self, model):
        lr = self._get_learning_rate()
        for idx, zo_random_seed in enumerate(self.zo_random_seeds):
            self.manual_seed(zo_random_seed)
            for (name, param), rand_value in zip(self.named_parameters_to_optim, self.rand_values):
                z = self.rademacher(name, param)
                param.data = param.data - lr * (self.projected_grad[idx] * z)


class FedFZOOTrainer(FZOOTrainer):
    """The transcription fed zobench's directions: probe j of step t is u(mix(mix(seed, t), j)) (zobench.optim.fzoo)."""

    LOSS_DTYPE = torch.float64

    def __init__(self, model, lr, zo_eps, N, seed):
        super().__init__(lr, zo_eps, N)
        self.index = {n: i for i, n in enumerate(n for n, p in model.named_parameters() if p.requires_grad)}
        self.seed, self.t, self.j = seed, -1, 0

    def zo_step(self, model, loss_fn):
        self.t, self.j = self.t + 1, 0
        return super().zo_step(model, loss_fn)

    def randint(self):
        self.j += 1
        return mix(mix(self.seed, self.t), self.j - 1)

    def manual_seed(self, random_seed):
        self.current = random_seed

    def rademacher(self, name, param):
        return direction(self.current, self.index[name], param, "rademacher")


def reference_run(trainer, model, loss_fn, steps):
    losses = []
    with global_rngs(), torch.no_grad():
        for _ in range(steps):
            losses.append(float(trainer.zo_step(model, loss_fn)))
            trainer.zo_update(model)
    return losses


max_gap = common.max_gap


def zobench_run(model, loss_fn, seed, steps, *overrides):
    return common.zobench_run("fzoo", model, loss_fn, seed, steps, *overrides)


STEPS, LR, EPS, N = 5, 1e-3, 1e-3, 8


def test_fzoo_follows_the_authors_update_fed_the_same_directions(monkeypatch):
    """trainer.py OurTrainer.zo_step + zo_update, 5 steps of N = 8 Rademacher probes on a tiny OPT in float64, chunks of
    1000 elements (the embeddings' u is drawn in several): the same weights to 1e-12, the code's L(θ) as the step's
    loss, N + 1 = 9 forward passes a step."""
    from zobench.optim import directions

    monkeypatch.setattr(directions, "CHUNK", 1000)
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    start = [p.detach().clone() for p in model_a.parameters()]
    ref = FedFZOOTrainer(model_a, LR, EPS, N, seed=4)
    ref_losses = reference_run(ref, model_a, loss_of(model_a), STEPS)
    opt, stats = zobench_run(model_b, loss_of(model_b), 4, STEPS, f"optimizer.lr={LR}", f"optimizer.eps={EPS}")
    assert type(opt) is ZOOptimizer and isinstance(opt.estimator, FZOO) and opt.distribution == "rademacher"
    assert max_gap(model_a, model_b) < 1e-12, max_gap(model_a, model_b)
    assert [s["loss"] for s in stats] == pytest.approx(ref_losses, rel=1e-12, abs=0)
    assert [s["forward_passes"] for s in stats] == [N + 1] * STEPS and ref.forwards == (N + 1) * STEPS
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(model_a.parameters(), start))
    assert moved > 1e-3, moved  # the comparison is not vacuous: |Δθ| ~ lr per step along ±1 directions


def test_the_step_does_not_depend_on_the_losses_scale():
    """(ℓ_j − ℓ₀)/σ is invariant under L → aL + b: the normalised step (the paper's normalised-SGD reading)."""
    runs = []
    for scale, shift in ((1.0, 0.0), (1000.0, 5.0)):
        problem = LeastSquares(dtype=torch.float64)
        with torch.no_grad():
            problem.weight.normal_(generator=torch.Generator().manual_seed(1))
        opt = build_optimizer(compose_cfg("optimizer=fzoo", "optimizer.lr=0.05").optimizer,
                              list(problem.named_parameters()), 5, 0)
        for _ in range(5):
            opt.step(lambda: scale * problem.loss() + shift)
        runs.append(problem)
    torch.testing.assert_close(runs[1].weight, runs[0].weight, rtol=0, atol=1e-10)
    torch.testing.assert_close(runs[1].bias, runs[0].bias, rtol=0, atol=1e-10)


def test_coefficients_are_the_codes_population_std_rule():
    base, losses = 1.0, [1.5, 0.5, 1.25, 0.75]
    sigma = float(torch.tensor(losses, dtype=torch.float64).std(unbiased=False))
    assert FZOO.coefficients(base, losses) == pytest.approx([(v - base) / (4 * sigma) for v in losses], rel=1e-15)
    assert FZOO.coefficients(base, [2.0, 2.0, 2.0]) == [0.0, 0.0, 0.0]  # σ = 0: no step (the code divides by zero)
    assert all(math.isnan(c) for c in FZOO.coefficients(base, [1.0, math.inf]))  # a diverged loss stays visible


def test_one_direction_is_refused():
    with pytest.raises(ConfigError, match=r"num_directions=1 is not allowed: expected an integer >= 2"):
        FZOO(num_directions=1)


def test_a_tiny_fzoo_cell_runs_and_resumes_to_identical_parameters(native, tmp_path, monkeypatch):
    """The normal runner: a tiny cell completes at N + 1 forward passes a step with no optimizer state; an interrupted
    one resumes from the loss log (replay: the estimate follows from the seeds and the losses) to the same weights."""
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=fzoo", "optimizer.lr=1e-3",
                      "optimizer.estimator.num_directions=4", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")
    assert whole["forward_passes_per_step"] == 5 and whole["forward_passes"] == 5 * 6
    assert whole["optimizer_state_bytes"] == 0
    replay_resumes_identically(cfg, tmp_path, monkeypatch, whole)


def test_a_bf16_cell_trains_without_nan(native, tmp_path):
    """fzoo.sh runs fp16 weights (--load_float16); the YAML allows fp32, bf16 and fp16: a bf16 cell on the tiny model
    completes with finite losses."""
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=fzoo", "optimizer.lr=1e-2", "dtype=bf16",
                      "optimizer.estimator.num_directions=4")
    out = run_cell(cfg, tmp_path / "bf16")
    assert out["status"] == "completed", out.get("error")
    assert out["dtype"] == "bf16" and math.isfinite(out["final_loss"])
