"""A claim's effect: the value column it reads, the statistic over cell values, its display scale and
unit, the verdict against the expectation, and the ``Finding`` that carries them (see
``zobench.aggregate.findings`` for the effect kinds and the verdict rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from zobench.aggregate.claims import Claim


@dataclass
class Finding:
    claim: Claim
    verdict: str                         # supported | contradicted | inconclusive
    reason: str = ""                     # why inconclusive (missing cells, one unit, ...)
    effect: float = math.nan             # in displayed units (after scale)
    lo: float = math.nan
    hi: float = math.nan
    n_units: int = 0
    n_examples: int = 0
    method: str = ""
    seeds: dict | None = None            # the interval over units, beside an example-level one
    cells: list[tuple[str, str, int]] = field(default_factory=list)  # (label, selector, runs)
    replicates: dict[str, str] = field(default_factory=dict)  # cell label -> replicate runs per unit ("3", "2–3")
    protocol: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scope: str = ""                      # a margin over fewer competitors than the claim names (others not run)
    unmoved: bool = False                # every compared run predicts as its untuned model: no arm moved


def _value_column(claim: Claim, cell: dict) -> str:
    return cell.get("value") or claim.effect.get("value") or ("peak_memory_bytes" if claim.effect["kind"] == "slope_ratio"
                                                             else "test_score")


def _statistic(claim: Claim) -> Callable[[dict], float]:
    e = claim.effect
    if e["kind"] == "difference":
        return lambda v: v[e["a"]] - v[e["b"]]
    if e["kind"] == "contrast":
        return lambda v: sum(float(w) * v[c] for c, w in e["weights"].items())
    if e["kind"] == "margin":
        if e.get("side", "above") == "above":
            return lambda v: v[e["a"]] - max(v[o] for o in e["others"])
        return lambda v: min(v[o] for o in e["others"]) - v[e["a"]]
    return lambda v: v[e["a"]] / v[e["b"]] if v[e["b"]] else math.nan


def _scale(claim: Claim, column: str) -> tuple[float, str]:
    e = claim.effect
    if e["kind"] in ("ratio", "slope_ratio"):
        default = (1.0, "×")
    elif column.endswith(("_score", "_accuracy", "_f1")):
        default = (100.0, "points")
    else:
        default = (1.0, "")
    return float(e.get("scale", default[0])), str(e.get("unit", default[1]))


def verdict(lo: float, hi: float, expect: dict) -> str:
    """Supported: the interval lies on the claimed side; contradicted: entirely on the other side."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    op = expect["op"]
    if op == "between" or op == "within":
        low, high = (expect["low"], expect["high"]) if op == "between" else (-expect["value"], expect["value"])
        return "supported" if low <= lo and hi <= high else "contradicted" if hi < low or lo > high else "inconclusive"
    v = expect["value"]
    if op in (">", ">="):
        on, off = (lo > v if op == ">" else lo >= v), (hi <= v if op == ">" else hi < v)
    else:
        on, off = (hi < v if op == "<" else hi <= v), (lo >= v if op == "<" else lo > v)
    return "supported" if on else "contradicted" if off else "inconclusive"


def expectation_text(claim: Claim, unit: str) -> str:
    x, u = claim.expect, f" {unit}" if unit and unit != "×" else (unit or "")
    if x["op"] == "within":
        return f"|effect| ≤ {x['value']:g}{u}"
    if x["op"] == "between":
        return f"{x['low']:g}{u} ≤ effect ≤ {x['high']:g}{u}"
    return f"effect {x['op']} {x['value']:g}{u}"


def _replicated(found: Finding) -> bool:
    return any(n != "1" for n in found.replicates.values())


def _span(counts: list[int]) -> str:
    """``3`` or ``2–3``: the range of a list of counts."""
    lo, hi = min(counts), max(counts)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"
