"""Sparse-MeZO (Liu et al. 2024) against its paper's algorithm.

No code of the authors could be read: the paper names github.com/NUS-HPC-AI-Lab/SparseMeZO, of which no snapshot could
be had here. ``SparseMeZOReference`` therefore transcribes the paper's algorithm boxes (arXiv:2402.15751, §3.2:
"Algorithm: Sparse-MeZO (S-MeZO)", "PerturbParameters", "GetMask"), with the thresholds "determined ... before
training" as a percentile of each layer's |θ| at the target sparsity (here the ⌈(1 − s)·n⌉-th smallest, by
``torch.kthvalue``), the mask as a dense 0/1 tensor per layer (the paper's "vanilla" implementation: stored, and read
from the unperturbed weights once per step), and z_i ~ N(0, 1) per layer after "Reset random seed s". The
transcription is fed zobench's seeds and z (chunked stream); zobench, which holds the step's mask as bits and perturbs
in place, must land on the same weights to 1e-12 in float64.
"""
from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import SMALL, compose_cfg
from tests.reference.test_mezo_stream import tiny_pair
from tests.test_resume import RESUMABLE, replay_resumes_identically
from tests.reference import common
from zobench.errors import ConfigError
from zobench.optim import build_optimizer
from zobench.optim.directions import direction, mix
from zobench.optim.sparse_mezo import MagnitudeMask, SparseMeZO, kth_smallest_magnitude, magnitude_thresholds
from zobench.optim.zo import ZOOptimizer
from zobench.run import run_cell


class SparseMeZOReference:
    """The paper's Sparse-MeZO, GetMask and PerturbParameters boxes, transcribed (``normal`` is the "z_i ~ N(0,1)" after
    "Reset random seed s", fed zobench's z(s, i)). ``threshold_every``: thresholds re-determined from θ_t every N steps
    (zobench's option; None: once, before training, as the paper)."""

    def __init__(self, model, lr, eps, sparsity, seed, threshold_every=None):
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.index = {n: i for i, (n, _) in enumerate(self.named)}
        self.lr, self.eps, self.sparsity, self.seed, self.every = lr, eps, sparsity, seed, threshold_every
        self.t, self.masks = 0, []
        self.h = self.determine_thresholds()

    def determine_thresholds(self):
        """h_i: the ⌈(1 − s)·n_i⌉-th smallest |θ| of layer i (a percentile at the target sparsity)."""
        h = {}
        for name, p in self.named:
            k = max(1, math.ceil(round((1 - self.sparsity) * p.numel(), 9)))
            h[name] = torch.kthvalue(p.detach().abs().flatten(), k).values
        return h

    def get_mask(self):
        """GetMask: m_ij = 1 where |θ_ij| ≤ h_i, else 0."""
        return {name: (p.detach().abs() <= self.h[name]).to(p.dtype) for name, p in self.named}

    def normal(self, s, name, param):
        return direction(s, self.index[name], param)

    def perturb_parameters(self, scale, s, m):
        """PerturbParameters(θ, scale·ε, s, m): reset seed s; for θ_i: z_i ~ N(0, 1); θ_i ← θ_i + m_i·scale·ε·z_i."""
        for name, p in self.named:
            z = self.normal(s, name, p)
            p.data = p.data + m[name] * scale * self.eps * z

    def mask_for(self, m):  # the mask PerturbParameters uses (the vanilla one: m, stored)
        return m

    def step(self, loss_fn):
        if self.every and self.t > 0 and self.t % self.every == 0:
            self.h = self.determine_thresholds()
        s = mix(mix(self.seed, self.t), 0)  # "Sample Minibatch B ... and random seed s" (zobench's seed of step t)
        m = self.get_mask()
        self.masks.append(m)
        self.perturb_parameters(1, s, self.mask_for(m))
        l_plus = float(loss_fn())
        self.perturb_parameters(-2, s, self.mask_for(m))
        l_minus = float(loss_fn())
        self.perturb_parameters(1, s, self.mask_for(m))
        proj_grad = (l_plus - l_minus) / (2 * self.eps)
        for name, p in self.named:  # "Reset random seed s; z_i ~ N(0,1); θ_i ← θ_i − η_t·proj_grad·m_i·z_i"
            z = self.normal(s, name, p)
            p.data = p.data - self.lr * proj_grad * m[name] * z
        self.t += 1
        return (l_plus + l_minus) / 2


class MaskFromPerturbedWeights(SparseMeZOReference):
    """The mask recomputed from the weights as they are at each PerturbParameters call (not stored): what an in-place
    implementation that re-derives m in every sweep would do."""

    def mask_for(self, m):
        return self.get_mask()


