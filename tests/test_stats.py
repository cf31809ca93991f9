"""zobench.stats: known answers, coverage in simulation, cluster vs iid, paired tests."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats as st

from zobench import stats
from zobench.errors import ConfigError


def _system(rng, gold, accuracy):
    """Predictions that are right with probability ``accuracy`` (binary labels)."""
    return np.where(rng.random(gold.size) < accuracy, gold, 1 - gold)


def test_metric_value_matches_scoring_metrics():
    """Accuracy and F1 (positive class 1, 0 when TP = 0) agree with zobench.scoring.metrics."""
    from types import SimpleNamespace

    from zobench.scoring import metrics

    gold = [1, 0, 1, 1, 0, 0, 1]
    pred = [1, 1, 0, 1, 0, 1, 1]
    ref = metrics(pred, [SimpleNamespace(gold=g) for g in gold])
    assert stats.metric_value(gold, pred, "accuracy") == pytest.approx(ref["accuracy"])
    assert stats.metric_value(gold, pred, "f1") == pytest.approx(ref["f1"])  # tp 3, fp 2, fn 1 -> 6/9
    assert stats.metric_value(gold, pred, "f1") == pytest.approx(6 / 9)
    assert stats.metric_value([1, 0], [0, 0], "f1") == 0.0


def test_seeds_rows_average_correctness():
    gold = np.array([0, 1, 1, 0])
    two = np.array([[0, 1, 1, 0], [1, 1, 0, 0]])  # accuracies 1.0 and 0.5
    assert stats.metric_value(gold, two) == pytest.approx(0.75)


def test_mcnemar_known_answer():
    """b=10, c=2: the exact two-sided binomial p of 2 successes in 12 at 1/2 (= 0.0386)."""
    gold = np.zeros(30, dtype=int)
    a = np.ones(30, dtype=int)
    b = np.ones(30, dtype=int)
    a[:10] = 0          # a right, b wrong: 10
    b[10:12] = 0        # a wrong, b right: 2
    a[12:20] = 0; b[12:20] = 0  # both right: 8 (concordant, ignored)
    out = stats.mcnemar(gold, a, b)
    assert (out["b"], out["c"]) == (10, 2)
    assert out["p_value"] == pytest.approx(st.binomtest(2, 12, 0.5).pvalue)
    assert out["p_value"] == pytest.approx(2 * sum(math.comb(12, k) for k in range(3)) / 2 ** 12)
    assert stats.mcnemar(gold, a, a)["p_value"] == 1.0


def test_seed_interval_student_t():
    out = stats.seed_interval([0.80, 0.84, 0.82])
    half = st.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert out["mean"] == pytest.approx(0.82) and out["n"] == 3 and out["std"] == pytest.approx(0.02)
    assert (out["lo"], out["hi"]) == (pytest.approx(0.82 - half), pytest.approx(0.82 + half))
    one = stats.seed_interval([0.7])
    assert one == {"mean": 0.7, "lo": None, "hi": None, "n": 1, "std": None}


def test_iid_bootstrap_matches_scipy_percentile_bootstrap():
    """The iid accuracy interval agrees with scipy.stats.bootstrap(method='percentile') within resampling noise."""
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 1000)
    pred = _system(rng, gold, 0.8)
    lo, hi = stats.bootstrap_ci(gold, pred, n_boot=4000)
    ref = st.bootstrap(((pred == gold).astype(float),), np.mean, n_resamples=4000, method="percentile",
                       random_state=0).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.004) and hi == pytest.approx(ref.high, abs=0.004)
    assert lo < stats.metric_value(gold, pred) < hi


def test_bootstrap_is_deterministic_and_fast():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 1300)
    pred = _system(rng, gold, 0.7)
    start = time.perf_counter()
    first = stats.bootstrap_ci(gold, pred, n_boot=2000, seed=5)
    assert time.perf_counter() - start < 1.0
    assert stats.bootstrap_ci(gold, pred, n_boot=2000, seed=5) == first
    assert stats.bootstrap_ci(gold, pred, n_boot=2000, seed=6) != first


def test_bootstrap_covers_true_accuracy_at_about_nominal_rate():
    """200 eval sets of 300 examples from a system of true accuracy 0.7: the 95% interval covers 0.7
    in roughly 95% of them (binomial noise of 200 trials: accept 0.89-0.99)."""
    rng = np.random.default_rng(11)
    covered = 0
    for trial in range(200):
        gold = rng.integers(0, 2, 300)
        pred = _system(rng, gold, 0.7)
        lo, hi = stats.bootstrap_ci(gold, pred, n_boot=400, seed=trial)
        covered += lo <= 0.7 <= hi
    assert 0.89 <= covered / 200 <= 0.99


def test_cluster_bootstrap_wider_for_correlated_groups():
    """MultiRC-like: answers of one question are all right or all wrong together; resampling whole
    questions gives a wider interval than treating the answers as independent."""
    rng = np.random.default_rng(2)
    questions, per = 100, 8
    gold = rng.integers(0, 2, questions * per)
    right = np.repeat(rng.random(questions) < 0.7, per)
    pred = np.where(right, gold, 1 - gold)
    groups = [f"q{i // per}" for i in range(gold.size)]
    iid = stats.bootstrap_ci(gold, pred)
    cluster = stats.bootstrap_ci(gold, pred, groups=groups)
    assert (cluster[1] - cluster[0]) > 2 * (iid[1] - iid[0])
    f1_iid, f1_cluster = stats.bootstrap_ci(gold, pred, "f1"), stats.bootstrap_ci(gold, pred, "f1", groups=groups)
    assert (f1_cluster[1] - f1_cluster[0]) > 1.5 * (f1_iid[1] - f1_iid[0])
    # groups of None (non-MultiRC tasks) are single examples: the iid interval
    assert stats.bootstrap_ci(gold, pred, groups=[None] * gold.size) == iid


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 800)
    base = rng.random(800)
    a = np.where(base < 0.80, gold, 1 - gold)   # 80% right
    b = np.where(base < 0.70, gold, 1 - gold)   # 70% right, on a subset of a's right answers
    real = stats.paired_bootstrap(gold, a, b)
    assert real["delta"] == pytest.approx(stats.metric_value(gold, a) - stats.metric_value(gold, b))
    assert real["p_value"] < 0.01 and real["ci95"][0] > 0
    null_b = _system(np.random.default_rng(5), gold, 0.8)
    null_a = _system(np.random.default_rng(6), gold, 0.8)
    null = stats.paired_bootstrap(gold, null_a, null_b)
    assert null["p_value"] > 0.05 and null["ci95"][0] < 0 < null["ci95"][1]
    same = stats.paired_bootstrap(gold, a, a)
    assert same["delta"] == 0 and same["p_value"] == 1.0


def test_paired_bootstrap_agrees_with_mcnemar_on_accuracy():
    rng = np.random.default_rng(7)
    gold = rng.integers(0, 2, 800)
    a, b = _system(rng, gold, 0.78), _system(rng, gold, 0.72)
    boot, exact = stats.paired_bootstrap(gold, a, b, n_boot=4000), stats.mcnemar(gold, a, b)
    assert (boot["p_value"] < 0.05) == (exact["p_value"] < 0.05)
    assert boot["p_value"] == pytest.approx(exact["p_value"], abs=0.02)


@pytest.mark.parametrize("call, key", [
    (lambda: stats.bootstrap_ci([0, 1], [0, 1], metric="auc"), "metric"),
    (lambda: stats.bootstrap_ci([0, 1], [0, 1], n_boot=0), "n_boot"),
    (lambda: stats.bootstrap_ci([0, 1], [0, 1], level=95), "level"),
    (lambda: stats.bootstrap_ci([0, 1], [0, 1, 1]), "pred"),
    (lambda: stats.bootstrap_ci([0, 1], [0, 1], groups=["a"]), "groups"),
    (lambda: stats.seed_interval([]), "values"),
])
def test_bad_input_names_the_argument(call, key):
    with pytest.raises(ConfigError, match=key):
        call()


def test_seed_interval_of_identical_seeds_is_zero_width():
    """scipy.stats.t.interval gives NaN at scale 0; seeds that agree exactly get lo = hi = mean."""
    out = stats.seed_interval([0.5, 0.5, 0.5])
    assert (out["lo"], out["hi"], out["std"]) == (0.5, 0.5, 0.0)
