"""The inverse-CDF transform of the ``philox_icdf`` stream: z = Φ⁻¹(u) from one 32-bit Philox word.

Box–Muller turns two words into two normals with a log, a square root, a sine and a cosine; this takes one
word to one normal with a count of leading zeros and one polynomial of degree 6 whose coefficients are
looked up by that count (in AVX-512, one ``vpermt2ps`` per coefficient: the table is 32 entries wide). No
log, root, trig or branch. (Inverse-CDF Gaussian generation: Giles, "Approximating the erfinv function",
GPU Computing Gems 2011; MKL's VSL_RNG_METHOD_GAUSSIAN_ICDF. The binade-indexed table is ours.)

Definition, for a word w (uint32):
  sign s = bit 31 of w;  x = 2·(w mod 2³¹) + 1 ∈ [1, 2³²) (odd);  u = x·2⁻³³ ∈ (0, ½)
      (the midpoints of 2³¹ equal cells of (0, ½));
  binade k = clz32(x) ∈ [0, 31], so u ∈ [2^−(k+2), 2^−(k+1));  y = x·2^k mod 2³² (bit 31 set);
  t = m − 3/2 ∈ [−½, ½), m ∈ [1, 2) the binary32 whose mantissa is bits 30…8 of y (exact);
  z = Q_k(t) when s = 0, −Q_k(t) when s = 1;  Q_k(t) = c_k,0 + t(c_k,1 + t(… + t·c_k,6)) < 0 (Φ⁻¹(u) for u < ½).
Q_k interpolates Φ⁻¹ at the 7 Chebyshev nodes of its binade (in binary64; Φ⁻¹ = statistics.NormalDist
.inv_cdf, Wichura's AS241, ~1e-16), coefficients rounded to binary32 (``fit_table``). For k < 8 the 8 − k
low bits of x do not reach m; x is odd, so the words sharing t have mean u = 2^−(k+2)·(t + 3/2) + 2^(−26−k),
and Q_k interpolates Φ⁻¹ at that mean (for k ≥ 8, u is exact). Evaluated in binary32, one correctly
rounded × or + at a time in the order written (no FMA): |z − Φ⁻¹(u)| < 1e-6 for the exact u of every word
(7.93e-7 the largest, in binade 0, over every word of binades 8–31 and both ends of every t of binades 0–7:
tests/test_directions_icdf.py; degree 7 gives 5e-7 for one more lookup, multiply and add, ~10% more time in the
transform). |z| ≤ −Φ⁻¹(2⁻³³) = 6.34 (Box–Muller on 24-bit
uniforms, ``philox``: 5.77).

zobench/_ext/philox.cpp (``icdf`` and ``icdf16``) holds the same table as hexadecimal binary32 literals and
performs the same operations; the tests check the two bit for bit on every binade.
"""
from __future__ import annotations

import numpy as np
import torch

DEGREE = 6
BINADES = 32
_MASK32 = 0xFFFFFFFF


def cell_u(k: int, t: float) -> float:
    """The mean u of the words of binade ``k`` whose t is ``t`` (see the module docstring)."""
    d = max(0, 8 - k)
    return 2.0 ** -(k + 2) * (1.5 + t) + (2.0 ** (d - 34) if d else 0.0)


def fit_table() -> np.ndarray:
    """(32, 7) binary32: row k holds Q_k's coefficients, c_k,0 … c_k,6 (of t⁰ … t⁶)."""
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    rows = []
    for k in range(BINADES):
        f = lambda x, k=k: np.array([inv(cell_u(k, v / 2)) for v in np.atleast_1d(x)])  # noqa: E731  x = 2t
        cheb = np.polynomial.chebyshev.chebinterpolate(f, DEGREE)
        rows.append(np.polynomial.chebyshev.cheb2poly(cheb) * 2.0 ** np.arange(DEGREE + 1))  # in t = x / 2
    return np.array(rows).astype(np.float32)


