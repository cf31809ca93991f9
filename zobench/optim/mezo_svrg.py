"""MeZO-SVRG: ZO-SGD with SVRG's control variate, a full-batch estimate at a periodic anchor.

Gautam, Park, Zhou, Raman & Ha, "Variance-reduced Zeroth-Order Methods for Fine-Tuning Language Models" (ICML 2024,
arXiv:2404.08080); code github.com/amazon-science/mezo_svrg (commit 002e156): models/llm_module.py ``GLUETransformer``
(``training_step_MeZO_SVRG``, ``central_difference_grad_est``, ``central_difference_grad_est_me``,
``efficient_perturb_parameters``), the loop ``finetune_ZO_SVRG`` in finetune_llm.py, run scripts
finetune_llm_full.sh and run_mnli_zosvrg_*.sh. With ∇̂f_B(θ; z) = (f_B(θ + εz) − f_B(θ − εz))/(2ε) · z, z ~ N(0, I)
from its own seed, and F the whole train set:

    t mod q = 0 (anchor step):   θ̄ ← θ_t,   ḡ ← ∇̂f_F(θ̄; z̄),   θ ← θ − η₁_t·(ḡ + λθ)       2 passes over F
    otherwise (batch B_t):       v ← ∇̂f_B(θ_t; z₁) − ∇̂f_B(θ̄; z₂) + ḡ,  θ ← θ − η₂_t·(v + λθ)   4 forward passes

η₁ is ``estimator.anchor_lr`` and η₂ the optimizer's ``lr`` (both times the schedule); z₁, z₂ are drawn from their
own seeds, as the code's each estimate calls np.random.randint (``estimator.shared_direction: true`` takes z₂ = z₁,
so that the control variate cancels along one direction). Forward passes are counted in batch evaluations: an
anchor step costs 2·|F|/|B| (the full batch evaluates in micro-batches of the step's size, one in memory at a time).

State and memory: θ̄, one copy of the trainable parameters in θ's dtype (exact), and ḡ in seed form (its seed and
one scalar, since ḡ = c̄·z̄ is rank one). The code keeps ḡ as a dense copy (``self.full_grad``: one more copy of θ,
in θ's dtype). To evaluate f_B at θ̄ without a second model, the weights and θ̄ are swapped in place chunk by chunk
(one chunk-sized temporary): θ̄ + εz₂ is loaded while θ_t is parked in θ̄'s buffer, then swapped back. Per minibatch
step: 6 parameter passes (+εz₁, −2εz₁, swap with +εz₂, −2εz₂, swap back, update), all in place.

Why a ZOOptimizer subclass (``SVRGZO``): the estimate is still seed form (v = g₁z₁ − g₂z₂ + c̄z̄, so transforms, weight
decay, schedules and the update sweep are ZOOptimizer's), but a step chooses between two kinds of step with two
learning rates, evaluates the loss at a point other than θ_t, and needs the train set: ``optimizer.step(loss_fn,
full_batch=...)``, with ``full_batch`` built by ``full_batch_loss`` from the same loss recorder as the step's closure
(so its values are logged and replayed). ``SVRGZO.needs_full_batch`` tells the trainer to pass it; without it (a caller
that has no train set) an anchor is estimated on the step's own batch, with a warning. θ̄ and ḡ follow from the losses
and the seeds: a checkpoint is the loss log (replay), as for SPSA.

The authors' code differs from the update above (``estimator.anchor: live`` reproduces it):
  * ``self.parameters = parameters.copy()`` copies the list of (name, Parameter) pairs, not the tensors, and
    ``param.data = ...`` rebinds the same Parameter objects: the "anchor" is the live weights. Its minibatch step then
    moves θ' = θ_t − η₂∇̂f_B(θ_t; z₁) in place (``central_difference_grad_est_me``, scale −1), takes the second
    estimate at θ' (not θ̄) with its own z₂ and moves θ'' = θ' + η₂∇̂f_B(θ'; z₂), then θ ← θ'' − η₂ḡ (the stale anchor
    gradient): v = ∇̂f_B(θ_t; z₁) − ∇̂f_B(θ'; z₂) + ḡ, whose first two terms cancel only in expectation. With
    ``anchor: live`` zobench does exactly that (no θ̄ kept: state 0 bytes; the move to θ' is a pending perturbation
    the update sweep completes). The tests check both against transcriptions (tests/reference/test_mezo_svrg.py).
  * learning rates: the code divides η₁ and η₂ by ``anneal`` when the mean minibatch loss of a window rises by 5%
    (``get_average_np``, which needs one more forward pass after every step, ``log_training_loss``); zobench uses its
    schedules (constant | linear) and counts no logging pass.
  * its minibatch at an anchor step is replaced by the full batch (``finetune_ZO_SVRG``: the step's batch is drawn and
    not used), as here; its full-batch loss is the unweighted mean of micro-batch means, zobench's is the mean over
    examples (tokens for the ``lm`` loss), equal when the micro-batches are equal.
  * weight decay: the code has none; zobench's one rule applies when set. No gradient clipping (the code clips only in
    ``training_step_ZO_SVRG``, its ZO-SVRG, not MeZO-SVRG).
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import torch

from zobench.errors import ConfigError, bad_choice, bad_value
from zobench.optim.closure import MicroBatchLoss, batch_loss, check_micro_batches
from zobench.optim.directions import add_direction_, chunk_bounds, flat, mix, perturb_many_
from zobench.optim.estimate import SeedEstimate
from zobench.optim.schedule import lr_factor
from zobench.optim.zo import ZOOptimizer

log = logging.getLogger(__name__)
ANCHORS = ("copy", "live")


def full_batch_loss(loss_of: Callable, examples: Sequence, batch_size: int, size_of: Callable = len) -> MicroBatchLoss:
    """The full-batch closure of MeZO-SVRG's anchor steps: all ``examples`` in ⌈n / batch_size⌉ contiguous micro-batches
    (none larger than a step's batch), weighted by ``size_of`` as the step's own closure, so that its value is the loss
    of the whole train set. ``batch_equivalents`` = n / batch_size: what one evaluation costs in step batches."""
    n = len(examples)
    closure = MicroBatchLoss(loss_of, examples, max(1, math.ceil(n / batch_size)), size_of=size_of)
    ratio = n / batch_size
    closure.batch_equivalents = int(ratio) if ratio == int(ratio) else ratio
    return closure


def _cost(closure: Callable) -> float:
    return getattr(closure, "batch_equivalents", 1)


class MeZOSVRG:
    """MeZO-SVRG's estimates (Gautam et al. 2024): the anchor's full-batch SPSA estimate and the variance-reduced
    minibatch estimate, with θ̄ kept as a copy of the trainable parameters; the module docstring gives the math, the
    code it follows and where the code differs (``anchor: live``). Built into ``SVRGZO``."""

    distribution = "gaussian"  # set by ZOOptimizer from optimizer.direction
    direction_stream = "chunked"
    replayable = True  # θ̄ and ḡ follow from the losses and the seeds: checkpoints are loss logs (zobench.train)

    def __init__(self, period: int = 2, anchor_lr: float = 1e-4, shared_direction: bool = False, anchor: str = "copy"):
        self.check_config({"period": period, "anchor_lr": anchor_lr, "shared_direction": shared_direction,
                           "anchor": anchor})
        self.period, self.anchor_lr, self.shared, self.mode = period, float(anchor_lr), shared_direction, anchor
        self.anchor: list[torch.Tensor] = []  # θ̄ (anchor: copy)
        self.anchor_seed: int | None = None   # ḡ = anchor_coeff · z(anchor_seed)
        self.anchor_coeff = 0.0

    @staticmethod
    def check_config(est, key: str = "optimizer.estimator") -> None:
        """The YAML keys, checked before any model loads (called by zobench.validate)."""
        q = est.get("period", 2)
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise bad_value(f"{key}.period", q, "an integer >= 1 (q: steps from one full-batch anchor to the next)")
        lr = est.get("anchor_lr", 1e-4)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
            raise bad_value(f"{key}.anchor_lr", lr, "a finite number > 0 (η₁, the anchor steps' learning rate)")
        if not isinstance(est.get("shared_direction", False), bool):
            raise bad_value(f"{key}.shared_direction", est.get("shared_direction"), "true or false")
        anchor = est.get("anchor", "copy")
        if anchor not in ANCHORS:
            raise bad_choice(f"{key}.anchor", anchor, ANCHORS)
        if anchor == "live" and est.get("shared_direction", False):
            raise ConfigError(f"{key}.shared_direction=true is not allowed with {key}.anchor=live: the code's second "
                              "estimate is taken at the moved point with its own direction; choose anchor=copy.")

    def setup(self, named_params: Sequence[tuple[str, torch.Tensor]], model=None) -> None:
        """θ̄'s buffer: one copy of the trainable parameters in their own dtype (``anchor: copy``)."""
        self.anchor = ([torch.empty_like(p, memory_format=torch.contiguous_format) for _, p in named_params]
                       if self.mode == "copy" else [])

    def is_anchor_step(self, t: int) -> bool:
        return t % self.period == 0

    def forward_passes_per_step(self) -> int:
        return 4  # a minibatch step; an anchor step: 2 evaluations of the full batch

    def state_bytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in self.anchor)

    @torch.no_grad()
    def anchor_step(self, params: list[torch.Tensor], full_batch: Callable, eps: float, seed: int) -> SeedEstimate:
        """θ̄ ← θ, ḡ = ∇̂f_F(θ̄; z̄): two evaluations of the full batch; the −ε probe is left pending."""
        s = mix(seed, 0)
        for a, p in zip(self.anchor, params):
            a.copy_(p)
        perturb_many_(params, [(s, eps)], self.distribution)
        plus = batch_loss(full_batch)
        perturb_many_(params, [(s, -2 * eps)], self.distribution)
        minus = batch_loss(full_batch)
        self.anchor_seed, self.anchor_coeff = s, (plus - minus) / (2 * eps)
        return SeedEstimate([s], [self.anchor_coeff], (plus + minus) / 2, 2 * _cost(full_batch), pending=[(s, eps)])

    @torch.no_grad()
    def minibatch_step(self, params: list[torch.Tensor], loss_fn: Callable, eps: float, seed: int,
                       lr: float) -> SeedEstimate:
        """v = g₁z₁ − g₂z₂ + c̄z̄ on the step's batch: g₁ at θ_t, g₂ at θ̄ (``copy``) or at θ_t − lr·g₁z₁ (``live``)."""
        if self.anchor_seed is None:
            raise RuntimeError("MeZO-SVRG: a minibatch step before any anchor step (step 0 is an anchor step)")
        dist = self.distribution
        s1 = mix(seed, 0)
        s2 = s1 if self.shared else mix(seed, 1)
        perturb_many_(params, [(s1, eps)], dist)
        plus1 = batch_loss(loss_fn)
        perturb_many_(params, [(s1, -2 * eps)], dist)
        minus1 = batch_loss(loss_fn)
        g1 = (plus1 - minus1) / (2 * eps)
        if self.mode == "copy":
            self._swap(params, undo=[(s1, eps)], then=[(s2, eps)])  # θ_t parked in θ̄'s buffer, θ̄ + εz₂ loaded
            pending_after = []
        else:  # the code: restore, move to θ' = θ_t − lr·g₁z₁, probe there
            perturb_many_(params, [(s1, eps), (s1, -lr * g1), (s2, eps)], dist)
            pending_after = [(s1, lr * g1)]  # θ' − θ_t, completed by the update sweep
        plus2 = batch_loss(loss_fn)
        perturb_many_(params, [(s2, -2 * eps)], dist)
        minus2 = batch_loss(loss_fn)
        g2 = (plus2 - minus2) / (2 * eps)
        if self.mode == "copy":
            self._swap(params, undo=[(s2, eps)], then=[])  # θ̄ back in its buffer, θ_t back in the weights
            pending = []
        else:
            pending = [(s2, eps)] + pending_after
        if self.shared:
            seeds, coeffs = [s1, self.anchor_seed], [g1 - g2, self.anchor_coeff]
        else:
            seeds, coeffs = [s1, s2, self.anchor_seed], [g1, -g2, self.anchor_coeff]
        return SeedEstimate(seeds, coeffs, (plus1 + minus1) / 2, 4, pending=pending)

    @torch.no_grad()
    def _swap(self, params: list[torch.Tensor], undo: list[tuple[int, float]], then: list[tuple[int, float]]) -> None:
        """Exchange the weights and θ̄'s buffer, chunk by chunk: buffer ← θ + Σ undo, θ ← buffer + Σ then."""
        dist = self.distribution
        for i, (p, a) in enumerate(zip(params, self.anchor)):
            view, store = flat(p), flat(a)
            for c, lo, hi in chunk_bounds(view.numel(), dist):
                part, kept = view[lo:hi], store[lo:hi]
                left = part.clone()
                for s, scale in undo:
                    add_direction_(left, s, i, c, lo, scale, dist)
                part.copy_(kept)
                for s, scale in then:
                    add_direction_(part, s, i, c, lo, scale, dist)
                kept.copy_(left)


