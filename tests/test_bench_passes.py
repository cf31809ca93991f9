"""The bench's direction-pass phase and its paired-round ratio intervals (zobench/bench_passes.py)."""
import math

import pytest
import torch

from zobench.bench_passes import FLOORS, direction_passes, paired_ratio, verdict


def test_paired_ratio_is_a_geometric_mean_with_a_log_symmetric_interval():
    same = paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])  # every round's ratio is 2: no spread
    assert same == {"ratio": pytest.approx(2.0), "lo": pytest.approx(2.0), "hi": pytest.approx(2.0), "n": 3}
    r = paired_ratio([2.0, 8.0], [1.0, 1.0])
    assert r["ratio"] == pytest.approx(4.0)  # sqrt(2 * 8), not the arithmetic mean 5
    assert r["lo"] < 2.0 and r["hi"] > 8.0 and r["lo"] * r["hi"] == pytest.approx(16.0)  # t with 1 dof: wide
    inverse = paired_ratio([1.0, 1.0], [2.0, 8.0])  # a ratio and its inverse get reciprocal intervals
    assert inverse["ratio"] == pytest.approx(1 / 4.0) and inverse["hi"] == pytest.approx(1 / r["lo"])
    one = paired_ratio([3.0], [2.0])
    assert one["ratio"] == pytest.approx(1.5) and one["lo"] is None and one["n"] == 1
    with pytest.raises(ValueError, match="same number"):
        paired_ratio([1.0, 2.0], [1.0])


@pytest.mark.parametrize("lo,hi,better,want", [
    (1.00, 1.10, "lower", "yes"), (1.10, 1.20, "lower", "unclear"), (1.16, 1.30, "lower", "no"),
    (5.1, 6.0, "higher", "yes"), (4.5, 5.5, "higher", "unclear"), (4.0, 4.9, "higher", "no")])
def test_a_target_is_met_only_when_the_whole_interval_meets_it(lo, hi, better, want):
    target = 1.15 if better == "lower" else 5.0
    assert verdict({"ratio": math.sqrt(lo * hi), "lo": lo, "hi": hi, "n": 5}, target, better) == want


def test_one_round_is_judged_on_its_value():
    assert verdict({"ratio": 1.1, "lo": None, "hi": None, "n": 1}, 1.15, "lower") == "yes"
    assert verdict({"ratio": 1.2, "lo": None, "hi": None, "n": 1}, 1.15, "lower") == "no"


def test_direction_passes_time_every_stream_against_both_floors():
    torch.manual_seed(0)
    params = [torch.randn(3000), torch.randn(40, 50), torch.randn(7)]
    before = [p.clone() for p in params]
    dists = ["gaussian", "rademacher", "philox:gaussian"]
    out = direction_passes(params, dists, torch.device("cpu"), repeats=2)
    assert out["elements"] == 3000 + 2000 + 7
    for name in (*FLOORS, *dists):
        assert len(out[name]["times_ms"]) == 2 and out[name]["time_ms"] > 0, name
        assert out[name]["ns_per_element"] == pytest.approx(out[name]["time_ms"] * 1e6 / out["elements"])
    assert out["inplace_add"]["over_inplace_add"] == pytest.approx(1.0)
    for p, q in zip(params, before):  # passes of scale 1e-12: the weights are where they were
        assert torch.allclose(p, q, atol=1e-9)
