"""Counter-based random directions (``optimizer.direction_stream=philox`` / ``philox_fast`` / ``philox_icdf``):
Philox + Box–Muller, or Philox + an inverse CDF.

Element k of z(seed) restricted to tensor ``index`` is a pure function of (seed, index, k): no generator
state, so any chunk is drawn alone, in any order, by any number of threads, on CPU or CUDA, with the same
result — and a chunk's numbers do not depend on ``CHUNK`` either. Two implementations give the same
numbers bit for bit:

  compiled  zobench/_ext/philox.cpp, built on first use with the system C++ compiler (``c++``, or $CXX)
            into a cache folder (``$ZOBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/zobench``, else
            ``~/.cache/zobench``) and loaded with ctypes; OpenMP threads (``torch.get_num_threads()``),
            SIMD code for AVX-512 / AVX2 / baseline x86-64 picked at load time. CPU tensors only. It
            fuses θ += c·z: z is never written to memory.
  torch     the same arithmetic in torch ops (int64 for Philox, float32 for the transform, the square root
            in float64 rounded once to float32: torch's CPU float32 sqrt is not correctly rounded), on any
            device: used for CUDA tensors, where no compiler is found, or with ``ZOBENCH_PHILOX=torch``.
            Slow: on CPU ~20× torch.randn (~0.3 s of one core per 4 Mi elements), a few 2 MiB temporaries;
            on CUDA ~300 small kernels per chunk, far slower than torch.randn there (use ``chunked`` on GPUs
            for speed; ``philox`` on a GPU draws the CPU's numbers).
``ZOBENCH_PHILOX`` = auto (default) | torch | compiled (fail if it cannot be built). The compiled library is
checked against the torch code on its first load (a few thousand elements of every kind); on a mismatch
(a compiler that contracts a·b + c into an FMA despite -ffp-contract=off, say) it is not used, with a warning.

Three variants (streams) share everything below but the rounds and the transform:
  philox       Philox4x32-10 (Random123's default), Cephes' logf polynomial (degree 8 in P), sin/cos of 4 terms.
  philox_fast  Philox4x32-7 (the fewest rounds Random123 lists as Crush-resistant for Philox4x32, without
               its 3-round safety margin), P of degree 4 and sin/cos of 3 terms: near-minimax fits rounded to
               binary32 (ln within 3.8e-7, sin 5.7e-7, cos 4.7e-8: z within ~2e-6 of exact Box–Muller on its
               own words). 14–20% less time a fused Gaussian pass on CPU (``make bench``: passes); other numbers.
  philox_icdf  Philox4x32-7 and no Box–Muller: each word becomes one normal, z = ±Φ⁻¹(u), u = (2·(w mod 2³¹)
               + 1)·2⁻³³, by a degree-6 polynomial per binade of u looked up by a count of leading zeros
               (``zobench.optim.philox_icdf``; within 1e-6 of Φ⁻¹(u), |z| ≤ 6.34), from counters of its own
               (tag 2), so its z is independent of philox_fast's. Its Rademacher directions are philox_fast's
               (the same rounds and words).
Definition (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; Philox4x32-R as Random123's
``philox4x32_R(R, ctr, key)``, R = 10 checked against its known-answer vectors):
  key = (seed mod 2³², ⌊seed / 2³²⌋ mod 2³²);  x(b, tag) = Philox4x32-R(ctr = (b mod 2³², ⌊b / 2³²⌋, index, tag))
  Gaussian (tag 0; philox_icdf: tag 2): block b = 16⌊k/64⌋ + k mod 16, word w = ⌊k/16⌋ mod 4 (a group of 16
      blocks fills 64 consecutive elements word by word, so SIMD lanes store contiguously). philox_icdf:
      z_k = icdf(x_w) (zobench.optim.philox_icdf).
      philox, philox_fast: Box–Muller on (x0, x1) → w = 0, 1
      and on (x2, x3) → w = 2, 3:  z = r(x0)·cos φ(x1), r(x0)·sin φ(x1), with
        r(x) = sqrt(−2 ln u), u = 1 − ⌊x / 2⁸⌋·2⁻²⁴ ∈ (0, 1]   (so |z| ≤ 5.77, as torch's own CPU randn)
        φ(x) = 2π·⌊x / 2⁸⌋·2⁻²⁴, its quadrant and octant reflection taken exactly on the integer.
      ln is Cephes' logf polynomial (≤ 0.83 ulp here), sin/cos minimax polynomials on [0, π/4] (≤ 1.7 ulp)
      (philox_fast: the shorter fits above);
      every step is one binary32 +, −, ×, correctly rounded sqrt or exact int→float conversion, in the same
      order in both implementations (no libm, no FMA), which is what makes them agree bit for bit (checked
      on all 2²⁴ inputs of the radius and of the angle: tests/test_directions_fast.py, slow).
  Rademacher (tag 1): z_k = +1 if bit k mod 32 of word ⌊k/32⌋ mod 4 of block ⌊k/128⌋ is set, else −1.
θ += c·z is θ ← θ + fl32(fl32(c)·z) (in θ's dtype: computed in float32 for bf16/fp16 and rounded to nearest
even, as torch's ``θ.add_(d)`` with a float32 d does); z drawn for a half-precision tensor is the float32
value rounded to nearest even.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from zobench.optim.philox_icdf import icdf

KINDS = ("gaussian", "rademacher")
SOURCE = Path(__file__).resolve().parents[1] / "_ext" / "philox.cpp"
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno"]
OPENMP = ["-fopenmp"]

_MASK32 = 0xFFFFFFFF
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
_DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
GROUP, BLOCK_BITS = 64, 128  # elements per Gaussian group of 16 blocks; elements per Rademacher block


def _f32(x: float) -> float:
    """x rounded to binary32, as a Python float (exact in binary32: no op depends on how torch casts it)."""
    return float(np.float32(x))


LP = [_f32(c) for c in (7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
                        -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1)]
SQRTHF, LN2_HI, LN2_LO = _f32(0.707106769084930419921875), _f32(0.693359375), _f32(-2.12194440e-4)
S1, S3, S5, S7 = (_f32(c) for c in (1.5707963705062866, -0.6459634900093079, 0.07968003302812576,
                                    -0.004601661115884781))
C2, C4, C6, C8 = (_f32(c) for c in (-1.2337005138397217, 0.25366923213005066, -0.02086016535758972,
                                    0.0009037667186930776))

# Per variant: Philox rounds, the transform (box_muller, or icdf: zobench.optim.philox_icdf), the counters' tag
# of Gaussian blocks; Box–Muller's: the Horner coefficients (highest degree first) of P (ln(1 + f) = f − f²/2 +
# f³P(f)), of sin (then + SIN1, × t) and of cos (then + 1) in t² — philox.cpp's ``Accurate`` and ``Fast``.
# philox_fast's: near-minimax (Lawson-reweighted least squares on Chebyshev nodes, in binary64, of the absolute
# error of ln(1 + f) on [√½ − 1, √2 − 1] and of sin(π/2·t), cos(π/2·t) on [0, ½]), rounded to binary32.
VARIANTS = {
    "philox": dict(rounds=10, transform="box_muller", gaussian_tag=0, log=LP, sin=[S7, S5, S3], sin1=S1,
                   cos=[C8, C6, C4, C2]),
    "philox_fast": dict(
        rounds=7, transform="box_muller", gaussian_tag=0,
        log=[_f32(c) for c in (0.11708072572946548, -0.18496902287006378, 0.20493799448013306,
                               -0.24936868250370026, 0.33317431807518005)],
        sin=[_f32(0.07766739279031754), _f32(-0.6457120180130005)], sin1=_f32(1.5707885026931763),
        cos=[_f32(c) for c in (-0.020426249131560326, 0.2536063492298126, -1.2336980104446411)]),
    "philox_icdf": dict(rounds=7, transform="icdf", gaussian_tag=2),  # its own counters: not philox_fast's words
}
BOX_MULLER = tuple(v for v, d in VARIANTS.items() if d["transform"] == "box_muller")


def key_of(seed: int) -> tuple[int, int]:
    s = int(seed) & ((1 << 64) - 1)
    return s & _MASK32, s >> 32


# -- the torch implementation ------------------------------------------------------------------------------

def philox4x32(c0, c1, c2, c3, k0: int, k1: int, rounds: int = 10):
    """Philox4x32-R (R = ``rounds``) on int64 tensors (or Python ints) holding uint32 words; the four output words.

    mulhilo(a, M) without overflow: with M' = M − 2³² (|M'| < 2³⁰), p = a·M' fits in int64 and
    a·M = p + a·2³², so lo = p mod 2³² and hi = (⌊p / 2³²⌋ + a) mod 2³².
    """
    for _ in range(rounds):
        p0, p1 = c0 * (M0 - (1 << 32)), c2 * (M1 - (1 << 32))
        hi0, hi1 = ((p0 >> 32) + c0) & _MASK32, ((p1 >> 32) + c2) & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, p1 & _MASK32, hi0 ^ c3 ^ k1, p0 & _MASK32
        k0, k1 = (k0 + W0) & _MASK32, (k1 + W1) & _MASK32
    return c0, c1, c2, c3


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 (Random123's default rounds; the ``philox`` stream's)."""
    return philox4x32(c0, c1, c2, c3, k0, k1, 10)


