"""95% intervals of a claim's effect beyond the Student-t over units: over eval examples, from the runs'
per-example predictions (paired bootstrap for a difference, a joint percentile bootstrap otherwise;
Efron & Tibshirani 1993, ch. 13), over each run's training steps (a per-step measurement such as
``step_time_ms``), and the slope ratio's bootstrap over its ``x`` points.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from zobench.aggregate.claims import Claim
from zobench.aggregate.findings_effect import Finding, _replicated, _span, _value_column
from zobench.aggregate.steps import step_values
from zobench.stats import metric_value, paired_bootstrap

N_BOOT, BOOT_SEED, LEVEL = 2000, 0, 0.95


def _pred_file(column: str, cell: dict) -> str | None:
    if "predictions" in cell:
        return cell["predictions"]
    if column.startswith("test_"):
        return "predictions.jsonl"
    if column.startswith("zero_shot_"):
        return "zero_shot_predictions.jsonl"
    return None


def _read_predictions(path: Path) -> dict[str, dict] | None:
    if not path.is_file():
        return None
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[str(rec["id"])] = rec
    return out


def _example_level(claim, values, units, runs_dir, stat, found) -> bool:
    """Effect and interval over eval examples, when every replicate of every (cell, unit) left predictions
    on shared ids. A cell's replicates are stacked as rows (seeds × examples); each unit weighs the same."""
    files: dict[tuple, list[dict]] = {}
    for c in values:
        for u in units:
            recs_u = []
            for row, _, fname in values[c][u]:
                if not fname or not bool(row.get("_from_dirs", False)):
                    return False
                recs = _read_predictions(runs_dir / str(row["run_dir"]) / fname)
                if recs is None:
                    return False
                recs_u.append(recs)
            if len({frozenset(r) for r in recs_u}) > 1:
                found.notes.append(f"cell {c}: its replicate runs for {u} were scored on different example ids: "
                                   f"interval over units instead")
                return False
            files[(c, u)] = recs_u
    every = [r for recs_u in files.values() for r in recs_u]
    first = every[0]
    common = set.intersection(*(set(r) for r in every))
    ids = [i for i in first if i in common]  # the eval set's own order
    if not ids:
        found.notes.append("predictions share no example id: interval over units instead")
        return False
    gold = np.asarray([first[i]["gold"] for i in ids])
    groups = [first[i].get("group") for i in ids]
    groups = groups if all(g is not None for g in groups) else None
    preds = {}
    for c in values:
        # each unit weighs the same whatever its number of replicates: unit u's rows repeat lcm / k_u times
        counts = [len(files[(c, u)]) for u in units]
        reps = math.lcm(*counts)
        if reps * len(units) > 1000:
            reps = 0
            found.notes.append(f"cell {c}: replicate counts {counts} differ too much to weigh units equally; "
                               f"every run weighs the same")
        preds[c] = np.asarray([[recs[i]["prediction"] for i in ids]
                               for u in units for recs in files[(c, u)]
                               for _ in range(reps // len(files[(c, u)]) if reps else 1)])
    metrics = {str(row.get("metric")) for c in values for u in units for row, _, _ in values[c][u]} - {"None", "nan"}
    metric = claim.effect.get("metric") or (metrics.pop() if len(metrics) == 1 else "accuracy")
    e = claim.effect
    if e["kind"] == "difference":
        res = paired_bootstrap(gold, preds[e["a"]], preds[e["b"]], metric, groups=groups, n_boot=N_BOOT,
                               seed=BOOT_SEED, level=LEVEL)
        found.effect, (found.lo, found.hi) = res["delta"], res["ci95"]
        found.method = f"paired bootstrap over {len(ids)} eval examples (p = {res['p_value']:.3g})"
    else:
        found.effect = stat({c: metric_value(gold, p, metric) for c, p in preds.items()})
        found.lo, found.hi = _joint_bootstrap(gold, preds, stat, metric, groups)
        found.method = f"bootstrap over {len(ids)} eval examples resampled jointly in every cell"
    found.method += (f", {metric}, {len(units)} unit(s) averaged"
                     + (" (replicate runs stacked, correctness averaged per example)" if _replicated(found) else "")
                     + (", clustered by group" if groups else ""))
    found.n_examples = len(ids)
    if len(ids) < max(len(r) for r in every):
        found.notes.append(f"paired on the {len(ids)} example ids present in every predictions file")
    return True


# tuning schemes whose untrained model computes the base model itself: full (no change) and LoRA (B = 0 at
# init, Hu et al. 2021 §4.1), so the untuned-model cell (tuning=full, no steps) stands for their step 0
IDENTITY_AT_INIT = ("full", "lora")
UNTUNED_KEYS = ("model", "task", "template", "dtype")


def _untuned_predictions(row: pd.Series, runs: pd.DataFrame, runs_dir: Path) -> dict[str, dict] | None:
    """What ``row``'s model predicted before training: its own ``zero_shot_predictions.jsonl``, else the
    predictions of the untuned-model run (steps_budget 0) of the same model, task, template and dtype, with
    the same tuning or, for a scheme that computes the base model at init, tuning=full."""
    own = _read_predictions(runs_dir / str(row["run_dir"]) / "zero_shot_predictions.jsonl")
    if own is not None or "steps_budget" not in runs:
        return own
    tunings = {row.get("tuning")} | ({"full"} if row.get("tuning") in IDENTITY_AT_INIT else set())
    zero = runs[(pd.to_numeric(runs["steps_budget"], errors="coerce") == 0) & runs["tuning"].isin(tunings)]
    for key in UNTUNED_KEYS:
        if key in zero and key in row:
            zero = zero[zero[key].astype(str) == str(row[key])]
    for _, z in zero.iterrows():
        if "run_dir" in z and isinstance(z["run_dir"], str):
            found = _read_predictions(runs_dir / z["run_dir"] / "predictions.jsonl")
            if found is not None:
                return found
    return None


def unmoved(values, units, runs_dir: Path, runs: pd.DataFrame) -> bool:
    """True when every cell is a trained model (reads ``predictions.jsonl``) and every one of its runs predicts,
    on every example, what its untuned model predicted (``_untuned_predictions``): no arm moved, so their
    difference says nothing about the optimizers (the budget was too small)."""
    for c in values:
        for u in units:
            for row, _, fname in values[c][u]:
                if fname != "predictions.jsonl" or pd.to_numeric(row.get("steps_budget"), errors="coerce") == 0:
                    return False
                tuned = _read_predictions(runs_dir / str(row["run_dir"]) / fname)
                untuned = _untuned_predictions(row, runs, runs_dir)
                if tuned is None or untuned is None or any(
                        i not in untuned or rec["prediction"] != untuned[i]["prediction"] for i, rec in tuned.items()):
                    return False
    return True


def _joint_bootstrap(gold, preds: dict[str, np.ndarray], stat, metric: str, groups) -> tuple[float, float]:
    """Percentile interval of ``stat`` over one resample of the examples (clusters) shared by every cell."""
    n = len(gold)
    if groups is not None and all(g is not None for g in groups):
        _, unit = np.unique(np.array([str(g) for g in groups]), return_inverse=True)
        clusters = [np.flatnonzero(unit == u) for u in range(int(unit.max()) + 1)]
    else:
        clusters = [np.array([i]) for i in range(n)]
    rng = np.random.default_rng(BOOT_SEED)
    boots = []
    for _ in range(N_BOOT):
        pick = rng.integers(0, len(clusters), len(clusters))
        idx = np.concatenate([clusters[j] for j in pick])
        boots.append(stat({c: metric_value(gold[idx], p[:, idx], metric) for c, p in preds.items()}))
    boots = np.asarray(boots, dtype=float)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2
    lo, hi = np.quantile(boots, [tail, 1 - tail])
    return float(lo), float(hi)


def _slope_ratio(claim: Claim, rows: dict[str, pd.DataFrame], found: Finding) -> None:
    e = claim.effect
    x, col = e.get("x", "seq_len"), _value_column(claim, {})
    means = {}
    for c in (e["a"], e["b"]):
        col_c = _value_column(claim, claim.cells[c])
        r = rows[c]
        if x not in r or col_c not in r:
            found.reason = f"cell {c} has no {x} or {col_c} column"
            return
        means[c] = (r.assign(_x=pd.to_numeric(r[x], errors="coerce"), _y=pd.to_numeric(r[col_c], errors="coerce"))
                    .dropna(subset=["_x", "_y"]).groupby("_x")["_y"].mean())
    xs = sorted(set(means[e["a"]].index) & set(means[e["b"]].index))
    found.n_units = len(xs)
    if len(xs) < 3:
        found.reason = f"{len(xs)} {x} value(s) shared by both cells: a slope interval needs at least 3"
        return
    xa = np.asarray(xs, dtype=float)
    ya, yb = (means[c].loc[xs].to_numpy(float) for c in (e["a"], e["b"]))

    def ratio(i):
        if len(set(xa[i])) < 2:
            return math.nan
        sb = np.polyfit(xa[i], yb[i], 1)[0]
        return np.polyfit(xa[i], ya[i], 1)[0] / sb if sb > 0 else math.nan

    found.effect = ratio(np.arange(len(xs)))
    rng = np.random.default_rng(BOOT_SEED)
    boots = np.array([ratio(rng.integers(0, len(xs), len(xs))) for _ in range(N_BOOT)])
    boots = boots[np.isfinite(boots)]
    if math.isnan(found.effect) or boots.size == 0:
        found.reason = f"the slope of {e['b']} against {x} is not positive: the ratio is undefined"
        return
    found.lo, found.hi = (float(q) for q in np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
    found.method = f"least-squares slopes of {col} against {x}; bootstrap over the {len(xs)} {x} points"


def _step_level(claim: Claim, values, units, runs_dir: Path, stat, found: Finding) -> bool:
    """Effect and interval over training steps: each run's value is the median of its per-step ``column``
    (as its summary's), and the percentile bootstrap resamples every run's steps independently (the arms'
    steps are not paired); a cell's value is the mean over its replicates, then over units. The interval
    holds the step-to-step noise of these runs, not the differences between machines or their load."""
    column = _value_column(claim, {})
    steps: dict[tuple, list[np.ndarray]] = {}
    for c in values:
        for u in units:
            arrays = [step_values(runs_dir / str(row["run_dir"]), column) for row, _, _ in values[c][u]
                      if bool(row.get("_from_dirs", False))]
            if len(arrays) != len(values[c][u]) or any(a is None for a in arrays):
                found.notes.append(f"cell {c}: a run without per-step {column} in metrics.jsonl: interval over units")
                return False
            steps[(c, u)] = arrays

    def value(draw) -> float:
        return stat({c: float(np.mean([np.mean([draw(a) for a in steps[(c, u)]]) for u in units])) for c in values})

    found.effect = value(np.median)
    rng = np.random.default_rng(BOOT_SEED)
    boots = np.asarray([value(lambda a: np.median(a[rng.integers(0, len(a), len(a))])) for _ in range(N_BOOT)])
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return False
    alpha = (1 - LEVEL) / 2
    found.lo, found.hi = (float(np.quantile(boots, q)) for q in (alpha, 1 - alpha))
    counts = [len(a) for arrays in steps.values() for a in arrays]
    found.method = (f"bootstrap over the training steps of each run (median of {_span(counts)} steps per run, "
                    f"warm-up dropped, resampled per run), {len(units)} unit(s) averaged: the interval holds "
                    "these runs' step-to-step noise, not differences between machines or their load")
    return True
