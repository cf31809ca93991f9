"""LOZO and LOZO-M (Chen et al. 2024) against their authors' code.

``LozoTrainer`` transcribes github.com/optsuite/LOZO (commit 5d1ade5): large_models/LOZOtrainer.py, class
OurTrainer, ``lowrank_zo_perturb_parameters``, ``lowrank_zo_step``, ``lowrank_zo_update`` and
``random_gaussian_matrix`` (LOZO, the OPT runs), with ``lowrank_zo_step``'s state as medium_models/src/
LOZOtrainer.py has it (``v_old``, ``exp_avg_m``) and that file's ``lowrank_zo_update_momentum`` (LOZO-M); HF
Trainer stripped away, one update per step as in both training loops. The code draws U, V and z from torch's
global generator; ``FedLozoTrainer`` feeds the transcription zobench's U, V and z instead (the same random
directions, each used where the code uses it), and zobench must then land on the same weights to 1e-12 in
float64. The code's own stream moves the update along another U than the probes' on the steps that redraw V
(``test_the_codes_update_moves_along_another_u_on_the_steps_that_redraw_v``); zobench, fed as the paper states,
does not.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import SMALL, compose_cfg
from tests.reference.test_mezo_stream import global_rngs, tiny_pair
from tests.test_optimizers import LeastSquares
from tests.test_resume import RESUMABLE, replay_resumes_identically
from tests.reference.common import max_gap, zobench_run
from zobench.errors import ConfigError
from zobench.optim import build_optimizer
from zobench.optim.directions import direction, mix
from zobench.optim.lozo import LowRankMomentum, LowRankSPSA, LowRankZO
from zobench.run import run_cell


class LozoTrainer:
    """LOZO large_models/LOZOtrainer.py OurTrainer.lowrank_zo_perturb_parameters / lowrank_zo_step /
    lowrank_zo_update and medium_models/src/LOZOtrainer.py OurTrainer.lowrank_zo_update_momentum, transcribed.

    ``zo_forward`` is the closure ``loss_fn``; ``_get_learning_rate()`` the constant lr. The code's random calls
    are four hooks whose bodies are the code's own: ``manual_seed``, ``randn_v`` (the inline ``torch.randn`` of
    V), ``randn_u`` (its ``random_gaussian_matrix`` call) and ``normal_z`` (the inline ``torch.normal``)."""

    def __init__(self, model, lr, zo_eps, rank_r, step_interval, beta1=0.9, weight_decay=0.0):
        self.model, self.lr = model, lr
        self.args = SimpleNamespace(zo_eps=zo_eps, rank_r=rank_r, step_interval=step_interval, beta1=beta1,
                                    weight_decay=weight_decay, gradient_accumulation_steps=1)

    def _get_learning_rate(self):
        return self.lr

    def zo_forward(self, loss_fn):
        return loss_fn().detach()

    def manual_seed(self, random_seed):
        torch.manual_seed(random_seed)

    def randn_v(self, name, param):
        return torch.randn(param.data.size(1), self.args.rank_r, device=param.data.device, dtype=param.data.dtype)

    def randn_u(self, name, param):
        return self.random_gaussian_matrix(m=param.data.size(0), n=self.args.rank_r, device=param.data.device,
                                           dtype=param.data.dtype)

    def normal_z(self, name, param):
        return torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)

    def random_gaussian_matrix(self, m, n, device, dtype, random_seed=None):
        if random_seed is not None:
            torch.manual_seed(random_seed)
        random_matrix = torch.randn(m, n, device=device, dtype=dtype)
        return random_matrix

    def lowrank_zo_perturb_parameters(self, random_seed=None, scaling_factor=1):
        args = self.args
        step = self.step
        self.manual_seed(random_seed if random_seed is not None else self.zo_random_seed)
        for name, param in self.named_parameters_to_optim:
            if param.data.ndim >= 2:
                if step % args.step_interval == 0:
                    v = self.randn_v(name, param)
                    self.v[name] = v
                else:
                    v = self.v[name]
                u = self.randn_u(name, param)
                param.data = param.data + scaling_factor * (u @ v.t()) * self.args.zo_eps
            else:
                z = self.normal_z(name, param)
                param.data = param.data + scaling_factor * z * self.args.zo_eps

    def lowrank_zo_step(self, model, loss_fn):
        args = self.args
        if hasattr(self, "step"):
            self.step += 1
        else:
            self.step = 0
            self.v = {}
            self.v_old = {}
            self.exp_avg_m = {}
            self.exp_avg_sq = {}
        self.named_parameters_to_optim = []
        for name, param in model.named_parameters():
            if param.requires_grad:
                self.named_parameters_to_optim.append((name, param))
        self.zo_random_seed = np.random.randint(1000000000)
        self.lowrank_zo_perturb_parameters(scaling_factor=1)
        loss1 = self.zo_forward(loss_fn)
        self.lowrank_zo_perturb_parameters(scaling_factor=-2)
        loss2 = self.zo_forward(loss_fn)
        self.projected_grad = ((loss1 - loss2) / (2 * self.args.zo_eps)).item()
        assert args.gradient_accumulation_steps == 1
        self.lowrank_zo_perturb_parameters(scaling_factor=1)
        return loss1

    def lowrank_zo_update(self):
        args = self.args
        self.manual_seed(self.zo_random_seed)
        for name, param in self.named_parameters_to_optim:
            if param.data.ndim >= 2:
                v = self.v[name]
                u = self.randn_u(name, param)
                if "bias" not in name and "layer_norm" not in name and "layernorm" not in name:
                    param.data = param.data - self._get_learning_rate() * (self.projected_grad * (u @ v.t()) + args.weight_decay * param.data)
                else:
                    param.data = param.data - self._get_learning_rate() * (self.projected_grad * (u @ v.t()))
            else:
                z = self.normal_z(name, param)
                if "bias" not in name and "layer_norm" not in name and "layernorm" not in name:
                    param.data = param.data - self._get_learning_rate() * (self.projected_grad * z + args.weight_decay * param.data)
                else:
                    param.data = param.data - self._get_learning_rate() * (self.projected_grad * z)

    def lowrank_zo_update_momentum(self):
        args = self.args
        self.manual_seed(self.zo_random_seed)
        for name, param in self.named_parameters_to_optim:
            if param.data.ndim >= 2:
                v = self.v[name]
                u = self.randn_u(name, param)
                if self.step % args.step_interval == 0:
                    if name in self.v_old:
                        v_old = self.v_old[name]
                        n = v_old.shape[0]
                        self.exp_avg_m[name] = args.beta1 * self.exp_avg_m[name] @ v_old.t() @ v / n + (1 - args.beta1) * self.projected_grad * u
                    else:
                        self.exp_avg_m[name] = self.projected_grad * u
                elif self.step % args.step_interval == args.step_interval - 1:
                    self.v_old[name] = v
                    self.exp_avg_m[name] = args.beta1 * self.exp_avg_m[name] + (1 - args.beta1) * self.projected_grad * u
                else:
                    self.exp_avg_m[name] = args.beta1 * self.exp_avg_m[name] + (1 - args.beta1) * self.projected_grad * u
                if "bias" not in name and "layer_norm" not in name and "layernorm" not in name:
                    param.data = param.data - self._get_learning_rate() * (self.exp_avg_m[name] @ v.t() + args.weight_decay * param.data)
                else:
                    param.data = param.data - self._get_learning_rate() * (self.exp_avg_m[name] @ v.t())
            else:
                z = self.normal_z(name, param)
                if self.step == 0:
                    self.exp_avg_m[name] = self.projected_grad * z
                else:
                    self.exp_avg_m[name] = args.beta1 * self.exp_avg_m[name] + (1 - args.beta1) * self.projected_grad * z
                if "bias" not in name and "layer_norm" not in name and "layernorm" not in name:
                    param.data = param.data - self._get_learning_rate() * (self.exp_avg_m[name] + args.weight_decay * param.data)
                else:
                    param.data = param.data - self._get_learning_rate() * (self.exp_avg_m[name])

    def train_step(self, loss_fn, momentum: bool):
        """One iteration of the training loops (large_models ``_inner_training_loop``, medium_models ``train``)."""
        loss = self.lowrank_zo_step(self.model, loss_fn)
        self.lowrank_zo_update_momentum() if momentum else self.lowrank_zo_update()
        return loss


class FedLozoTrainer(LozoTrainer):
    """The transcription fed zobench's directions: at step t, U_i = U(mix(mix(seed, t), 0), i), V_i = V(i, ⌊t/ν⌋),
    z_i = z(mix(mix(seed, t), 0), i) (zobench.optim.lozo.LowRankSPSA), wherever the code draws them."""

    def __init__(self, model, lr, zo_eps, rank_r, step_interval, seed, **kwargs):
        super().__init__(model, lr, zo_eps, rank_r, step_interval, **kwargs)
        self.lowrank, self.seed = LowRankSPSA(rank=rank_r, period=step_interval), seed
        self.index = {n: i for i, n in enumerate(n for n, p in model.named_parameters() if p.requires_grad)}

    def manual_seed(self, random_seed):
        self.lowrank.begin_step(self.seed, self.step)

    def randn_v(self, name, param):
        return self.lowrank.v(self.index[name], param, self.step // self.args.step_interval)

    def randn_u(self, name, param):
        return self.lowrank.u(mix(mix(self.seed, self.step), 0), self.index[name], param)

    def normal_z(self, name, param):
        return direction(mix(mix(self.seed, self.step), 0), self.index[name], param)


def reference_run(trainer, loss_fn, seed, steps, momentum):
    with global_rngs(), torch.no_grad():
        np.random.seed(seed)  # run_lozo.py set_seed(args.seed)
        for _ in range(steps):
            trainer.train_step(loss_fn, momentum)
    return trainer


STEPS, LR, EPS, RANK, PERIOD, WD = 7, 1e-3, 1e-3, 2, 3, 0.1  # V drawn at t = 0, 3, 6


@pytest.mark.parametrize("name, momentum", [("lozo", False), ("lozo_m", True)])
def test_lozo_follows_the_authors_update_fed_the_same_directions(name, momentum, monkeypatch):
    """large_models/LOZOtrainer.py lowrank_zo_step + lowrank_zo_update (LOZO) and medium_models/src/LOZOtrainer.py
    lowrank_zo_update_momentum (LOZO-M), 7 steps of rank 2 with ν = 3 (V redrawn three times, LOZO-M's projection
    twice) and weight decay (the code's and zobench's no-decay names agree on OPT): the same weights to 1e-12.
    Chunks of 100 elements, so that U of the embeddings (265 × 2) is drawn in several."""
    from zobench.optim import directions

    monkeypatch.setattr(directions, "CHUNK", 100)
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    model_c, _, _ = tiny_pair(torch.float64)
    start = [p.detach().clone() for p in model_a.parameters()]
    ref = FedLozoTrainer(model_a, LR, EPS, RANK, PERIOD, seed=5, beta1=0.9, weight_decay=WD)
    reference_run(ref, loss_of(model_a), 5, STEPS, momentum)
    overrides = [f"optimizer.lr={LR}", f"optimizer.eps={EPS}", f"optimizer.estimator.rank={RANK}",
                 f"optimizer.estimator.period={PERIOD}", f"optimizer.weight_decay={WD}"]
    opt, stats = zobench_run(name, model_b, loss_of(model_b), 5, STEPS, *overrides)
    assert isinstance(opt, LowRankZO) and [s["forward_passes"] for s in stats] == [2] * STEPS
    assert max_gap(model_a, model_b) < 1e-12, max_gap(model_a, model_b)
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(model_a.parameters(), start))
    assert moved > 1e-3, moved  # the comparison is not vacuous
    zobench_run("lozo" if momentum else "lozo_m", model_c, loss_of(model_c), 5, STEPS, *overrides)
    assert max_gap(model_b, model_c) > 1e-4  # ... and LOZO-M's momentum is not LOZO's step


def test_the_codes_update_moves_along_another_u_on_the_steps_that_redraw_v():
    """The code's own stream (torch.manual_seed(s_t), then randn in order): on a step that redraws V each probe
    sweep draws V before U, but lowrank_zo_update reseeds and draws U alone, so the update's U (and every later
    draw, the vectors' z included) is not the probed one; on the other steps it is."""

    class Recording(LozoTrainer):
        phase = "probe"

        def lowrank_zo_update(self):
            self.phase = "update"
            super().lowrank_zo_update()
            self.phase = "probe"

        def randn_u(self, name, param):
            u = super().randn_u(name, param)
            self.seen.setdefault((self.step, name, self.phase), []).append(u)
            return u

        def normal_z(self, name, param):
            z = super().normal_z(name, param)
            self.seen.setdefault((self.step, name, self.phase), []).append(z)
            return z

    model, _, loss_of = tiny_pair(torch.float64)
    ref = Recording(model, LR, EPS, RANK, 2)
    ref.seen = {}
    reference_run(ref, loss_of(model), 0, 2, momentum=False)  # step 0 draws V, step 1 keeps it
    for name in ("model.decoder.layers.0.fc1.weight", "model.decoder.layers.0.fc1.bias"):
        for step, same in ((0, False), (1, True)):
            probes, (update,) = ref.seen[(step, name, "probe")], ref.seen[(step, name, "update")]
            assert len(probes) == 3 and all(torch.equal(p, probes[0]) for p in probes)  # +ε, −2ε, +ε: one direction
            assert torch.equal(update, probes[0]) == same, (name, step)


