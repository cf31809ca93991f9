"""Tuning schemes: which parameters train. Everything downstream sees only the returned list."""
from __future__ import annotations

from typing import Any

from zobench.errors import bad_choice

SCHEMES = ("full",)


def apply_tuning(model, tuning_cfg: Any):
    """Apply the scheme and return ``(model, [(name, parameter), ...])`` of trainable parameters."""
    if tuning_cfg.name not in SCHEMES:
        raise bad_choice("tuning", tuning_cfg.name, SCHEMES)
    for p in model.parameters():
        p.requires_grad_(True)
    return model, [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def count_trainable(named_params) -> int:
    return sum(p.numel() for _, p in named_params)


def trainable_bytes(named_params) -> int:
    return sum(p.numel() * p.element_size() for _, p in named_params)

