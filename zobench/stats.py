"""Uncertainty for every number zobench reports: intervals over eval examples and over seeds, and
paired tests between two systems scored on the same eval examples.

Metrics (the same as ``zobench.scoring.metrics``): accuracy = mean 1[pred = gold]; binary F1 with
candidate 1 as the positive class, F1 = 2·TP / (2·TP + FP + FN), and 0 when TP = 0.

All example-level functions reduce a metric to per-*unit* sums, s_u = Σ_{i ∈ u} (counts of example i),
where a unit u is one example, or with ``groups`` one cluster (a MultiRC paragraph: its answers are
correlated and must be resampled together). Accuracy sums (correct, 1) and F1 sums (TP, FP, FN); the
metric of any resample is a function of Σ_u w_u s_u with w_u the number of times unit u was drawn,
so B resamples are one (B × U) @ (U × k) product.

- ``bootstrap_ci``: percentile bootstrap (Efron & Tibshirani 1993, ch. 13), units drawn with
  replacement; with groups, the cluster bootstrap (Davison & Hinkley 1997, §3.8; Field & Welsh 2007).
- ``paired_bootstrap``: δ = metric(a) − metric(b) on the same resample of the same examples; the
  two-sided p-value is that of the shifted bootstrap distribution under H0: δ = 0,
  p = (1 + #{|δ* − δ| ≥ |δ|}) / (1 + B) (Efron & Tibshirani 1993, §16.4; Berg-Kirkpatrick et al.,
  EMNLP 2012; Koehn, EMNLP 2004). Significance testing in NLP: Dror et al., ACL 2018.
- ``mcnemar``: exact McNemar test on the discordant pairs, b = #(a right, b wrong),
  c = #(a wrong, b right); under H0 b ~ Binomial(b + c, 1/2) (McNemar 1947; Dietterich 1998).
- ``seed_interval``: Student-t interval over seeds, mean ± t_{(1+level)/2, n−1} · s / √n
  (``scipy.stats.t.interval``).

Predictions may be 1-D (n examples) or 2-D (k seeds × n examples, the same examples in every row):
with k rows each example's counts are averaged over the seeds, so the resampling unit stays the
example and the interval covers eval-set sampling of the seed-averaged metric (accuracy: mean over
seeds of the accuracy; F1: the F1 of the seed-pooled counts).

Every resampling function is deterministic for its ``seed``; B = 2000 resamples of 1,300 examples
take a few tens of milliseconds.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as _st

from zobench.errors import ConfigError, bad_choice, bad_value

METRICS = ("accuracy", "f1")
_CHUNK_CELLS = 4_000_000  # resample weights held at once (B_chunk × U floats, 32 MB)


def metric_value(gold, pred, metric: str = "accuracy") -> float:
    """The metric of ``pred`` against ``gold`` (1-D, or k seeds × n averaged as in the module doc)."""
    gold, pred = _arrays(gold, pred, metric)
    return float(_metric(_counts(gold, pred, metric).sum(axis=0, keepdims=True), metric)[0])


def bootstrap_ci(gold, pred, metric: str = "accuracy", groups=None, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (lo, hi) of ``metric`` over eval examples (clusters with ``groups``)."""
    _check(metric, n_boot, level)
    gold, pred = _arrays(gold, pred, metric)
    sums = _unit_sums(_counts(gold, pred, metric), groups, len(gold))
    boots = _resample(sums, n_boot, seed, lambda s: _metric(s, metric))
    return _percentile(boots, level)


