"""Per-example predictions of a run: ``predictions.jsonl`` (eval set, best-on-dev state) and
``zero_shot_predictions.jsonl`` (the untuned model, same eval examples), one JSON object a line::

    {"id": "dev:17", "gold": 1, "prediction": 0, "scores": [-2.31, -2.54], "group": null}

(the format zobench.evaluation writes). Runs made before these files existed have none: every
reader here returns None for them, and the tables fall back to what the summary holds.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

from zobench.aggregate.steps import PER_STEP, median_interval, step_values

PREDICTIONS = "predictions.jsonl"
ZERO_SHOT_PREDICTIONS = "zero_shot_predictions.jsonl"
COLUMNS = ["id", "gold", "prediction", "group"]


@lru_cache(maxsize=512)
def _read(path: str, mtime_ns: int) -> pd.DataFrame | None:
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if isinstance(rec, dict) and {"id", "gold", "prediction"} <= set(rec):
            group = rec.get("group")
            rows.append((str(rec["id"]), int(rec["gold"]), int(rec["prediction"]), None if group is None else str(group)))
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=COLUMNS).astype({"group": object})
    return df.drop_duplicates("id", keep="last").reset_index(drop=True)


def read_predictions(run_path: str | Path, zero_shot: bool = False) -> pd.DataFrame | None:
    """The run's predictions (columns id, gold, prediction, group), or None where it wrote none."""
    if run_path is None or (isinstance(run_path, float) and pd.isna(run_path)):
        return None
    path = Path(run_path) / (ZERO_SHOT_PREDICTIONS if zero_shot else PREDICTIONS)
    if not path.is_file():
        return None
    return _read(str(path), path.stat().st_mtime_ns)


def groups_of(df: pd.DataFrame) -> list | None:
    """The resampling clusters (MultiRC questions) when the file names them, else None (i.i.d. examples)."""
    groups = df["group"].tolist()
    return groups if any(g is not None for g in groups) else None


# column -> (predictions file is the zero-shot one, metric; None: the run's task metric)
INTERVAL_SOURCES = {"test_score": (False, None), "test_accuracy": (False, "accuracy"),
                    "zero_shot_score": (True, None), "zero_shot_accuracy": (True, "accuracy")}


def run_interval(run: pd.Series, column: str, level: float = 0.95) -> tuple[float, float] | None:
    """One run's interval for ``column`` over eval examples: the summary's ``<column>_ci95`` when it
    has one (and ``level`` is 95%), else a percentile bootstrap of its predictions file (clusters
    by ``group``); for a per-step median (``step_time_ms``), the bootstrap over the run's training
    steps (``zobench.aggregate.steps``); else None."""
    lo, hi = run.get(f"{column}_ci95_lo"), run.get(f"{column}_ci95_hi")
    if abs(level - 0.95) < 1e-12 and lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
        return float(lo), float(hi)
    if column in PER_STEP:  # a median over training steps: the bootstrap over the run's steps
        path = run.get("run_path")
        return median_interval(step_values(path, column), level) if isinstance(path, str) and path else None
    if column not in INTERVAL_SOURCES:
        return None
    zero_shot, metric = INTERVAL_SOURCES[column]
    metric = metric or run.get("metric") or "accuracy"
    df = read_predictions(run.get("run_path"), zero_shot=zero_shot)
    if df is None or metric not in ("accuracy", "f1"):
        return None
    from zobench.stats import bootstrap_ci

    return bootstrap_ci(df["gold"].to_numpy(), df["prediction"].to_numpy(), metric, groups=groups_of(df), level=level)
