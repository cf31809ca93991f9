"""Seeded random directions, regenerated per parameter tensor instead of stored.

A ZO estimate is kept in *seed form*: ĝ = Σ_j c_j · z(s_j). The slice of z(s_j) that belongs to
parameter tensor i is drawn from a generator seeded with mix(s_j, i), so it can be regenerated
at any time, one tensor at a time, and no model-sized random vector ever exists (MeZO's
in-place trick, Malladi et al. 2023, Alg. 1).
"""
from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
_generators: dict[torch.device, torch.Generator] = {}


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


def _generator(device: torch.device) -> torch.Generator:
    if device not in _generators:
        _generators[device] = torch.Generator(device=device)
    return _generators[device]


def direction(seed: int, index: int, like: torch.Tensor) -> torch.Tensor:
    """z(seed) restricted to tensor ``index``: standard Gaussian, shaped and typed like ``like``."""
    gen = _generator(like.device)
    gen.manual_seed(mix(seed, index))
    return torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)


@torch.no_grad()
def perturb_(params: list[torch.Tensor], seed: int, scale: float) -> None:
    """θ ← θ + scale · z(seed), in place, one tensor-sized temporary at a time."""
    for i, p in enumerate(params):
        p.add_(direction(seed, i, p), alpha=scale)


@torch.no_grad()
def perturb_many_(params: list[torch.Tensor], moves: list[tuple[int, float]]) -> None:
    """θ ← θ + Σ_j scale_j · z(seed_j) for ``moves`` = [(seed_j, scale_j)], in one sweep.

    Undoing one probe and taking the next (or probing along a combination of directions,
    as BSZO does) costs one pass over the parameters instead of one per direction.
    """
    moves = [(s, c) for s, c in moves if c != 0.0]
    for i, p in enumerate(params):
        for s, c in moves:
            p.add_(direction(s, i, p), alpha=c)
