"""The inverse-CDF transform of ``optimizer.direction_stream=philox_icdf`` (zobench/optim/philox_icdf.py).

The transform word → z against Φ⁻¹ of each word's exact u on every binade; its symmetry, bound and monotonicity;
the committed table against its fit; the compiled ``icdf`` (philox.cpp, every instruction set) against the torch
one bit for bit on every binade; the stream's first numbers against a hand computation. Draws, fused updates,
threads, moments, KS, chi-square bins and tails, correlations and the ZO step: tests/test_directions_fast.py,
which runs every variant.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zobench.optim import philox
from zobench.optim.directions import mix
from zobench.optim.philox_icdf import BINADES, DEGREE, TABLE_BITS, fit_table, icdf, table

LIB = philox.library()
compiled = pytest.mark.skipif(LIB is None, reason=f"no compiled Philox library: {philox.why()}")


def _binade(k: int) -> tuple[int, int]:
    """[lo, hi): the words v (sign bit clear) whose x = 2v + 1 lies in binade k, [2^(31−k), 2^(32−k))."""
    return ((1 << (31 - k)) >> 1, (1 << (32 - k)) >> 1) if k < 31 else (0, 1)


def _binade_words(k: int, n: int = 20001, seed: int = 0) -> torch.Tensor:
    """Words (sign bit clear) whose x = 2v + 1 lies in binade k: an even grid over it, its ends, random ones."""
    lo, hi = _binade(k)
    grid = torch.linspace(lo, hi - 1, n, dtype=torch.float64).round().to(torch.int64)
    rand = torch.randint(lo, hi, (n,), generator=torch.Generator().manual_seed(seed + k))
    return torch.unique(torch.cat([grid, rand, torch.tensor([lo, hi - 1])]))


def _exact(w: torch.Tensor) -> torch.Tensor:
    """Φ⁻¹(u) of each word's exact u = (2(w mod 2³¹) + 1)·2⁻³³, signed as the stream signs it, in binary64."""
    u = (2 * (w & 0x7FFFFFFF) + 1).double() * 2.0**-33
    z = torch.special.ndtri(u)
    return torch.where((w >> 31) == 1, -z, z)


@pytest.mark.parametrize("k", range(BINADES))
def test_each_binade_is_within_1e_6_of_the_exact_inverse_cdf(k):
    """|z − Φ⁻¹(u)| < 1e-6 (7.93e-7 the largest over every word: the slow test below), u exact: the polynomial,
    its binary32 coefficients and arithmetic, and the 8 − k mantissa bits that binades k < 8 drop, together."""
    w = _binade_words(k)
    err = (icdf(w).double() - _exact(w)).abs().max().item()
    assert err < 1e-6, err
    assert err > 0 or k == 31  # the floats are not exact (binade 31 holds a single word)