# fit_table(), as committed (binary32 bit patterns, row k = binade k, c_k,0 … c_k,6); philox.cpp holds the same.
TABLE_BITS = [
    [0xBEA324B2, 0x3F28C7C1, 0xBD8DD54E, 0x3D6A716B, 0xBC9B5A1E, 0x3C670B13, 0xBBDF52F7],
    [0xBF631C09, 0x3EEDC7EA, 0xBDC3EF99, 0x3D2F3040, 0xBCA42BD8, 0x3C44A513, 0xBBD6B1FD],
    [0xBFA8B495, 0x3EBF3094, 0xBDBC3235, 0x3D1E4711, 0xBC978498, 0x3C35773C, 0xBBC6C5B6],
    [0xBFD68531, 0x3EA35B1D, 0xBDAEB2D6, 0x3D1201B3, 0xBC8C9080, 0x3C28ECB8, 0xBBB9711F],
    [0xBFFE6409, 0x3E9081FB, 0xBDA21E7D, 0x3D07ECB3, 0xBC835F39, 0x3C1E5FCD, 0xBBAE308A],
    [0xC01109DC, 0x3E82BB35, 0xBD974B55, 0x3CFEE7F8, 0xBC772E11, 0x3C1565B0, 0xBBA4954D],
    [0xC0214FE8, 0x3E70425A, 0xBD8E15A4, 0x3CF07D63, 0xBC69DB1E, 0x3C0DAC1A, 0xBB9C4A2A],
    [0xC0305AEA, 0x3E5F535A, 0xBD8635BC, 0x3CE41547, 0xBC5E52CC, 0x3C06F40D, 0xBB950DF4],
    [0xC03E66BD, 0x3E516B12, 0xBD7ED422, 0x3CD94A9D, 0xBC543D2E, 0x3C010D47, 0xBB8EAEA9],
    [0xC04B9EAC, 0x3E45BE76, 0xBD72FB9F, 0x3CCFCFEC, 0xBC4B56A7, 0x3BF7A50F, 0xBB890597],
    [0xC0582329, 0x3E3BC55C, 0xBD688F6C, 0x3CC7696A, 0xBC436AC9, 0x3BEE4D96, 0xBB83F47F],
    [0xC0640D3C, 0x3E3320B9, 0xBD5F4F5E, 0x3CBFE87B, 0xBC3C507B, 0x3BE5E667, 0xBB7EC6EE],
    [0xC06F70AE, 0x3E2B8C02, 0xBD570940, 0x3CB92866, 0xBC35E728, 0x3BDE4B0D, 0xBB767EB9],
    [0xC07A5D70, 0x3E24D467, 0xBD4F956B, 0x3CB30BE7, 0xBC3014AF, 0x3BD75E29, 0xBB6EF173],
    [0xC0827049, 0x3E1ED362, 0xBD48D437, 0x3CAD7B6B, 0xBC2AC3E6, 0x3BD107CD, 0xBB6805D8],
    [0xC0878276, 0x3E196B24, 0xBD42AC1B, 0x3CA863BE, 0xBC25E379, 0x3BCB3450, 0xBB61A714],
    [0xC08C69D3, 0x3E148436, 0xBD3D0845, 0x3CA3B518, 0xBC216517, 0x3BC5D35E, 0xBB5BC3D3],
    [0xC0912A41, 0x3E100BDC, 0xBD37D78F, 0x3C9F6262, 0xBC1D3CD0, 0x3BC0D74F, 0xBB564D8A],
    [0xC095C717, 0x3E0BF2EA, 0xBD330BBE, 0x3C9B60A6, 0xBC19609D, 0x3BBC349E, 0xBB5137F1],
    [0xC09A4339, 0x3E082CF2, 0xBD2E98E2, 0x3C97A6A6, 0xBC15C7FF, 0x3BB7E181, 0xBB4C788F],
    [0xC09EA12D, 0x3E04AFAC, 0xBD2A74E9, 0x3C942C89, 0xBC126BB9, 0x3BB3D59A, 0xBB480670],
    [0xC0A2E32C, 0x3E01727E, 0xBD269743, 0x3C90EB97, 0xBC0F4594, 0x3BB009B4, 0xBB43D9D8],
    [0xC0A70B2B, 0x3DFCDC54, 0xBD22F899, 0x3C8DDE09, 0xBC0C5032, 0x3BAC7793, 0xBB3FEC13],
    [0xC0AB1AE8, 0x3DF73910, 0xBD1F929A, 0x3C8AFEDF, 0xBC0986EB, 0x3BA919CB, 0xBB3C374B],
    [0xC0AF13F4, 0x3DF1F0A9, 0xBD1C5FCD, 0x3C8849BE, 0xBC06E5AF, 0x3BA5EB9B, 0xBB38B662],
    [0xC0B2F7B4, 0x3DECFA0C, 0xBD195B6C, 0x3C85BAD6, 0xBC0468ED, 0x3BA2E8D7, 0xBB3564D7],
    [0xC0B6C76C, 0x3DE84D5E, 0xBD16814A, 0x3C834ED0, 0xBC020D82, 0x3BA00DD2, 0xBB323EB0],
    [0xC0BA8442, 0x3DE3E3C6, 0xBD13CDBC, 0x3C8102B7, 0xBBFFA14A, 0x3B9D5748, 0xBB2F4066],
    [0xC0BE2F3E, 0x3DDFB747, 0xBD113D82, 0x3C7DA7D7, 0xBBFB5FC2, 0x3B9AC252, 0xBB2C66D2],
    [0xC0C1C955, 0x3DDBC299, 0xBD0ECDBB, 0x3C798035, 0xBBF75203, 0x3B984C58, 0xBB29AF27],
    [0xC0C55364, 0x3DD80114, 0xBD0C7BD8, 0x3C758A5E, 0xBBF3741E, 0x3B95F307, 0xBB2716DE],
    [0xC0C8CE37, 0x3DD46E95, 0xBD0A458F, 0x3C71C296, 0xBBEFC28B, 0x3B93B448, 0xBB249BB3],
]


