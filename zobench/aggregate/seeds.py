"""Grouping over seeds: mean, sample standard deviation (ddof=1), the number of seeds, and a 95%
interval for the mean.

With n ≥ 2 seeds the interval is Student-t over seeds (zobench.stats.seed_interval): it covers
seed-to-seed variation. One seed has no spread: its std is NaN (never 0) and its interval, where
the run has one, is the run's own percentile bootstrap over eval examples (``interval ==
"bootstrap"``), which covers eval-set sampling only; renderers say which one a cell shows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import pandas as pd

from zobench.aggregate.load import CONFIG_KEYS
from zobench.stats import seed_interval

LEVEL = 0.95
T_OVER_SEEDS = "t"            # Student-t over seeds
BOOTSTRAP = "bootstrap"       # one run's percentile bootstrap over eval examples


@dataclass(frozen=True)
class SeedStats:
    mean: float
    std: float
    n: int
    lo: float = math.nan
    hi: float = math.nan
    interval: str = ""        # T_OVER_SEEDS | BOOTSTRAP | "" (none)

    @classmethod
    def of(cls, values: Iterable[float], level: float = LEVEL) -> "SeedStats":
        vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not vals:
            return cls(math.nan, math.nan, 0)
        ci = seed_interval(vals, level)
        if ci["n"] == 1:
            return cls(ci["mean"], math.nan, 1)
        return cls(ci["mean"], ci["std"], ci["n"], ci["lo"], ci["hi"], T_OVER_SEEDS)

    def with_bootstrap(self, lo: float, hi: float) -> "SeedStats":
        """One seed: its run's bootstrap interval over eval examples."""
        return replace(self, lo=float(lo), hi=float(hi), interval=BOOTSTRAP)

    @property
    def has_interval(self) -> bool:
        return bool(self.interval) and not (math.isnan(self.lo) or math.isnan(self.hi))


def group_seeds(df: pd.DataFrame, values: Sequence[str], keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per configuration (``keys``, default every configuration column present) with
    ``<value>_mean``, ``<value>_std``, ``<value>_lo`` / ``_hi`` (95% Student-t over seeds, NaN for one
    seed) and ``n`` (seeds) for each of ``values``."""
    keys = [k for k in (keys or CONFIG_KEYS) if k in df.columns]
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped[list(values)].agg(["mean", "std"])
    out.columns = [f"{value}_{stat}" for value, stat in out.columns]
    for value in values:
        cis = grouped[value].agg(lambda s: SeedStats.of(pd.to_numeric(s, errors="coerce")))
        out[f"{value}_lo"] = cis.map(lambda c: c.lo)
        out[f"{value}_hi"] = cis.map(lambda c: c.hi)
    out["n"] = grouped.size()
    return out.reset_index()
