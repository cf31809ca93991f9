"""ZO-SGD (MeZO) against its math: unbiasedness, exact restore, determinism, the merged update."""
import pytest
import torch

from zobench.optim.directions import direction, perturb_
from zobench.optim.spsa import SPSA
from zobench.optim.zo import ZOOptimizer


def quadratic(dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g)
    hess = a @ a.T / dim + torch.eye(dim)
    target = torch.randn(dim, generator=g)
    x = torch.zeros(dim)

    def loss():
        d = x - target
        return 0.5 * d @ hess @ d

    return x, loss, hess @ (x - target)


def materialize(est, params):
    return [sum(c * direction(s, i, p) for s, c in zip(est.seeds, est.coeffs)) for i, p in enumerate(params)]


@pytest.mark.parametrize("one_sided", [False, True])
def test_spsa_estimate_is_unbiased_on_a_quadratic(one_sided):
    x, loss, true_grad = quadratic()
    spsa, eps, n = SPSA(num_directions=1, one_sided=one_sided), 1e-3, 6000
    total = torch.zeros_like(x)
    for seed in range(n):
        est = spsa([x], loss, eps, seed)
        perturb_([x], *est.pending[0])  # undo the last probe
        total += materialize(est, [x])[0]
    mean = total / n
    # std of the mean per coordinate ~ sqrt((d+2)/n)·‖g‖ ≈ 0.04‖g‖; allow 4 sigma on the norm
    assert torch.linalg.norm(mean - true_grad) < 0.25 * torch.linalg.norm(true_grad)
    assert torch.nn.functional.cosine_similarity(mean, true_grad, dim=0) > 0.97


def test_perturb_and_restore_round_trip():
    torch.manual_seed(0)
    params = [torch.randn(17, 5), torch.randn(9)]
    before = [p.clone() for p in params]
    perturb_(params, seed=123, scale=1e-3)
    assert not torch.equal(params[0], before[0])
    perturb_(params, seed=123, scale=-2e-3)
    perturb_(params, seed=123, scale=1e-3)
    for p, b in zip(params, before):
        torch.testing.assert_close(p, b, rtol=0, atol=1e-6)


def test_zero_lr_step_restores_parameters():
    torch.manual_seed(0)
    w = torch.randn(8, 4)
    opt = ZOOptimizer([("w", w)], SPSA(), lr=0.0, eps=1e-2)
    before = w.clone()
    opt.step(lambda: (w ** 2).sum())
    torch.testing.assert_close(w, before, rtol=0, atol=1e-6)


def test_merged_update_equals_mezo_reference():
    """θ_new = θ − lr·(g·z + λθ) with g = (L+ − L−)/2ε, written out as MeZO's four passes."""
    torch.manual_seed(0)
    w, b = torch.randn(5, 3), torch.randn(3)
    lr, eps, wd = 0.05, 1e-2, 0.1
    ref_w, ref_b = w.clone(), b.clone()

    def loss_of(ws, bs):
        return ((ws.sum(0) + bs) ** 2).sum() + ws.abs().sum()

    opt = ZOOptimizer([("w", w), ("bias", b)], SPSA(), lr=lr, eps=eps, weight_decay=wd, seed=7)
    stats = opt.step(lambda: loss_of(w, b))
    (step_seed,), (g,) = opt.seed_log[0][1], opt.seed_log[0][2]
    zw, zb = direction(step_seed, 0, ref_w), direction(step_seed, 1, ref_b)
    plus = loss_of(ref_w + eps * zw, ref_b + eps * zb)
    minus = loss_of(ref_w - eps * zw, ref_b - eps * zb)
    assert g == pytest.approx(((plus - minus) / (2 * eps)).item(), rel=1e-4)
    torch.testing.assert_close(w, ref_w - lr * (g * zw + wd * ref_w), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, ref_b - lr * g * zb, rtol=1e-5, atol=1e-6)  # no decay on biases
    assert stats["forward_passes"] == 2


def test_same_seed_same_trajectory_and_loss_falls():
    def run(seed):
        x, loss, _ = quadratic(seed=1)
        opt = ZOOptimizer([("x", x)], SPSA(), lr=0.05, eps=1e-3, seed=seed)
        return [opt.step(loss)["loss"] for _ in range(300)], x

    a, xa = run(3)
    b, xb = run(3)
    c, _ = run(4)
    assert a == b and torch.equal(xa, xb)
    assert a != c
    assert sum(a[-20:]) / 20 < 0.5 * sum(a[:20]) / 20