def test_lozo_averages_q_directions_that_share_v():
    """q = 2 on a linear loss (exact differences): θ ← θ − lr · (1/q) Σ_j ⟨A, U_j Vᵀ⟩ U_j Vᵀ, vectors with their z_j."""
    gen = torch.Generator().manual_seed(0)
    w, b, a_w, a_b = (torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((6, 5), (5,), (6, 5), (5,)))
    params = [("weight", w.clone()), ("bias", b.clone())]
    opt = build_optimizer(compose_cfg("optimizer=lozo", "optimizer.lr=0.1", "optimizer.estimator.num_directions=2",
                                      "optimizer.estimator.rank=3").optimizer, params, 1, 7)
    stats = opt.step(lambda: (a_w * params[0][1]).sum() + (a_b * params[1][1]).sum())
    lowrank = opt.estimator
    v = lowrank.v(0, w, 0)
    want_w, want_b = w.clone(), b.clone()
    for s in opt.seed_log[0][1]:
        zw, zb = lowrank.u(s, 0, w) @ v.T, direction(s, 1, b)
        g = float((a_w * zw).sum() + (a_b * zb).sum())
        want_w -= 0.1 * g / 2 * zw
        want_b -= 0.1 * g / 2 * zb
    torch.testing.assert_close(params[0][1], want_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(params[1][1], want_b, rtol=0, atol=1e-12)
    assert stats["forward_passes"] == 4


def test_v_is_redrawn_every_period_and_u_every_step():
    lowrank, p = LowRankSPSA(rank=2, period=3), torch.zeros(4, 6)
    lowrank.begin_step(0, 0)
    vs = [lowrank.v(0, p, t // 3) for t in range(7)]
    assert all(torch.equal(vs[0], vs[t]) for t in (1, 2)) and not torch.equal(vs[2], vs[3]) and not torch.equal(vs[5], vs[6])
    assert vs[0].shape == (6, 2) and lowrank.u(mix(1, 0), 0, p).shape == (4, 2)
    assert not torch.equal(lowrank.u(mix(1, 0), 0, p), lowrank.u(mix(2, 0), 0, p))


@pytest.mark.parametrize("dtype, bytes_per", [(torch.float32, 4), (torch.bfloat16, 4), (torch.float64, 8)])
def test_state_is_lozo_m_momentum_in_the_space_of_u(dtype, bytes_per):
    """LOZO: no state (V regenerated); LOZO-M: N (m × r) per matrix + the vectors' momentum, fp32 in half precision."""
    named = [("w", torch.zeros(7, 5, dtype=dtype)), ("conv", torch.zeros(3, 2, 4, dtype=dtype)), ("b", torch.zeros(5, dtype=dtype))]
    assert build_optimizer(compose_cfg("optimizer=lozo").optimizer, named, 1, 0).state_bytes() == 0
    opt = build_optimizer(compose_cfg("optimizer=lozo_m", "optimizer.estimator.rank=2").optimizer, named, 1, 0)
    assert opt.state_bytes() == (7 * 2 + 3 * 2 + 5) * bytes_per


def test_zero_lr_restores_and_conservative_never_goes_uphill():
    problem = LeastSquares(dtype=torch.float64)
    with torch.no_grad():
        for p in problem.parameters():
            p.normal_(generator=torch.Generator().manual_seed(1))
    before = [p.detach().clone() for p in problem.parameters()]
    opt = build_optimizer(compose_cfg("optimizer=lozo_m", "optimizer.lr=1e-9", "optimizer.estimator.period=2").optimizer,
                          list(problem.named_parameters()), 5, 0)
    opt.lr = 0.0
    for _ in range(5):
        opt.step(problem.loss)
    for p, b in zip(problem.parameters(), before):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-12)
    opt = build_optimizer(compose_cfg("optimizer=lozo", "optimizer.lr=0.05", "optimizer.conservative=true",
                                      "optimizer.estimator.period=2").optimizer, list(problem.named_parameters()), 30, 0)
    for _ in range(30):
        start = float(problem.loss().detach())
        stats = opt.step(problem.loss)
        assert stats["forward_passes"] == 5 and float(problem.loss().detach()) <= start * (1 + 1e-12)


def test_momentum_travels_in_the_state_dict():
    """A state checkpoint (train.py uses replay for LOZO-M; state is the fallback) carries N and the step count: resumed
    from it across an epoch boundary of V, a copy takes the same steps as the uninterrupted optimizer."""
    a, b = LeastSquares(dtype=torch.float64), LeastSquares(dtype=torch.float64)
    cfg = compose_cfg("optimizer=lozo_m", "optimizer.lr=0.003", "optimizer.estimator.period=2").optimizer
    opt_a = build_optimizer(cfg, list(a.named_parameters()), 6, 0)
    for _ in range(3):
        opt_a.step(a.loss)
    state = copy.deepcopy(opt_a.state_dict())  # as torch.save would write it
    with torch.no_grad():
        for pb, pa in zip(b.parameters(), a.parameters()):
            pb.copy_(pa)
    opt_b = build_optimizer(cfg, list(b.named_parameters()), 6, 0)
    opt_b.load_state_dict(state)
    for _ in range(3):
        opt_a.step(a.loss), opt_b.step(b.loss)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_lowrank_pieces_refuse_what_they_cannot_run():
    with pytest.raises(ConfigError, match="optimizer.estimator.rank=0 is not allowed"):
        LowRankSPSA(rank=0)
    with pytest.raises(ConfigError, match=r"beta=1.0 is not allowed: expected a number in \[0, 1\)"):
        LowRankMomentum(beta=1.0)
    named = [("w", torch.zeros(3, 4))]
    with pytest.raises(ConfigError, match="LowRankSPSA"):  # its momentum lives in U's space: lozo_m only
        build_optimizer(compose_cfg("optimizer=zo_sgd_mmt", "optimizer.transforms.0._target_=zobench.optim.lozo.LowRankMomentum").optimizer,
                        named, 1, 0)
    with pytest.raises(ConfigError, match="LowRankMomentum"):  # Adam's per-element state cannot follow U Vᵀ
        build_optimizer(compose_cfg("optimizer=lozo", "optimizer.transforms=[{_target_: zobench.optim.transforms.Adam}]").optimizer,
                        named, 1, 0)
    with pytest.raises(ConfigError, match="conservative"):
        build_optimizer(compose_cfg("optimizer=lozo_m", "optimizer.conservative=true").optimizer, named, 1, 0)


@pytest.mark.parametrize("optimizer", ["lozo", "lozo_m"])
def test_a_tiny_lozo_cell_runs_and_resumes_to_identical_parameters(optimizer, native, tmp_path, monkeypatch):
    """The normal runner: a tiny cell completes at 2 forward passes a step; an interrupted one resumes from the loss
    log (replay: V, U and LOZO-M's momentum follow from the seeds and the losses) to the same weights."""
    cfg = compose_cfg(*SMALL, f"data.dir={native}", f"optimizer={optimizer}", "optimizer.lr=1e-3",
                      "optimizer.estimator.period=2", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")
    assert whole["forward_passes_per_step"] == 2 and whole["forward_passes"] == 2 * 6
    assert (whole["optimizer_state_bytes"] == 0) == (optimizer == "lozo")
    replay_resumes_identically(cfg, tmp_path, monkeypatch, whole)
