"""MeZO-SVRG (Gautam et al. 2024) against its authors' code and its paper's update.

``GLUETransformerSVRG`` transcribes github.com/amazon-science/mezo_svrg (commit 002e156) models/llm_module.py, class
GLUETransformer: ``configure_params`` (full_parameter), ``zo_forward_memory_eff``, ``efficient_perturb_parameters``
(Gaussian z), ``central_difference_grad_est``, ``central_difference_grad_est_me``, ``SPSA_estimator``,
``SPSA_estimator_me`` and ``training_step_MeZO_SVRG``, driven as finetune_llm.py ``finetune_ZO_SVRG`` drives it
(random_permute: at iterations i % q == 0 the minibatch is replaced by the full batch), with Lightning, logging, timing
and the learning-rate annealing stripped (--anneal 1 leaves it off). Hooks name the code's random calls, whose bodies
are the code's own: ``randint`` (``np.random.randint(1000000000, size=1)``), ``manual_seed``, ``normal``
(``torch.normal(mean=0, std=z_std)``), and its ``.float()`` on each micro-batch loss (``to_float``). The fed subclasses
give it zobench's seeds and z, and the identity for ``to_float`` (float64 throughout).

The code's anchor is the live weights (``parameters.copy()`` copies the list of Parameter objects): zobench's
``estimator.anchor=live`` must follow the transcription to 1e-12. The paper's update, v = ∇̂f_B(θ_t; z₁) − ∇̂f_B(θ̄; z₂)
+ ḡ with θ̄ the anchor (Gautam et al. 2024, §3; the paper's algorithm box could not be read here, its equations are
as the code's ZO-SVRG, ``training_step_ZO_SVRG``, writes them: v = f_rand_curr − f_rand_past + full_grad), is
``PaperSVRG``: the code's own ``central_difference_grad_est`` at θ_t and at a deep copy of the model taken at each
anchor step, no clipping (MeZO-SVRG has none); zobench's default ``anchor=copy`` must follow it to 1e-12.
"""
from __future__ import annotations

import copy
import inspect
import logging
import math

import numpy as np
import pytest
import torch

import zobench.train
from tests.conftest import SMALL, compose_cfg
from tests.reference.test_mezo_stream import global_rngs
from tests.test_optimizers import LeastSquares
from tests.test_resume import RESUMABLE, replay_resumes_identically
from tests.tiny import load_tiny
from tests.reference.common import max_gap
from zobench.errors import ConfigError
from zobench.optim import build_optimizer
from zobench.optim.directions import direction, mix
from zobench.optim.mezo_svrg import MeZOSVRG, SVRGZO, full_batch_loss
from zobench.run import run_cell