def _blocks(b0: int, nb: int, index: int, tag: int, seed: int, device, variant: str = "philox") -> tuple:
    b = torch.arange(b0, b0 + nb, dtype=torch.int64, device=device)
    return philox4x32(b & _MASK32, b >> 32, int(index) & _MASK32, tag, *key_of(seed), VARIANTS[variant]["rounds"])


def radius(x: torch.Tensor, variant: str = "philox") -> torch.Tensor:
    """sqrt(−2 ln u), u = 1 − ⌊x/2⁸⌋·2⁻²⁴: the operations of philox.cpp ``radius``, in its order."""
    u = (0x1000000 - (x >> 8)).to(torch.float32) * _f32(2.0 ** -24)
    bits = u.view(torch.int32)
    e = (bits >> 23) - 126
    m = ((bits & 0x7FFFFF) | 0x3F000000).view(torch.float32)
    small = m < SQRTHF
    e = torch.where(small, e - 1, e)
    f = torch.where(small, m + m, m) - 1.0
    z = f * f
    log = VARIANTS[variant]["log"]
    y = f * log[0]
    for c in log[1:]:
        y = (y + c) * f
    y = y * z
    fe = e.to(torch.float32)
    y = y + fe * LN2_LO
    y = y + z * -0.5
    log_u = (f + y) + fe * LN2_HI
    # torch's float32 sqrt is not correctly rounded on CPU (vectorized, ~0.5% of inputs 1 ulp off); the binary64
    # root rounded to binary32 is: √q of a binary32 q lies ≥ 4 binary64 ulps from any binary32 rounding midpoint.
    return torch.sqrt((log_u * -2.0).to(torch.float64)).to(torch.float32)


