"""Compute of a run in forward-pass equivalents, so accuracy against compute is fair across ZO and FO.

zobench's ``forward_passes`` counts evaluations of a step's whole batch (micro-batches together count
once), whatever else the pass does. This module prices each kind of pass in units of one plain
inference forward of the same batch, by the usual FLOP rule of automatic differentiation:

- ZO (SPSA, MeZO, BSZO, ...): a pass *is* an inference forward: 1 each.
- FO (backprop): a pass is a forward plus a backward; the backward is counted as 2 forwards
  (for a linear map y = Wx it forms both Wᵀ·dy and dy·xᵀ, two products of the forward's size),
  so a pass costs 3. This is the usual "backward ≈ 2× forward" rule (Kaplan et al. 2020, §2.1:
  6N FLOPs per token for training vs 2N for the forward); reverse mode's cost is bounded by a small
  constant times the function's (Griewank & Walther, *Evaluating Derivatives*, 2nd ed. 2008, §4.6).
- Forward-Grad (a JVP, forward-mode AD): a pass carries the primal and its tangent. With the
  weights themselves carrying tangents (z perturbs θ), a linear map's tangent is W·dx + dW·x: two
  products of the forward's size, as for the backward. So a JVP pass costs 1 + 2 = 3, by the same
  rule as FO, and Forward-Grad is compared with backprop on equal terms (Baydin et al. 2022,
  "Gradients without Backpropagation", §3: a JVP costs a small constant times the forward;
  Griewank & Walther 2008, §4.5 bound tangent mode at ≤ 2.5× under their model).
- Hybrid ZO/FO (ZO-Bench): per step one forward + backward at θ (counted in ``forward_passes``
  as 1) and the ZO part's forwards; the backward is counted as 2 forwards once per step. It stops
  at the first backpropagated layer, so this is an upper bound on the hybrid's cost.

These are FLOP conventions, not measured times (``step_time_ms`` is the measured cost).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

BACKWARD_FORWARDS = 2.0   # a backward pass, in forward passes of the same batch
TANGENT_FORWARDS = 2.0    # the tangent half of a JVP, in forward passes of the same batch
KINDS = ("zo", "fo", "forward_grad", "hybrid")


def pass_kind(summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> str | None:
    """What one counted pass of this run is: ``zo``, ``fo``, ``forward_grad`` or ``hybrid`` (None: unknown).

    From ``summary['family']`` (new runs), else the config's ``optimizer.family``, else the optimizer's
    name (old runs). Forward-Grad has family ``zo`` in its config; it is told apart by its name or its
    estimator (``zobench.optim.forward_grad.ForwardGrad``)."""
    opt = (config or {}).get("optimizer") or {}
    name = str(summary.get("optimizer") or opt.get("name") or "")
    target = str((opt.get("estimator") or {}).get("_target_", ""))
    if name == "forward_grad" or target.endswith("ForwardGrad"):
        return "forward_grad"
    family = summary.get("family") or opt.get("family")
    if family in ("zo", "fo", "hybrid"):
        return family
    if name.startswith("fo_"):
        return "fo"
    if name.startswith("hybrid"):
        return "hybrid"
    if name.startswith("zo_") or name == "bszo":
        return "zo"
    return None


def equivalents(forward_passes: float, steps: float, kind: str | None) -> float | None:
    """``forward_passes`` counted passes over ``steps`` steps of a run of ``kind``, in forward equivalents."""
    if kind is None or not _finite(forward_passes):
        return None
    if kind == "zo":
        return float(forward_passes)
    if kind == "fo":
        return float(forward_passes) * (1 + BACKWARD_FORWARDS)
    if kind == "forward_grad":
        return float(forward_passes) * (1 + TANGENT_FORWARDS)
    if kind == "hybrid":
        if not _finite(steps):
            return None
        return float(forward_passes) + BACKWARD_FORWARDS * float(steps)
    raise ValueError(f"kind={kind!r}: choose one of {', '.join(KINDS)}")


def forward_pass_equivalents(summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> float | None:
    """A run's total compute in forward-pass equivalents (None when the summary cannot tell)."""
    passes = summary.get("forward_passes")
    if passes is None:
        return None
    return equivalents(passes, summary.get("steps"), pass_kind(summary, config))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