class GLUETransformerSVRG:
    """llm_module.py GLUETransformer's MeZO-SVRG path, transcribed; ``loss_of(model, rows)`` is ``model(**inputs)[0]``."""

    def __init__(self, model, loss_of, zero_order_eps, q, learning_rate, learning_rate_aux, batchsize_limit, z_std=1.0):
        self.model, self.loss_of = model, loss_of
        self.zero_order_eps, self.q, self.z_std = zero_order_eps, q, z_std
        self.learning_rate, self.learning_rate_aux, self.batchsize_limit = learning_rate, learning_rate_aux, batchsize_limit
        self.params = [(n, p) for n, p in model.named_parameters()]  # configure_params, full_parameter=True

    def randint(self):
        return np.random.randint(1000000000, size=1)

    def manual_seed(self, random_seed):
        torch.manual_seed(int(random_seed[0]) if isinstance(random_seed, np.ndarray) else random_seed)

    def normal(self, name, param, std):
        return torch.normal(mean=0, std=std, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)

    def to_float(self, loss):
        return loss.float()

    def zo_forward_memory_eff(self, model, inputs):
        model.eval()
        batch_size = len(inputs)
        iterations = math.ceil(batch_size / self.batchsize_limit)
        loss = 0
        for i in range(iterations):
            input_batch = inputs[i * self.batchsize_limit:min((i + 1) * self.batchsize_limit, batch_size)]
            with torch.no_grad():
                outputs = self.loss_of(model, input_batch)
            loss += self.to_float(outputs)
        return loss / iterations

    def efficient_perturb_parameters(self, parameters, random_seed, scaling_factor=1):
        self.manual_seed(random_seed)
        e = self.zero_order_eps
        for name, param in parameters:
            z = self.normal(name, param, self.z_std)
            param.data = param.data + scaling_factor * z * e

    def central_difference_grad_est(self, model, parameters, batch):
        random_seed = self.randint()
        with torch.no_grad():
            self.efficient_perturb_parameters(parameters, random_seed)
            loss1 = self.zo_forward_memory_eff(model, batch)
            self.efficient_perturb_parameters(parameters, random_seed, scaling_factor=-2)
            loss2 = self.zo_forward_memory_eff(model, batch)
        proj_grad = (loss1 - loss2) / (2 * self.zero_order_eps)
        model_dtype = next(self.model.parameters()).dtype
        proj_grad = proj_grad.to(model_dtype)
        estimator = {}
        self.efficient_perturb_parameters(parameters, random_seed)
        self.manual_seed(random_seed)
        for name, param in parameters:
            z = self.normal(name, param, self.z_std)
            estimator[name] = proj_grad * z
        return estimator

    def central_difference_grad_est_me(self, model, parameters, batch, scale):
        random_seed = self.randint()
        with torch.no_grad():
            self.efficient_perturb_parameters(parameters, random_seed)
            loss1 = self.zo_forward_memory_eff(model, batch)
            self.efficient_perturb_parameters(parameters, random_seed, scaling_factor=-2)
            loss2 = self.zo_forward_memory_eff(model, batch)
        proj_grad = (loss1 - loss2) / (2 * self.zero_order_eps)
        self.efficient_perturb_parameters(parameters, random_seed)
        self.manual_seed(random_seed)
        for name, param in parameters:
            z = self.normal(name, param, self.z_std)
            param.data = param.data + scale * self.learning_rate * proj_grad * z
        return parameters

    def SPSA_estimator(self, model, parameters, batch):
        return self.central_difference_grad_est(model, parameters, batch)

    def SPSA_estimator_me(self, model, parameters, batch, scale=1):
        return self.central_difference_grad_est_me(model, parameters, batch, scale)

    def training_step_MeZO_SVRG(self, model, batch, epoch, batch_idx, total_batches):
        curr_iteration = epoch * total_batches + batch_idx
        parameters = self.params
        if curr_iteration % self.q == 0:
            self.full_grad = self.SPSA_estimator(model, parameters, batch)
            self.parameters = parameters.copy()
            with torch.no_grad():
                for name, param in parameters:
                    param.data = param.data - self.learning_rate_aux * self.full_grad[name]
        else:
            parameters = self.SPSA_estimator_me(model, parameters, batch, scale=-1)  # in-place operation
            parameters = self.SPSA_estimator_me(model, self.parameters, batch)  # in-place operation
            with torch.no_grad():
                for name, param in parameters:
                    param.data = param.data - self.learning_rate * self.full_grad[name]

    def train_step(self, model, batch, i):
        self.training_step_MeZO_SVRG(model, batch, 0, i, 10 ** 9)


class Fed:
    """zobench's seeds and z: estimate j of step t is z(mix(mix(seed, t), j)) (zobench.optim.mezo_svrg); float64."""

    def feed(self, model, seed, shared=False):
        self.index = {n: i for i, (n, _) in enumerate(model.named_parameters())}
        self.seed, self.t, self.j, self.shared = seed, -1, 0, shared

    def train_step(self, model, batch, i):
        self.t, self.j = self.t + 1, 0
        super().train_step(model, batch, i)

    def randint(self):
        j = 0 if self.shared else self.j
        self.j += 1
        return mix(mix(self.seed, self.t), j)

    def manual_seed(self, random_seed):
        self.current = random_seed

    def normal(self, name, param, std):
        return std * direction(self.current, self.index[name], param)

    def to_float(self, loss):
        return loss


class FedCode(Fed, GLUETransformerSVRG):
    pass


