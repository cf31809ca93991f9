"""The estimate an estimator hands to the update pass."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class SeedEstimate:
    """ĝ = Σ_j coeffs[j] · z(seeds[j]), plus what it cost.

    ``pending`` lists (seed, scale) perturbations still applied to the parameters when the
    estimator returns: the update pass removes them in the same sweep that applies ĝ, so
    restoring θ costs no extra pass over the parameters.
    """

    seeds: list[int]
    coeffs: list[float]
    loss: float                  # the loss reported for this step (at θ, or the mean of the probes)
    forward_passes: int
    pending: list[tuple[int, float]] = dataclasses.field(default_factory=list)
