"""Published numbers, shipped as data with their sources, and their join onto measured cells.

``conf/published/*.csv`` hold one number per row, as the paper prints it, with the identity
columns a run has (model, task, tuning, optimizer, steps_budget, ...), the ``measure`` it
compares with (a run column such as ``test_score`` or ``peak_memory_gib``) and where it comes
from: ``paper``, ``table``, ``note`` (required, non-empty) and ``protocol`` (how the paper
chose and ran it). A layout's ``published`` block picks files, pins which published rows to
compare with (``where``, e.g. the model) and which run columns not to match on (``ignore``).
Values are in the units the table displays (percent, GB, ms), so the difference is
measured − published in those units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from zobench import CONF_DIR

if TYPE_CHECKING:  # layout imports this module; only the type goes the other way
    from zobench.aggregate.layout import Table

PUBLISHED_DIR = CONF_DIR / "published"
REQUIRED = ("measure", "value", "paper", "table", "note")
# Settings that, when they differ between the paper and the runs, the table says so.
DIFF_KEYS = ("model", "dtype", "steps_budget", "batch_size", "num_train", "num_dev", "num_eval", "max_length")


@dataclass
class PublishedSpec:
    files: list[str]
    where: dict = field(default_factory=dict)   # which published rows this layout compares with
    ignore: list[str] = field(default_factory=list)  # run columns the published rows are not matched on


def load_published(files: list[str] | None = None, directory: Path = PUBLISHED_DIR) -> pd.DataFrame:
    """The published rows of ``files`` (default: every CSV), checked for their sources."""
    paths = [Path(directory) / f for f in files] if files else sorted(Path(directory).glob("*.csv"))
    frames = []
    for path in paths:
        df = pd.read_csv(path, comment="#", skipinitialspace=True)
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise ValueError(f"{path.name}: missing column(s) {missing}; every published number needs {REQUIRED}")
        for column in ("paper", "table", "note"):
            empty = df[column].isna() | df[column].astype(str).str.strip().eq("")
            if empty.any():
                raise ValueError(f"{path.name}: row(s) {list(df.index[empty] + 2)} have no {column!r}: "
                                 "a published number ships with its source")
        frames.append(df.assign(file=path.name))
    if not frames:
        return pd.DataFrame(columns=[*REQUIRED, "file"])
    return pd.concat(frames, ignore_index=True)


def lookup(published: pd.DataFrame, spec: PublishedSpec, where: dict, measure: str) -> tuple[float, str]:
    """The one published value for a cell (NaN, "" when the paper has none)."""
    from zobench.aggregate.layout import mask

    pub = published[published["file"].isin(spec.files) & published["measure"].eq(measure)]
    # Columns the layout's files do not have (other files' columns, NaN here) are not conditions.
    pub = pub.dropna(axis=1, how="all")
    pub = pub[mask(pub, spec.where)]
    pub = pub[mask(pub, {k: v for k, v in where.items() if k not in spec.ignore}, missing_ok=True)]
    if pub.empty:
        return math.nan, ""
    if len(pub) > 1:
        raise ValueError(f"published: {len(pub)} rows match {where} for {measure} in {spec.files}; "
                         "pin them with the layout's published.where")
    row = pub.iloc[0]
    return float(row["value"]), f"{row['paper']}, {row['table']}#{pub.index[0]}"


def _row_index(source: str) -> int | None:
    return int(source.rsplit("#", 1)[1]) if "#" in source else None


def source_label(source: str) -> str:
    return source.rsplit("#", 1)[0]


def _fmt(values: set) -> str:
    return ", ".join(sorted(f"{v:g}" if isinstance(v, float) else str(v) for v in values))


def protocol_differences(table: "Table", published: pd.DataFrame, spec: PublishedSpec) -> tuple[list[str], list[str]]:
    """Plain statements of where the published setting and the measured one differ, and the sources."""
    used_pub, used_runs = [], []
    for cell in table.cells.values():
        idx = _row_index(cell.published_source)
        if idx is not None and cell.stats.n and cell.selection is not None:
            used_pub.append(idx)
            used_runs.append(cell.selection.runs)
    lines = []
    if used_pub:
        pub = published.loc[sorted(set(used_pub))]
        runs = pd.concat(used_runs)
        for key in DIFF_KEYS:
            if key in pub.columns and key in runs.columns:
                p = {v for v in pub[key].dropna().tolist()}
                m = {v for v in runs[key].dropna().tolist()}
                p = {int(v) if isinstance(v, float) and v.is_integer() else v for v in p}
                m = {int(v) if isinstance(v, float) and v.is_integer() else v for v in m}
                if p and m and p != m:
                    lines.append(f"{key}: published {_fmt(p)}; measured {_fmt(m)}")
        if "protocol" in pub.columns:
            for text in pub["protocol"].dropna().unique():
                lines.append(f"published protocol: {text}")
    sources = []
    rows = published.loc[sorted(set(used_pub))] if used_pub else published.iloc[:0]
    for (paper, tab), group in rows.groupby(["paper", "table"], sort=True):
        notes = "; ".join(dict.fromkeys(group["note"].astype(str)))
        sources.append(f"{paper}, {tab}: {notes}")
    return lines, sources
