"""The bench's direction passes, and ratios with an interval over the bench's paired rounds.

A two-point ZO-SGD step is two forwards and three in-place passes θ ← θ + c·z over every trainable
parameter (+εz; −2εz; +εz − lr·g·z fused: ``zobench/optim/zo.py``). This phase times one such pass per
direction stream against two floors, on the bench's model and threads:

  inplace_add   θ ← θ + c: reads and writes θ once, the memory traffic of a fused draw-and-add (the
                ``philox`` stream never writes z to memory), so no pass can beat it;
  axpy          θ ← θ + c·z with z already drawn (one chunk-sized z, reused): an axpy's traffic and no
                generator, the floor of a stream that draws z into a buffer first (``chunked``).

A pass's share of the step is 3 × its time over two forwards: what the RNG adds to a step's forwards.

Ratios over rounds: the bench interleaves its phases round-robin, so round i's ZO step and round i's two
forwards ran seconds apart, under the same spell of the machine. The ratio of one pair is a paired
measurement; its interval is a Student-t interval on log(step_i / forwards_i) over the rounds (a
geometric mean, so that a ratio and its inverse get the same interval), n = the rounds.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Sequence

import torch

from zobench.measure import synchronize
from zobench.optim.directions import CHUNK, chunk_bounds, flat, perturb_many_
from zobench.stats import seed_interval

FLOORS = ("inplace_add", "axpy")


def paired_ratio(num_ms: Sequence[float], den_ms: Sequence[float], level: float = 0.95) -> dict:
    """Geometric mean of num_i / den_i over paired rounds, with a Student-t interval on the logs:
    {"ratio", "lo", "hi", "n"} (lo, hi None for one round)."""
    if len(num_ms) != len(den_ms) or not num_ms:
        raise ValueError(f"paired rounds: {len(num_ms)} and {len(den_ms)} times; need the same number, at least one")
    logs = [math.log(a / b) for a, b in zip(num_ms, den_ms)]
    ci = seed_interval(logs, level)
    exp = lambda v: None if v is None else math.exp(v)  # noqa: E731
    return {"ratio": math.exp(ci["mean"]), "lo": exp(ci["lo"]), "hi": exp(ci["hi"]), "n": ci["n"]}


def verdict(interval: dict, target: float, better: str) -> str:
    """yes: the whole interval meets the target; no: none of it does; unclear: it straddles the target."""
    lo, hi = interval["lo"], interval["hi"]
    if lo is None:
        ok = interval["ratio"] <= target if better == "lower" else interval["ratio"] >= target
        return "yes" if ok else "no"
    if better == "lower":
        return "yes" if hi <= target else ("no" if lo > target else "unclear")
    return "yes" if lo >= target else ("no" if hi < target else "unclear")


def direction_passes(params: list[torch.Tensor], distributions: Sequence[str], device, repeats: int,
                     scale: float = 1e-12) -> dict:
    """Median wall time (ms) of one pass over ``params`` per direction distribution (bench names:
    ``gaussian``, ``philox:gaussian``, ...) and per floor, timed round-robin after one warm-up each;
    with ns per element and each pass's ratio to the in-place floor."""
    numel = sum(p.numel() for p in params)
    z = torch.randn(min(CHUNK, max(p.numel() for p in params)), device=device, dtype=params[0].dtype)

    def axpy() -> None:
        for p in params:
            view = flat(p)
            for _, a, b in chunk_bounds(view.numel(), "gaussian"):
                view[a:b].add_(z[: b - a], alpha=scale)

    fns: dict[str, Callable[[], None]] = {
        "inplace_add": lambda: [p.add_(scale) for p in params],
        "axpy": axpy,
    }
    for dist in distributions:  # the directions' own names: "gaussian" (chunked), "philox:gaussian", ...
        fns[dist] = lambda dist=dist: perturb_many_(params, [(7, scale)], dist)
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                synchronize(device)
                t0 = time.perf_counter()
                fn()
                synchronize(device)
                times[k].append((time.perf_counter() - t0) * 1e3)
    out: dict = {"elements": numel, "threads": torch.get_num_threads()}
    floor = statistics.median(times["inplace_add"])
    for k, ts in times.items():
        ms = statistics.median(ts)
        out[k] = {"time_ms": ms, "times_ms": ts, "ns_per_element": ms * 1e6 / numel, "over_inplace_add": ms / floor}
    return out
