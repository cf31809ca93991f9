"""Hybrid ZO/FO: zeroth-order for the shallow layers, backpropagation for the deep ones.

ZO-Bench (Zhang et al. 2024, "Revisiting Zeroth-Order Optimization for Memory-Efficient LLM
Fine-Tuning: A Benchmark", §"hybrid ZO-FO"): split θ by depth (zobench.optim.blocks) into
θ_s = the embeddings and the first K transformer layers and θ_d = the other layers and the head.
Per step t, on one batch, both at the same θ:
    FO part   ∇_d L(θ)  by backprop, with θ_s frozen (requires_grad off) for that forward,
              θ_d ← θ_d − lr_t·(∇_d L + λθ_d)            (torch.optim: SGD, AdamW, ...)
    ZO part   ĝ_s = SPSA over θ_s only (θ_d held fixed),  θ_s ← θ_s − zo_lr_t·(ĝ_s + λθ_s)
Forward passes per step: 1 (forward + backward, at θ; L(θ) is the reported loss) + the ZO
estimator's (2q two-sided). Memory: autograd records nothing before the first parameter that
requires grad, so the activations of the shallow layers are never kept for backward: the
activation memory of a step is that of the L − K deep layers (tests count the saved tensors,
which fall as K grows), and the FO optimizer's state covers θ_d only. K = 0 keeps only the
embeddings ZO; K ≥ L leaves the head alone to backprop. With tied embeddings (OPT, SmolLM2) the
shared matrix is the embedding, hence ZO. A scheme with no layer-indexed parameters
(prefix/prompt tuning) is all embeddings: the FO part is empty and no backward runs.

Not replayable from a loss log (its FO part uses gradients): checkpoints hold the tensors and
``state_dict()`` (the ZO step counter and transforms, the torch optimizer and schedule).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from hydra.utils import instantiate

from zobench.errors import ConfigError, bad_value
from zobench.optim.blocks import group_blocks
from zobench.optim.closure import check_micro_batches, micro_batches
from zobench.optim.fo import FOOptimizer, check_max_grad_norm
from zobench.optim.schedule import lr_factor
from zobench.optim.zo import ZOOptimizer


def zo_depth(zo_layers: int | float, num_layers: int) -> int:
    """K: the number of ZO transformer layers (an integer, or a fraction of the layers, rounded down)."""
    return int(zo_layers * num_layers) if isinstance(zo_layers, float) else int(zo_layers)


def split_by_depth(names: Sequence[str], zo_layers: int | float) -> tuple[list[int], list[int]]:
    """(ZO indices, FO indices): the embeddings and the first K layers, then the rest."""
    blocks = group_blocks(names, "layer")
    num_layers = sum(1 for b in blocks if b.name not in ("embeddings", "head"))
    k = zo_depth(zo_layers, num_layers)
    shallow = [i for b in blocks if b.depth <= k and b.name != "head" for i in b.indices]
    deep = [i for b in blocks if b.depth > k or b.name == "head" for i in b.indices]
    return sorted(shallow), sorted(deep)


def check_config(opt: Any) -> None:
    """The hybrid's own keys, checked before any model loads (called by zobench.validate)."""
    k = opt.get("zo_layers")
    ok = (isinstance(k, int) and not isinstance(k, bool) and k >= 0) or (isinstance(k, float) and 0 <= k <= 1)
    if not ok:
        raise bad_value("optimizer.zo_layers", k, "an integer >= 0 (ZO layers) or a fraction in [0, 1] of the layers")
    zo_lr = opt.get("zo_lr")
    if isinstance(zo_lr, bool) or not isinstance(zo_lr, (int, float)) or not zo_lr > 0:
        raise bad_value("optimizer.zo_lr", zo_lr, "a number > 0 (the ZO part's learning rate)")
    if opt.get("torch_optimizer") is None:
        raise ConfigError("optimizer.torch_optimizer is missing: the FO part needs a torch.optim class (_target_).")
    if opt.get("conservative", False):
        raise bad_value("optimizer.conservative", True, "false (the hybrid's FO part updates once per step)")
    check_max_grad_norm(opt)  # optional: clips the FO part's gradient (ZO-Bench's hybrid code is not public)