class PaperSVRG(Fed, GLUETransformerSVRG):
    """The paper's update with the code's own estimator: θ̄ a deep copy of the model at each anchor step."""

    def training_step_MeZO_SVRG(self, model, batch, epoch, batch_idx, total_batches):
        curr_iteration = epoch * total_batches + batch_idx
        parameters = self.params
        if curr_iteration % self.q == 0:
            self.full_grad = self.SPSA_estimator(model, parameters, batch)
            self.anchor_model = copy.deepcopy(model)
            self.parameters = list(self.anchor_model.named_parameters())
            with torch.no_grad():
                for name, param in parameters:
                    param.data = param.data - self.learning_rate_aux * self.full_grad[name]
        else:
            f_rand_curr = self.SPSA_estimator(model, parameters, batch)
            f_rand_past = self.SPSA_estimator(self.anchor_model, self.parameters, batch)
            with torch.no_grad():
                for name, param in parameters:
                    v = f_rand_curr[name] - f_rand_past[name] + self.full_grad[name]
                    param.data = param.data - self.learning_rate * v


ROWS, LIMIT, Q, STEPS, LR, ANCHOR_LR, EPS = 12, 4, 3, 7, 1e-3, 2e-3, 1e-3
BATCHES = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [2, 5, 7, 11], [1, 3, 8, 10], [0, 6, 9, 4], [3, 2, 1, 0]]


def tiny_models(n=2):
    models = [load_tiny("tiny-opt")[0].to(torch.float64) for _ in range(n)]
    ids = torch.randint(4, 200, (ROWS, 10), generator=torch.Generator().manual_seed(0))

    def loss_of(model, rows):  # next-token cross-entropy of these rows (all of one length: a mean over rows)
        logits = model(input_ids=ids[rows]).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[rows][:, 1:].reshape(-1))

    return models, loss_of


def reference_run(trainer, model):
    with global_rngs(), torch.no_grad():
        for i in range(STEPS):
            batch = list(range(ROWS)) if i % Q == 0 else BATCHES[i]  # finetune_ZO_SVRG: the full batch every q steps
            trainer.train_step(model, batch, i)


def zobench_run(model, loss_of, seed, *overrides, steps=STEPS):
    cfg = compose_cfg("optimizer=mezo_svrg", f"optimizer.lr={LR}", f"optimizer.eps={EPS}",
                      f"optimizer.estimator.anchor_lr={ANCHOR_LR}", f"optimizer.estimator.period={Q}", *overrides)
    opt = build_optimizer(cfg.optimizer, list(model.named_parameters()), steps, seed)
    stats = []
    with torch.no_grad():
        for t in range(steps):
            full = full_batch_loss(lambda rows: loss_of(model, rows), list(range(ROWS)), LIMIT)
            stats.append(opt.step(lambda rows=BATCHES[t]: loss_of(model, rows), full_batch=full))
    return opt, stats


def test_live_anchor_follows_the_authors_code_fed_the_same_directions(monkeypatch):
    """llm_module.py training_step_MeZO_SVRG, 7 steps with q = 3 (anchors at 0, 3, 6) on a tiny OPT in float64, chunks
    of 1000: zobench with estimator.anchor=live gives the same weights to 1e-12; 2·12/4 = 6 passes per anchor step,
    4 per minibatch step; no state (the code's θ̄ is the live weights; its ḡ is a dense copy, zobench's a seed)."""
    from zobench.optim import directions

    monkeypatch.setattr(directions, "CHUNK", 1000)
    (model_a, model_b), loss_of = tiny_models()
    start = [p.detach().clone() for p in model_a.parameters()]
    ref = FedCode(model_a, loss_of, EPS, Q, LR, ANCHOR_LR, LIMIT)
    ref.feed(model_a, seed=6)
    reference_run(ref, model_a)
    opt, stats = zobench_run(model_b, loss_of, 6, "optimizer.estimator.anchor=live")
    assert isinstance(opt, SVRGZO) and opt.state_bytes() == 0
    assert max_gap(model_a, model_b) < 1e-12, max_gap(model_a, model_b)
    assert [s["forward_passes"] for s in stats] == [6, 4, 4, 6, 4, 4, 6]
    assert [s["lr"] for s in stats] == [ANCHOR_LR, LR, LR] * 2 + [ANCHOR_LR]
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(model_a.parameters(), start))
    assert moved > 1e-3, moved


