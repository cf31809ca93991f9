"""zobench.compute: forward-pass equivalents, hand-computed."""
from __future__ import annotations

import pytest

from zobench.compute import equivalents, forward_pass_equivalents, pass_kind


@pytest.mark.parametrize("summary, expected", [
    # MeZO ZO-SGD: 2 forwards a step, 100 steps = 200 forwards
    ({"family": "zo", "optimizer": "zo_sgd", "forward_passes": 200, "steps": 100}, 200.0),
    # FO-SGD: 1 forward + 1 backward (= 2 forwards) a step, 100 steps = 300
    ({"family": "fo", "optimizer": "fo_sgd", "forward_passes": 100, "steps": 100}, 300.0),
    # Forward-Grad q=2: 2 JVPs a step, each primal + tangent (2) = 3, 50 steps = 300
    ({"family": "zo", "optimizer": "forward_grad", "forward_passes": 100, "steps": 50}, 300.0),
    # hybrid q=1: (1 fwd+bwd + 2 ZO forwards) a step counted as 3 passes; 10 steps: 30 + 2·10 backward = 50
    ({"family": "hybrid", "optimizer": "hybrid_zo_fo", "forward_passes": 30, "steps": 10}, 50.0),
    # zero-shot / ICL: nothing trained
    ({"family": "zo", "optimizer": "zo_sgd", "forward_passes": 0, "steps": 0}, 0.0),
])
def test_forward_pass_equivalents_hand_computed(summary, expected):
    assert forward_pass_equivalents(summary) == expected


def test_equal_compute_means_fo_gets_a_third_of_zo_steps():
    """ZO-SGD at 300 steps (600 forwards) and FO at 200 steps (600 equivalents) have equal compute."""
    zo = forward_pass_equivalents({"optimizer": "zo_sgd", "forward_passes": 600, "steps": 300})
    fo = forward_pass_equivalents({"optimizer": "fo_adam", "forward_passes": 200, "steps": 200})
    assert zo == fo == 600.0


def test_old_runs_infer_the_kind_from_the_optimizer_or_config():
    assert pass_kind({"optimizer": "fo_adam"}) == "fo"
    assert pass_kind({"optimizer": "bszo"}) == "zo"
    assert pass_kind({"optimizer": "zo_sgd_block"}) == "zo"
    assert pass_kind({"optimizer": "hybrid_zo_fo"}) == "hybrid"
    renamed_fg = {"optimizer": {"name": "my_fg", "family": "zo",
                                "estimator": {"_target_": "zobench.optim.forward_grad.ForwardGrad"}}}
    assert pass_kind({"optimizer": "my_fg"}, renamed_fg) == "forward_grad"
    assert pass_kind({}, {"optimizer": {"name": "custom", "family": "fo"}}) == "fo"


def test_unknown_is_none_not_a_guess():
    assert forward_pass_equivalents({"optimizer": "zo_sgd"}) is None          # no count recorded
    assert forward_pass_equivalents({"optimizer": "mystery", "forward_passes": 5}) is None
    assert forward_pass_equivalents({"family": "hybrid", "forward_passes": 5}) is None  # needs steps
    assert equivalents(float("nan"), 1, "zo") is None
    with pytest.raises(ValueError, match="kind"):
        equivalents(1, 1, "bogus")
