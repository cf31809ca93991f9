"""Findings: the papers' claims, one YAML per claim in ``conf/claims/``, evaluated against runs into FINDINGS.md.

A claim names its source (paper, table or section, the claimed sentence), the *cells* it compares
(selectors on run columns, as in table layouts: ``{optimizer: zo_sgd, tuning: [full, lora]}``), the
*effect* computed from them and the *expectation* on that effect (conf/claims/README.md has the schema).
Adding a claim is a file; this module never names a paper.

Runs are paired into *units*: the rows of every cell that share the claim's ``match`` keys (default
model, task, tuning, seed, data_seed; ``seed`` and ``data_seed`` are the seed axes, and a ``match``
naming ``seed`` pairs by (seed, data_seed)). Per cell and per (match keys but the seed axes), the LR/eps
grid point is chosen by its mean dev score, never test (``zobench.aggregate.select``). Several runs of
one cell in one unit that differ only in seed / data_seed (``match: [model, task]`` leaves every seed
in one unit) are *replicates*: their values are averaged into the cell's value in that unit, and their
predictions stacked as (seeds × examples). Runs of one cell in one unit that differ in a configuration
key are resolved by the dev selection. Effects, with v_c the value of cell c (replicates averaged):

    difference   v_a − v_b
    contrast     Σ_c w_c v_c                       (a difference of differences: w = +1, −1, −1, +1)
    margin       v_a − max_{o ∈ others} v_o        (side: above)   |  min_o v_o − v_a   (side: below)
    ratio        v_a / v_b
    slope_ratio  β_a / β_b, β the least-squares slope of the value against ``x`` (seq_len)

The 95% interval is over eval examples when every cell of every unit left per-example predictions
(``predictions.jsonl``, scored on the same example ids): ``zobench.stats.paired_bootstrap`` for a
difference (seeds stacked as rows, so an example's correctness is averaged over seeds), otherwise a
percentile bootstrap of the whole statistic resampling the same examples (clusters: ``group``) in
every cell at once (Efron & Tibshirani 1993, ch. 13). Without predictions it is the Student-t interval
over units (``zobench.stats.seed_interval``); a slope ratio resamples the ``x`` points.

Verdict: *supported* when the interval lies entirely on the claimed side of the expectation,
*contradicted* when entirely on the other side, *inconclusive* otherwise, or when cells are missing
(named), or with a single unit (no interval).

    python -m zobench.aggregate.findings --runs-dir runs/reproduce-cpu --out FINDINGS.md
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from zobench import CONF_DIR, ROOT
from zobench.aggregate.layout import OPERATORS, mask
from zobench.aggregate.load import STATUS_OK, load_runs
from zobench.aggregate.select import select_by_dev
from zobench.errors import ConfigError, bad_choice, bad_value
from zobench.stats import metric_value, paired_bootstrap, seed_interval

CLAIMS_DIR = CONF_DIR / "claims"
KINDS = ("difference", "contrast", "margin", "ratio", "slope_ratio")
OPS = (">", ">=", "<", "<=", "within", "between")
TOP_KEYS = ("title", "claim", "source", "filters", "csv", "match", "select", "equal", "cells", "effect", "expect",
            "notes")
SOURCE_KEYS = ("paper", "where", "quote", "verbatim", "url")
CELL_KEYS = ("label", "where", "value", "predictions", "diverged_as_zero_shot")
EFFECT_KEYS = ("kind", "a", "b", "weights", "others", "side", "value", "x", "metric", "scale", "unit")
DEFAULT_MATCH = ["model", "task", "tuning", "seed", "data_seed"]
SEED_AXES = ("seed", "data_seed")  # runs that differ only in these are replicates of one configuration
N_BOOT, BOOT_SEED, LEVEL = 2000, 0, 0.95


# -- claims ------------------------------------------------------------------------------------------
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


# -- evaluation --------------------------------------------------------------------------------------
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


def _value_column(claim: Claim, cell: dict) -> str:
    return cell.get("value") or claim.effect.get("value") or ("peak_memory_bytes" if claim.effect["kind"] == "slope_ratio"
                                                             else "test_score")


def _pred_file(column: str, cell: dict) -> str | None:
    if "predictions" in cell:
        return cell["predictions"]
    if column.startswith("test_"):
        return "predictions.jsonl"
    if column.startswith("zero_shot_"):
        return "zero_shot_predictions.jsonl"
    return None


_SYMBOLS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "eq": "=", "ne": "≠", "in": " in ", "not_in": " not in "}


def _show(where: dict) -> str:
    parts = []
    for k, v in where.items():
        ops = v.items() if isinstance(v, dict) else [("in" if isinstance(v, (list, tuple)) else "eq", v)]
        parts += [f"{k}{_SYMBOLS[op]}{x}" for op, x in ops]
    return ", ".join(parts) or "(every run)"


def _frame(claim: Claim, runs: pd.DataFrame, runs_dir: Path, notes: list[str]) -> pd.DataFrame:
    frames = [runs.assign(_from_dirs=True)]
    for item in claim.csv:
        path = next((p for p in (Path(item), runs_dir / item, ROOT / item) if p.is_file()), None)
        if path is None:
            notes.append(f"csv source {item} not found")
            continue
        extra = pd.read_csv(path).assign(_from_dirs=False)
        if "cell_key" in extra and "cell_key" in runs:
            extra = extra[~extra["cell_key"].isin(runs["cell_key"].dropna())]
        frames.append(extra)
    return pd.concat(frames, ignore_index=True, sort=False)


def _cell_rows(claim: Claim, name: str, df: pd.DataFrame, group_keys: list[str]) -> pd.DataFrame:
    cell = claim.cells[name]
    where = {**claim.filters, **(cell.get("where") or {})}
    if "status" not in where:
        where["status"] = [STATUS_OK, "diverged"] if cell.get("diverged_as_zero_shot") else STATUS_OK
    rows = df[mask(df, where)] if not df.empty else df
    if claim.select != "dev" or rows.empty:
        return rows
    keys = [k for k in group_keys if k in rows.columns]
    if not keys:
        return select_by_dev(rows).runs
    parts = [select_by_dev(g).runs for _, g in rows.groupby(keys, dropna=False, sort=True)]
    return pd.concat(parts) if parts else rows


def _unit(row: pd.Series, keys: list[str]) -> tuple:
    return tuple(None if k not in row or pd.isna(row[k]) else row[k] for k in keys)


def _row_value(row: pd.Series, column: str, cell: dict) -> tuple[float, str | None]:
    """The row's value and its predictions file; a diverged run counts as its untuned model when asked."""
    pred = _pred_file(column, cell)
    if row.get("status") == "diverged" and cell.get("diverged_as_zero_shot"):
        column = "zero_shot_" + column.split("_", 1)[1] if column.startswith("test_") else column
        pred = "zero_shot_predictions.jsonl" if pred else None
    value = pd.to_numeric(pd.Series([row.get(column)]), errors="coerce").iloc[0]
    return float(value), pred


