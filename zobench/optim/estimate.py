"""The estimate an estimator hands to the update sweep, in seed form."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class SeedEstimate:
    """ĝ = Σ_j coeffs[j] · z(seeds[j]), plus what it cost.

    ``pending`` lists (seed, scale) perturbations still applied to the parameters when the
    estimator returns: the update sweep removes them in the same pass that applies ĝ, so
    restoring θ costs no extra pass over the parameters.
    """

    seeds: list[int]
    coeffs: list[float]
    loss: float                  # the loss reported for this step (at θ, or the mean of the probes)
    forward_passes: int          # evaluations of the step's whole batch (micro-batches together count once)
    pending: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    base_loss: float | None = None  # L(θ) itself, when the estimator evaluated it (one-sided, Forward-Grad)
    # seed -> Mask (zobench.optim.directions): that direction is z(seed) ⊙ m (block-wise, sparse ZO);
    # seeds without one are the whole z. The update sweep applies the same masks.
    masks: dict[int, Any] = dataclasses.field(default_factory=dict)
    applied: bool = False  # the estimator already applied the update (block-wise ZO with immediate updates)
