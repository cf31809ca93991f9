"""Table layouts: ``conf/tables/<name>.yaml`` says what a paper table holds; this builds it.

A layout names ``rows`` and ``columns`` (each a list of axes, crossed), the ``value`` shown
with its ``scale`` and ``fmt``, ``filters`` on the runs, ``split_by`` (one table per value,
e.g. per model), ``select`` (``dev``: the grid point with the best mean dev score; ``all``:
every completed run of the cell), optionally ``published`` numbers to put beside, and
``compare`` (paired tests of each cell against a reference row on the same eval examples;
zero-shot by default: see zobench/aggregate/compare.py). A cell holds the mean over seeds with
its 95% interval and n (zobench/aggregate/seeds.py).
An axis is one of::

    {key: optimizer, values: [zo_sgd, fo_adam], labels: {zo_sgd: ZO-SGD}}   # one item per value
    {key: optimizer, order: [fo_sgd, zo_sgd]}      # every value present, these first
    {specs: [{label: MeZO (LoRA), where: {optimizer: zo_sgd, tuning: lora}}]}
    {measures: [{label: Peak memory (GiB), value: peak_memory_gib, fmt: "{:.2f}"}]}

A ``where`` maps a column to a value, a list of values, or operators
(``{gt: 0}``, ``{ne: x}``, ``{in: [...]}``, ``{not_in: [...]}``, ``{ge|lt|le: v}``).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from zobench import CONF_DIR
from zobench.aggregate import style
from zobench.aggregate.compare import SAME_RUNS, Comparison, CompareSpec, compare_cells
from zobench.aggregate.load import STATUS_OK
from zobench.aggregate.predictions import run_interval
from zobench.aggregate.published import PublishedSpec, _row_index, lookup, protocol_differences
from zobench.aggregate.seeds import SeedStats
from zobench.aggregate.select import Selection, select_by_dev

TABLES_DIR = CONF_DIR / "tables"
OPERATORS = {"gt", "ge", "lt", "le", "ne", "in", "not_in", "eq"}


# -- filters ----------------------------------------------------------------------------------
def _equal(series: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        num = pd.to_numeric(series, errors="coerce")
        return ((num - value).abs() <= 1e-12 * max(abs(value), 1e-300)) | num.eq(value)
    return series.astype("object").eq(value)


def mask(df: pd.DataFrame, where: dict | None, missing_ok: bool = False) -> pd.Series:
    """Rows of ``df`` matching ``where``. A column ``df`` lacks matches nothing, unless
    ``missing_ok`` (then the condition is skipped: published tables lack run-only columns)."""
    out = pd.Series(True, index=df.index)
    for column, cond in (where or {}).items():
        if column not in df.columns:
            if missing_ok:
                continue
            return pd.Series(False, index=df.index)
        col = df[column]
        if isinstance(cond, dict):
            unknown = set(cond) - OPERATORS
            if unknown:
                raise ValueError(f"unknown operator(s) {sorted(unknown)} for {column!r}; use {sorted(OPERATORS)}")
            for op, value in cond.items():
                num = pd.to_numeric(col, errors="coerce")
                out &= {"gt": lambda: num > value, "ge": lambda: num >= value, "lt": lambda: num < value,
                        "le": lambda: num <= value, "eq": lambda: _equal(col, value),
                        "ne": lambda: ~_equal(col, value) & col.notna(),
                        "in": lambda: _isin(col, value), "not_in": lambda: ~_isin(col, value) & col.notna()}[op]()
        elif isinstance(cond, (list, tuple)):
            out &= _isin(col, cond)
        else:
            out &= _equal(col, cond)
    return out


def _isin(col: pd.Series, values) -> pd.Series:
    out = pd.Series(False, index=col.index)
    for v in values:
        out |= _equal(col, v)
    return out


# -- layout -----------------------------------------------------------------------------------
@dataclass
class Item:
    label: str
    where: dict = field(default_factory=dict)
    measure: dict | None = None  # {value, scale, fmt, label} when an axis lists measures


@dataclass
class Layout:
    """One paper table, read from ``conf/tables/<name>.yaml`` (see the module docstring)."""

    name: str
    title: str
    rows: list[dict]
    columns: list[dict]
    value: str = "test_score"
    value_label: str = "test score"
    scale: float = 1.0
    fmt: str = "{:.3f}"
    filters: dict = field(default_factory=dict)
    split_by: list[str] = field(default_factory=list)
    select: str = "dev"
    row_header: str = ""
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    published: PublishedSpec | None = None
    compare: dict | None = None   # zobench.aggregate.compare.CompareSpec; None: against zero-shot

    @classmethod
    def from_dict(cls, spec: dict, name: str) -> "Layout":
        spec = dict(spec)
        spec.setdefault("name", name)
        if spec.get("published"):
            spec["published"] = PublishedSpec(**spec["published"])
        for key in ("rows", "columns"):
            axes = spec.get(key) or []
            spec[key] = [axes] if isinstance(axes, dict) else list(axes)
        if isinstance(spec.get("split_by"), str):
            spec["split_by"] = [spec["split_by"]]
        if spec.get("select", "dev") not in ("dev", "all"):
            raise ValueError(f"layout {name}: select must be 'dev' or 'all', not {spec['select']!r}")
        CompareSpec.from_dict(spec.get("compare"), name)  # a bad compare block fails here, naming its key
        known = set(cls.__dataclass_fields__)
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"layout {name}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**spec)


def layout_names(tables_dir: Path = TABLES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(tables_dir).glob("*.yaml"))


def load_layout(name_or_path: str | Path, tables_dir: Path = TABLES_DIR) -> Layout:
    path = Path(name_or_path)
    if not path.suffix:
        path = Path(tables_dir) / f"{name_or_path}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no table layout {path}; known: {', '.join(layout_names(tables_dir))}")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return Layout.from_dict(spec, path.stem)


def expand_axis(axis: dict, df: pd.DataFrame) -> list[Item]:
    if "specs" in axis:
        return [Item(s["label"], dict(s.get("where") or {})) for s in axis["specs"]]
    if "measures" in axis:
        return [Item(m.get("label", m["value"]), {}, dict(m)) for m in axis["measures"]]
    key, labels = axis["key"], axis.get("labels") or {}
    if key == "optimizer":  # a value the layout does not label gets the figures' name (hizoo: HiZOO), not its id
        labels = {**style.OPTIMIZER_NAMES, **labels}
    if "values" in axis:
        values = list(axis["values"])
    else:
        present = sorted(df[key].dropna().unique().tolist(), key=str) if key in df.columns else []
        order = list(axis.get("order") or [])
        values = [v for v in order if v in present] + [v for v in present if v not in order]
    return [Item(str(labels.get(v, v)), {key: v}) for v in values]


def cross(axes: list[dict], df: pd.DataFrame) -> list[Item]:
    expanded = [expand_axis(a, df) for a in axes] or [[Item("")]]
    items = []
    for combo in itertools.product(*expanded):
        where, measure = {}, None
        for item in combo:
            where.update(item.where)
            measure = item.measure or measure
        items.append(Item(" / ".join(i.label for i in combo if i.label), where, measure))
    return items


# -- building ---------------------------------------------------------------------------------
@dataclass
class Cell:
    stats: SeedStats
    measure: dict
    selection: Selection | None = None
    published: float = math.nan
    published_source: str = ""
    comparable: bool = True  # False when the published number is for another model: no difference then
    comparison: Comparison | None = None  # against the table's reference row, on the same eval examples

    @property
    def diff(self) -> float:
        return self.stats.mean - self.published if self.stats.n and self.comparable else math.nan


@dataclass
class Table:
    layout: Layout
    split: dict
    row_labels: list[str]
    col_labels: list[str]
    cells: dict[tuple[int, int], Cell]
    problems: pd.DataFrame
    differences: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    compare: CompareSpec = field(default_factory=CompareSpec)
    compare_notes: list[str] = field(default_factory=list)

    @property
    def heading(self) -> str:
        split = ", ".join(f"{k}={v}" for k, v in self.split.items())
        return f"{self.layout.title}" + (f" — {split}" if split else "")

    def max_n(self) -> int:
        """The most seeds any cell has: a cell with fewer says how many it has."""
        return max((c.stats.n for c in self.cells.values()), default=0)


def _measure(layout: Layout, item_measures: list[dict | None]) -> dict:
    measure = {"value": layout.value, "scale": layout.scale, "fmt": layout.fmt, "label": layout.value_label}
    for m in item_measures:
        if m:
            measure.update({k: v for k, v in m.items() if v is not None})
    return measure


def _same_model(published: pd.DataFrame, cell: Cell) -> bool:
    """Whether the published number and the measured runs are of the same model."""
    idx = int(cell.published_source.rsplit("#", 1)[1]) if "#" in cell.published_source else None
    if idx is None or "model" not in published.columns or cell.selection is None or "model" not in cell.selection.runs:
        return True
    measured = set(cell.selection.runs["model"].dropna())
    return not measured or measured == {published.loc[idx, "model"]}


def _same_variant(published: pd.DataFrame, cell: Cell) -> bool:
    """Whether the published row's ``variant`` (conf/published: the variant that produced it) is the one the
    measured runs ran: a ZO-Bench-code number is not set against the paper's algorithm (no Δ then)."""
    idx = _row_index(cell.published_source)
    if idx is None or "variant" not in published.columns or cell.selection is None:
        return True
    theirs = published.loc[idx, "variant"]
    if not isinstance(theirs, str) or not theirs:
        return True
    runs = cell.selection.runs
    ours = set(runs["variant"].dropna()) if "variant" in runs else set()
    ours = {v if v not in ("none", "") else "paper" for v in ours} or {"paper"}
    return ours == {theirs}