@pytest.mark.slow
def test_every_word_is_within_1e_6_of_the_exact_inverse_cdf():
    """Every word of binades 8 … 31 (u exact: 2²³ words), and in binades 0 … 7, where the words that share a t differ
    only in dropped bits, the first and last word of each of the 2²³ t's: the largest error is 7.93e-7 (binade 0)."""
    worst = 0.0
    for k in range(BINADES):
        if k >= 8:
            lo, hi = _binade(k)
            parts = [torch.arange(a, min(a + (1 << 21), hi)) for a in range(lo, hi, 1 << 21)]
        else:
            step, base = 1 << (8 - k), 1 << (31 - k)  # x = 2v + 1 in [base + j·step, base + (j + 1)·step)
            cells = [base + torch.arange(a, a + (1 << 21)) * step for a in range(0, 1 << 23, 1 << 21)]
            parts = [(x - 1) // 2 for c in cells for x in (c + 1, c + step - 1)]
        for w in parts:
            worst = max(worst, (icdf(w).double() - _exact(w)).abs().max().item())
    assert 7.5e-7 < worst < 1e-6, worst


def test_symmetric_bounded_and_continuous_across_binades():
    w = torch.cat([_binade_words(k, 2001) for k in range(BINADES)])
    z = icdf(w)
    assert torch.equal(icdf(w | (1 << 31)), -z)  # the sign bit flips z exactly
    assert float(z.max()) < 0 and float(z.abs().max()) == pytest.approx(6.3379577, abs=1e-6)  # Φ⁻¹(2⁻³³)
    # monotone: z rises with u (v) on a grid of each binade (steps far above the float error), and across the
    # binade edges (no jump where the table changes rows)
    grid = torch.cat([torch.linspace(lo, hi - 1, 4097, dtype=torch.float64).round().to(torch.int64)
                      for lo, hi in map(_binade, range(24))])
    zg = icdf(torch.sort(torch.unique(grid)).values)
    assert bool((zg[1:] > zg[:-1]).all())
    edges = torch.tensor([_binade(k)[0] for k in range(BINADES - 1)])  # the first v of binades 0 … 30
    below = icdf(edges - 1)  # the last word of the binade under each
    jump, exact_jump = (icdf(edges) - below).double(), _exact(edges) - _exact(edges - 1)
    assert bool((jump > 0).all()) and float((jump - exact_jump).abs().max()) < 2e-6  # u's own step, deep down


def test_the_committed_table_is_its_fit():
    """TABLE_BITS (and philox.cpp's literals, checked bit for bit below) came from fit_table(): Chebyshev
    interpolation of Φ⁻¹ at DEGREE + 1 nodes per binade, rounded to binary32 (1 ulp allowed for another numpy)."""
    fitted = fit_table().view(np.uint32).astype(np.int64)
    committed = np.array(TABLE_BITS, dtype=np.int64)
    assert committed.shape == (BINADES, DEGREE + 1)
    assert int(np.abs(fitted - committed).max()) <= 1
    assert table().dtype == torch.float32 and float(table()[0, 0]) == pytest.approx(-0.3186393, abs=1e-6)


@compiled
def test_compiled_icdf_matches_torch_on_every_binade_at_every_isa():
    """Every row of the C++ table is reached (binades 0 … 31, both signs); the AVX-512 code looks coefficients up
    with vpermt2ps, the others index the table: the same bits at every instruction-set level."""
    w = torch.cat([_binade_words(k, 501) for k in range(BINADES)])
    w = torch.cat([w, w | (1 << 31), torch.tensor([0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])])
    want = icdf(w).view(torch.int32)
    words = w.to(torch.int32)  # the uint32 bit patterns
    level = philox.isa()
    try:
        for lv in range(level + 1):
            philox.isa(lv)
            for n in (len(w), 37):  # full vectors and a scalar tail
                got = torch.empty(n)
                LIB.zb_philox_icdf(words.data_ptr(), n, got.data_ptr())
                assert torch.equal(got.view(torch.int32), want[:n]), (philox.ISAS[lv], n)
    finally:
        philox.isa(level)


def test_the_streams_first_numbers_are_the_inverse_cdf_of_its_philox_words():
    """Elements 0 … 5 of z(mix(7, 2)) on tensor 3: element k < 16 is word 0 of block k, counter (k, 0, 3, 2),
    Philox4x32-7 — here from philox4x32 and torch.special.ndtri, not from the stream's code. Pinned, so that
    runs with this stream replay."""
    seed = mix(7, 2)
    z = philox.torch_generate(seed, 3, 0, 6, "cpu", torch.float32, "gaussian", "philox_icdf")
    k0, k1 = philox.key_of(seed)
    words = torch.tensor([philox.philox4x32(b, 0, 3, 2, k0, k1, 7)[0] for b in range(6)])
    assert (z.double() - _exact(words)).abs().max().item() < 1e-6
    assert z.tolist() == [0.07015193998813629, 0.9054808020591736, 0.98038250207901, -1.4885683059692383,
                          -1.0593968629837036, 1.2012001276016235]
