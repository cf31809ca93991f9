"""The counter-based direction streams (``optimizer.direction_stream=philox``, ``philox_fast`` and
``philox_icdf``, zobench/optim/philox.py; the inverse CDF's own tests: tests/test_directions_icdf.py).

Philox4x32-10 and -7 against Random123's known answers (its tests/kat_vectors); the compiled library against the torch implementation bit
for bit (every instruction-set level, every dtype, unaligned ranges, counters past 2³², the Box–Muller factors
on a stride of all 2²⁴ inputs — all of them in the slow test); the same numbers whatever the thread count;
N(0, 1) moments and a KS test; no correlation between chunks, tensors and step seeds; a ZO-SGD step against a
step computed by hand from the generator's z; the configuration that selects the stream.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import compose_cfg
from zobench.errors import ConfigError
from zobench.optim import philox
from zobench.optim.directions import (CHUNK, PHILOX, STREAMS, add_direction_, direction, draw, mix, perturb_,
                                      stream_distribution)
from zobench.optim.spsa import SPSA
from zobench.optim.zo import ZOOptimizer
from zobench.validate import validate_optimizer

CPU = torch.device("cpu")
G, R = "philox:gaussian", "philox:rademacher"
FG, FR = "philox_fast:gaussian", "philox_fast:rademacher"
IG = "philox_icdf:gaussian"
VARIANTS = list(philox.VARIANTS)  # philox, philox_fast, philox_icdf
LIB = philox.library()  # built (or found in the cache) once; None where no compiler works
compiled = pytest.mark.skipif(LIB is None, reason=f"no compiled Philox library: {philox.why()}")
LEVELS = range(philox.isa(2) + 1) if LIB is not None else range(0)  # every ISA this CPU runs


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns: equality of these is equality bit for bit (signed zeros and NaNs included)."""
    return t.contiguous().view({4: torch.int32, 8: torch.int64, 2: torch.int16}[t.element_size()])


@pytest.fixture
def torch_only(monkeypatch):
    """philox.generate / add_ on the torch implementation, whatever is compiled."""
    monkeypatch.setattr(philox, "_compiled_for", lambda t: None)


@pytest.fixture
def every_isa():
    yield LEVELS
    if LIB is not None:
        philox.isa(2)  # the best the CPU has (isa() caps it)


# -- Philox4x32-10 (philox) and -7 (philox_fast) -----------------------------------------------------------

