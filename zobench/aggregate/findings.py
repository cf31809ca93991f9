"""Findings: the papers' claims, one YAML per claim in ``conf/claims/``, evaluated against runs into FINDINGS.md.

A claim names its source (paper, table or section, the claimed sentence), the *cells* it compares
(selectors on run columns, as in table layouts: ``{optimizer: zo_sgd, tuning: [full, lora]}``), the
*effect* computed from them and the *expectation* on that effect (conf/claims/README.md has the schema).
Adding a claim is a file; this module never names a paper.

This module selects and pairs the runs and computes each effect; the rest is beside it:
``claims.py`` (reading and checking the claim files), ``findings_effect.py`` (statistic, scale,
verdict), ``findings_intervals.py`` (intervals over eval examples, slope ratios) and
``findings_render.py`` (FINDINGS.md).

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
every cell at once (Efron & Tibshirani 1993, ch. 13). An effect with ``resample: steps`` (a per-step
measurement: ``step_time_ms``) resamples each run's training steps from its metrics.jsonl instead. Without
either it is the Student-t interval over units (``zobench.stats.seed_interval``); a slope ratio resamples
the ``x`` points.

Verdict: *supported* when the interval lies entirely on the claimed side of the expectation,
*contradicted* when entirely on the other side, *inconclusive* otherwise, or when cells are missing
(named), or with a single unit (no interval), or when no arm moved: every cell is a trained model and
each of its runs predicts, on every example, what its untuned model predicted (its own zero-shot
predictions, or the untuned-model run of its model and task; ``findings_intervals.unmoved``): the effect is
then a budget's, not the optimizers'.

    python -m zobench.aggregate.findings --runs-dir runs/reproduce-cpu --out FINDINGS.md
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from zobench import ROOT
from zobench.aggregate.claims import (CELL_KEYS, CLAIMS_DIR, DEFAULT_MATCH, EFFECT_KEYS, KINDS, OPS,  # noqa: F401
                                      SOURCE_KEYS, TOP_KEYS, Claim, load_claim, load_claims)
from zobench.aggregate.findings_effect import (Finding, _replicated, _scale, _span, _statistic,  # noqa: F401
                                               _value_column, expectation_text, verdict)
from zobench.aggregate.findings_intervals import (BOOT_SEED, LEVEL, N_BOOT, _example_level,  # noqa: F401
                                                  _pred_file, _slope_ratio, _step_level, unmoved)
from zobench.aggregate.findings_render import render
from zobench.aggregate.layout import mask
from zobench.aggregate.load import STATUS_OK, load_runs
from zobench.aggregate.select import select_by_dev
from zobench.errors import ConfigError
from zobench.stats import seed_interval

SEED_AXES = ("seed", "data_seed")  # runs that differ only in these are replicates of one configuration
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
    absent = [c for c, r in rows.items() if r.empty]
    others = claim.effect.get("others", [])
    if claim.effect["kind"] == "margin" and absent and set(absent) <= set(others) and len(absent) < len(others):
        # a competitor that was not run cannot be beaten or lose: the margin is taken over those measured, and
        # the verdict says so (a missing competitor could still change a "supported"; never a "contradicted")
        found.scope = (f"over {len(others) - len(absent)} of the {len(others)} others; not run: "
                       + ", ".join(claim.cells[c].get("label", c) for c in absent))
        claim = dataclasses.replace(claim, effect={**claim.effect, "others": [o for o in others if o not in absent]})
        rows = {c: r for c, r in rows.items() if c not in absent}
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
    by_steps = claim.effect.get("resample") == "steps"
    resampled = (_step_level if by_steps else _example_level)(claim, values, units, runs_dir, stat, found)
    if not resampled:
        found.effect, found.lo, found.hi = seeds["mean"], seeds["lo"], seeds["hi"]
        found.method = (f"Student-t interval over {len(units)} unit(s) ({', '.join(match)})"
                        + (", replicate runs averaged in each" if _replicated(found) else ""))
        if seeds["lo"] is None:
            found.reason = "one unit: no interval (run more seeds)"
            found.lo = found.hi = math.nan
    else:
        if seeds["lo"] is not None:
            found.seeds = seeds
        if not by_steps:
            found.unmoved = unmoved(values, units, runs_dir, df[df["_from_dirs"].astype(bool)])
        if found.unmoved:
            found.reason = (f"no arm moved: every run predicts what its untuned model predicted on all "
                            f"{found.n_examples} examples, so the budget was too small to compare the arms")
    return _finish(claim, found, head)


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


def write_findings(runs_dir: str | Path, out_path: str | Path, claims_dir: str | Path | None = None) -> list[Finding]:
    """Evaluate every claim of ``claims_dir`` (default conf/claims) on ``runs_dir``; write ``out_path``."""
    claims = load_claims(claims_dir)
    runs = load_runs(runs_dir)
    findings = [evaluate_claim(c, runs, runs_dir) for c in claims]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    from zobench.aggregate.search import records

    out_path.write_text(render(findings, runs_dir, len(runs), claims_dir or CLAIMS_DIR, records(Path(runs_dir))))
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
