"""Grouping over seeds: mean, sample standard deviation (ddof=1) and the number of seeds.

One seed has no spread: its std is NaN (rendered as no ± at all), never 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd

from zobench.aggregate.load import CONFIG_KEYS


@dataclass(frozen=True)
class SeedStats:
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "SeedStats":
        vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not vals:
            return cls(math.nan, math.nan, 0)
        series = pd.Series(vals)
        return cls(float(series.mean()), float(series.std(ddof=1)) if len(vals) > 1 else math.nan, len(vals))


def group_seeds(df: pd.DataFrame, values: Sequence[str], keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per configuration (``keys``, default every configuration column present) with
    ``<value>_mean``, ``<value>_std`` and ``n`` (seeds) for each of ``values``."""
    keys = [k for k in (keys or CONFIG_KEYS) if k in df.columns]
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped[list(values)].agg(["mean", "std"])
    out.columns = [f"{value}_{stat}" for value, stat in out.columns]
    out["n"] = grouped.size()
    return out.reset_index()
