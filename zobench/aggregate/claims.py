"""The claims: ``conf/claims/<id>.yaml`` read and checked into ``Claim`` records.

The schema is conf/claims/README.md; a file that breaks it raises ``ConfigError`` naming the file and the
key. What a claim's effect computes and how it is judged is ``zobench.aggregate.findings``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zobench import CONF_DIR
from zobench.aggregate.layout import OPERATORS
from zobench.errors import ConfigError, bad_choice, bad_value

CLAIMS_DIR = CONF_DIR / "claims"
KINDS = ("difference", "contrast", "margin", "ratio", "slope_ratio")
OPS = (">", ">=", "<", "<=", "within", "between")
TOP_KEYS = ("title", "claim", "source", "filters", "csv", "match", "select", "equal", "cells", "effect", "expect",
            "notes")
SOURCE_KEYS = ("paper", "where", "quote", "verbatim", "url")
CELL_KEYS = ("label", "where", "value", "predictions", "diverged_as_zero_shot")
EFFECT_KEYS = ("kind", "a", "b", "weights", "others", "side", "value", "x", "metric", "scale", "unit", "resample")
RESAMPLE = ("examples", "steps")  # what the interval resamples: eval examples (default) or each run's training steps
DEFAULT_MATCH = ["model", "task", "tuning", "seed", "data_seed"]


@dataclass
class Claim:
    """One ``conf/claims/<id>.yaml``, validated."""

    id: str
    path: Path
    title: str
    claim: str
    source: dict
    cells: dict[str, dict]
    effect: dict
    expect: dict
    filters: dict = field(default_factory=dict)
    csv: list[str] = field(default_factory=list)
    match: list[str] = field(default_factory=lambda: list(DEFAULT_MATCH))
    select: str = "dev"
    equal: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cell_names(self) -> list[str]:
        e = self.effect
        if e["kind"] == "contrast":
            return list(e["weights"])
        if e["kind"] == "margin":
            return [e["a"], *e["others"]]
        return [e["a"], e["b"]]


def _keys(where: str, spec: Any, allowed: tuple) -> dict:
    if not isinstance(spec, dict):
        raise bad_value(where, spec, "a mapping")
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}: allowed keys are {', '.join(allowed)}.")
    return spec


def _selector(where: str, spec: Any) -> dict:
    spec = spec or {}
    if not isinstance(spec, dict):
        raise bad_value(where, spec, "a mapping of run column -> value, list of values or {operator: value}")
    for column, cond in spec.items():
        if isinstance(cond, dict) and set(cond) - OPERATORS:
            raise bad_choice(f"{where}.{column}", sorted(set(cond) - OPERATORS)[0], sorted(OPERATORS))
    return spec


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_value(where, value, "a number")
    return float(value)


def load_claim(path: str | Path) -> Claim:
    """Read and check one claim file; a bad one raises ConfigError naming the file and the key."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    p = path.name
    _keys(p, spec, TOP_KEYS)
    for key in ("claim", "source", "cells", "effect", "expect"):
        if key not in spec:
            raise ConfigError(f"{p}: {key} is missing: a claim needs claim, source, cells, effect and expect.")
    source = _keys(f"{p}: source", spec["source"], SOURCE_KEYS)
    if not source.get("paper"):
        raise bad_value(f"{p}: source.paper", source.get("paper"), "the paper the claim comes from")
    cells = spec["cells"]
    if not isinstance(cells, dict) or not cells:
        raise bad_value(f"{p}: cells", cells, "a mapping of cell name -> {label, where, ...}")
    for name, cell in cells.items():
        _keys(f"{p}: cells.{name}", cell, CELL_KEYS)
        _selector(f"{p}: cells.{name}.where", cell.get("where"))
    effect = _keys(f"{p}: effect", spec["effect"], EFFECT_KEYS)
    kind = effect.get("kind")
    if kind not in KINDS:
        raise bad_choice(f"{p}: effect.kind", kind, KINDS)
    needs = {"contrast": ["weights"], "margin": ["a", "others"]}.get(kind, ["a", "b"])
    for key in needs:
        if key not in effect:
            raise ConfigError(f"{p}: effect.{key} is missing: effect.kind={kind} needs {', '.join(needs)}.")
    if kind == "contrast":
        if not isinstance(effect["weights"], dict) or not effect["weights"]:
            raise bad_value(f"{p}: effect.weights", effect["weights"], "a mapping of cell name -> weight")
        for name, w in effect["weights"].items():
            _number(f"{p}: effect.weights.{name}", w)
    if effect.get("resample", "examples") not in RESAMPLE:
        raise bad_choice(f"{p}: effect.resample", effect["resample"], RESAMPLE)
    if effect.get("resample") == "steps" and kind not in ("difference", "ratio"):
        raise ConfigError(f"{p}: effect.resample=steps needs effect.kind difference or ratio, not {kind}.")
    if kind == "margin" and effect.get("side", "above") not in ("above", "below"):
        raise bad_choice(f"{p}: effect.side", effect["side"], ("above", "below"))
    expect = _keys(f"{p}: expect", spec["expect"], ("op", "value", "low", "high"))
    if expect.get("op") not in OPS:
        raise bad_choice(f"{p}: expect.op", expect.get("op"), OPS)
    for key in ("low", "high") if expect["op"] == "between" else ("value",):
        _number(f"{p}: expect.{key}", expect.get(key))
    claim = Claim(id=path.stem, path=path, title=str(spec.get("title") or path.stem), claim=str(spec["claim"]),
                  source=source, cells=cells, effect=effect, expect=expect,
                  filters=_selector(f"{p}: filters", spec.get("filters")),
                  csv=list(spec.get("csv") or []), match=list(spec.get("match") or DEFAULT_MATCH),
                  select=spec.get("select", "dev"), equal=list(spec.get("equal") or []),
                  notes=list(spec.get("notes") or []))
    if claim.select not in ("dev", "all"):
        raise bad_choice(f"{p}: select", claim.select, ("dev", "all"))
    for name in claim.cell_names():
        if name not in cells:
            raise bad_choice(f"{p}: effect (cell {name!r})", name, list(cells))
    return claim


def load_claims(claims_dir: str | Path | None = None) -> list[Claim]:
    claims_dir = Path(claims_dir or CLAIMS_DIR)
    if not claims_dir.is_dir():
        raise ConfigError(f"claims directory {claims_dir} does not exist")
    return [load_claim(p) for p in sorted(claims_dir.glob("*.yaml"))]