class HybridZOFO:
    family = "hybrid"
    replayable = False  # the FO part's update follows from gradients, not from loss values

    def __init__(self, named_params: Sequence[tuple[str, torch.Tensor]], zo_layers: int | float,
                 make_zo: Callable[[list], ZOOptimizer], make_fo: Callable[[list], FOOptimizer], *,
                 lr: float, schedule: str = "constant", total_steps: int = 1, accumulation_steps: int = 1):
        named = list(named_params)
        shallow, deep = split_by_depth([n for n, _ in named], zo_layers)
        self.zo_named = [named[i] for i in shallow]
        self.fo_named = [named[i] for i in deep]
        self.zo = make_zo(self.zo_named) if self.zo_named else None
        self.fo = make_fo(self.fo_named) if self.fo_named else None
        self.estimator = self.zo.estimator if self.zo else None
        self.lr, self.schedule, self.total_steps = lr, schedule, total_steps
        self.accumulation_steps, self.t = accumulation_steps, 0

    def step(self, loss_fn: Callable) -> dict:
        check_micro_batches(loss_fn, self.accumulation_steps)
        lr = self.lr * lr_factor(self.schedule, self.t, self.total_steps)
        loss, passes = None, 0
        if self.fo is not None:
            loss, passes = self._backward(loss_fn), 1
        if self.zo is not None:  # probes move θ_s only; the deep gradients above stay those at θ
            stats = self.zo.step(loss_fn)
            passes += stats["forward_passes"]
            loss = stats["loss"] if loss is None else loss
        if self.fo is not None:  # clip (max_grad_norm, over θ_d), decay, step, schedule: as FO alone
            self.fo.apply_update()
        self.t += 1
        return {"loss": loss, "forward_passes": passes, "lr": lr}

    def _backward(self, loss_fn: Callable) -> float:
        """L(θ) and ∇_d L(θ) into .grad, with θ_s frozen so that autograd records no shallow layer."""
        frozen = [p for _, p in self.zo_named if p.requires_grad]
        self.fo.opt.zero_grad(set_to_none=True)
        loss = 0.0
        try:
            for p in frozen:
                p.requires_grad_(False)
            with torch.enable_grad():
                for weight, part in micro_batches(loss_fn):
                    value = part()
                    (value * weight).backward()
                    loss += weight * float(value.detach())
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return loss

    def state_dict(self) -> dict:
        return {"t": self.t, "zo": self.zo.state_dict() if self.zo else None,
                "fo": self.fo.state_dict() if self.fo else None}

    def load_state_dict(self, state: dict) -> None:
        self.t = state["t"]
        if self.zo:
            self.zo.load_state_dict(state["zo"])
        if self.fo:
            self.fo.load_state_dict(state["fo"])

    def state_bytes(self) -> int:
        return (self.zo.state_bytes() if self.zo else 0) + (self.fo.state_bytes() if self.fo else 0)


def build_hybrid(cfg: Any, named_params: Sequence[tuple[str, torch.Tensor]], total_steps: int, seed: int,
                 model: torch.nn.Module | None = None) -> HybridZOFO:
    """The optimizer of a ``family: hybrid`` YAML: ``lr`` drives the FO part, ``zo_lr`` the ZO part."""
    check_config(cfg)
    common = dict(weight_decay=cfg.weight_decay, schedule=cfg.schedule, total_steps=total_steps,
                  accumulation_steps=cfg.get("accumulation_steps", 1))

    def make_zo(named):
        transforms = [instantiate(t) for t in cfg.get("transforms") or []]
        return ZOOptimizer(named, instantiate(cfg.estimator), transforms, lr=cfg.zo_lr, eps=cfg.eps, seed=seed,
                           model=model, distribution=cfg.get("direction", "gaussian"), **common)

    def make_fo(named):
        return FOOptimizer(named, instantiate(cfg.torch_optimizer, _partial_=True), lr=cfg.lr,
                           max_grad_norm=cfg.get("max_grad_norm"), **common)

    return HybridZOFO(named_params, cfg.zo_layers, make_zo, make_fo, lr=cfg.lr, schedule=cfg.schedule,
                      total_steps=total_steps, accumulation_steps=common["accumulation_steps"])