class SVRGZO(ZOOptimizer):
    """ZOOptimizer running MeZO-SVRG's two kinds of step (module docstring); ``step(loss_fn, full_batch=None)``."""

    needs_full_batch = True  # zobench.train passes full_batch=full_batch_loss(...) over the train set

    def __init__(self, named_params, estimator, transforms=(), **kwargs):
        if not isinstance(estimator, MeZOSVRG):
            raise ConfigError("zobench.optim.mezo_svrg.SVRGZO needs the MeZOSVRG estimator")
        if kwargs.get("conservative", False):
            raise ConfigError("optimizer.conservative=true is not allowed with optimizer=mezo_svrg: its steps take two "
                              "learning rates and two kinds of estimate; choose conservative=false.")
        super().__init__(named_params, estimator, transforms, **kwargs)
        self._warned = False

    def step(self, loss_fn: Callable, full_batch: Callable | None = None) -> dict:
        check_micro_batches(loss_fn, self.accumulation_steps)
        svrg, factor = self.estimator, lr_factor(self.schedule, self.t, self.total_steps)
        for tr in self.transforms:
            tr.begin_step()
        seed = mix(self.seed, self.t)
        if svrg.is_anchor_step(self.t):
            if full_batch is None:
                if not self._warned:
                    log.warning("MeZO-SVRG got no full-batch closure (optimizer.step(loss_fn, full_batch=...)): its "
                                "anchors are estimated on the step's own batch")
                    self._warned = True
                full_batch = loss_fn
            lr = svrg.anchor_lr * factor
            est = svrg.anchor_step(self.params, full_batch, self.eps, seed)
        else:
            lr = self.lr * factor
            est = svrg.minibatch_step(self.params, loss_fn, self.eps, seed, lr)
        self._sweep(est, 0.0, -lr, undo=est.pending)
        self.seed_log.append((self.t, est.seeds, est.coeffs, lr))
        self.t += 1
        return {"loss": est.loss, "forward_passes": est.forward_passes, "lr": lr}

    def state_dict(self) -> dict:
        svrg = self.estimator
        return {**super().state_dict(), "anchor": svrg.anchor, "anchor_seed": svrg.anchor_seed,
                "anchor_coeff": svrg.anchor_coeff}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        svrg = self.estimator
        with torch.no_grad():
            for a, saved in zip(svrg.anchor, state["anchor"]):
                a.copy_(saved)
        svrg.anchor_seed, svrg.anchor_coeff = state["anchor_seed"], state["anchor_coeff"]

    def state_bytes(self) -> int:
        return super().state_bytes() + self.estimator.state_bytes()


MeZOSVRG.optimizer_class = SVRGZO  # zobench.optim.build_optimizer builds this instead of ZOOptimizer
