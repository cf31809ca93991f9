"""Paired comparisons between the cells of a table, on the same eval examples.

A layout's ``compare`` block (all keys optional)::

    compare:
      reference: zero_shot   # zero_shot: each cell against its own runs' zero_shot_predictions.jsonl
                             # (the untuned model, same eval examples); where the cell's runs left none
                             # (trainer.zero_shot=false, as in the CPU study), the untuned model's own run:
                             # the completed steps_budget == 0 run with the same model, task, template
                             # and dtype, its predictions.jsonl; or a row, by its label
                             # ("ZO-SGD") or one of its values (zo_sgd); or none: no comparison
      test: bootstrap        # bootstrap: paired bootstrap of the task metric | mcnemar: exact McNemar
                             # (accuracy, one seed a side; otherwise the paired bootstrap is used)
      level: 0.95
      n_boot: 2000

Pairing (Dror et al., ACL 2018: paired tests on the same test examples, not overlapping intervals):
examples are matched by their stable ``id``. When every run of both cells was scored on the same
eval examples (zobench's eval set does not move with the seed), each example's correctness is
averaged over each cell's seeds and the paired bootstrap resamples examples (zobench.stats, 2-D
predictions). Otherwise pairs are formed within each seed both cells ran, and pooled; an example
seen under several seeds is one cluster. A seed is (seed, data_seed): both are seed axes. MultiRC's ``group`` (question) is the resampling cluster.

A cell that differs from its reference at ``level`` is marked † in the rendered tables, with a
legend line naming the test and the zero-shot source; cells without predictions files (old runs),
and zero-shot cells against their own run, are never marked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from zobench import stats
from zobench.aggregate.predictions import ZERO_SHOT_PREDICTIONS, groups_of, read_predictions
from zobench.errors import ConfigError, bad_choice, bad_value

ZERO_SHOT = "zero_shot"
SAME_RUNS = "zero-shot (the same runs' untuned model)"
OWN_RUN = "zero-shot (the untuned model's own run)"
# what an untuned model's own run must share with the cell it stands for
UNTUNED_KEYS = ("model", "task", "template", "dtype")
SEED_AXES = ("seed", "data_seed")
NONE = "none"
TESTS = ("bootstrap", "mcnemar")
MARK = "†"
# table values that predictions.jsonl can recompute: column -> metric (None: the run's task metric)
PREDICTED_VALUES = {"test_score": None, "test_accuracy": "accuracy"}


@dataclass(frozen=True)
class CompareSpec:
    reference: str = ZERO_SHOT
    test: str = "bootstrap"
    level: float = 0.95
    n_boot: int = 2000
    seed: int = 0

    @classmethod
    def from_dict(cls, spec: dict | None, layout: str = "") -> "CompareSpec":
        spec = dict(spec or {})
        where = f"layout {layout}: " if layout else ""
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{where}compare.{sorted(unknown)[0]} is not a key of compare: allowed keys are "
                              f"{', '.join(cls.__dataclass_fields__)}.")
        out = cls(**{k: v for k, v in spec.items() if v is not None})
        if out.test not in TESTS:
            raise bad_choice("compare.test", out.test, TESTS)
        if not isinstance(out.level, (int, float)) or not 0 < out.level < 1:
            raise bad_value("compare.level", out.level, "a number in (0, 1)")
        if isinstance(out.n_boot, bool) or not isinstance(out.n_boot, int) or out.n_boot < 1:
            raise bad_value("compare.n_boot", out.n_boot, "an integer >= 1")
        return replace(out, reference=str(out.reference))

    @property
    def enabled(self) -> bool:
        return self.reference.lower() != NONE


@dataclass(frozen=True)
class Comparison:
    """metric(cell) − metric(reference) on paired eval examples (in the table's scale)."""

    reference: str
    delta: float
    lo: float
    hi: float
    p_value: float
    test: str              # "paired bootstrap" | "McNemar"
    n_examples: int
    pairing: str           # "averaged over seeds" | "within seed"
    significant: bool
    source: str = ""       # the reference's predictions: "" (the reference row's runs), or for zero-shot
                           # "zero_shot_predictions.jsonl" | the untuned run's directory (its predictions.jsonl)


def _metric(runs: pd.DataFrame, column: str) -> str | None:
    if column not in PREDICTED_VALUES:
        return None
    if PREDICTED_VALUES[column]:
        return PREDICTED_VALUES[column]
    metrics = set(runs["metric"].dropna()) if "metric" in runs else {"accuracy"}
    metrics = metrics or {"accuracy"}
    return metrics.pop() if len(metrics) == 1 and metrics <= set(stats.METRICS) else None


def _seed(run: pd.Series) -> tuple:
    """The run's seed for within-seed pairing: (seed, data_seed), both seed axes (NaN: None)."""
    return tuple(None if k not in run or pd.isna(run[k]) else run[k] for k in SEED_AXES)


def _predictions(runs: pd.DataFrame, zero_shot: bool) -> list[tuple[object, pd.DataFrame]]:
    out = []
    for _, run in runs.iterrows():
        df = read_predictions(run.get("run_path"), zero_shot=zero_shot)
        if df is not None:
            out.append((_seed(run), df))
    return out


def _steps_zero(runs: pd.DataFrame) -> pd.Series:
    if "steps_budget" not in runs:
        return pd.Series(False, index=runs.index)
    return pd.to_numeric(runs["steps_budget"], errors="coerce").eq(0)


def _text(v) -> str | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def untuned_runs(runs: pd.DataFrame, all_runs: pd.DataFrame | None) -> pd.DataFrame | None:
    """The untuned model's own runs for a cell: completed, steps_budget == 0, with the cell's one model,
    task, template and dtype (None: no such run, or the cell spans several of them)."""
    if all_runs is None or all_runs.empty or runs.empty:
        return None
    ok = _steps_zero(all_runs)
    if "status" in all_runs:
        ok &= all_runs["status"].eq("completed")
    for key in UNTUNED_KEYS:
        if key not in runs:
            continue
        mine = set(runs[key].map(_text))
        if len(mine) > 1 or key not in all_runs:
            return None
        ok &= all_runs[key].map(_text).map(lambda v, m=mine.pop(): v == m).astype(bool)
    out = all_runs[ok]
    out = out.sort_values("run_dir") if "run_dir" in out else out
    return out if not out.empty else None


def _untuned_predictions(a, candidates: pd.DataFrame) -> tuple[list, str]:
    """The untuned run's predictions: the first run (by directory) scored on the cell's example ids; when
    none is, every candidate (paired within seed)."""
    b, dirs = [], []
    for _, run in candidates.iterrows():
        df = read_predictions(run.get("run_path"))
        if df is not None:
            b.append((_seed(run), df))
            dirs.append(str(run.get("run_dir", run.get("run_path"))))
    ids = [set(df["id"]) for _, df in a]
    for (seed, df), where in zip(b, dirs):
        if all(len(df) == len(i) and set(df["id"]) == i for i in ids):
            return [(seed, df)], where
    return b, "; ".join(dirs)


def _pairs(a, b):
    """(gold, A, B, groups, pairing): prediction matrices (seeds × examples) on examples matched by id."""
    frames = [df for _, df in a + b]
    ids = set(frames[0]["id"])
    if all(len(df) == len(ids) and set(df["id"]) == ids for df in frames):
        first = frames[0].set_index("id")
        order = first.index
        gold = first["gold"].to_numpy()
        for df in frames[1:]:
            if not np.array_equal(df.set_index("id").loc[order, "gold"].to_numpy(), gold):
                return None  # the same ids with other labels: not the same examples
        mat = [np.stack([df.set_index("id").loc[order, "prediction"].to_numpy() for _, df in side]) for side in (a, b)]
        return gold, mat[0], mat[1], groups_of(first.reset_index()), "averaged over seeds"
    by_seed_b = {seed: df for seed, df in b}
    joined = []
    for seed, df in a:
        if seed in by_seed_b:
            m = df.merge(by_seed_b[seed], on="id", suffixes=("_a", "_b"))
            joined.append(m[m["gold_a"] == m["gold_b"]])
    if not joined or not sum(len(j) for j in joined):
        return None
    m = pd.concat(joined, ignore_index=True)
    # one example under several seeds is one cluster (with its MultiRC question, when it has one)
    groups = [g if g is not None else f"id:{i}" for g, i in zip(m["group_a"], m["id"])]
    return (m["gold_a"].to_numpy(), m["prediction_a"].to_numpy()[None], m["prediction_b"].to_numpy()[None],
            groups, "within seed")


def compare_cells(runs: pd.DataFrame, reference_runs: pd.DataFrame | None, column: str, scale: float,
                  spec: CompareSpec, reference_label: str, all_runs: pd.DataFrame | None = None) -> Comparison | None:
    """The cell's runs against the reference cell's runs (None: zero-shot, the same runs' zero-shot
    predictions, else the untuned model's own run among ``all_runs``: see ``untuned_runs``)."""
    metric = _metric(runs, column)
    if metric is None or runs.empty:
        return None
    a = _predictions(runs, zero_shot=False)
    if not a:
        return None
    source = ""
    if reference_runs is not None:
        b = _predictions(reference_runs, zero_shot=False)
    else:
        b, source = _predictions(runs, zero_shot=True), ZERO_SHOT_PREDICTIONS
        if not b:
            if _steps_zero(runs).all():
                return None  # the untuned model itself: nothing to compare it with
            candidates = untuned_runs(runs, all_runs)
            if candidates is None:
                return None
            b, source = _untuned_predictions(a, candidates)
            if reference_label == ZERO_SHOT or reference_label == SAME_RUNS:
                reference_label = OWN_RUN
    if not b:
        return None
    paired = _pairs(a, b)
    if paired is None:
        return None
    gold, pa, pb, groups, pairing = paired
    if spec.test == "mcnemar" and metric == "accuracy" and pa.shape[0] == pb.shape[0] == 1:
        out = stats.mcnemar(gold, pa[0], pb[0])
        delta = stats.metric_value(gold, pa[0]) - stats.metric_value(gold, pb[0])
        lo = hi = math.nan
        test = "McNemar"
    else:
        out = stats.paired_bootstrap(gold, pa if pa.shape[0] > 1 else pa[0], pb if pb.shape[0] > 1 else pb[0],
                                     metric, groups=groups, n_boot=spec.n_boot, seed=spec.seed, level=spec.level)
        delta, (lo, hi) = out["delta"], out["ci95"]
        test = "paired bootstrap"
    return Comparison(reference_label, delta * scale, lo * scale, hi * scale, out["p_value"], test, len(gold),
                      pairing, out["p_value"] < 1 - spec.level, source)


def legend(comparisons: list[Comparison], spec: CompareSpec) -> str | None:
    """One line under a table: what † means and which test gave it."""
    if not comparisons:
        return None
    refs = ", ".join(dict.fromkeys(c.reference for c in comparisons))
    tests = " / ".join(dict.fromkeys(
        ("exact McNemar test (accuracy, one seed a side)" if c.test == "McNemar" else
         f"paired bootstrap of the metric, {spec.n_boot} resamples, p from the shifted bootstrap distribution")
        for c in comparisons))
    pairing = " / ".join(dict.fromkeys(
        "correctness averaged over seeds per example" if c.pairing == "averaged over seeds"
        else "pairs within seed, pooled" for c in comparisons))
    sizes = sorted({c.n_examples for c in comparisons})
    n = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    sources = list(dict.fromkeys(c.source for c in comparisons if c.source))
    own = [s for s in sources if s != ZERO_SHOT_PREDICTIONS]
    where = []
    if ZERO_SHOT_PREDICTIONS in sources:
        where.append(f"each cell's own runs' {ZERO_SHOT_PREDICTIONS}")
    if own:
        where.append("the untuned model's own run (completed, steps_budget=0, same model, task, template and "
                     "dtype), its predictions.jsonl: " + ", ".join(f"`{s}`" for s in own))
    zs = f" Zero-shot source: {'; '.join(where)}." if where else ""
    return (f"{MARK} differs from {refs} at {spec.level:.0%}: two-sided {tests}; the same {n} eval examples "
            f"paired by id, {pairing}.{zs} No mark: no significant difference, or no predictions.jsonl to pair.")