def build_tables(layout: Layout, runs: pd.DataFrame, published: pd.DataFrame | None = None) -> list[Table]:
    """One Table per ``split_by`` value present among the runs the layout's filters keep."""
    scope = runs[mask(runs, layout.filters)] if not runs.empty else runs
    splits = [{}]
    if layout.split_by and not scope.empty:
        present = scope[[k for k in layout.split_by if k in scope.columns]].drop_duplicates()
        splits = [dict(zip(present.columns, vals)) for vals in present.itertuples(index=False)] or [{}]
        splits = sorted(splits, key=lambda s: [str(v) for v in s.values()])
    tables = []
    for split in splits:
        in_split = scope[mask(scope, split)] if split else scope
        rows, cols = cross(layout.rows, in_split), cross(layout.columns, in_split)
        cells, covered = {}, pd.Series(False, index=in_split.index)
        completed = in_split[in_split["status"].eq(STATUS_OK)] if "status" in in_split else in_split
        for (i, r), (j, c) in itertools.product(enumerate(rows), enumerate(cols)):
            where = {**r.where, **c.where}
            covered |= mask(in_split, where)
            cell_runs = completed[mask(completed, where)]
            measure = _measure(layout, [r.measure, c.measure])
            selection = select_by_dev(cell_runs) if layout.select == "dev" else Selection(cell_runs, 1)
            column = measure["value"]
            values = selection.runs[column] if column in selection.runs else pd.Series(dtype=float)
            stats = SeedStats.of(pd.to_numeric(values, errors="coerce") * measure["scale"])
            if stats.n == 1:  # no spread over seeds: the run's own interval over eval examples, if any
                run = selection.runs[pd.to_numeric(values, errors="coerce").notna()].iloc[0]
                ci = run_interval(run, column)
                if ci is not None:
                    stats = stats.with_bootstrap(ci[0] * measure["scale"], ci[1] * measure["scale"])
            cell = Cell(stats, measure, selection)
            if published is not None and layout.published is not None:
                # the split (e.g. task=sst2 of a per-task memory table) is a condition too, unless the layout pins or
                # ignores that key for its published numbers (model: published for OPT-13B, shown beside any model)
                spec = layout.published
                where_pub = {**layout.filters, **{k: v for k, v in split.items()
                                                  if k not in spec.ignore and k not in (spec.where or {})}, **where}
                cell.published, cell.published_source = lookup(published, layout.published, where_pub, column)
                cell.comparable = _same_model(published, cell) and _same_variant(published, cell)
            cells[(i, j)] = cell
        problems = in_split[covered & in_split["status"].ne(STATUS_OK)] if "status" in in_split else in_split.iloc[:0]
        table = Table(layout, split, [r.label for r in rows], [c.label for c in cols], cells, problems,
                      compare=CompareSpec.from_dict(layout.compare, layout.name))
        annotate_comparisons(table, rows, runs)
        if published is not None and layout.published is not None:
            table.differences, table.sources = protocol_differences(table, published, layout.published)
        tables.append(table)
    return tables


