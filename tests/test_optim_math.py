"""The optimizers against their math: Kalman = Gaussian posterior, Forward-Grad = ∇L·z, the
conservative step never goes uphill, transforms = torch.optim on the materialized estimate."""
from __future__ import annotations

import pytest
import torch

from tests.test_optimizers import TINY_EXAMPLES, LeastSquares, build
from tests.tiny import load_tiny
from zobench.errors import ConfigError
from zobench.optim.bszo import BSZO, KalmanPosterior
from zobench.optim.closure import MicroBatchLoss, batch_loss
from zobench.optim.decay import decays
from zobench.optim.directions import direction, mix
from zobench.optim.forward_grad import ForwardGrad
from zobench.optim.spsa import SPSA
from zobench.optim.zo import ZOOptimizer
from zobench.scoring import Scorer
from zobench.tasks.base import Example

f64 = torch.float64


def closed_form_posterior(k: int, sigma_prior: float, observations):
    """N(μ, Σ) of g ~ N(0, σ_p² I) given y_j = d_jᵀg + e_j, e_j ~ N(0, σ_j²‖d_j‖²), all at once."""
    precision, info = torch.eye(k, dtype=f64) / sigma_prior ** 2, torch.zeros(k, dtype=f64)
    for d, y, sigma in observations:
        noise = sigma ** 2 * float(d @ d)
        precision += torch.outer(d, d) / noise
        info += d * y / noise
    cov = torch.linalg.inv(precision)
    return cov @ info, cov


