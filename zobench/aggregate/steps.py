"""Per-step measurements of a run (``metrics.jsonl``: ``step_time_ms``, ``forward_time_ms``) and the 95%
percentile bootstrap interval of their median over the run's training steps (Efron & Tibshirani 1993,
ch. 13): the uncertainty of a one-run step time, beside the Student-t interval over seeds of several runs.
The interval holds the run's step-to-step noise, not differences between machines or their load.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PER_STEP = ("step_time_ms", "forward_time_ms")  # summary columns that are the median of a per-step value
N_BOOT, BOOT_SEED = 2000, 0


def step_values(run: str | Path, column: str) -> np.ndarray | None:
    """``column`` of each training step in ``run/metrics.jsonl``, the run's warm-up steps dropped as its summary
    drops them (``trainer.warmup_steps`` of its config.yaml, default 1; all kept if that leaves none)."""
    import yaml

    run = Path(run)
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if "step" in rec and isinstance(rec.get(column), (int, float)):
            rows[int(rec["step"])] = float(rec[column])  # a resumed run re-logs a step: the last value stands
    warmup = 1
    if (run / "config.yaml").is_file():
        trainer = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("trainer") or {}
        warmup = int(trainer.get("warmup_steps", 1) or 0)
    values = [rows[k] for k in sorted(rows)]
    values = values[warmup:] or values
    return np.asarray(values) if values else None


def median_interval(values: np.ndarray, level: float = 0.95, n_boot: int = N_BOOT,
                    seed: int = BOOT_SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the median of ``values`` (None with fewer than 2 values)."""
    if values is None or len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    boots = np.median(values[rng.integers(0, len(values), (n_boot, len(values)))], axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))
