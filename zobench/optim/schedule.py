"""Learning-rate schedules, shared by every optimizer (ZO and FO alike)."""
from __future__ import annotations

SCHEDULES = ("constant", "linear")


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base lr at 0-based ``step``.

    constant: 1.   linear: 1 − step/total_steps, decaying to 0 at the end (HF Trainer's default,
    used by MeZO's FO baselines).
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, 1.0 - step / max(total_steps, 1))
    raise ValueError(f"optimizer.schedule={schedule!r}: choose one of {', '.join(SCHEDULES)}")