def sincos_turn(x: torch.Tensor, variant: str = "philox") -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) of 2π·⌊x/2⁸⌋·2⁻²⁴: philox.cpp ``sincos_turn``."""
    k = x >> 8
    q, f = k >> 22, k & 0x3FFFFF
    refl = f > 0x200000
    t = torch.where(refl, 0x400000 - f, f).to(torch.float32) * _f32(2.0 ** -22)
    t2 = t * t
    v = VARIANTS[variant]
    sp = t2 * v["sin"][0]
    for c in v["sin"][1:]:
        sp = (sp + c) * t2
    sp = (sp + v["sin1"]) * t
    cp = t2 * v["cos"][0]
    for c in v["cos"][1:]:
        cp = (cp + c) * t2
    cp = cp + 1.0
    swap = refl ^ ((q & 1) == 1)
    a, b = torch.where(swap, cp, sp), torch.where(swap, sp, cp)
    return torch.where((q & 2) != 0, -a, a), torch.where(((q + 1) & 2) != 0, -b, b)


def _gaussian_units(seed: int, index: int, g0: int, ng: int, device, variant: str = "philox") -> torch.Tensor:
    """The 64·ng values of groups [g0, g0 + ng), float32."""
    tag = VARIANTS[variant]["gaussian_tag"]
    x0, x1, x2, x3 = (w.view(ng, 16) for w in _blocks(16 * g0, 16 * ng, index, tag, seed, device, variant))
    if VARIANTS[variant]["transform"] == "icdf":
        return torch.stack([icdf(x0), icdf(x1), icdf(x2), icdf(x3)], dim=1).view(-1)
    r0, (s1, c1) = radius(x0, variant), sincos_turn(x1, variant)
    r2, (s3, c3) = radius(x2, variant), sincos_turn(x3, variant)
    return torch.stack([r0 * c1, r0 * s1, r2 * c3, r2 * s3], dim=1).view(-1)


def _rademacher_units(seed: int, index: int, b0: int, nb: int, device, variant: str = "philox") -> torch.Tensor:
    """The 128·nb signs of blocks [b0, b0 + nb), float32."""
    words = torch.stack(_blocks(b0, nb, index, 1, seed, device, variant), dim=1)  # (nb, 4)
    bits = (words.unsqueeze(-1) >> torch.arange(32, device=device)) & 1  # (nb, 4, 32)
    return (bits * 2 - 1).to(torch.float32).view(-1)


def _torch_pieces(seed: int, index: int, first: int, n: int, device, kind: str, units_per_piece: int | None = None,
                  variant: str = "philox"):
    """(offset in the range, float32 values) pieces covering elements [first, first + n): 256 Ki elements at a
    time on CPU (int64 temporaries of 2 MiB, cache-sized), 4 Mi on an accelerator (fewer kernel launches)."""
    if units_per_piece is None:
        units_per_piece = 4096 if torch.device(device).type == "cpu" else 65536
    size = GROUP if kind == "gaussian" else BLOCK_BITS
    make = _gaussian_units if kind == "gaussian" else _rademacher_units
    end = first + n
    u, u_end = first // size, -(-end // size)
    while u < u_end:
        nu = min(units_per_piece, u_end - u)
        vals = make(seed, index, u, nu, device, variant)
        lo, hi = max(first, u * size), min(end, (u + nu) * size)
        yield lo - first, vals[lo - u * size: hi - u * size]
        u += nu


def torch_generate(seed: int, index: int, first: int, n: int, device, dtype, kind: str = "gaussian",
                   variant: str = "philox") -> torch.Tensor:
    out = torch.empty(n, device=device, dtype=dtype)
    for off, vals in _torch_pieces(seed, index, first, n, device, kind, variant=variant):
        out[off: off + vals.numel()] = vals
    return out


def torch_add_(part: torch.Tensor, seed: int, index: int, first: int, scale: float, kind: str = "gaussian",
               variant: str = "philox") -> None:
    for off, vals in _torch_pieces(seed, index, first, part.numel(), part.device, kind, variant=variant):
        part[off: off + vals.numel()].add_(vals * scale)


# -- the compiled implementation -----------------------------------------------------------------------------

_lock = threading.Lock()
_state: dict = {}  # "lib": ctypes library or None, "why": reason when None, "path": the .so


def cache_dir() -> Path:
    if os.environ.get("ZOBENCH_CACHE_DIR"):
        return Path(os.environ["ZOBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zobench"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


def _build(cxx: str) -> Path:
    """Compile philox.cpp (with OpenMP if the compiler has it) into the cache, atomically; returns the .so."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    src = SOURCE.read_bytes()
    errors = []
    for extra in (OPENMP, []):
        flags = FLAGS + extra
        tag = hashlib.sha256(src + " ".join([cxx, version, platform.machine(), *flags]).encode()).hexdigest()[:16]
        out = cache_dir() / f"philox-{tag}.so"
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            res = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=600)
            if res.returncode == 0:
                os.chmod(tmp, 0o755)  # mkstemp's 0600: a shared cache folder serves every user
                os.replace(tmp, out)  # concurrent builders (a multirun's jobs) each write their own file
                return out
            errors.append(f"{cxx} {' '.join(flags)}: {res.stderr.strip()[-2000:]}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError("\n".join(errors))


def _load():
    mode = os.environ.get("ZOBENCH_PHILOX", "auto")
    if mode not in ("auto", "torch", "compiled"):
        raise ValueError(f"ZOBENCH_PHILOX={mode!r}: choose auto, torch or compiled")
    if mode == "torch":
        return None, "ZOBENCH_PHILOX=torch"
    try:
        cxx = _compiler()
        if cxx is None:
            raise RuntimeError("no C++ compiler (c++, g++, clang++ or $CXX) on PATH")
        path = _build(cxx)
        lib = ctypes.CDLL(str(path))
        lib.zb_philox.restype = None
        lib.zb_philox.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                  ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int, ctypes.c_float,
                                  ctypes.c_int, ctypes.c_int]
        if lib.zb_philox_abi() != 4:
            raise RuntimeError(f"{path}: unexpected ABI version")
        lib.zb_philox_isa.argtypes = [ctypes.c_int]
        lib.zb_philox_blocks.restype = lib.zb_philox_transform.restype = lib.zb_philox_icdf.restype = None
        ptr = ctypes.c_void_p
        lib.zb_philox_blocks.argtypes = [ptr, ptr, ctypes.c_int] + [ctypes.c_uint32] * 4 + [ptr] * 4 + [ctypes.c_int]
        lib.zb_philox_transform.argtypes = [ptr, ctypes.c_int64, ptr, ptr, ptr, ctypes.c_int]
        lib.zb_philox_icdf.argtypes = [ptr, ctypes.c_int64, ptr]
        _state.update(lib=lib, path=path, dtypes=lib.zb_philox_dtypes(), openmp=bool(lib.zb_philox_openmp()))
        why = _self_check(lib)
        if why:
            raise RuntimeError(why)
        return lib, None
    except Exception as exc:  # noqa: BLE001 - any failure means: use the torch code
        if mode == "compiled":
            raise RuntimeError(f"ZOBENCH_PHILOX=compiled, but the Philox library is not usable: {exc}") from exc
        warnings.warn(f"zobench: Philox directions use the torch implementation (same numbers, slower): {exc}",
                      RuntimeWarning, stacklevel=3)
        return None, str(exc)