def run_reference(ref, loss_fn, steps):
    with torch.no_grad():
        return [ref.step(loss_fn) for _ in range(steps)]


max_gap = common.max_gap


def zobench_run(model, loss_fn, seed, steps, *overrides):
    return common.zobench_run("sparse_mezo", model, loss_fn, seed, steps, *overrides)


STEPS, LR, EPS, SPARSITY = 6, 3e-3, 1e-3, 0.75


@pytest.mark.parametrize("every", [None, 2])
def test_sparse_mezo_follows_the_papers_algorithm_fed_the_same_directions(every, monkeypatch):
    """Six steps on a tiny OPT in float64 at s = 0.75, chunks of 1000 (the embeddings' z and mask span several): the
    same weights to 1e-12 and the same losses, 2 forward passes a step; the mask changes from step to step (entries
    cross h), so the per-step regeneration is exercised."""
    from zobench.optim import directions

    monkeypatch.setattr(directions, "CHUNK", 1000)
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    start = [p.detach().clone() for p in model_a.parameters()]
    ref = SparseMeZOReference(model_a, LR, EPS, SPARSITY, seed=2, threshold_every=every)
    ref_losses = run_reference(ref, loss_of(model_a), STEPS)
    overrides = [f"optimizer.lr={LR}", f"optimizer.eps={EPS}", f"optimizer.estimator.sparsity={SPARSITY}",
                 f"optimizer.estimator.threshold_every={'null' if every is None else every}"]
    opt, stats = zobench_run(model_b, loss_of(model_b), 2, STEPS, *overrides)
    assert type(opt) is ZOOptimizer and isinstance(opt.estimator, SparseMeZO)
    assert max_gap(model_a, model_b) < 1e-12, max_gap(model_a, model_b)
    assert [s["loss"] for s in stats] == pytest.approx(ref_losses, rel=1e-12, abs=0)
    assert [s["forward_passes"] for s in stats] == [2] * STEPS
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(model_a.parameters(), start))
    assert moved > 1e-3, moved
    flips = sum(int((ref.masks[0][n] != ref.masks[-1][n]).sum()) for n, _ in ref.named)
    assert flips > 100, flips  # the dynamic mask is not the first step's
    kept = sum(float(m.sum()) for m in ref.masks[0].values()) / sum(p.numel() for _, p in ref.named)
    assert 0.25 <= kept < 0.4, kept  # ≥ 1 − s at the start (layer norms and biases tie: all of them are perturbed)
    assert opt.state_bytes() == 0 and opt.estimator._mask is None  # nothing is kept from one step to the next


def test_zero_lr_restores_the_weights_exactly_where_a_mask_read_from_perturbed_weights_drifts():
    """m is read once per step from the unperturbed weights: with lr = 0 the probes (+ε, −2ε, +ε) leave θ as it was (to
    float64 rounding). Re-deriving m from the weights at each sweep instead moves the entries that cross h (why zobench
    keeps the step's mask as bits)."""
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    start = [p.detach().clone() for p in model_a.parameters()]
    zobench_run(model_a, loss_of(model_a), 0, 3, "optimizer.lr=1e-30", f"optimizer.estimator.sparsity={SPARSITY}")
    assert max(float((p.detach() - s).abs().max()) for p, s in zip(model_a.parameters(), start)) < 1e-15
    run_reference(MaskFromPerturbedWeights(model_b, 0.0, EPS, SPARSITY, seed=0), loss_of(model_b), 3)
    drift = [(p.detach() - s).abs() for p, s in zip(model_b.parameters(), start)]
    assert max(float(d.max()) for d in drift) > 1e-4  # ~ε|z| on the entries whose mask changed mid-step
    assert sum(int((d > 1e-12).sum()) for d in drift) > 10


