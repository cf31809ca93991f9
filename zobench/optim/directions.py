"""Seeded random directions, regenerated per parameter tensor instead of stored.

A ZO estimate is kept in *seed form*: ĝ = Σ_j c_j · z(s_j). The part of z(s_j) that belongs to
parameter tensor i is regenerated whenever it is needed, never stored, so no model-sized random
vector exists (MeZO's in-place trick, Malladi et al. 2023, Alg. 1). Each tensor is drawn in
chunks of at most ``CHUNK`` elements, chunk c from a generator seeded with mix(s_j, i, c): the
largest temporary is one chunk (16 MiB in fp32), not the largest tensor (an embedding matrix
is 113 MiB in SmolLM2-135M, 1 GiB in LLaMA-2-7B's fp32 vocab), so a ZO step's peak memory stays
at the inference peak.

Distributions (``optimizer.direction``):
  gaussian    z ~ N(0, I): MeZO, ZO-Bench. E[zzᵀ] = I.
  rademacher  z ∈ {−1, +1}ⁿ uniformly: Spall's original SPSA directions, also E[zzᵀ] = I (so
              the two-point estimate stays unbiased to O(ε²)). Built from packed random bits:
              8 bytes of generator output give 64 signs, expanded by a 256 × 8 lookup table,
              which on CPU costs about a third of drawing Gaussians (the RNG is the wall of a CPU
              ZO step, see ``make bench``).

Streams (``optimizer.direction_stream``, ZO-SGD family only):
  chunked     the default above: z(s) restricted to chunk c of tensor i comes from its own seed
              mix(s, i, c), so any chunk is drawn alone, in any order.
  mezo        z exactly as MeZO draws it (Malladi et al. 2023; princeton-nlp/MeZO
              large_models/trainer.py ``zo_perturb_parameters``, ``zo_update``): per step
              ``torch.manual_seed(s_t)``, then ``torch.normal(0, 1, θ_i.size(), dtype=θ_i.dtype)`` for every
              trainable tensor in ``named_parameters`` order, one sequential stream per device. The
              step seeds s_t are MeZO's: ``np.random.seed(seed)`` (HF ``set_seed``), then one
              ``np.random.randint(1000000000)`` per step (``zo_step``). A MeZO run and a zobench run with
              the same seed then perturb along the same z. ZO-Bench's trainer draws the same way.
              Cost: z_i is drawn whole (a temporary the size of the largest tensor, as in MeZO), and a
              sweep must visit every tensor in order (no block or sparse masks).
  philox      counter-based (zobench.optim.philox): element k of z(s) on tensor i is a pure function of
              (s, i, k) — Philox4x32-10 keyed by s, Box–Muller on its words (Rademacher: its bits). Chunks as
              ``chunked`` (any chunk alone, in any order; the values do not even depend on CHUNK), but drawn by
              several threads and, on CPU, fused with the update θ += c·z by a compiled kernel (z never
              written to memory), built on first use; a pure-torch implementation gives the same numbers bit
              for bit where it cannot be built, and on CUDA (so CPU and GPU runs draw the same z). Same step
              seeds as ``chunked`` (mix(seed, t), then mix(s_t, j)); other numbers, so a run replays only
              with the stream it ran with. Distribution names ``philox:gaussian``, ``philox:rademacher``
              (``stream_distribution``) carry the stream through the sweeps.
  philox_fast the same with Philox4x32-7 and shorter ln/sin/cos polynomials (zobench.optim.philox:
              z within ~2e-6 of exact Box–Muller on its words): 14–20% less time a fused Gaussian pass on CPU,
              other numbers. ``philox_fast:gaussian``, ``philox_fast:rademacher``.
  philox_icdf Philox4x32-7 (Gaussian: its own counters) and no Box–Muller: each word becomes
              one normal by an inverse CDF (a degree-6 polynomial per binade of u; within 1e-6 of Φ⁻¹(u),
              zobench.optim.philox_icdf): 15% less time a fused Gaussian pass than philox_fast on an AVX-512
              CPU (``make bench``), 2.4× its time with AVX2 (scalar table lookups); closer to exact.
              Its Rademacher directions are philox_fast's. ``philox_icdf:gaussian``.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np
import torch

from zobench.optim import philox

DISTRIBUTIONS = ("gaussian", "rademacher")
STREAMS = ("chunked", "mezo", "philox", "philox_fast", "philox_icdf")
MEZO = "mezo"  # the distribution name sweeps pass for MeZO's stream (Gaussian, drawn as MeZO draws it)
PHILOX = "philox"  # the counter-based stream; its distribution names are "philox:<direction>"
PHILOX_STREAMS = ("philox", "philox_fast", "philox_icdf")  # the counter-based streams (zobench.optim.philox.VARIANTS)
CHUNK = 1 << 22  # elements drawn per generator seeding: 4 Mi (16 MiB in fp32)

_MASK64 = (1 << 64) - 1
_generators: dict[torch.device, torch.Generator] = {}
_sign_tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def splitmix64(x: int) -> int:
    """A 64-bit mixing function (Steele et al. 2014): nearby inputs give unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix(*parts: int) -> int:
    """One 63-bit seed from several integers (run seed, step, direction index, tensor index)."""
    h = 0
    for p in parts:
        h = splitmix64(h ^ (int(p) & _MASK64))
    return h >> 1  # torch seeds must fit in a signed 64-bit integer