# -- BSZO --------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3])
def test_kalman_update_equals_closed_form_gaussian_posterior(k):
    g = torch.Generator().manual_seed(k)
    post, observations = KalmanPosterior(k, sigma_prior=0.7), []
    for j in range(k + 3):
        d = torch.randn(k, generator=g, dtype=f64) * (1 + j)  # any direction, any length
        y, sigma = float(torch.randn(1, generator=g)), 0.1 + 0.2 * j  # σ_n may change between observations
        post.observe(d, y, sigma)
        observations.append((d, y, sigma))
        mu, cov = closed_form_posterior(k, 0.7, observations)
        torch.testing.assert_close(post.mu, mu, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(post.cov, cov, rtol=1e-9, atol=1e-12)


def bszo_step(extra: str, one_sided: bool, adaptive: bool = True, steps: int = 1):
    """BSZO on a linear loss L = aᵀθ (exact differences), recording every (d, y, σ_n) it folds in."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.zeros(50, dtype=f64))
    a = torch.randn(50, dtype=f64)
    est = BSZO(subspace_dim=3, num_observations=5, one_sided=one_sided, extra_observations=extra,
               sigma_prior=2.0, sigma_noise=0.5, adaptive_noise=adaptive)
    est.setup([("theta", theta)])
    records, observe = [], KalmanPosterior.observe

    def recording(self, d, y, sigma):
        records.append((d.clone(), y, sigma))
        observe(self, d, y, sigma)

    KalmanPosterior.observe = recording
    try:
        results = [est([theta], lambda: a @ theta, 1e-3, seed) for seed in range(steps)]
    finally:
        KalmanPosterior.observe = observe
    return est, theta, a, results, records


@pytest.mark.parametrize("extra", ["reuse", "probe"])
@pytest.mark.parametrize("one_sided", [True, False])
def test_bszo_posterior_mean_is_the_closed_form_one(extra, one_sided):
    est, theta, a, (result,), records = bszo_step(extra, one_sided)
    assert len(records) == 5
    zs = torch.stack([direction(s, 0, theta) for s in result.seeds])
    for i, (d, y, _) in enumerate(records[:3]):  # the first k: coordinates, y = the exact ∇L·z_i
        assert torch.equal(d, torch.eye(3, dtype=f64)[i])
        assert y == pytest.approx(float(a @ zs[i]), rel=1e-6)
    for d, y, _ in records[3:]:  # then the top eigenvector v: y = Σ v_i y_i (cached or probed)
        assert float(d @ d) == pytest.approx(1.0)
        assert y == pytest.approx(float(d @ (zs @ a)), rel=1e-6)
    mu, _ = closed_form_posterior(3, 2.0, records)
    assert result.coeffs == pytest.approx(mu.tolist(), rel=1e-9)
    want = {(True, "reuse"): 4, (True, "probe"): 6, (False, "reuse"): 6, (False, "probe"): 10}[(one_sided, extra)]
    assert result.forward_passes == want == est.forward_passes_per_step()


def test_bszo_reuse_and_probe_agree_when_differences_are_exact():
    coeffs = [bszo_step(extra, True)[3][0].coeffs for extra in ("reuse", "probe")]
    assert coeffs[0] == pytest.approx(coeffs[1], rel=1e-6)


def test_bszo_noise_adapts_by_an_ema_of_residuals_that_persists_across_steps():
    est, _, _, _, records = bszo_step("reuse", True, steps=2)
    s, alpha, floor = 0.5 ** 2, 0.1, 0.1 * 0.5
    for i, (d, y, sigma) in enumerate(records):
        prior_obs = records[(i // 5) * 5 : i]  # the posterior of this step so far
        mu, _ = closed_form_posterior(3, 2.0, prior_obs) if prior_obs else (torch.zeros(3, dtype=f64), None)
        r = (y - float(d @ mu)) / float(d.norm())
        s = (1 - alpha) * s + alpha * r * r  # step 2 starts from step 1's EMA: no reset
        assert sigma == pytest.approx(max(floor, s ** 0.5), rel=1e-9)
    assert est.residual_sq == pytest.approx(s, rel=1e-9)
    fixed = bszo_step("reuse", True, adaptive=False)[4]
    assert {sigma for _, _, sigma in fixed} == {0.5}


# -- Forward-Grad ------------------------------------------------------------------------------

def test_forward_grad_equals_the_autograd_directional_derivative_on_a_tiny_model():
    model, tok = load_tiny("tiny-llama")
    scorer, named = Scorer(model, tok, "causal"), list(model.named_parameters())
    fg = ForwardGrad(num_directions=2)
    fg.setup(named, model)
    assert model.config._attn_implementation == "eager"  # SDPA has no forward-AD formulas
    params = [p for _, p in named]
    loss_fn = MicroBatchLoss(lambda part: scorer.loss(part), TINY_EXAMPLES, 2)
    est = fg(params, loss_fn, None, seed=11)
    for p in params:
        p.grad = None
    for i, weight in enumerate(loss_fn.weights):
        (weight * loss_fn(i)).backward()
    for s, c in zip(est.seeds, est.coeffs):
        autograd = sum(float((p.grad.double() * direction(s, i, p).double()).sum()) for i, p in enumerate(params))
        assert c * 2 == pytest.approx(autograd, rel=1e-4, abs=1e-6)
    assert est.loss == pytest.approx(batch_loss(loss_fn), rel=1e-6)
    assert est.forward_passes == 2 and est.pending == []


def test_forward_grad_needs_the_model():
    with pytest.raises(ConfigError, match="model"):
        ForwardGrad().setup([("w", torch.zeros(2))], None)


# -- the conservative step -------------------------------------------------------------------

@pytest.mark.parametrize("one_sided", [False, True])
def test_conservative_step_never_accepts_a_higher_loss(one_sided):
    problem = LeastSquares()
    lr = 0.02  # small enough that θ − lr·δ often wins, large enough that θ and θ + lr·δ sometimes do
    opt = build("zo_sgd_cons", problem, 200, lr=lr, weight_decay=0.05, **{"estimator.one_sided": one_sided})
    applied = []
    for t in range(200):
        before, start = [p.detach().clone() for p in problem.parameters()], float(problem.loss().detach())
        stats = opt.step(problem.loss)
        after = float(problem.loss().detach())
        assert stats["loss"] == pytest.approx(start, rel=1e-6)  # the reported loss is L(θ) of the step's start
        assert after <= stats["loss"] * (1 + 1e-6) + 1e-7, f"step {t}: {stats['loss']} -> {after}"
        assert stats["forward_passes"] == (4 if one_sided else 5)
        applied.append(opt.seed_log[-1][3])
        if applied[-1] == 0.0:  # rejected both: θ is back, up to rounding
            for p, b in zip(problem.parameters(), before):
                torch.testing.assert_close(p.detach(), b, rtol=1e-5, atol=1e-6)
    assert {0.0, lr, -lr} <= set(applied), "the test should see all three outcomes"


def test_conservative_refuses_stateful_transforms():
    problem = LeastSquares()
    with pytest.raises(ConfigError, match="conservative"):
        build("zo_sgd_mmt", problem, conservative=True)


# -- transforms = torch.optim on the materialized estimate; the seed log reproduces the run -----

def torch_twin(problem: LeastSquares, factory, wd: float):
    """A fresh copy of the problem's initial parameters under a torch.optim optimizer (no decay on biases)."""
    twin = LeastSquares()
    groups = [{"params": [p for n, p in twin.named_parameters() if decays(n) == flag], "weight_decay": wd if flag else 0.0}
              for flag in (True, False)]
    return list(twin.parameters()), factory(groups)


@pytest.mark.parametrize("name,factory,wd", [
    ("zo_sgd", lambda g, lr: torch.optim.SGD(g, lr=lr), 0.1),
    ("zo_sgd_mmt", lambda g, lr: torch.optim.SGD(g, lr=lr, momentum=0.9), 0.0),
    ("zo_adam", lambda g, lr: torch.optim.AdamW(g, lr=lr, betas=(0.9, 0.999), eps=1e-8), 0.1),
])
def test_zo_update_equals_torch_optim_fed_the_estimate(name, factory, wd):
    lr, steps = 0.02, 8
    problem = LeastSquares()
    opt = build(name, problem, steps, lr=lr, weight_decay=wd)
    for _ in range(steps):
        opt.step(problem.loss)
    params, torch_opt = torch_twin(problem, lambda groups: factory(groups, lr), wd)
    for _, seeds, coeffs, _ in opt.seed_log:
        for i, p in enumerate(params):
            p.grad = sum(c * direction(s, i, p) for s, c in zip(seeds, coeffs))
        torch_opt.step()
    for mine, ref in zip(problem.parameters(), params):
        torch.testing.assert_close(mine.detach(), ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sign", ["coordinate", "projected"])
def test_sign_variants(sign):
    problem = LeastSquares()
    before = [p.detach().clone() for p in problem.parameters()]
    opt = build("zo_sgd_sign", problem, lr=0.01, sign=sign, **{"estimator.num_directions": 2})
    opt.step(problem.loss)
    (_, seeds, coeffs, _), = opt.seed_log
    if sign == "projected":
        assert sorted(abs(c) for c in coeffs) == [0.5, 0.5]  # sign(g_j)/q
    for i, (p, b) in enumerate(zip(problem.parameters(), before)):
        g = sum(c * direction(s, i, b) for s, c in zip(seeds, coeffs))
        want = b - 0.01 * (g.sign() if sign == "coordinate" else g)
        torch.testing.assert_close(p.detach(), want, rtol=1e-6, atol=1e-7)


# -- bookkeeping of the in-place probes ----------------------------------------------------------

ESTIMATORS = {
    "spsa q=3": lambda: SPSA(num_directions=3),
    "spsa one-sided q=2": lambda: SPSA(num_directions=2, one_sided=True),
    "bszo reuse": lambda: BSZO(subspace_dim=2, num_observations=3),
    "bszo probe central": lambda: BSZO(subspace_dim=2, num_observations=4, one_sided=False, extra_observations="probe"),
}


@pytest.mark.parametrize("kind", ESTIMATORS)
def test_zero_lr_step_restores_the_parameters(kind):
    problem = LeastSquares()
    with torch.no_grad():
        for p in problem.parameters():
            p.normal_()
    before = [p.detach().clone() for p in problem.parameters()]
    opt = ZOOptimizer(list(problem.named_parameters()), ESTIMATORS[kind](), lr=0.0, eps=1e-2, seed=5)
    for _ in range(3):
        opt.step(problem.loss)
    for p, b in zip(problem.parameters(), before):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-6)


def test_micro_batches_split_the_batch():
    seen = []
    loss = MicroBatchLoss(lambda part: seen.append(list(part)) or torch.tensor(float(len(part))), list(range(10)), 3)
    assert loss.weights == pytest.approx([0.4, 0.3, 0.3])
    assert batch_loss(loss) == pytest.approx(0.4 * 4 + 0.3 * 3 + 0.3 * 3)
    assert seen == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ConfigError, match="accumulation_steps=11"):
        MicroBatchLoss(lambda part: 0, list(range(10)), 11)


