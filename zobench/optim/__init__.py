"""Optimizers: ``conf/optimizer/<name>.yaml`` composes an estimator and transforms (or a torch.optim class)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from hydra.utils import instantiate

from zobench.optim.fo import FOOptimizer
from zobench.optim.zo import ZOOptimizer

FAMILIES = ("zo", "fo")


def build_optimizer(cfg: Any, named_params: Sequence[tuple[str, torch.Tensor]], total_steps: int, seed: int):
    common = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule, total_steps=total_steps)
    if cfg.family == "zo":
        estimator = instantiate(cfg.estimator)
        transforms = [instantiate(t) for t in cfg.get("transforms") or []]
        return ZOOptimizer(named_params, estimator, transforms, eps=cfg.eps, seed=seed, **common)
    return FOOptimizer(named_params, instantiate(cfg.torch_optimizer, _partial_=True), **common)