def _self_check(lib) -> str | None:
    """The compiled numbers against the torch ones on a few ranges of each kind; a reason if they differ."""
    seed = 0x0123456789ABCDEF
    for variant in VARIANTS:
        for kind in KINDS:
            for first, n in ((0, 4096), (12345, 3001), (2 ** 33 + 7, 257)):
                ref = torch_generate(seed, 3, first, n, "cpu", torch.float32, kind, variant)
                got = torch.empty(n, dtype=torch.float32)
                _call(lib, got, 0, seed, 3, first, 0.0, kind, 1, variant)
                if not torch.equal(ref.view(torch.int32), got.view(torch.int32)):
                    bad = int((ref.view(torch.int32) != got.view(torch.int32)).sum())
                    return (f"the compiled {variant} {kind} numbers differ from the torch ones ({bad} of {n} at "
                            f"offset {first})")
    return None


def _call(lib, t: torch.Tensor, mode: int, seed: int, index: int, first: int, scale: float, kind: str,
          threads: int, variant: str = "philox") -> None:
    k0, k1 = key_of(seed)
    lib.zb_philox(t.data_ptr(), _DTYPES[t.dtype], mode, t.numel(), first, k0, k1, int(index) & _MASK32,
                  KINDS.index(kind), scale, threads, list(VARIANTS).index(variant))