def test_step_seeds_are_distinct_per_step_and_direction():
    seeds = {mix(mix(0, t), j) for t in range(50) for j in range(4)}
    assert len(seeds) == 200


def test_micro_batches_of_the_lm_loss_are_weighted_by_gold_tokens():
    """Σ_i w_i·L_i is the whole batch's token mean only when w_i counts tokens, not examples."""
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    examples = [Example("good film. It was", (" bad", " wonderfully good"), 1),
                Example("bad film. It was", (" bad", " good"), 0),
                Example("fine. It was", (" bad", " good"), 1)]  # gold lengths differ between the parts
    full = scorer.loss(examples).item()
    by_tokens = MicroBatchLoss(lambda part: scorer.loss(part), examples, 2, size_of=scorer.gold_tokens)
    by_examples = MicroBatchLoss(lambda part: scorer.loss(part), examples, 2)
    assert batch_loss(by_tokens) == pytest.approx(full, rel=1e-6)
    assert batch_loss(by_examples) != pytest.approx(full, rel=1e-3)
    assert sum(by_tokens.weights) == pytest.approx(1.0)
    assert scorer.gold_tokens(examples) == sum(len(tok(ex.candidates[ex.gold], add_special_tokens=False)["input_ids"])
                                               for ex in examples)


def test_zobench_code_sign_equals_hf_adamw_fed_the_signed_estimate():
    """ZO-Bench zo-bench/trainer.py OurTrainer.zo_step (zo_sign_opt branch): param.grad = sign(g)·z, then HF
    Trainer's AdamW (transformers 4.28.1 optimization.py AdamW.step, transcribed in
    tests/reference/test_zobench_variants.py); here with zobench's default chunked directions."""
    from tests.reference.test_zobench_variants import HFAdamW

    lr, steps = 0.02, 8
    problem = LeastSquares()
    opt = build("zo_sgd_sign", problem, steps, lr=lr, variant="zobench_code")
    for _ in range(steps):
        opt.step(problem.loss)
    twin = LeastSquares()
    params = list(twin.parameters())
    torch_opt = HFAdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    for _, seeds, coeffs, _ in opt.seed_log:
        assert all(abs(c) == 1.0 for c in coeffs)  # sign of the projected gradient
        for i, p in enumerate(params):
            p.grad = sum(c * direction(s, i, p) for s, c in zip(seeds, coeffs))
        torch_opt.step()
    for mine, ref in zip(problem.parameters(), params):
        torch.testing.assert_close(mine.detach(), ref.detach(), rtol=1e-5, atol=1e-6)


def test_zobench_code_cons_moves_by_successive_adam_steps_and_counts_every_forward():
    """ZO-Bench zo-bench/trainer.py OurTrainer.zo_conserv_step with HF's AdamW: two or three optimizer steps per
    ZO step (c = +1, −2, then +1 / +2 or none), L(θ) and both candidates evaluated (2 + 3 forward passes)."""
    problem = LeastSquares()
    opt = build("zo_sgd_cons", problem, 5, lr=0.01, variant="zobench_code")
    stats = [opt.step(problem.loss) for _ in range(5)]
    assert [s["forward_passes"] for s in stats] == [5] * 5
    adam = opt.transforms[0]
    assert type(adam).__name__ == "HFAdam" and 2 * 5 <= adam.t <= 3 * 5