def stream_distribution(stream: str, direction: str = "gaussian") -> str:
    """The distribution name the sweeps pass around for ``optimizer.direction_stream`` = stream and
    ``optimizer.direction`` = direction: the direction itself (chunked), ``mezo``, or ``<stream>:<direction>`` for
    the counter-based streams (``philox:gaussian``, ``philox_fast:rademacher``)."""
    if stream == MEZO:
        return MEZO
    if stream in PHILOX_STREAMS:
        return f"{stream}:{direction}"
    return direction


def philox_spec(distribution: str) -> tuple[str, str] | None:
    """(stream, direction) for a counter-based distribution name (``philox_fast:gaussian`` → (philox_fast,
    gaussian)), None for the others."""
    stream, sep, kind = distribution.partition(":")
    if not sep or stream not in PHILOX_STREAMS:
        return None
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"optimizer.direction={kind!r}: choose one of {', '.join(DISTRIBUTIONS)}")
    return stream, kind



def _generator(device: torch.device) -> torch.Generator:
    if device not in _generators:
        _generators[device] = torch.Generator(device=device)
    return _generators[device]


def _sign_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Row b holds the 8 bits of byte b as ±1: byte → 8 signs in one gather."""
    key = (device, dtype)
    if key not in _sign_tables:
        bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
        _sign_tables[key] = (bits * 2 - 1).to(device=device, dtype=dtype)
    return _sign_tables[key]


def chunk_bounds(numel: int, distribution: str = "gaussian"):
    """(chunk index, start, stop) over a flat tensor of ``numel`` elements (MeZO's stream: one chunk, the tensor)."""
    if distribution == MEZO:
        yield 0, 0, numel
        return
    for c, start in enumerate(range(0, max(numel, 1), CHUNK)):
        yield c, start, min(start + CHUNK, numel)


def draw(seed: int, index: int, chunk: int, n: int, device: torch.device, dtype: torch.dtype,
         distribution: str = "gaussian") -> torch.Tensor:
    """Chunk ``chunk`` (``n`` elements, flat) of z(seed) restricted to tensor ``index``."""
    if distribution == MEZO:
        return _draw_mezo(seed, index, n, device, dtype)
    spec = philox_spec(distribution)
    if spec is not None:  # elements chunk·CHUNK ... of the tensor's counter-based z
        return philox.generate(seed, index, chunk * CHUNK, n, device, dtype, spec[1], spec[0])
    gen = _generator(device)
    gen.manual_seed(mix(seed, index, chunk))
    if distribution == "gaussian":
        return torch.randn(n, generator=gen, device=device, dtype=dtype)
    if distribution == "rademacher":
        nbytes = (n + 7) // 8
        words = torch.randint(-(2**63), 2**63 - 1, ((nbytes + 7) // 8,), generator=gen, device=device,
                              dtype=torch.int64)
        index_bytes = words.view(torch.uint8)[:nbytes].to(torch.int32)
        return _sign_table(device, dtype).index_select(0, index_bytes).view(-1)[:n]
    raise ValueError(f"optimizer.direction={distribution!r}: choose one of {', '.join(DISTRIBUTIONS)}")


# -- MeZO's stream (optimizer.direction_stream=mezo) ------------------------------------------------
# seed -> (index of the next tensor to draw, {device: generator}). Tensor 0 starts a sweep: MeZO's
# torch.manual_seed(s), which seeds every device's default generator; each device's stream then
# advances only with the tensors that live on it, as torch.normal on the default generators does.
_mezo_streams: dict[int, tuple[int, dict[torch.device, torch.Generator]]] = {}


def _draw_mezo(seed: int, index: int, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """z_index of MeZO's stream for step seed ``seed``: the next ``torch.normal`` draw after tensors 0..index−1."""
    if index == 0:
        _mezo_streams.clear()  # one step seed at a time (q = 1): a new sweep starts here
        _mezo_streams[seed] = (0, {})
    expected, gens = _mezo_streams.get(seed, (None, {}))
    if expected != index:
        raise RuntimeError(f"direction_stream=mezo draws every trainable tensor in order from tensor 0 once per sweep; "
                           f"asked for tensor {index} of seed {seed} after {expected}")
    device = torch.device(device)
    if device not in gens:
        gens[device] = torch.Generator(device=device)
        gens[device].manual_seed(seed)
    _mezo_streams[seed] = (index + 1, gens)
    return torch.normal(0.0, 1.0, size=(n,), generator=gens[device], device=device, dtype=dtype)


class MezoSeeds:
    """MeZO's per-step seeds: s_t = the (t+1)-th ``np.random.randint(1000000000)`` after ``np.random.seed(seed)``.

    MeZO's run.py calls HF ``set_seed(args.seed)`` (HF Trainer's __init__ again), and nothing else draws from
    NumPy's global generator between steps, so ``zo_step``'s draws are this sequence. A private RandomState
    gives it without touching NumPy's global state; ``at(t)`` replays it from the start when asked for an
    earlier step (a resumed or replayed run).
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._rng, self._next, self._last = np.random.RandomState(seed), 0, None

    def at(self, t: int) -> int:
        if t < self._next - 1:  # an earlier step than the last one drawn: replay the sequence
            self._rng, self._next = np.random.RandomState(self.seed), 0
        while self._next <= t:
            self._last, self._next = int(self._rng.randint(1000000000)), self._next + 1
        return self._last


def flat(p: torch.Tensor) -> torch.Tensor:
    """A flat view of a parameter (parameters are contiguous; in-place ops on the view reach p)."""
    if not p.is_contiguous():
        raise ValueError("ZO perturbations need contiguous parameter tensors")
    return p.view(-1)


def direction(seed: int, index: int, like: torch.Tensor, distribution: str = "gaussian") -> torch.Tensor:
    """z(seed) restricted to tensor ``index``, whole, shaped and typed like ``like``.

    For callers that need the whole tensor (Forward-Grad's tangents, tests); sweeps over the
    parameters use ``draw`` chunk by chunk instead.
    """
    parts = [draw(seed, index, c, b - a, like.device, like.dtype, distribution)
             for c, a, b in chunk_bounds(like.numel(), distribution)]
    return (parts[0] if len(parts) == 1 else torch.cat(parts))[: like.numel()].view(like.shape)


# -- Masked directions (block-wise and sparse ZO: zobench/optim/blockwise.py, sparse.py) ---------
# A direction may carry a mask m: it is then z(seed) ⊙ m. ``masks`` maps a seed to its mask; a seed
# without one is the whole z. ``mask.covers(i)`` says whether tensor i is touched at all (a block
# holds whole tensors: the others cost no random numbers); ``mask.apply_(z, i, chunk, start)``
# zeroes the excluded elements of one chunk in place (a sparse mask, regenerated from its own seed).


class Mask(Protocol):
    def covers(self, index: int) -> bool: ...

    def apply_(self, z: torch.Tensor, index: int, chunk: int, start: int) -> torch.Tensor: ...


def draw_masked(seed: int, index: int, chunk: int, start: int, n: int, device: torch.device, dtype: torch.dtype,
                distribution: str = "gaussian", mask: Mask | None = None) -> torch.Tensor | None:
    """``draw`` times the seed's mask; None where the mask leaves tensor ``index`` out entirely."""
    if mask is None:
        return draw(seed, index, chunk, n, device, dtype, distribution)
    if not mask.covers(index):
        return None
    return mask.apply_(draw(seed, index, chunk, n, device, dtype, distribution), index, chunk, start)


@torch.no_grad()
def add_direction_(part: torch.Tensor, seed: int, index: int, chunk: int, start: int, scale: float,
                   distribution: str = "gaussian", mask: Mask | None = None) -> bool:
    """part ← part + scale · (z(seed) ⊙ m) on chunk ``chunk`` of tensor ``index`` (``part``: its elements from
    ``start``, flat, in place); False where the mask leaves the tensor out (nothing drawn).

    Philox stream, no mask: drawn and added in one pass (zobench.optim.philox.add_: on CPU z is never
    materialized; the increment is fl32(fl32(scale)·z)). Otherwise ``draw_masked`` then ``add_(z, alpha=scale)``."""
    spec = philox_spec(distribution)
    if spec is not None and mask is None:
        philox.add_(part, seed, index, chunk * CHUNK, scale, spec[1], spec[0])
        return True
    z = draw_masked(seed, index, chunk, start, part.numel(), part.device, part.dtype, distribution, mask)
    if z is None:
        return False
    part.add_(z, alpha=scale)
    return True


@torch.no_grad()
def perturb_many_(params: list[torch.Tensor], moves: list[tuple[int, float]], distribution: str = "gaussian",
                  masks: Mapping[int, Mask] | None = None) -> None:
    """θ ← θ + Σ_j scale_j · z(seed_j) for ``moves`` = [(seed_j, scale_j)], in one sweep.

    Undoing one probe and taking the next (or probing along a combination of directions,
    as BSZO does) costs one pass over the parameters instead of one per direction.
    ``masks``: seed -> Mask for masked directions (z ⊙ m); tensors no move covers are skipped.
    """
    masks = masks or {}
    moves = [(s, c) for s, c in moves if c != 0.0]
    for i, p in enumerate(params):
        live = [(s, c) for s, c in moves if s not in masks or masks[s].covers(i)]
        if not live:
            continue
        view = flat(p)
        for c, a, b in chunk_bounds(view.numel(), distribution):
            part = view[a:b]
            for s, scale in live:
                add_direction_(part, s, i, c, a, scale, distribution, masks.get(s))


def perturb_(params: list[torch.Tensor], seed: int, scale: float, distribution: str = "gaussian") -> None:
    """θ ← θ + scale · z(seed), in place, one chunk-sized temporary at a time."""
    perturb_many_(params, [(seed, scale)], distribution)
