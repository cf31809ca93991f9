"""What produced a table's numbers, stated under it, and checks that its rows are told apart.

Protocol keys, read from each cell's runs (summary.json; config.yaml for ``loss`` on older runs):
``loss`` (trainer.loss: lm | classification | accuracy | f1), ``metric`` (the task metric of
``test_score``), ``selection`` (dev_metric | dev_loss: what chose the best-on-dev state) and
``variant`` (a named variant of the method; "none" for a run of the new format without one).
A run that does not record a key (made before the key existed) counts as "unknown".
"""
from __future__ import annotations

import pandas as pd

PROTOCOL_KEYS = ("loss", "metric", "selection", "variant")
UNKNOWN = "unknown"


def _values(runs: pd.DataFrame, key: str) -> list[str]:
    if key not in runs:
        return [UNKNOWN] * len(runs)
    return [UNKNOWN if pd.isna(v) else str(v) for v in runs[key]]


def protocol_line(table) -> str | None:
    """``Protocol: loss lm; metric accuracy; selection dev_metric; variant none`` for the table's cells.

    A key with several values names which cells hold each value that is not the most common one."""
    cells = {(i, j): c for (i, j), c in sorted(table.cells.items())
             if c.selection is not None and not c.selection.runs.empty and c.measure.get("value", "").startswith(
                 ("test_", "zero_shot_", "best_dev_"))}
    if not cells:
        return None
    parts = []
    for key in PROTOCOL_KEYS:
        where: dict[str, list[str]] = {}
        for (i, j), cell in cells.items():
            label = " / ".join(x for x in (table.row_labels[i], table.col_labels[j]) if x)
            for value in dict.fromkeys(_values(cell.selection.runs, key)):
                where.setdefault(value, []).append(label)
        common = max(where, key=lambda v: (len(where[v]), v != UNKNOWN))
        text = f"{key} {common}"
        others = [f"{v} ({', '.join(where[v])})" for v in sorted(where) if v != common]
        parts.append(text + (" except " + "; ".join(others) if others else ""))
    return "Protocol: " + "; ".join(parts) + "."


def same_runs_warning(table) -> str | None:
    """Rows whose cells hold exactly the same runs: the layout's row filters do not tell them apart."""
    by_row: dict[int, tuple] = {}
    for i in range(len(table.row_labels)):
        key = []
        for j in range(len(table.col_labels)):
            sel = table.cells[(i, j)].selection
            dirs = tuple(sorted(sel.runs["run_dir"])) if sel is not None and "run_dir" in sel.runs else ()
            key.append(dirs)
        if any(key):
            by_row[i] = tuple(key)
    groups: dict[tuple, list[str]] = {}
    for i, key in by_row.items():
        groups.setdefault(key, []).append(table.row_labels[i])
    same = [labels for labels in groups.values() if len(labels) > 1]
    if not same:
        return None
    return ("Warning: rows " + "; ".join(" = ".join(labels) for labels in same)
            + " hold the same runs: the layout's row filters do not tell them apart.")