def test_the_codes_anchor_is_the_live_weights():
    """After an anchor step the code's ``self.parameters`` holds the very Parameter objects it keeps updating."""
    (model,), loss_of = tiny_models(1)
    ref = GLUETransformerSVRG(model, loss_of, EPS, Q, LR, ANCHOR_LR, LIMIT)
    with global_rngs(), torch.no_grad():
        np.random.seed(0)
        ref.train_step(model, list(range(ROWS)), 0)
    assert all(a is b for (_, a), (_, b) in zip(ref.parameters, model.named_parameters()))


@pytest.mark.parametrize("shared", [False, True])
def test_copied_anchor_follows_the_papers_update_fed_the_same_directions(shared, monkeypatch):
    """The paper's v = ∇̂f_B(θ_t; z₁) − ∇̂f_B(θ̄; z₂) + ḡ with θ̄ a real copy (``PaperSVRG``; shared: z₂ = z₁) against
    zobench's default anchor=copy (θ̄ swapped in place): the same weights and the same anchor to 1e-12; the state is one
    copy of the trainable parameters; the code's live anchor takes other steps."""
    from zobench.optim import directions

    monkeypatch.setattr(directions, "CHUNK", 1000)
    (model_a, model_b, model_c), loss_of = tiny_models(3)
    ref = PaperSVRG(model_a, loss_of, EPS, Q, LR, ANCHOR_LR, LIMIT)
    ref.feed(model_a, seed=6, shared=shared)
    reference_run(ref, model_a)
    opt, stats = zobench_run(model_b, loss_of, 6, f"optimizer.estimator.shared_direction={str(shared).lower()}")
    assert max_gap(model_a, model_b) < 1e-12, max_gap(model_a, model_b)
    for a, (_, b) in zip(opt.estimator.anchor, ref.anchor_model.named_parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-12)
    assert opt.state_bytes() == sum(p.numel() * 8 for p in model_b.parameters())
    assert [s["forward_passes"] for s in stats] == [6, 4, 4, 6, 4, 4, 6]
    if not shared:
        zobench_run(model_c, loss_of, 6, "optimizer.estimator.anchor=live")
        assert max_gap(model_b, model_c) > 1e-6


def test_full_batch_closure_covers_the_train_set_in_step_sized_micro_batches():
    seen = []
    closure = full_batch_loss(lambda rows: seen.append(list(rows)) or torch.tensor(float(sum(rows))), list(range(10)), 4)
    assert [len(p) for p in closure.parts] == [4, 3, 3] and closure.weights == pytest.approx([0.4, 0.3, 0.3])
    assert closure.batch_equivalents == 2.5 and full_batch_loss(len, list(range(8)), 4).batch_equivalents == 2
    from zobench.optim.closure import batch_loss

    assert batch_loss(closure) == pytest.approx(0.4 * 6 + 0.3 * 15 + 0.3 * 24)
    assert sum(seen, []) == list(range(10))