def table() -> torch.Tensor:
    """TABLE_BITS as a (32, 7) float32 tensor."""
    return torch.tensor(TABLE_BITS, dtype=torch.int64).to(torch.int32).view(torch.float32)


_TABLE: dict = {}


def icdf(w: torch.Tensor) -> torch.Tensor:
    """z of words ``w`` (an int64 tensor holding uint32 values), float32: philox.cpp ``icdf``, op for op."""
    if w.device not in _TABLE:
        _TABLE[w.device] = table().to(w.device)
    tab = _TABLE[w.device]
    x = ((w & 0x7FFFFFFF) << 1) | 1
    k = 32 - torch.frexp(x.to(torch.float64)).exponent.to(torch.int64)  # clz32: x < 2³² is exact in binary64
    y = (x << k) & _MASK32
    t = ((((y >> 8) & 0x7FFFFF) | 0x3F800000).to(torch.int32).view(torch.float32)) - 1.5
    c = tab[k]  # (..., 7)
    p = c[..., DEGREE] * t
    for i in range(DEGREE - 1, 0, -1):
        p = (p + c[..., i]) * t
    p = p + c[..., 0]
    return torch.where((w >> 31) == 1, -p, p)


def _literals(rows: np.ndarray) -> tuple[str, str]:
    bits = rows.view(np.uint32)
    py = "\n".join("    [" + ", ".join(f"0x{b:08X}" for b in row) + "]," for row in bits)
    cxx = "\n".join("    {" + ", ".join(f"{float(v).hex()}f" for v in col) + "}," for col in rows.T)
    return py, cxx


if __name__ == "__main__":
    py, cxx = _literals(fit_table())
    print("# Python (TABLE_BITS)\n" + py + "\n// C++ (ICDF[i][k]: coefficient i of binade k)\n" + cxx)