def _read_predictions(path: Path) -> dict[str, dict] | None:
    if not path.is_file():
        return None
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[str(rec["id"])] = rec
    return out


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


def _joint_bootstrap(gold, preds: dict[str, np.ndarray], stat, metric: str, groups) -> tuple[float, float]:
    """Percentile interval of ``stat`` over one resample of the examples (clusters) shared by every cell."""
    n = len(gold)
    if groups is not None and all(g is not None for g in groups):
        _, unit = np.unique(np.array([str(g) for g in groups]), return_inverse=True)
        clusters = [np.flatnonzero(unit == u) for u in range(int(unit.max()) + 1)]
    else:
        clusters = [np.array([i]) for i in range(n)]
    rng = np.random.default_rng(BOOT_SEED)
    boots = []
    for _ in range(N_BOOT):
        pick = rng.integers(0, len(clusters), len(clusters))
        idx = np.concatenate([clusters[j] for j in pick])
        boots.append(stat({c: metric_value(gold[idx], p[:, idx], metric) for c, p in preds.items()}))
    boots = np.asarray(boots, dtype=float)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2
    lo, hi = np.quantile(boots, [tail, 1 - tail])
    return float(lo), float(hi)


def _slope_ratio(claim: Claim, rows: dict[str, pd.DataFrame], found: Finding) -> None:
    e = claim.effect
    x, col = e.get("x", "seq_len"), _value_column(claim, {})
    means = {}
    for c in (e["a"], e["b"]):
        col_c = _value_column(claim, claim.cells[c])
        r = rows[c]
        if x not in r or col_c not in r:
            found.reason = f"cell {c} has no {x} or {col_c} column"
            return
        means[c] = (r.assign(_x=pd.to_numeric(r[x], errors="coerce"), _y=pd.to_numeric(r[col_c], errors="coerce"))
                    .dropna(subset=["_x", "_y"]).groupby("_x")["_y"].mean())
    xs = sorted(set(means[e["a"]].index) & set(means[e["b"]].index))
    found.n_units = len(xs)
    if len(xs) < 3:
        found.reason = f"{len(xs)} {x} value(s) shared by both cells: a slope interval needs at least 3"
        return
    xa = np.asarray(xs, dtype=float)
    ya, yb = (means[c].loc[xs].to_numpy(float) for c in (e["a"], e["b"]))

    def ratio(i):
        if len(set(xa[i])) < 2:
            return math.nan
        sb = np.polyfit(xa[i], yb[i], 1)[0]
        return np.polyfit(xa[i], ya[i], 1)[0] / sb if sb > 0 else math.nan

    found.effect = ratio(np.arange(len(xs)))
    rng = np.random.default_rng(BOOT_SEED)
    boots = np.array([ratio(rng.integers(0, len(xs), len(xs))) for _ in range(N_BOOT)])
    boots = boots[np.isfinite(boots)]
    if math.isnan(found.effect) or boots.size == 0:
        found.reason = f"the slope of {e['b']} against {x} is not positive: the ratio is undefined"
        return
    found.lo, found.hi = (float(q) for q in np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
    found.method = f"least-squares slopes of {col} against {x}; bootstrap over the {len(xs)} {x} points"


def _match_keys(claim: Claim) -> list[str]:
    """The claim's ``match`` keys; one naming ``seed`` pairs by (seed, data_seed), both seed axes."""
    kind, x = claim.effect["kind"], claim.effect.get("x", "seq_len")
    match = [k for k in claim.match if not (kind == "slope_ratio" and k == x)]
    if "seed" in match and "data_seed" not in match:
        match.insert(match.index("seed") + 1, "data_seed")
    return match


def _replicates(name: str, rows: pd.DataFrame, unit: dict, notes: list[str]) -> pd.DataFrame:
    """The runs of cell ``name`` in one unit that are replicates: one configuration (the dev selection
    resolves runs that differ in a configuration key), one run per (seed, data_seed)."""
    if len(rows) > 1:
        sel = select_by_dev(rows)
        if sel.n_configs > 1:
            notes.append(f"cell {name}: {sel.n_configs} configurations for {unit}; the dev selection kept "
                         f"{sel.describe() or 'the first'}")
        rows = sel.runs
    axes = [k for k in SEED_AXES if k in rows.columns]
    dup = rows.duplicated(subset=axes, keep="first") if axes else pd.Series(
        [False] + [True] * (len(rows) - 1), index=rows.index)
    if dup.any():
        notes.append(f"cell {name}: several runs of one configuration and seed for {unit}; the first is used")
    return rows[~dup]


def _span(counts: list[int]) -> str:
    lo, hi = min(counts), max(counts)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def evaluate_claim(claim: Claim, runs: pd.DataFrame, runs_dir: str | Path) -> Finding:
    """The claim's effect, its 95% interval and a verdict; never raises for missing or partial cells."""
    runs_dir = Path(runs_dir)
    found = Finding(claim, "inconclusive")
    df = _frame(claim, runs, runs_dir, found.notes)
    kind, x = claim.effect["kind"], claim.effect.get("x", "seq_len")
    match = _match_keys(claim)
    group_keys = [k for k in match if k not in SEED_AXES] + ([x] if kind == "slope_ratio" else [])
    rows = {c: _cell_rows(claim, c, df, group_keys) for c in claim.cell_names()}
    found.cells = [(claim.cells[c].get("label", c), _show({**claim.filters, **(claim.cells[c].get("where") or {})}),
                    len(rows[c])) for c in rows]
    found.protocol = _protocol(rows, claim)
    missing = [f"{c} ({_show(claim.cells[c].get('where') or {})})" for c, r in rows.items() if r.empty]
    if missing:
        found.reason = "missing cells: " + "; ".join(missing)
        return found
    if kind == "slope_ratio":
        _slope_ratio(claim, rows, found)
        return _finish(claim, found, _value_column(claim, {}))
    # pair the cells into units; the runs of one cell in one unit are its replicates (seeds)
    by_unit: dict[str, dict[tuple, pd.DataFrame]] = {}
    for c, r in rows.items():
        r = r.sort_values("run_dir" if "run_dir" in r else r.columns[0])
        keys = [_unit(row, match) for _, row in r.iterrows()]
        by_unit[c] = {u: _replicates(c, r[[k == u for k in keys]], dict(zip(match, u)), found.notes)
                      for u in dict.fromkeys(keys)}
    units = sorted(set.intersection(*(set(v) for v in by_unit.values())), key=str)
    for key in claim.equal:
        kept = [u for u in units if len({str(v) for c in by_unit for v in
                                         (by_unit[c][u][key] if key in by_unit[c][u] else [None])}) == 1]
        if len(kept) < len(units):
            found.notes.append(f"{len(units) - len(kept)} unit(s) left out: {key} differs between the cells")
        units = kept
    if not units:
        found.reason = f"no ({', '.join(match)}) shared by every cell" + (
            f" with equal {', '.join(claim.equal)}" if claim.equal else "")
        return found
    columns = {c: _value_column(claim, claim.cells[c]) for c in by_unit}
    # per (cell, unit): [(run, value, predictions file)] over the replicates with a value
    values: dict[str, dict[tuple, list]] = {}
    for c in by_unit:
        values[c] = {}
        for u in units:
            reps = [(row, *_row_value(row, columns[c], claim.cells[c])) for _, row in by_unit[c][u].iterrows()]
            values[c][u] = [r for r in reps if np.isfinite(r[1])]
    units = [u for u in units if all(values[c][u] for c in values)]
    found.n_units = len(units)
    if not units:
        found.reason = "no unit has a value in every cell"
        return found
    found.replicates = {claim.cells[c].get("label", c): _span([len(values[c][u]) for u in units]) for c in values}
    stat = _statistic(claim)
    per_unit = [stat({c: float(np.mean([v for _, v, _ in values[c][u]])) for c in values}) for u in units]
    seeds = seed_interval(per_unit, LEVEL)
    head = next(iter(columns.values()))
    if not _example_level(claim, values, units, runs_dir, stat, found):
        found.effect, found.lo, found.hi = seeds["mean"], seeds["lo"], seeds["hi"]
        found.method = (f"Student-t interval over {len(units)} unit(s) ({', '.join(match)})"
                        + (", replicate runs averaged in each" if _replicated(found) else ""))
        if seeds["lo"] is None:
            found.reason = "one unit: no interval (run more seeds)"
            found.lo = found.hi = math.nan
    elif seeds["lo"] is not None:
        found.seeds = seeds
    return _finish(claim, found, head)


def _replicated(found: Finding) -> bool:
    return any(n != "1" for n in found.replicates.values())


def _example_level(claim, values, units, runs_dir, stat, found) -> bool:
    """Effect and interval over eval examples, when every replicate of every (cell, unit) left predictions
    on shared ids. A cell's replicates are stacked as rows (seeds × examples); each unit weighs the same."""
    files: dict[tuple, list[dict]] = {}
    for c in values:
        for u in units:
            recs_u = []
            for row, _, fname in values[c][u]:
                if not fname or not bool(row.get("_from_dirs", False)):
                    return False
                recs = _read_predictions(runs_dir / str(row["run_dir"]) / fname)
                if recs is None:
                    return False
                recs_u.append(recs)
            if len({frozenset(r) for r in recs_u}) > 1:
                found.notes.append(f"cell {c}: its replicate runs for {u} were scored on different example ids: "
                                   f"interval over units instead")
                return False
            files[(c, u)] = recs_u
    every = [r for recs_u in files.values() for r in recs_u]
    first = every[0]
    common = set.intersection(*(set(r) for r in every))
    ids = [i for i in first if i in common]  # the eval set's own order
    if not ids:
        found.notes.append("predictions share no example id: interval over units instead")
        return False
    gold = np.asarray([first[i]["gold"] for i in ids])
    groups = [first[i].get("group") for i in ids]
    groups = groups if all(g is not None for g in groups) else None
    preds = {}
    for c in values:
        # each unit weighs the same whatever its number of replicates: unit u's rows repeat lcm / k_u times
        counts = [len(files[(c, u)]) for u in units]
        reps = math.lcm(*counts)
        if reps * len(units) > 1000:
            reps = 0
            found.notes.append(f"cell {c}: replicate counts {counts} differ too much to weigh units equally; "
                               f"every run weighs the same")
        preds[c] = np.asarray([[recs[i]["prediction"] for i in ids]
                               for u in units for recs in files[(c, u)]
                               for _ in range(reps // len(files[(c, u)]) if reps else 1)])
    metrics = {str(row.get("metric")) for c in values for u in units for row, _, _ in values[c][u]} - {"None", "nan"}
    metric = claim.effect.get("metric") or (metrics.pop() if len(metrics) == 1 else "accuracy")
    e = claim.effect
    if e["kind"] == "difference":
        res = paired_bootstrap(gold, preds[e["a"]], preds[e["b"]], metric, groups=groups, n_boot=N_BOOT,
                               seed=BOOT_SEED, level=LEVEL)
        found.effect, (found.lo, found.hi) = res["delta"], res["ci95"]
        found.method = f"paired bootstrap over {len(ids)} eval examples (p = {res['p_value']:.3g})"
    else:
        found.effect = stat({c: metric_value(gold, p, metric) for c, p in preds.items()})
        found.lo, found.hi = _joint_bootstrap(gold, preds, stat, metric, groups)
        found.method = f"bootstrap over {len(ids)} eval examples resampled jointly in every cell"
    found.method += (f", {metric}, {len(units)} unit(s) averaged"
                     + (" (replicate runs stacked, correctness averaged per example)" if _replicated(found) else "")
                     + (", clustered by group" if groups else ""))
    found.n_examples = len(ids)
    if len(ids) < max(len(r) for r in every):
        found.notes.append(f"paired on the {len(ids)} example ids present in every predictions file")
    return True


def _finish(claim: Claim, found: Finding, column: str) -> Finding:
    scale, _ = _scale(claim, column)
    found.effect, found.lo, found.hi = (v * scale if v is not None else math.nan
                                        for v in (found.effect, found.lo, found.hi))
    if found.seeds:
        found.seeds = {**found.seeds, **{k: found.seeds[k] * scale for k in ("mean", "lo", "hi")}}
    if not found.reason:
        found.verdict = verdict(found.lo, found.hi, claim.expect)
    return found


def _protocol(rows: dict[str, pd.DataFrame], claim: Claim) -> dict:
    allrows = pd.concat(list(rows.values()), sort=False) if rows else pd.DataFrame()
    out = {}
    for key in ("loss", "metric", "steps_budget", "num_eval", "dtype", "batch_size"):
        if key in allrows:
            vals = sorted({str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
                           for v in allrows[key].dropna()})
            if vals:
                out[key] = "/".join(vals)
    out["selection"] = ("LR/eps grid point with the best mean dev score per cell" if claim.select == "dev"
                        else "every completed run")
    return out


# -- FINDINGS.md -------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def render(findings: list[Finding], runs_dir: str | Path, n_runs: int, claims_dir: str | Path = CLAIMS_DIR) -> str:
    lines = ["# Findings: the papers' claims against zobench's runs", "",
             f"Runs: `{runs_dir}` ({n_runs} run directories). Claims: `{claims_dir}` ({len(findings)}). "
             "Verdicts: *supported* when the 95% interval lies on the claimed side, *contradicted* when it lies "
             "on the other side, *inconclusive* otherwise (at this scale) or when cells are missing. "
             "n: units (runs paired across the cells), with the replicate runs (seeds) per unit of each cell "
             "where a cell has several, averaged.", "",
             "| claim | effect | 95% CI | n | verdict |", "|---|---:|---|---:|---|"]
    for f in findings:
        unit = _scale(f.claim, _value_column(f.claim, {}))[1]
        reps = f" ({' / '.join(f.replicates.values())} runs per unit)" if _replicated(f) else ""
        lines.append(f"| [{f.claim.title}](#{f.claim.id}) | {_fmt(f.effect)} {unit} | [{_fmt(f.lo)}, {_fmt(f.hi)}] "
                     f"| {f.n_units}{reps} | {f.verdict} |")
    for f in findings:
        c, src = f.claim, f.claim.source
        unit = _scale(c, _value_column(c, {}))[1]
        quote = f"“{src['quote']}”" if src.get("quote") and src.get("verbatim") else src.get("quote", "")
        lines += ["", f"<a id=\"{c.id}\"></a>", f"## {c.title}", "",
                  f"**Claim.** {c.claim}", "",
                  f"**Source.** {src['paper']}" + (f", {src['where']}" if src.get("where") else "")
                  + (f": {quote}" if quote else "") + (" (paraphrase)" if quote and not src.get("verbatim") else "")
                  + (f" <{src['url']}>" if src.get("url") else ""), "",
                  f"**Tested as.** {c.effect['kind']} of {_value_column(c, {})}: {expectation_text(c, unit)} "
                  f"(`{c.path.name}`)", "", "**Cells.**", ""]
        lines += [f"- {label}: {where} — {n} run(s)"
                  + (f"; n = {f.replicates[label]} replicate run(s) per unit (seeds, averaged)"
                     if label in f.replicates else "") for label, where, n in f.cells]
        why = f" ({f.reason})" if f.reason else ""
        lines += ["", f"**Measured.** {_fmt(f.effect)} {unit}, 95% CI [{_fmt(f.lo)}, {_fmt(f.hi)}]; "
                  f"n = {f.n_units} unit(s)"
                  + (" × " + ", ".join(f"{lab} {k}" for lab, k in f.replicates.items()) + " replicate run(s)"
                     if _replicated(f) else "")
                  + (f", {f.n_examples} eval examples" if f.n_examples else "")
                  + (f"; {f.method}" if f.method else "")]
        if f.seeds:
            lines.append(f"\nOver the {f.seeds['n']} units (Student t, no eval-set resampling): {_fmt(f.seeds['mean'])} [{_fmt(f.seeds['lo'])}, "
                         f"{_fmt(f.seeds['hi'])}].")
        lines += ["", f"**Verdict.** {f.verdict}{why}", "",
                  "**Protocol.** " + "; ".join(f"{k} {v}" for k, v in f.protocol.items())]
        lines += [f"- note: {n}" for n in [*c.notes, *f.notes]]
    return "\n".join(lines) + "\n"


def write_findings(runs_dir: str | Path, out_path: str | Path, claims_dir: str | Path | None = None) -> list[Finding]:
    """Evaluate every claim of ``claims_dir`` (default conf/claims) on ``runs_dir``; write ``out_path``."""
    claims = load_claims(claims_dir)
    runs = load_runs(runs_dir)
    findings = [evaluate_claim(c, runs, runs_dir) for c in claims]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render(findings, runs_dir, len(runs), claims_dir or CLAIMS_DIR))
    return findings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zobench.aggregate.findings", description=__doc__.split("\n")[0])
    ap.add_argument("--runs-dir", required=True, help="a directory of run directories")
    ap.add_argument("--claims", default=None, help="claims directory (default: conf/claims)")
    ap.add_argument("--out", default="FINDINGS.md", help="the Markdown file to write")
    args = ap.parse_args(argv)
    try:
        findings = write_findings(args.runs_dir, args.out, args.claims)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"zobench findings: {exc}")
        return 2
    for f in findings:
        print(f"{f.verdict:>13}  {f.claim.id}" + (f"  ({f.reason})" if f.reason else ""))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
