"""Helpers shared by the conformance tests against the authors' code: zobench's side of each comparison."""
from __future__ import annotations

import torch

from tests.conftest import compose_cfg
from zobench.optim import build_optimizer


def zobench_run(optimizer: str, model, loss_fn, seed: int, steps: int, *overrides: str):
    """``steps`` steps of zobench's ``optimizer`` (its YAML, plus ``overrides``) on ``model``: (optimizer, step stats)."""
    cfg = compose_cfg(f"optimizer={optimizer}", *overrides)
    opt = build_optimizer(cfg.optimizer, [(n, p) for n, p in model.named_parameters() if p.requires_grad], steps, seed)
    with torch.no_grad():
        stats = [opt.step(loss_fn) for _ in range(steps)]
    return opt, stats


def max_gap(model_a, model_b) -> float:
    """The largest absolute difference between the two models' parameters."""
    return max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(model_a.parameters(), model_b.parameters()))
