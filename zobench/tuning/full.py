"""Full fine-tuning: every parameter of the model trains (MeZO's "FT" and "MeZO" rows)."""
from __future__ import annotations

from typing import Any

TRAINS = True


def check(cfg: Any) -> None:
    pass


def apply(model, cfg: Any, seed: int):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