KATS = [  # Random123 tests/kat_vectors: philox4x32 <rounds> <ctr[4]> <key[2]> -> <out[4]>
    (10, (0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (10, (0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (10, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    (7, (0, 0, 0, 0), (0, 0), (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
    (7, (0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662)),
    (7, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
]
VARIANT_OF_ROUNDS = {v["rounds"]: name for name, v in philox.VARIANTS.items()}


@pytest.mark.parametrize("rounds, ctr, key, expected", KATS)
def test_torch_philox_gives_random123s_known_answers(rounds, ctr, key, expected):
    words = philox.philox4x32(*(torch.tensor([c]) for c in ctr), *key, rounds)
    assert [int(w) for w in words] == list(expected)
    assert list(philox.philox4x32(*ctr, *key, rounds)) == list(expected)  # Python ints: the same code
    if rounds == 10:
        assert list(philox.philox4x32_10(*ctr, *key)) == list(expected)


def _compiled_blocks(c0, c1, index, tag, key, variant="philox"):
    c0 = torch.tensor(np.array(c0, dtype=np.uint32).view(np.int32))
    c1 = torch.tensor(np.array(c1, dtype=np.uint32).view(np.int32))
    out = [torch.empty(c0.numel(), dtype=torch.int32) for _ in range(4)]
    LIB.zb_philox_blocks(c0.data_ptr(), c1.data_ptr(), c0.numel(), index, tag, *key, *(o.data_ptr() for o in out),
                         VARIANTS.index(variant))
    return [o.numpy().view(np.uint32).astype(np.int64) for o in out]


@compiled
@pytest.mark.parametrize("rounds, ctr, key, expected", KATS)
def test_compiled_philox_gives_random123s_known_answers_at_every_isa(rounds, ctr, key, expected, every_isa):
    for level in every_isa:
        philox.isa(level)
        n = 37  # the SIMD loops (32 and 8 counters at a time) and the scalar tail
        words = _compiled_blocks([ctr[0]] * n, [ctr[1]] * n, ctr[2], ctr[3], key, VARIANT_OF_ROUNDS[rounds])
        assert all((w == e).all() for w, e in zip(words, expected)), philox.ISAS[level]


@compiled
@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_philox_matches_torch_on_random_counters(variant, every_isa):
    rng = np.random.default_rng(0)
    c0, c1 = rng.integers(0, 2**32, 300), rng.integers(0, 2**32, 300)
    ref = philox.philox4x32(torch.tensor(c0), torch.tensor(c1), 0xDEADBEEF, 7, 0x01234567, 0x89ABCDEF,
                            philox.VARIANTS[variant]["rounds"])
    for level in every_isa:
        philox.isa(level)
        got = _compiled_blocks(c0, c1, 0xDEADBEEF, 7, (0x01234567, 0x89ABCDEF), variant)
        assert all((g == r.numpy()).all() for g, r in zip(got, ref)), philox.ISAS[level]


# -- compiled == torch, bit for bit -------------------------------------------------------------------------

def _transform_compiled(x: torch.Tensor, variant: str = "philox"):
    xu = torch.from_numpy((x.numpy() & 0xFFFFFFFF).astype(np.uint32).view(np.int32).copy())
    r, s, c = (torch.empty(x.numel()) for _ in range(3))
    LIB.zb_philox_transform(xu.data_ptr(), x.numel(), r.data_ptr(), s.data_ptr(), c.data_ptr(), VARIANTS.index(variant))
    return r, s, c


def _transform_inputs(stride: int) -> torch.Tensor:
    """Words whose top 24 bits (all the transform reads) run over a stride of every value, ends included."""
    j = torch.cat([torch.arange(0, 1 << 24, stride), torch.tensor([1, 2, 3, 0x1FFFFF, 0x200000, 0x200001, 0x3FFFFF,
                                                                   0x400000, 0x400001, 0xBFFFFF, (1 << 24) - 1])])
    return (j << 8) | (j & 0xFF)


def _check_transform(levels, stride):
    x = _transform_inputs(stride)
    for variant in philox.BOX_MULLER:
        ref = (philox.radius(x, variant), *philox.sincos_turn(x, variant))
        for level in levels:
            philox.isa(level)
            for name, got, want in zip(("radius", "sin", "cos"), _transform_compiled(x, variant), ref):
                assert torch.equal(bits(got), bits(want)), (variant, philox.ISAS[level], name)


@compiled
def test_box_muller_factors_agree_bit_for_bit_on_a_stride_of_every_input(every_isa):
    """radius(x) and (sin, cos)(x) read the top 24 bits of a word: every 97th value, and the reflection and
    quadrant edges, at every instruction-set level (the slow test below runs all 2²⁴)."""
    _check_transform(every_isa, 97)


@compiled
@pytest.mark.slow
def test_box_muller_factors_agree_bit_for_bit_on_every_input(every_isa):
    _check_transform(every_isa, 1)


@pytest.mark.parametrize("variant, r_rel, sincos_abs", [
    ("philox", 2e-6, 2e-7),  # a few float32 ulps
    ("philox_fast", 5e-6, 8e-7),  # the shorter fits: ln within 3.8e-7, sin 5.7e-7, cos 4.7e-8 (+ rounding)
])
def test_box_muller_factors_are_accurate(variant, r_rel, sincos_abs):
    """ln, sin, cos are polynomials (no libm): within these bounds of the exact values."""
    x = _transform_inputs(127)
    k = (x >> 8).double()
    r, s, c = philox.radius(x, variant).double(), *(v.double() for v in philox.sincos_turn(x, variant))
    u = 1 - k * 2.0**-24
    exact_r = torch.sqrt(-2 * torch.log(u))
    assert float(((r - exact_r).abs() / exact_r.clamp_min(1e-3)).max()) < r_rel  # ln near u = 1 sets it
    assert float((s - torch.sin(2 * math.pi * k * 2.0**-24)).abs().max()) < sincos_abs
    assert float((c - torch.cos(2 * math.pi * k * 2.0**-24)).abs().max()) < sincos_abs
    assert float(r.max()) < 5.77  # |z| ≤ sqrt(−2 ln 2⁻²⁴): torch's CPU randn has the same bound


RANGES = [(0, 1), (0, 64), (5, 59), (0, 4096), (100, 1000), (12345, 3001), (CHUNK - 7, 200),
          (2**34 - 200, 400),  # the Gaussian block counter crosses 2³² (k = 2³⁴)
          (2**39 - 300, 700)]  # the Rademacher one does (k = 2³⁹)


@compiled
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_compiled_and_torch_draw_the_same_numbers(kind, variant, every_isa):
    seed = mix(3, 1)
    for level in every_isa:
        philox.isa(level)
        for first, n in RANGES:
            for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
                want = philox.torch_generate(seed, 5, first, n, CPU, dtype, kind, variant)
                got = philox.generate(seed, 5, first, n, CPU, dtype, kind, variant)
                assert torch.equal(bits(got), bits(want)), (philox.ISAS[level], first, n, dtype)


@compiled
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_fused_update_equals_the_torch_update(kind, variant, every_isa):
    """θ += c·z: the compiled kernel (z never materialized) and the torch code (z, then θ.add_(fl32(c)·z))."""
    seed = mix(11, 4)
    for level in every_isa:
        philox.isa(level)
        for first, n in RANGES[:-2] + [(2**34 - 200, 400)]:
            for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
                theta = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(dtype)
                a, b = theta.clone(), theta.clone()
                philox.add_(a, seed, 2, first, -3.7e-3, kind, variant)
                philox.torch_add_(b, seed, 2, first, -3.7e-3, kind, variant)
                assert torch.equal(bits(a), bits(b)), (philox.ISAS[level], first, n, dtype)
                assert not torch.equal(a, theta) or dtype in (torch.bfloat16, torch.float16)


def test_draw_and_update_agree_on_what_z_is(torch_only):
    """θ + c·z from the fused path is θ + fl32(c·z) with z as drawn (float32)."""
    theta = torch.linspace(-1, 1, 777)
    z = draw(42, 3, 0, 777, CPU, torch.float32, G)
    moved = theta.clone()
    add_direction_(moved, 42, 3, 0, 0, 0.25, G)
    assert torch.equal(moved, theta + z * 0.25)


# -- threads, chunking, devices ------------------------------------------------------------------------------

@compiled
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_the_thread_count_changes_no_number(kind, variant):
    """z(seed, tensor, chunk) and the fused update are the same on 1, 2 or 3 threads (torch.set_num_threads)."""
    n = (1 << 20) + 333  # enough tiles for every thread
    before = torch.get_num_threads()
    out = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            theta = torch.ones(n)
            philox.add_(theta, 99, 1, 64 * 1000 + 5, 0.5, kind, variant)
            out[threads] = (philox.generate(99, 1, 64 * 1000 + 5, n, CPU, torch.float32, kind, variant), theta)
    finally:
        torch.set_num_threads(before)
    for threads in (2, 3):
        assert torch.equal(bits(out[threads][0]), bits(out[1][0])) and torch.equal(out[threads][1], out[1][1])
    assert torch.equal(out[1][1], 1 + out[1][0] * 0.5)


def test_a_tensors_numbers_do_not_depend_on_the_chunk_size(monkeypatch):
    """z restricted to a tensor is one counter-based sequence: the chunks are views of it, whatever CHUNK is."""
    import zobench.optim.directions as directions

    like = torch.empty(3, 700)
    whole = direction(7, 2, like, G)
    monkeypatch.setattr(directions, "CHUNK", 100)
    assert torch.equal(direction(7, 2, like, G), whole)
    assert torch.equal(draw(7, 2, 3, 100, CPU, torch.float32, G), whole.view(-1)[300:400])
    w = torch.zeros(2100)
    perturb_([w], 7, 1.0, G)  # 21 chunks of 100, each drawn alone
    assert torch.equal(w, direction(7, 0, w, G))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_draws_the_cpu_numbers():
    for first, n in RANGES:
        for kind in ("gaussian", "rademacher"):
            cpu = philox.torch_generate(5, 1, first, n, CPU, torch.float32, kind)
            gpu = philox.generate(5, 1, first, n, torch.device("cuda"), torch.float32, kind)
            assert torch.equal(bits(gpu.cpu()), bits(cpu)), (first, n, kind)


def test_the_torch_implementation_can_be_forced(monkeypatch):
    monkeypatch.setenv("ZOBENCH_PHILOX", "torch")
    assert philox._load() == (None, "ZOBENCH_PHILOX=torch")
    monkeypatch.setenv("ZOBENCH_PHILOX", "sometimes")
    with pytest.raises(ValueError, match="auto, torch or compiled"):
        philox._load()


def test_no_compiler_means_the_torch_implementation_with_a_warning(monkeypatch):
    monkeypatch.setenv("ZOBENCH_PHILOX", "auto")
    monkeypatch.setattr(philox, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="torch implementation"):
        lib, why = philox._load()
    assert lib is None and "no C++ compiler" in why
    monkeypatch.setenv("ZOBENCH_PHILOX", "compiled")
    with pytest.raises(RuntimeError, match="not usable"):
        philox._load()


@pytest.mark.slow
def test_a_fresh_build_in_an_empty_cache(monkeypatch, tmp_path):
    """What ``make install`` does on a fresh machine: compile into an empty cache, load, self-check."""
    if philox._compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("ZOBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ZOBENCH_PHILOX", "compiled")
    lib, why = philox._load()
    assert lib is not None and why is None and len(list(tmp_path.glob("philox-*.so"))) == 1


# -- the distribution -----------------------------------------------------------------------------------------

def _ks_statistic(x: np.ndarray) -> float:
    """sup |F_n − Φ|, Kolmogorov–Smirnov against N(0, 1)."""
    x = np.sort(x.astype(np.float64))
    cdf = 0.5 * (1 + torch.special.erf(torch.from_numpy(x) / math.sqrt(2)).numpy())
    n = x.size
    return float(max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max()))


def _ks_pvalue_ok(x: np.ndarray) -> bool:
    try:
        from scipy import stats
    except ImportError:  # Kolmogorov's asymptotic critical value at α = 0.001: 1.949/√n
        return _ks_statistic(x) < 1.949 / math.sqrt(x.size)
    return stats.kstest(x, "norm").pvalue > 1e-3


def _moments_ok(z: np.ndarray, sigmas: float = 5.0) -> None:
    n, z = z.size, z.astype(np.float64)
    m, v = z.mean(), z.var()
    skew, kurt = ((z - m) ** 3).mean() / v**1.5, ((z - m) ** 4).mean() / v**2 - 3
    assert abs(m) < sigmas / math.sqrt(n), m
    assert abs(v - 1) < sigmas * math.sqrt(2 / n), v
    assert abs(skew) < sigmas * math.sqrt(6 / n), skew
    assert abs(kurt) < sigmas * math.sqrt(24 / n), kurt


@pytest.mark.parametrize("dist", [G, FG, IG])
@pytest.mark.parametrize("seed", [0, 1, mix(0, 0)])
def test_gaussian_moments_and_ks(seed, dist):
    z = draw(seed, 0, 0, 1 << 19, CPU, torch.float32, dist).numpy()
    _moments_ok(z)
    assert _ks_pvalue_ok(z)
    groups = z.reshape(-1, 4, 16)  # each output word on its own (the layout's four streams)
    for w in range(4):
        _moments_ok(groups[:, w].reshape(-1))
        assert _ks_pvalue_ok(groups[:, w].reshape(-1))


@pytest.mark.parametrize("dist", [G, FG, IG])
def test_gaussian_bins_and_tails(dist):
    """A finer look than KS: 4 Mi draws over 1024 equiprobable bins of N(0, 1) (chi-square, in its normal
    approximation for 1023 degrees of freedom, within 5 sigma), and the tail counts P(|z| > 2, 3, 4) within 5
    binomial sigma: what a polynomial's structured error or a correlated word would bend first."""
    n, bins = 1 << 22, 1024
    z = torch.cat([draw(mix(21, t), t, 0, n // 4, CPU, torch.float64, dist) for t in range(4)])
    edges = torch.special.ndtri(torch.arange(1, bins, dtype=torch.float64) / bins)
    counts = torch.bincount(torch.bucketize(z, edges), minlength=bins).double()
    chi2 = float(((counts - n / bins) ** 2 / (n / bins)).sum())
    assert abs(chi2 - (bins - 1)) / math.sqrt(2 * (bins - 1)) < 5, chi2
    for a in (2.0, 3.0, 4.0):
        p = math.erfc(a / math.sqrt(2))
        hits = int((z.abs() > a).sum())
        assert abs(hits - n * p) < 5 * math.sqrt(n * p * (1 - p)), (a, hits, n * p)


def test_hand_written_ks_matches_scipy():
    z = draw(3, 0, 0, 5000, CPU, torch.float64, G).numpy()
    stats = pytest.importorskip("scipy.stats")
    assert _ks_statistic(z) == pytest.approx(stats.kstest(z, "norm").statistic, abs=1e-9)


@pytest.mark.parametrize("dist", [G, FG, IG])
def test_box_muller_pairs_are_independent(dist):
    """z₀ = r cos φ and z₁ = r sin φ share r: uncorrelated, and so are their squares (independence). (The inverse
    CDF's words of one block: the same check.)"""
    z = draw(8, 0, 0, 1 << 20, CPU, torch.float64, dist).view(-1, 4, 16)
    bound = 5 / math.sqrt(z.shape[0] * 16)
    for a, b in ((0, 1), (2, 3), (0, 2)):
        x, y = z[:, a].reshape(-1), z[:, b].reshape(-1)
        assert abs(float(torch.corrcoef(torch.stack([x, y]))[0, 1])) < bound
        assert abs(float(torch.corrcoef(torch.stack([x * x, y * y]))[0, 1])) < bound


@pytest.mark.parametrize("dist", [R, FR])
def test_rademacher_signs_are_balanced_and_independent(dist):
    z = draw(4, 0, 0, 1 << 20, CPU, torch.float32, dist)
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    per_bit = z.view(-1, 128).mean(0)  # each bit position of a block, over the blocks
    assert float(per_bit.abs().max()) < 5 / math.sqrt(n / 128)
    assert abs(float((z[1:] * z[:-1]).mean())) < 5 / math.sqrt(n)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


@pytest.mark.parametrize("dist", [G, R, FG, FR, IG])
def test_no_correlation_between_chunks_tensors_and_seeds(dist):
    n = 1 << 18
    bound = 5 / math.sqrt(n)
    s0, s1 = mix(0, 0), mix(0, 1)  # two consecutive step seeds
    base = draw(s0, 0, 0, n, CPU, torch.float32, dist)
    others = {
        "next chunk": draw(s0, 0, 1, n, CPU, torch.float32, dist),
        "next tensor": draw(s0, 1, 0, n, CPU, torch.float32, dist),
        "next step": draw(s1, 0, 0, n, CPU, torch.float32, dist),
        "seed + 1": draw(s0 + 1, 0, 0, n, CPU, torch.float32, dist),  # keys one bit apart
        "seed + 2³²": draw(s0 ^ (1 << 32), 0, 0, n, CPU, torch.float32, dist),
        "shifted by one element": draw(s0, 0, 0, n + 1, CPU, torch.float32, dist)[1:],
    }
    for name, other in others.items():
        assert abs(_corr(base, other)) < bound, name
    stream = dist.split(":")[0]
    g = draw(s0, 0, 0, n, CPU, torch.float32, f"{stream}:gaussian")
    r = draw(s0, 0, 0, n, CPU, torch.float32, f"{stream}:rademacher")
    assert abs(_corr(g, r)) < bound  # the two kinds use apart counters (tag 0 / 1)
    if stream == "philox_fast":  # the two streams' z for one seed: the same counters, other rounds
        assert abs(_corr(base, draw(s0, 0, 0, n, CPU, torch.float32, dist.replace("philox_fast", "philox")))) < bound
    if dist == IG:  # counters of its own (tag 2), another transform: z and its square unrelated to philox_fast's
        other = draw(s0, 0, 0, n, CPU, torch.float32, FG)
        assert abs(_corr(base, other)) < bound and abs(_corr(base ** 2, other ** 2)) < bound


# -- the ZO-SGD step ---------------------------------------------------------------------------------------------

def _quadratic(params, target):
    return lambda: sum(((p.double() - t) ** 2).sum() for p, t in zip(params, target))


@pytest.mark.parametrize("stream, dist", [(PHILOX, G), ("philox_fast", FG), ("philox_icdf", IG)])
def test_zo_sgd_step_with_the_philox_stream_matches_a_step_by_hand(stream, dist):
    """θ ± εz, the projected gradient g = (L₊ − L₋)/2ε, θ − lr·g·z, with z = z(mix(s_t, 0)) from the generator."""
    torch.manual_seed(0)
    params = [torch.randn(300, 7), torch.randn(50)]
    theta0 = [p.clone() for p in params]
    target = [torch.randn_like(p).double() for p in params]
    loss = _quadratic(params, target)
    lr, eps, seed = 1e-3, 1e-3, 5
    opt = ZOOptimizer([("w", params[0]), ("b", params[1])], SPSA(direction_stream=stream), lr=lr, eps=eps, seed=seed)
    assert opt.distribution == dist
    for t in range(3):
        before = [p.clone() for p in params]
        out = opt.step(loss)
        s = mix(mix(seed, t), 0)  # step seed, direction 0
        z = [direction(s, i, p, dist).double() for i, p in enumerate(params)]
        lp = sum(((b.double() + eps * zi - tt) ** 2).sum() for b, zi, tt in zip(before, z, target))
        lm = sum(((b.double() - eps * zi - tt) ** 2).sum() for b, zi, tt in zip(before, z, target))
        g = float(lp - lm) / (2 * eps)
        _, seeds, coeffs, applied = opt.seed_log[-1]
        assert seeds == [s] and applied == lr and out["forward_passes"] == 2
        assert coeffs[0] == pytest.approx(g, rel=1e-3)  # θ ± εz rounded to float32 in place
        for p, b, zi in zip(params, before, z):
            assert float((p.double() - (b.double() - lr * coeffs[0] * zi)).abs().max()) < 2e-6
    assert not torch.equal(params[0], theta0[0])


def test_zo_sgd_step_replays_bit_for_bit_from_the_in_place_sequence():
    """What the sweeps do to θ, written out: +fl(ε·z), +fl(−2ε·z), +fl(fl(ε − lr·g)·z), in float32."""
    torch.manual_seed(1)
    w = torch.randn(5000)
    target = torch.randn(5000).double()
    loss = _quadratic([w], [target])
    w0 = w.clone()
    opt = ZOOptimizer([("w", w)], SPSA(direction_stream=PHILOX), lr=1e-2, eps=1e-3, seed=9)
    opt.step(loss)
    s, (g,) = opt.seed_log[0][1][0], opt.seed_log[0][2]
    z = direction(s, 0, w, G)
    ref = w0 + z * 1e-3
    ref = ref + z * (-2e-3)
    ref = ref + z * (1e-3 - 1e-2 * g)
    assert torch.equal(w, ref)


@pytest.mark.parametrize("stream", [PHILOX, "philox_fast", "philox_icdf"])
def test_compiled_and_torch_paths_take_the_same_steps(monkeypatch, stream):
    def run():
        torch.manual_seed(2)
        params = [torch.randn(40000), torch.randn(3, 33).to(torch.float64)]
        target = [torch.randn_like(p).double() for p in params]
        opt = ZOOptimizer([("a", params[0]), ("b", params[1])], SPSA(num_directions=2, direction_stream=stream),
                          lr=1e-3, eps=1e-2, seed=3)
        for _ in range(2):
            opt.step(_quadratic(params, target))
        return params

    fused = run()
    monkeypatch.setattr(philox, "_compiled_for", lambda t: None)
    plain = run()
    for a, b in zip(fused, plain):
        assert torch.equal(bits(a), bits(b))


@pytest.mark.parametrize("stream", [PHILOX, "philox_fast", "philox_icdf"])
def test_zo_sgd_with_the_philox_stream_learns(stream):
    torch.manual_seed(3)
    w = torch.zeros(20)
    target = torch.linspace(-1, 1, 20).double()
    loss = _quadratic([w], [target])
    start = float(loss())
    opt = ZOOptimizer([("w", w)], SPSA(direction_stream=stream), lr=0.02, eps=1e-3, seed=0)
    for _ in range(300):
        opt.step(loss)
    assert float(loss()) < 0.1 * start


def test_philox_icdf_rademacher_directions_are_philox_fasts():
    """The same rounds and the same (tag 1) counters: only the Gaussian transform and counters differ."""
    for first, n in ((0, 4096), (2**39 - 300, 700)):  # the second crosses the block counter's 2³²
        a = philox.generate(mix(5, 1), 2, first, n, CPU, torch.float32, "rademacher", "philox_icdf")
        assert torch.equal(a, philox.generate(mix(5, 1), 2, first, n, CPU, torch.float32, "rademacher", "philox_fast"))
    assert torch.equal(draw(7, 1, 0, 999, CPU, torch.float32, "philox_icdf:rademacher"),
                       draw(7, 1, 0, 999, CPU, torch.float32, FR))
    assert not torch.equal(draw(3, 0, 0, 64, CPU, torch.float32, IG), draw(3, 0, 0, 64, CPU, torch.float32, FG))


def test_the_chunked_stream_is_unchanged_by_the_new_one():
    """Runs made before the philox stream replay: chunked still draws torch.randn from mix(seed, tensor, chunk)."""
    gen = torch.Generator().manual_seed(mix(7, 2, 0))
    assert torch.equal(draw(7, 2, 0, 1000, CPU, torch.float32, "gaussian"), torch.randn(1000, generator=gen))
    assert stream_distribution("chunked", "gaussian") == "gaussian"
    assert stream_distribution("mezo", "gaussian") == "mezo"
    assert stream_distribution(PHILOX, "rademacher") == R
    assert stream_distribution("philox_fast", "gaussian") == FG


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_the_philox_stream_is_unchanged_by_the_fast_one(kind):
    """Runs made with direction_stream=philox replay: its first numbers, recorded from the stream before
    philox_fast existed (torch implementation, seed mix(7, 2), tensor 3)."""
    z = philox.torch_generate(mix(7, 2), 3, 0, 6, CPU, torch.float32, kind)
    want = {"gaussian": [-1.978732705116272, -0.9402920007705688, -0.3459213972091675, 0.5356882214546204,
                         -0.13132654130458832, -0.18798232078552246],
            "rademacher": [-1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}[kind]
    assert z.tolist() == want


# -- configuration -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [PHILOX, "philox_fast", "philox_icdf"])
@pytest.mark.parametrize("name", ["zo_sgd", "zo_sgd_sign", "zo_sgd_cons", "zo_sgd_mmt", "zo_adam"])
def test_philox_is_accepted_by_the_spsa_optimizers(name, stream):
    validate_optimizer(compose_cfg(f"optimizer={name}", f"optimizer.direction_stream={stream}").optimizer)
    validate_optimizer(compose_cfg(f"optimizer={name}", f"optimizer.direction_stream={stream}",
                                   "optimizer.direction=rademacher", "optimizer.estimator.num_directions=4").optimizer)


@pytest.mark.parametrize("overrides, words", [
    (["optimizer=zo_sgd", "optimizer.direction_stream=sequential"],
     ["optimizer.direction_stream", "chunked, mezo, philox, philox_fast, philox_icdf"]),
    (["optimizer=hizoo", "optimizer.direction_stream=philox_fast"], ["optimizer.direction_stream='philox_fast'", "chunked"]),
    (["optimizer=bszo", "+optimizer.direction_stream=philox"], ["optimizer.direction_stream='philox'", "chunked"]),
    (["optimizer=zo_sgd_block", "+optimizer.direction_stream=philox"], ["optimizer.direction_stream='philox'", "chunked"]),
    (["optimizer=zo_sgd", "optimizer.direction_stream=philox", "optimizer.estimator.direction_stream=chunked"],
     ["must follow optimizer.direction_stream"]),
])
def test_philox_is_refused_where_the_estimator_cannot_draw_it(overrides, words):
    with pytest.raises(ConfigError) as info:
        validate_optimizer(compose_cfg(*overrides).optimizer)
    for word in words:
        assert word in str(info.value)
    assert PHILOX in STREAMS


def test_build_optimizer_selects_the_stream_from_the_config():
    from zobench.optim import build_optimizer

    cfg = compose_cfg("optimizer=zo_sgd", "optimizer.direction_stream=philox", "optimizer.direction=rademacher")
    opt = build_optimizer(cfg.optimizer, [("w", torch.zeros(10))], total_steps=1, seed=0)
    assert opt.distribution == R and opt.estimator.distribution == R



@compiled
def test_throughput_times_each_fused_pass_against_an_axpy_and_restores_the_isa_and_threads(capsys):
    """``python -m zobench.optim.philox --throughput`` (the issue's "how close to the axpy floor"): one row per
    instruction set with positive timings; the process's instruction set and thread count are left as found."""
    level, threads = philox.isa(), torch.get_num_threads()
    philox.main(["--throughput", "--sizes", "2048"])
    out = capsys.readouterr().out
    # a line per instruction set and variant, + the other generators' line
    assert out.count("n=     2048") == len(VARIANTS) * (level + 1) + 1 and "gaussian / axpy" in out
    assert "philox_fast" in out and "philox_icdf" in out and "box-muller" in out and "icdf" in out
    assert "torch.randn" in out and "numpy (PCG64, ziggurat)" in out
    rows = philox.throughput(2048, repeats=1, levels=(0,))
    assert rows[0]["isa"] == "baseline" and all(v > 0 for k, v in rows[0].items() if k.endswith("_per_element"))
    assert philox.isa() == level and torch.get_num_threads() == threads


@compiled
def test_compare_times_this_build_against_another_alternating():
    """``python -m zobench.optim.philox --against OLD.so``: what a change to philox.cpp buys, both builds timed
    in one process (here the build against itself: every kind timed, ratios positive)."""
    for variant in VARIANTS:
        out = philox.compare(philox._state["path"], 4096, rounds=2, variant=variant)
        assert set(out) == set(philox.KINDS)
        assert all(r["this_ms"] > 0 and r["other_ms"] > 0 and r["ratio"] > 0 for r in out.values())