def paired_bootstrap(gold, pred_a, pred_b, metric: str = "accuracy", groups=None, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """δ = metric(a) − metric(b) on the same examples: {"delta", "ci95": (lo, hi), "p_value"}.

    ``ci95`` is the percentile interval at ``level`` (the key keeps its name at other levels)."""
    _check(metric, n_boot, level)
    gold, pred_a = _arrays(gold, pred_a, metric)
    _, pred_b = _arrays(gold, pred_b, metric)
    ca, cb = _counts(gold, pred_a, metric), _counts(gold, pred_b, metric)
    k = ca.shape[1]
    sums = _unit_sums(np.concatenate([ca, cb], axis=1), groups, len(gold))

    def delta(s):
        return _metric(s[:, :k], metric) - _metric(s[:, k:], metric)

    observed = float(delta(sums.sum(axis=0, keepdims=True))[0])
    boots = _resample(sums, n_boot, seed, delta)
    # H0: δ = 0. Shift the bootstrap distribution to centre on 0 and ask how often it lands as far out.
    extreme = int(np.count_nonzero(np.abs(boots - observed) >= abs(observed) - 1e-12))
    return {"delta": observed, "ci95": _percentile(boots, level), "p_value": (1 + extreme) / (1 + n_boot)}


def mcnemar(gold, pred_a, pred_b) -> dict:
    """Exact McNemar test of equal accuracy: {"b", "c", "p_value"} (scipy.stats.binomtest, two-sided).

    b = #(a right, b wrong), c = #(a wrong, b right). With no discordant pair, p = 1."""
    gold, pred_a = _arrays(gold, pred_a, "accuracy")
    _, pred_b = _arrays(gold, pred_b, "accuracy")
    if pred_a.ndim != 1 or pred_b.ndim != 1:
        raise ConfigError("mcnemar needs one prediction per example (1-D pred_a and pred_b); for several seeds "
                          "use paired_bootstrap, which averages correctness over seeds.")
    right_a, right_b = pred_a == gold, pred_b == gold
    b, c = int(np.count_nonzero(right_a & ~right_b)), int(np.count_nonzero(~right_a & right_b))
    p = 1.0 if b + c == 0 else float(_st.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"b": b, "c": c, "p_value": p}


def seed_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean and Student-t interval over seeds: {"mean", "lo", "hi", "n", "std"} (std with ddof=1).

    One seed has no spread: lo, hi and std are None (never a zero-width interval)."""
    if not 0 < level < 1:
        raise bad_value("level", level, "a number in (0, 1)")
    vals = np.asarray([float(v) for v in values], dtype=float)
    if vals.size == 0:
        raise bad_value("values", list(values), "at least one value")
    mean = float(vals.mean())
    if vals.size == 1:
        return {"mean": mean, "lo": None, "hi": None, "n": 1, "std": None}
    std = float(vals.std(ddof=1))
    # scipy answers NaN for scale 0; seeds that agree exactly have a zero-width interval, not none
    lo, hi = (mean, mean) if std == 0 else _st.t.interval(level, vals.size - 1, loc=mean, scale=std / math.sqrt(vals.size))
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "n": int(vals.size), "std": std}


# -- internals ------------------------------------------------------------------------------------------

def _check(metric: str, n_boot: int, level: float) -> None:
    if metric not in METRICS:
        raise bad_choice("metric", metric, METRICS)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise bad_value("n_boot", n_boot, "an integer >= 1")
    if not 0 < level < 1:
        raise bad_value("level", level, "a number in (0, 1)")


def _arrays(gold, pred, metric: str):
    if metric not in METRICS:
        raise bad_choice("metric", metric, METRICS)
    gold, pred = np.asarray(gold), np.asarray(pred)
    if gold.ndim != 1 or gold.size == 0:
        raise bad_value("gold", gold.shape, "a non-empty 1-D sequence of labels")
    if pred.ndim not in (1, 2) or pred.shape[-1] != gold.size:
        raise bad_value("pred", pred.shape, f"shape ({gold.size},) or (seeds, {gold.size}): one prediction per example")
    return gold, pred


def _counts(gold: np.ndarray, pred: np.ndarray, metric: str) -> np.ndarray:
    """Per-example sufficient statistics (n × k), averaged over seeds when ``pred`` is 2-D."""
    if metric == "accuracy":
        cols = [(pred == gold).astype(float), np.ones(pred.shape)]
    else:
        pos_p, pos_g = pred == 1, np.broadcast_to(gold == 1, pred.shape)
        cols = [(pos_p & pos_g).astype(float), (pos_p & ~pos_g).astype(float), (~pos_p & pos_g).astype(float)]
    out = np.stack(cols, axis=-1)  # (n, k) or (seeds, n, k)
    return out.mean(axis=0) if out.ndim == 3 else out


def _metric(sums: np.ndarray, metric: str) -> np.ndarray:
    """Metric of each row of summed statistics (B × k)."""
    if metric == "accuracy":
        return sums[:, 0] / sums[:, 1]
    tp, fp, fn = sums[:, 0], sums[:, 1], sums[:, 2]
    denom = 2 * tp + fp + fn
    return np.where(tp > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0)


def _unit_sums(counts: np.ndarray, groups, n: int) -> np.ndarray:
    """Statistics summed per resampling unit: examples, or clusters named by ``groups`` (None: its own)."""
    if groups is None:
        return counts
    groups = list(groups)
    if len(groups) != n:
        raise bad_value("groups", f"{len(groups)} labels", f"one group label per example ({n})")
    if all(g is None for g in groups):
        return counts
    labels = [("group", g) if g is not None else ("example", i) for i, g in enumerate(groups)]
    _, unit = np.unique(np.array([f"{kind}:{value}" for kind, value in labels]), return_inverse=True)
    sums = np.zeros((int(unit.max()) + 1, counts.shape[1]))
    np.add.at(sums, unit, counts)
    return sums


def _resample(sums: np.ndarray, n_boot: int, seed: int, statistic) -> np.ndarray:
    """``statistic`` of B resamples of the rows of ``sums`` drawn with replacement (U draws each).

    Kept rather than ``scipy.stats.bootstrap``: scipy resamples observations of each sample (paired=True
    pairs them by index) but has no cluster resampling (MultiRC's answers of one paragraph drawn together),
    and it would evaluate the F1 of every resample in Python or vectorised over the full (B × n) copy of the
    data; here the metric of B resamples is one (B × U) @ (U × k) product on per-unit sufficient
    statistics, paired by construction (both systems' counts sit in the same rows). Its percentile
    interval is the same estimator as ``bootstrap(..., method="percentile")``."""
    rng = np.random.default_rng(seed)
    units = sums.shape[0]
    chunk = max(1, _CHUNK_CELLS // units)
    out = []
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        draws = rng.integers(0, units, size=(rows, units))
        # weights[b, u] = times unit u was drawn in resample b
        flat = (draws + (np.arange(rows) * units)[:, None]).ravel()
        weights = np.bincount(flat, minlength=rows * units).reshape(rows, units).astype(float)
        out.append(statistic(weights @ sums))
    return np.concatenate(out)


def _percentile(boots: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(boots, [tail, 1 - tail])
    return float(lo), float(hi)
