"""Optimizers: ``conf/optimizer/<name>.yaml`` composes an estimator and transforms (or a torch.optim class).

ZO family: ``estimator`` (spsa.SPSA, forward_grad.ForwardGrad, bszo.BSZO, hizoo.HiZOO, fzoo.FZOO) returns ĝ in seed
form; ``transforms`` (transforms.ScaleBySign, Momentum, Adam) shape each tensor's update;
zo.ZOOptimizer runs the sweep, weight decay, schedule and the conservative option. An estimator with an
``optimizer_class`` brings a ZOOptimizer subclass: hizoo.HiZOOOptimizer (HiZOO's Hessian in the state) and
lozo.LowRankZO (LOZO / LOZO-M: directions U Vᵀ per matrix, momentum in U's space) and mezo_svrg.SVRGZO (MeZO-SVRG:
a full-batch anchor θ̄ every q steps, two learning rates; ``needs_full_batch``: the trainer passes the train set).
Estimators with masked directions: blockwise.BlockSPSA (block-wise ZO and its equal-cost baseline),
sparse.SparseSPSA (sparsity-induced ZO), sparse_mezo.SparseMeZO (Sparse-MeZO: the small-magnitude entries).
Hybrid family: hybrid.HybridZOFO, ZO for the embeddings and the first K layers, a torch.optim class on the rest.
FO family: fo.FOOptimizer wraps a torch.optim class. Every optimizer takes the same
``weight_decay`` (decoupled, no decay on biases and norms), ``schedule`` and ``accumulation_steps``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from hydra.utils import instantiate

from zobench.errors import ConfigError
from zobench.optim.fo import build_fo
from zobench.optim.zo import ZOOptimizer

FAMILIES = ("zo", "fo", "hybrid")  # hybrid: ZO for the shallow layers, backprop for the deep ones (hybrid.py)
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def check_dtype(cfg: Any, named_params: Sequence[tuple[str, torch.Tensor]]) -> None:
    """Refuse a run dtype the optimizer's YAML does not list in ``dtypes`` (the YAML says why).

    Only the run dtypes (fp32, fp16, bf16) are checked: float64 tensors (tests) pass."""
    allowed = list(cfg.get("dtypes") or DTYPE_NAMES.values())
    for name in sorted({DTYPE_NAMES[p.dtype] for _, p in named_params if p.dtype in DTYPE_NAMES}):
        if name not in allowed:
            raise ConfigError(f"dtype={name!r} is not allowed with optimizer={cfg.name}: choose one of "
                              f"{', '.join(allowed)} (see the header of conf/optimizer/{cfg.name}.yaml).")


def build_optimizer(cfg: Any, named_params: Sequence[tuple[str, torch.Tensor]], total_steps: int, seed: int,
                    model: torch.nn.Module | None = None):
    """The optimizer of ``cfg`` over ``named_params``; ``model`` is needed by Forward-Grad only."""
    check_dtype(cfg, named_params)
    common = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule, total_steps=total_steps,
                  accumulation_steps=cfg.get("accumulation_steps", 1))
    if cfg.family == "hybrid":
        from zobench.optim.hybrid import build_hybrid

        return build_hybrid(cfg, named_params, total_steps, seed, model)
    if cfg.family == "zo":
        estimator = instantiate(cfg.estimator)
        transforms = [instantiate(t) for t in cfg.get("transforms") or []]
        make = getattr(estimator, "optimizer_class", ZOOptimizer)  # HiZOO's state, LOZO's U Vᵀ sweep: a subclass
        return make(named_params, estimator, transforms, eps=cfg.eps, seed=seed,
                    conservative=cfg.get("conservative", False), model=model,
                    distribution=cfg.get("direction", "gaussian"), **common)
    return build_fo(cfg, named_params, model=model, **common)  # fo.py: clipping, train mode, variant
