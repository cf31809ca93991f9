"""Hyperparameter selection on dev, never on test.

A table cell (say ZO-SGD, LoRA, SST-2) usually holds runs of several configurations (the
LR/eps grid) times several seeds. The cell reports the test score of the configuration whose
mean best-dev score over its seeds is highest. ZO-Bench picks the grid point by test accuracy;
zobench does not: the test set is only read for the configuration that dev chose.

Ties on dev go to the first configuration in sorted order, so the choice is deterministic.
Runs without a dev score (zero-shot, ``steps == 0``) are all equivalent: the first is taken.

The step budget is not a hyperparameter that dev selects: of each tuning scheme's runs in a cell, only those at
its largest ``steps_budget`` compete (``full_budget``). Shorter runs of the same method (a precision study's
100-step probes beside 400-step main cells) answer other questions, and a one-seed short run would otherwise win
against a three-seed mean by its variance alone. A table or claim about short runs filters ``steps_budget``.

The device that ran a run is part of its configuration here: runs of one setting on CPU and on
CUDA are two configurations (dev picks one), never pooled as seeds of one, so the same seed is
not counted twice and CPU memory and time never mix with CUDA's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from zobench.aggregate.load import CONFIG_KEYS

DEV_COLUMN = "best_dev_score"  # the task's metric on dev (accuracy, or F1 for MultiRC)


@dataclass
class Selection:
    runs: pd.DataFrame                      # the chosen configuration's runs (one per seed)
    n_configs: int                          # configurations the cell held
    chosen: dict = field(default_factory=dict)  # the chosen values of the keys that varied in the cell
    dev_mean: float = math.nan              # mean dev score of the chosen configuration

    def describe(self) -> str:
        if self.n_configs <= 1:
            return ""
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.chosen.items())
        dev = "" if math.isnan(self.dev_mean) else f", dev {self.dev_mean:.4f}"
        return f"{shown} (best of {self.n_configs} on dev{dev})"


SELECT_KEYS = CONFIG_KEYS + ["device"]  # what separates configurations of a cell (see the module's docstring)


def config_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in SELECT_KEYS if k in df.columns]


def full_budget(rows: pd.DataFrame) -> pd.DataFrame:
    """Of each tuning scheme's runs, those at its largest step budget (the module's docstring)."""
    if rows.empty or "steps_budget" not in rows.columns:
        return rows
    budget = pd.to_numeric(rows["steps_budget"], errors="coerce")
    by = rows["tuning"].astype(str) if "tuning" in rows.columns else pd.Series("", index=rows.index)
    return rows[budget.isna() | budget.eq(budget.groupby(by).transform("max"))]


def select_by_dev(cell: pd.DataFrame, dev_column: str = DEV_COLUMN) -> Selection:
    """The runs of the configuration in ``cell`` with the best mean dev score over seeds, among the runs at each
    tuning scheme's full step budget (``full_budget``)."""
    cell = full_budget(cell)
    if cell.empty:
        return Selection(cell, 0)
    keys = config_keys(cell)
    varying = [k for k in keys if cell[k].nunique(dropna=False) > 1]
    if not varying:
        return Selection(cell, 1, {}, _mean(cell, dev_column))
    groups = list(cell.groupby(varying, dropna=False, sort=True))
    scored = [(_mean(runs, dev_column), i) for i, (_, runs) in enumerate(groups)]
    finite = [s for s in scored if not math.isnan(s[0])]
    best = max(finite, key=lambda s: (s[0], -s[1])) if finite else (math.nan, 0)
    values, runs = groups[best[1]]
    values = values if isinstance(values, tuple) else (values,)
    return Selection(runs, len(groups), dict(zip(varying, values)), best[0])


def _mean(runs: pd.DataFrame, column: str) -> float:
    if column not in runs:
        return math.nan
    vals = pd.to_numeric(runs[column], errors="coerce").dropna()
    return float(vals.mean()) if len(vals) else math.nan