def test_sparsity_zero_rethresholded_every_step_is_mezo():
    """s = 0 with h re-determined each step perturbs every entry: zo_sgd's trajectory (the same z) to 1e-12."""
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    zobench_run(model_a, loss_of(model_a), 1, 4, "optimizer.lr=1e-3", "optimizer.estimator.sparsity=0.0",
                "optimizer.estimator.threshold_every=1")
    cfg = compose_cfg("optimizer=zo_sgd", "optimizer.lr=1e-3")
    opt = build_optimizer(cfg.optimizer, list(model_b.named_parameters()), 4, 1)
    with torch.no_grad():
        for _ in range(4):
            opt.step(loss_of(model_b))
    assert max_gap(model_a, model_b) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_thresholds_are_exact_order_statistics(dtype):
    """The bisection over bit patterns finds the k-th smallest |θ| exactly, ties and signs included."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2027, generator=gen, dtype=torch.float64).to(dtype)
    x[:40] = 0.0
    x[40:80] = -x[80:120]  # ties in magnitude
    for k in (1, 40, 41, 507, 2027):
        assert kth_smallest_magnitude(x, k) == float(torch.kthvalue(x.abs().double(), k).values), k
    assert magnitude_thresholds([x], 0.75) == [float(torch.kthvalue(x.abs().double(), math.ceil(0.25 * 2027)).values)]


def test_the_bits_are_the_dense_mask_at_any_offset():
    gen = torch.Generator().manual_seed(5)
    params = [torch.randn(13, 7, generator=gen), torch.randn(29, generator=gen)]
    h = magnitude_thresholds(params, 0.6)
    mask = MagnitudeMask.of(params, h)
    assert mask.nbytes() == math.ceil(91 / 8) + math.ceil(29 / 8)  # one bit per entry
    for i, p in enumerate(params):
        dense = p.abs().flatten() <= h[i]
        for start, n in ((0, p.numel()), (5, 13), (8, 8), (p.numel() - 3, 3)):
            assert torch.equal(mask.keep(i, start, n), dense[start:start + n]), (i, start, n)


def test_the_passes_over_the_weights_allocate_nothing_per_segment(monkeypatch):
    """Thresholds and masks work in one segment's scratch and the bits in one buffer, and a chunk of z is masked a
    slice at a time: fresh per-segment temporaries (|θ|, flags, int64 sums: ~5 GB per step for SmolLM2-135M)
    fragmented the CPU heap, ``make bench``'s Sparse-MeZO peak 1.25x ZO-SGD's where its bits are ~1.02x."""
    from torch.profiler import ProfilerActivity, profile

    from zobench.optim import sparse_mezo

    segment, unpacked = 1 << 12, 1 << 9
    monkeypatch.setattr(sparse_mezo, "SEGMENT", segment)
    monkeypatch.setattr(sparse_mezo, "UNPACKED", unpacked)
    gen = torch.Generator().manual_seed(7)
    params = [torch.randn(40_003, generator=gen), torch.randn(300, 70, generator=gen)]  # 10 and 6 segments

    def allocations(fn) -> list[int]:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        return [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]

    scratch = segment * 4 + segment  # |θ| in fp32 and one byte an entry
    h = magnitude_thresholds(params, 0.8)
    assert h == [kth_smallest_magnitude(p, math.ceil(0.2 * p.numel())) for p in params]
    assert sum(allocations(lambda: magnitude_thresholds(params, 0.8))) < scratch + 16 * 1024  # (before: 61 MB)
    bits = sum((p.numel() + 7) // 8 for p in params)
    assert sum(allocations(lambda: MagnitudeMask.of(params, h))) < bits + scratch + 4 * 1024  # (before: 2.4 MB)
    mask = MagnitudeMask.of(params, h)
    z = torch.randn(segment, generator=gen)
    want = z * (params[0].flatten()[segment:2 * segment].abs() <= h[0])
    assert max(allocations(lambda: mask.apply_(z, 0, 1, segment))) <= unpacked * 4  # (before: the chunk in fp32)
    assert torch.equal(z, want) and torch.equal(z.signbit(), want.signbit())


def test_bad_sparsity_is_named():
    with pytest.raises(ConfigError, match=r"sparsity=1.0 is not allowed: expected a number in \[0, 1\)"):
        SparseMeZO(sparsity=1.0)


def test_a_tiny_sparse_mezo_cell_runs_and_resumes_to_identical_parameters(native, tmp_path, monkeypatch):
    """The normal runner: a tiny cell completes at 2 forward passes a step with no optimizer state; an interrupted one
    resumes from the loss log (replay: thresholds from the starting weights, masks from each step's) to the same
    weights."""
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=sparse_mezo", "optimizer.lr=1e-2", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")
    assert whole["forward_passes_per_step"] == 2 and whole["forward_passes"] == 2 * 6
    assert whole["optimizer_state_bytes"] == 0
    replay_resumes_identically(cfg, tmp_path, monkeypatch, whole)


def test_a_bf16_cell_trains_without_nan(native, tmp_path):
    """The paper fine-tunes LLaMA-7B in 14.6 GB (half-precision weights); the YAML allows fp32, bf16 and fp16: a bf16
    cell on the tiny model completes with finite losses (thresholds and masks in bf16, exact)."""
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=sparse_mezo", "optimizer.lr=1e-2", "dtype=bf16")
    out = run_cell(cfg, tmp_path / "bf16")
    assert out["status"] == "completed", out.get("error")
    assert out["dtype"] == "bf16" and math.isfinite(out["final_loss"])