def test_q_directions_and_one_sided_count_forward_passes():
    x, loss, _ = quadratic()
    assert SPSA(num_directions=3)([x], loss, 1e-3, 0).forward_passes == 6
    assert SPSA(num_directions=3, one_sided=True)([x], loss, 1e-3, 0).forward_passes == 4


def test_rademacher_directions_are_signs_with_identity_covariance():
    from zobench.optim.directions import draw

    z = torch.stack([draw(s, 0, 0, 4096, torch.device("cpu"), torch.float32, "rademacher") for s in range(64)])
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(z.mean().item()) < 0.01
    second_moment = z.T @ z / z.shape[0]  # E[z zᵀ]: exactly 1 on the diagonal, ~0 off it
    assert torch.allclose(torch.diagonal(second_moment), torch.ones(4096))
    off = second_moment - torch.diag(torch.diagonal(second_moment))
    assert off.abs().mean() < 0.15  # |mean of 64 random signs| ≈ 0.1
    draws = [draw(7, 3, 1, 100, torch.device("cpu"), torch.float32, "rademacher") for _ in range(2)]
    assert torch.equal(*draws)  # regenerated, not stored


def test_spsa_with_rademacher_directions_is_unbiased():
    x, loss, true_grad = quadratic()
    spsa, n = SPSA(), 4000
    spsa.distribution = "rademacher"
    total = torch.zeros_like(x)
    for seed in range(n):
        est = spsa([x], loss, 1e-3, seed)
        perturb_([x], *est.pending[0], distribution="rademacher")
        total += sum(c * direction(s, 0, x, "rademacher") for s, c in zip(est.seeds, est.coeffs))
    mean = total / n
    assert torch.linalg.norm(mean - true_grad) < 0.25 * torch.linalg.norm(true_grad)


def test_directions_are_drawn_in_chunks_so_temporaries_stay_small(monkeypatch):
    """A tensor larger than a chunk is swept chunk by chunk: the largest z drawn is one chunk."""
    import zobench.optim.directions as directions

    monkeypatch.setattr(directions, "CHUNK", 100)
    sizes = []
    real_draw = directions.draw

    def spy(seed, index, chunk, n, *args):
        sizes.append(n)
        return real_draw(seed, index, chunk, n, *args)

    monkeypatch.setattr(directions, "draw", spy)
    import zobench.optim.zo as zo

    monkeypatch.setattr(zo, "draw", spy)
    w = torch.zeros(1050)
    opt = ZOOptimizer([("w", w)], SPSA(), lr=0.1, eps=1e-2, seed=0)
    opt.step(lambda: (w - 1).pow(2).sum())
    assert max(sizes) == 100 and sizes.count(50) == 3  # 10 full chunks + the 50-element tail, 3 passes
    # the whole-tensor view equals the concatenated chunks
    full = directions.direction(5, 0, w)
    assert torch.equal(full[:100], real_draw(5, 0, 0, 100, w.device, w.dtype))


def test_mezo_stream_resumes_from_the_step_counter():
    """direction_stream=mezo: the step seeds follow from (seed, t) alone, so a run resumed from a checkpoint's
    state_dict takes the steps an uninterrupted run takes."""
    def run(stop_at=None):
        x, loss, _ = quadratic()
        opt = ZOOptimizer([("x", x)], SPSA(direction_stream="mezo"), lr=0.05, eps=1e-3, seed=7)
        for _ in range(3):
            opt.step(loss)
        if stop_at is not None:
            state = opt.state_dict()
            opt = ZOOptimizer([("x", x)], SPSA(direction_stream="mezo"), lr=0.05, eps=1e-3, seed=7)
            opt.load_state_dict(state)
        for _ in range(3):
            opt.step(loss)
        return x, [s for _, (s,), _, _ in opt.seed_log]

    straight, seeds = run()
    resumed, seeds_resumed = run(stop_at=3)
    assert seeds == seeds_resumed and len(set(seeds)) == 6
    torch.testing.assert_close(resumed, straight, rtol=0, atol=0)


def test_mezo_stream_refuses_tensors_out_of_order():
    """MeZO's z_i depends on every tensor drawn before it (one torch.manual_seed per sweep): a draw that skips
    a tensor would silently take another z, so it raises instead."""
    from zobench.optim.directions import MEZO, draw

    draw(11, 0, 0, 4, torch.device("cpu"), torch.float32, MEZO)
    with pytest.raises(RuntimeError, match="in order"):
        draw(11, 2, 0, 4, torch.device("cpu"), torch.float32, MEZO)
