"""The loss closure an optimizer step evaluates: one batch, optionally split into micro-batches.

``optimizer.step(loss_fn)`` accepts either a plain closure (``loss_fn()`` is the loss of the
step's batch under the current parameters) or a ``MicroBatchLoss``, which also answers
``loss_fn(i)``, the loss of micro-batch i, with ``weights[i]`` its share of the batch.

ZO gradient accumulation (MeZO has none; ZO-Bench asserts it off): every estimator evaluates
the batch loss at a point as Σ_i w_i·L_i(θ) with the perturbation held fixed, so each finite
difference is the full-batch one, computed with the activation memory of one micro-batch.
Forward passes are counted in evaluations of the whole batch: the M micro-batch forwards at
one point count as one, so ``forward_passes`` compares across accumulation settings.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch

from zobench.errors import ConfigError


class MicroBatchLoss:
    """``batch`` split into ``num_micro_batches`` contiguous, near-equal parts.

    ``weights[i] = size(part_i) / size(batch)`` with ``size`` the number of terms the loss
    averages over: examples by default (exact for ``classification``, a mean over examples), the
    gold tokens for the ``lm`` loss (``size_of=Scorer.gold_tokens``), so that Σ_i w_i·L_i equals
    the loss of the whole batch, a mean over all its tokens. (HF Trainer weights by examples,
    which is off when micro-batches hold different numbers of tokens.)
    """

    def __init__(self, loss_of: Callable[[Sequence], torch.Tensor], batch: Sequence, num_micro_batches: int = 1,
                 size_of: Callable[[Sequence], float] = len):
        if not 1 <= num_micro_batches <= len(batch):
            raise ConfigError(
                f"optimizer.accumulation_steps={num_micro_batches} is not allowed: expected an integer "
                f"between 1 and trainer.batch_size={len(batch)} (each micro-batch needs an example)."
            )
        size, extra = divmod(len(batch), num_micro_batches)
        bounds = [0]
        for i in range(num_micro_batches):
            bounds.append(bounds[-1] + size + (i < extra))
        self.loss_of, self.batch = loss_of, batch
        self.parts = [batch[a:b] for a, b in zip(bounds, bounds[1:])]
        if num_micro_batches == 1:
            self.weights = [1.0]
        else:
            sizes = [float(size_of(part)) for part in self.parts]
            self.weights = [size / sum(sizes) for size in sizes]
        self.num_micro_batches = num_micro_batches

    def __call__(self, micro: int | None = None) -> torch.Tensor:
        return self.loss_of(self.batch if micro is None else self.parts[micro])


def check_micro_batches(loss_fn: Callable, accumulation_steps: int) -> None:
    """An optimizer with ``accumulation_steps > 1`` needs the trainer's MicroBatchLoss of that many parts."""
    if accumulation_steps > 1 and getattr(loss_fn, "num_micro_batches", 1) != accumulation_steps:
        raise ConfigError(f"optimizer.accumulation_steps={accumulation_steps} needs the trainer to pass a "
                          "zobench.optim.closure.MicroBatchLoss with that many micro-batches.")


def micro_batches(loss_fn: Callable) -> list[tuple[float, Callable[[], torch.Tensor]]]:
    """[(weight, closure)] of the micro-batches; a plain closure is one micro-batch of weight 1."""
    weights = getattr(loss_fn, "weights", None)
    if weights is None:
        return [(1.0, loss_fn)]
    return [(w, functools.partial(loss_fn, i)) for i, w in enumerate(weights)]


@torch.no_grad()
def batch_loss(loss_fn: Callable) -> float:
    """The batch loss at the current parameters: Σ_i w_i·L_i, one micro-batch in memory at a time."""
    return sum(w * float(part()) for w, part in micro_batches(loss_fn))