def test_without_a_full_batch_the_anchor_uses_the_steps_batch_and_says_so(caplog):
    problem = LeastSquares(dtype=torch.float64)
    opt = build_optimizer(compose_cfg("optimizer=mezo_svrg", "optimizer.lr=0.01").optimizer,
                          list(problem.named_parameters()), 4, 0)
    with caplog.at_level(logging.WARNING, logger="zobench.optim.mezo_svrg"):
        stats = [opt.step(problem.loss) for _ in range(4)]
    assert [s["forward_passes"] for s in stats] == [2, 4, 2, 4]
    assert sum("no full-batch closure" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("dtype, size", [(torch.float32, 4), (torch.bfloat16, 2), (torch.float64, 8)])
def test_state_is_the_anchor_in_the_weights_dtype(dtype, size):
    named = [("w", torch.zeros(3, 5, dtype=dtype)), ("b", torch.zeros(5, dtype=dtype))]
    opt = build_optimizer(compose_cfg("optimizer=mezo_svrg").optimizer, named, 1, 0)
    assert opt.state_bytes() == 20 * size and {a.dtype for a in opt.estimator.anchor} == {dtype}
    live = build_optimizer(compose_cfg("optimizer=mezo_svrg", "optimizer.estimator.anchor=live").optimizer, named, 1, 0)
    assert live.state_bytes() == 0


def test_anchor_travels_in_the_state_dict():
    """A state checkpoint (train.py uses replay for MeZO-SVRG; state is the fallback) carries θ̄ and ḡ's seed form: a
    copy resumed from it mid-period takes the same steps as the uninterrupted optimizer."""
    a, b = LeastSquares(dtype=torch.float64), LeastSquares(dtype=torch.float64)
    cfg = compose_cfg("optimizer=mezo_svrg", "optimizer.lr=0.01", "optimizer.estimator.anchor_lr=0.01",
                      "optimizer.estimator.period=3").optimizer
    opt_a = build_optimizer(cfg, list(a.named_parameters()), 8, 0)
    for _ in range(4):
        opt_a.step(a.loss)
    state = copy.deepcopy(opt_a.state_dict())
    with torch.no_grad():
        for pb, pa in zip(b.parameters(), a.parameters()):
            pb.copy_(pa)
    opt_b = build_optimizer(cfg, list(b.named_parameters()), 8, 0)
    opt_b.load_state_dict(state)
    for _ in range(4):
        opt_a.step(a.loss), opt_b.step(b.loss)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_what_mezo_svrg_cannot_run_is_refused():
    with pytest.raises(ConfigError, match="shared_direction=true is not allowed with optimizer.estimator.anchor=live"):
        MeZOSVRG(anchor="live", shared_direction=True)
    with pytest.raises(ConfigError, match="conservative=true is not allowed with optimizer=mezo_svrg"):
        build_optimizer(compose_cfg("optimizer=mezo_svrg", "optimizer.conservative=true").optimizer,
                        [("w", torch.zeros(3))], 1, 0)


TRAINER_PASSES_FULL_BATCH = "needs_full_batch" in inspect.getsource(zobench.train)


def test_a_tiny_mezo_svrg_cell_runs_and_resumes_to_identical_parameters(native, tmp_path, monkeypatch):
    """The normal runner: 6 steps with q = 2 (anchors at steps 1, 3, 5), 16 train examples in batches of 4: an anchor
    step is 2·16/4 = 8 batch passes when the trainer hands over the train set (SVRGZO.needs_full_batch), 2 when it
    does not (the step's batch), a minibatch step 4; the state is θ̄. An interrupted run resumes from the loss log
    (replay, the full-batch losses included) to the same weights."""
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=mezo_svrg", "optimizer.lr=1e-3",
                      "optimizer.estimator.anchor_lr=1e-3", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")
    anchor = 8 if TRAINER_PASSES_FULL_BATCH else 2
    assert whole["forward_passes"] == 3 * anchor + 3 * 4 and whole["forward_passes_per_step"] == 4
    assert whole["optimizer_state_bytes"] == 4 * whole["trainable_params"]
    # steps 1-3: anchor, minibatch, anchor; the anchors' full-batch losses are in the log
    replay_resumes_identically(cfg, tmp_path, monkeypatch, whole, 3, loss_log_lengths=[anchor, 4, anchor])


def test_a_bf16_cell_trains_without_nan(native, tmp_path):
    """The code's --half_precision runs bf16 (transformer.to(torch.bfloat16)); the YAML allows fp32, bf16 and fp16: a
    bf16 cell on the tiny model completes with finite losses, θ̄ an exact bf16 copy (2 bytes per parameter)."""
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=mezo_svrg", "optimizer.lr=2e-3",
                      "optimizer.estimator.anchor_lr=2e-3", "dtype=bf16")
    out = run_cell(cfg, tmp_path / "bf16")
    assert out["status"] == "completed", out.get("error")
    assert out["dtype"] == "bf16" and math.isfinite(out["final_loss"])
    assert out["optimizer_state_bytes"] == 2 * out["trainable_params"]