def library():
    """The loaded compiled library, or None (then ``why()`` says why): built and checked on first call."""
    if "loaded" not in _state:
        with _lock:
            if "loaded" not in _state:
                lib, why = _load()
                _state.update(loaded=True, lib=lib, why=why)
    return _state["lib"]


ISAS = ("baseline", "avx2", "avx512")


def isa(level: int | None = None) -> int:
    """The compiled code's instruction set (0 baseline x86-64 / other CPUs, 1 AVX2, 2 AVX-512); ``level``
    selects one (capped at what the CPU has: the tests run each). The numbers are the same at every level."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"no compiled Philox library: {why()}")
    return lib.zb_philox_isa(-1 if level is None else level)


def backend() -> str:
    return "compiled" if library() is not None else "torch"


def why() -> str | None:
    library()
    return _state.get("why")


def _compiled_for(t: torch.Tensor):
    """The compiled library if it handles tensor ``t`` (CPU, contiguous, a dtype it knows), else None."""
    if t.device.type != "cpu" or t.dtype not in _DTYPES or not t.is_contiguous():
        return None
    lib = library()
    if lib is None or not (_state["dtypes"] >> _DTYPES[t.dtype]) & 1:
        return None
    return lib


# -- the API used by zobench.optim.directions ----------------------------------------------------------------

def generate(seed: int, index: int, first: int, n: int, device, dtype, kind: str = "gaussian",
             variant: str = "philox") -> torch.Tensor:
    """Elements [first, first + n) of z(seed) restricted to tensor ``index``, as a flat tensor of ``dtype``."""
    lib = _compiled_for(torch.empty(0, device=device, dtype=dtype))
    if lib is None:
        return torch_generate(seed, index, first, n, device, dtype, kind, variant)
    out = torch.empty(n, dtype=dtype)
    _call(lib, out, 0, seed, index, first, 0.0, kind, torch.get_num_threads(), variant)
    return out


def add_(part: torch.Tensor, seed: int, index: int, first: int, scale: float, kind: str = "gaussian",
         variant: str = "philox") -> None:
    """part ← part + fl32(fl32(scale)·z) for elements [first, first + part.numel()) of z(seed, ``index``), in place.

    ``part`` is a contiguous (flat) slice of a parameter; on CPU the compiled code fuses draw and update."""
    lib = _compiled_for(part)
    if lib is None:
        torch_add_(part, seed, index, first, scale, kind, variant)
        return
    _call(lib, part, 1, seed, index, first, float(scale), kind, torch.get_num_threads(), variant)


def throughput(n: int, repeats: int = 5, levels: tuple[int, ...] | None = None) -> list[dict]:
    """Nanoseconds per element, one thread, of the fused passes ``add_`` makes (Gaussian and Rademacher) beside
    the axpy they replace (``part.add_(z, alpha=scale)`` with z already drawn: the memory floor of a ZO pass), on a
    float32 tensor of ``n`` elements (in cache when small), and the Gaussian pass's two parts alone per Gaussian
    element: Philox's rounds and the transform, Box–Muller or the inverse CDF (the library's test hooks; each
    ctypes call adds ~1 µs). Best of ``repeats``; one row per instruction set and variant (``VARIANTS``)."""
    import time

    lib = library()
    if lib is None:
        raise RuntimeError(f"no compiled Philox library: {why()}")
    part, z = torch.zeros(n), torch.randn(n)
    nb, words = max(n // 4, 1), max(n // 2, 1)  # Philox blocks and Box–Muller words behind n Gaussian elements
    counters = torch.arange(nb, dtype=torch.int64).to(torch.int32), torch.zeros(nb, dtype=torch.int32)
    outs = [torch.empty(nb, dtype=torch.int32) for _ in range(4)]
    x = torch.randint(-2**31, 2**31 - 1, (max(n, 1),), dtype=torch.int32)  # words: n for the inverse CDF
    factors = [torch.empty(words) for _ in range(3)]
    zs = torch.empty(max(n, 1))
    philox_args = (counters[0].data_ptr(), counters[1].data_ptr(), nb, 0, 0, 1, 2, *[o.data_ptr() for o in outs])
    transform_args = (x.data_ptr(), words, *[f.data_ptr() for f in factors])
    icdf_args = (x.data_ptr(), max(n, 1), zs.data_ptr())
    codes = {v: i for i, v in enumerate(VARIANTS)}
    before, threads = isa(), torch.get_num_threads()
    torch.set_num_threads(1)

    def best(fn) -> float:
        times = []
        for _ in range(repeats + 1):  # the first call warms the caches
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times[1:]) / n * 1e9

    rng = np.random.default_rng(0)
    z64 = z.numpy()

    rows = []
    try:
        axpy = best(lambda: part.add_(z, alpha=1e-3))
        # other generators drawing the same n Gaussians (draw only, no add), one thread: torch's CPU randn (the
        # chunked stream's) and numpy's Generator (PCG64 + ziggurat), for scale
        others = {"torch_randn_ns_per_element": best(lambda: torch.randn(n, out=z)),
                  "numpy_ziggurat_ns_per_element": best(lambda: rng.standard_normal(out=z64, dtype=np.float32))}
        for level in levels if levels is not None else range(before + 1):
            isa(level)
            for variant, code in codes.items():
                row = {"isa": ISAS[isa()], "variant": variant, "n": n, "axpy_ns_per_element": axpy, **others}
                for kind in ("gaussian", "rademacher"):
                    row[f"{kind}_ns_per_element"] = best(
                        lambda k=kind, v=variant: _call(lib, part, 1, 0, 0, 0, 1e-3, k, 1, v))
                # the Gaussian pass's two parts, per Gaussian element, through the test hooks: Philox's rounds (a
                # quarter of a block an element) and the transform: Box–Muller (half a radius, half a sin/cos pair)
                # or the inverse CDF (one word)
                row["philox_rounds_ns_per_element"] = best(lambda c=code: lib.zb_philox_blocks(*philox_args, c))
                if VARIANTS[variant]["transform"] == "icdf":
                    row["transform_ns_per_element"] = best(lambda: lib.zb_philox_icdf(*icdf_args))
                else:
                    row["transform_ns_per_element"] = best(lambda c=code: lib.zb_philox_transform(*transform_args, c))
                rows.append(row)
    finally:
        isa(before)
        torch.set_num_threads(threads)
    return rows


def compare(other: Path, n: int, rounds: int = 12, variant: str = "philox") -> dict:
    """This build against ``other`` (another build of philox.cpp, ABI 2, 3 or 4: ``c++ -O3 -std=c++17 -shared -fPIC
    -ffp-contract=off -fopenmp OLD.cpp -o OLD.so``): a fused pass θ += c·z (stream ``variant``) over ``n`` float32
    elements, torch's thread count, the two libraries alternating for ``rounds`` rounds after two of warm-up, so a
    slow spell of the machine falls on both. Per kind: each one's median ms and the median of the per-round ratios
    this / other."""
    import statistics
    import time

    lib = library()
    if lib is None:
        raise RuntimeError(f"no compiled Philox library: {why()}")
    old = ctypes.CDLL(str(other))
    abi = old.zb_philox_abi()
    if abi not in (2, 3, 4):
        raise RuntimeError(f"{other}: ABI {abi}; this compares ABI 2, 3 or 4 builds")
    base = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint32,
            ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int, ctypes.c_float, ctypes.c_int]
    old.zb_philox.restype = None
    old.zb_philox.argtypes = base + ([ctypes.c_int] if abi >= 3 else [])
    code = list(VARIANTS).index(variant)
    if code > {2: 0, 3: 1, 4: 2}[abi]:
        raise RuntimeError(f"{other}: ABI {abi} has no {variant} stream")
    extra = (code,) if abi >= 3 else ()
    theta, threads = torch.zeros(n), torch.get_num_threads()
    runs = {"this": lambda k: lib.zb_philox(theta.data_ptr(), 0, 1, n, 0, 5, 0, 0, k, 1e-9, threads, code),
            "other": lambda k: old.zb_philox(theta.data_ptr(), 0, 1, n, 0, 5, 0, 0, k, 1e-9, threads, *extra)}
    out = {}
    for k, kind in enumerate(KINDS):
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds + 2):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn(k)
                times[name].append((time.perf_counter() - t0) * 1e3)
        this, that = times["this"][2:], times["other"][2:]
        out[kind] = {"this_ms": statistics.median(this), "other_ms": statistics.median(that),
                     "ratio": statistics.median(a / b for a, b in zip(this, that))}
    return out


def main(argv=None) -> None:
    """``python -m zobench.optim.philox``: build (or find) the compiled library, check it, say which is used.
    ``--throughput``: also time its fused passes against an axpy, one thread, in and out of cache."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--against", type=Path, default=None,
                        help="another build (.so) of philox.cpp: time a fused pass (--variant) of each, alternating, on "
                             "the largest of --sizes elements with torch's threads (what a code change buys)")
    parser.add_argument("--variant", choices=list(VARIANTS), default="philox",
                        help="the stream --against times (default: philox)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1 << 14, 1 << 24],
                        help="elements per timed tensor (default: 16 Ki, in cache; 16 Mi, in memory)")
    args = parser.parse_args(argv)
    lib = library()
    if lib is None:
        print(f"zobench Philox directions: torch implementation ({why()})")
        return
    print(f"zobench Philox directions: compiled {_state['path']} ({ISAS[isa()]}, OpenMP: {_state['openmp']}), "
          "checked against the torch implementation")
    if args.against is not None:
        n = max(args.sizes)
        print(f"this build against {args.against}: one fused {args.variant} pass over {n} float32 elements, "
              f"{torch.get_num_threads()} threads, alternating (median ms; median of the per-round ratios)")
        for kind, r in compare(args.against, n, variant=args.variant).items():
            print(f"  {kind:10s}  this {r['this_ms']:8.1f}  other {r['other_ms']:8.1f}  this / other {r['ratio']:.3f}")
    if args.throughput:
        print("one thread, ns per element (best of 5): fused draw-and-add against an axpy of a drawn z")
        for n in args.sizes:
            rows = throughput(n)
            print(f"  n={n:>9}  other generators, draw only: torch.randn {rows[0]['torch_randn_ns_per_element']:6.3f}  "
                  f"numpy (PCG64, ziggurat) {rows[0]['numpy_ziggurat_ns_per_element']:6.3f}")
            for r in rows:
                print(f"  n={n:>9}  {r['isa']:8s}  {r['variant']:11s}  gaussian {r['gaussian_ns_per_element']:6.3f}  "
                      f"rademacher {r['rademacher_ns_per_element']:6.3f}  axpy {r['axpy_ns_per_element']:6.3f}  "
                      f"(gaussian / axpy {r['gaussian_ns_per_element'] / r['axpy_ns_per_element']:4.1f}x; "
                      f"its parts: philox rounds {r['philox_rounds_ns_per_element']:6.3f}, "
                      f"{VARIANTS[r['variant']]['transform'].replace('_', '-')} {r['transform_ns_per_element']:6.3f})")


if __name__ == "__main__":
    main()