# -- paired comparisons -----------------------------------------------------------------------
def _reference_rows(rows: list[Item], reference: str) -> dict[int, int] | None:
    """Row index -> its reference row: the row labelled ``reference``, or holding it as a value. With
    crossed row axes (optimizer x tuning) a row's reference is the one that agrees on the other axes."""
    matches = [(k, key) for k, r in enumerate(rows)
               for key in ([None] if r.label == reference else [c for c, v in r.where.items() if str(v) == reference])]
    if not matches:
        return None
    out = {}
    for i, row in enumerate(rows):
        def agreement(match):
            k, key = match
            return sum(1 for c, v in row.where.items() if c != key and rows[k].where.get(c) == v)
        out[i] = max(matches, key=agreement)[0]
    return out


def annotate_comparisons(table: Table, rows: list[Item], runs: pd.DataFrame | None = None) -> None:
    """Set each cell's ``comparison`` against the table's reference (zobench.aggregate.compare). ``runs``:
    every run, where a zero-shot reference finds the untuned model's own run when a cell's runs scored none."""
    spec = table.compare
    if not spec.enabled:
        return
    zero_shot = spec.reference == "zero_shot"
    ref_rows = None if zero_shot else _reference_rows(rows, spec.reference)
    if not zero_shot and ref_rows is None:
        table.compare_notes.append(f"No paired comparison: the reference row {spec.reference!r} is not in this table.")
        return
    for (i, j), cell in table.cells.items():
        if cell.selection is None or cell.selection.runs.empty:
            continue
        if zero_shot:
            ref_runs, label = None, SAME_RUNS
        else:
            k = ref_rows[i]
            ref = table.cells[(k, j)]
            if k == i or ref.selection is None or ref.selection.runs.empty:
                continue
            ref_runs, label = ref.selection.runs, table.row_labels[k]
        cell.comparison = compare_cells(cell.selection.runs, ref_runs, cell.measure["value"], cell.measure["scale"],
                                        spec, label, all_runs=runs if zero_shot else None)
