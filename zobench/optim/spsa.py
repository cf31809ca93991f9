"""SPSA: the two-point (or one-sided) zeroth-order gradient estimator, in seed form.

Two-sided, q directions (Spall 1992; MeZO, Malladi et al. 2023, Alg. 1 for q = 1):
    g_j = (L(θ + ε z_j) − L(θ − ε z_j)) / (2ε),    ĝ = (1/q) Σ_j g_j · z_j,    z_j ~ N(0, I)
    2q forward passes; E[ĝ] = ∇L(θ) + O(ε²).
One-sided (ZO-Bench, Zhang et al. 2024, "forward difference"):
    g_j = (L(θ + ε z_j) − L(θ)) / ε,    q + 1 forward passes.
``sign="projected"``: coefficients sign(g_j)/q instead of g_j/q, i.e. ĝ = (1/q) Σ_j sign(g_j)·z_j.
This is the estimate ZO-Bench's released code forms for "ZO-SGD-Sign" (``np.sign(projected_grad) * z``
in zo-bench/trainer.py ``zo_step``), which its code then hands to HF Trainer's AdamW as a gradient
(``optimizer.variant=zobench_code``, conf/optimizer/zo_sgd_sign.yaml); the paper describes the
coordinate-wise sign(ĝ) of ZO-signSGD (Liu et al. 2019), which is the ``ScaleBySign`` transform with
``sign="coordinate"`` (here the estimator is plain SPSA).

``direction_stream="mezo"`` (q = 1 only): the step's one direction is z(s) of MeZO's stream with s the
seed handed in (MeZO's s_t, zobench.optim.directions), instead of z(mix(s, 0)) of the chunked stream.
``direction_stream="philox"`` (or ``"philox_fast"``, ``"philox_icdf"``): the chunked stream's seeds, z from the counter-based
generator (zobench.optim.philox; each probe's draw and axpy are one fused, threaded pass on CPU).

Every loss is the batch loss Σ_i w_i L_i over micro-batches (zobench.optim.closure), so
gradient accumulation gives the full-batch difference. Moving from one probe to the next is
one sweep (undo + next probe); the last probe is left in place (``pending``) for the update
sweep to undo.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from zobench.optim.closure import batch_loss
from zobench.errors import bad_choice, bad_value
from zobench.optim.directions import MEZO, STREAMS, mix, perturb_many_
from zobench.optim.estimate import SeedEstimate

SIGNS = (None, "coordinate", "projected")


class SPSA:
    distribution = "gaussian"  # set by ZOOptimizer from optimizer.direction
    average = True  # coefficients g_j/q; block-wise ZO (zobench/optim/blockwise.py) sums g_j z_j over blocks instead

    def __init__(self, num_directions: int = 1, one_sided: bool = False, sign: str | None = None,
                 direction_stream: str = "chunked"):
        if num_directions < 1:
            raise ValueError("optimizer.estimator.num_directions must be >= 1")
        if sign not in SIGNS:
            raise ValueError(f"optimizer.estimator.sign={sign!r}: choose one of coordinate, projected, null")
        if direction_stream not in STREAMS:
            raise bad_choice("optimizer.direction_stream", direction_stream, STREAMS)
        if direction_stream == MEZO and num_directions != 1:
            raise bad_value("optimizer.estimator.num_directions", num_directions,
                            "1 with optimizer.direction_stream=mezo (MeZO draws one direction per step)")
        self.num_directions, self.one_sided, self.sign = num_directions, one_sided, sign
        self.direction_stream = direction_stream  # read by ZOOptimizer, which then sets distribution (MEZO, philox:…)

    @property
    def measures_base_loss(self) -> bool:
        return self.one_sided

    def forward_passes_per_step(self) -> int:
        return self.num_directions + 1 if self.one_sided else 2 * self.num_directions

    def direction_masks(self, seeds: list[int]) -> dict:
        """seed -> Mask restricting z_j to z_j ⊙ m (block-wise and sparse ZO override this); {}: the whole z_j."""
        return {}

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], loss_fn: Callable, eps: float, seed: int,
                 on_direction: Callable[[int, SeedEstimate], None] | None = None) -> SeedEstimate:
        """``on_direction(j, part)``, if given, is called once direction j is estimated, with ``part`` its
        own one-direction estimate (probe still pending); it must remove the probe (block-wise ZO's
        immediate update does, zobench/optim/blockwise.py), and the estimate returned is ``applied``."""
        q = self.num_directions
        seeds = [seed] if self.distribution == MEZO else [mix(seed, j) for j in range(q)]
        masks = self.direction_masks(seeds)
        coeffs, losses = [], []  # losses: the mean of each probe pair, ≈ L(θ) + O(ε²)
        base = batch_loss(loss_fn) if self.one_sided else None
        undo: list[tuple[int, float]] = []  # the previous probe, removed in the sweep that takes the next
        for j, s in enumerate(seeds):
            perturb_many_(params, undo + [(s, eps)], self.distribution, masks)
            plus = batch_loss(loss_fn)
            if self.one_sided:
                g = (plus - base) / eps
                undo = [(s, -eps)]
            else:
                perturb_many_(params, [(s, -2 * eps)], self.distribution, masks)
                minus = batch_loss(loss_fn)
                g = (plus - minus) / (2 * eps)
                losses.append((plus + minus) / 2)
                undo = [(s, eps)]
            if self.sign == "projected":
                g = math.copysign(1.0, g) if g != 0 else 0.0
            coeffs.append(g / q if self.average else g)
            if on_direction is not None:
                on_direction(j, SeedEstimate([s], coeffs[-1:], plus, 0, pending=undo,
                                             masks={s: masks[s]} if s in masks else {}))
                undo = []
        loss = base if self.one_sided else sum(losses) / len(losses)
        return SeedEstimate(seeds, coeffs, loss, self.forward_passes_per_step(), pending=undo, base_loss=base,
                            masks=masks, applied=on_direction is not None)
