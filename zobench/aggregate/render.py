"""Tables to Markdown, LaTeX and CSV, with what was left out listed under them.

A cell reads ``mean ± std`` over seeds (``(n=k)`` when it has fewer seeds than the table's
fullest cell), then ``[published; Δ measured − published]`` where the layout puts
published numbers beside. Under every table: how cells were chosen, which configuration each
cell took, the published sources, where the published setting differs from the measured one,
and every failed, diverged, incomplete or superseded run in the table's scope, with its error.
"""
from __future__ import annotations

import math

import pandas as pd

from zobench.aggregate.layout import Cell, Table
from zobench.aggregate.published import source_label

DASH = "—"


def _num(fmt: str, value: float) -> str:
    return DASH if value is None or math.isnan(value) else fmt.format(value)


def cell_text(cell: Cell, max_n: int, pm: str = "±", delta: str = "Δ") -> str:
    fmt, s = cell.measure["fmt"], cell.stats
    text = _num(fmt, s.mean)
    if s.n > 1:
        text += f" {pm} {_num(fmt, s.std)}"
    if s.n and s.n < max_n:
        text += f" (n={s.n})"
    if not math.isnan(cell.published):
        text += f" [{_num(fmt, cell.published)}"
        if s.n and cell.comparable:
            d = cell.diff
            text += f"; {delta} {'+' if d >= 0 else '−'}{_num(fmt, abs(d))}"
        text += "]"
    return text


def notes(table: Table) -> list[str]:
    """The lines printed under a table (Markdown flavoured; LaTeX escapes them)."""
    lay, out = table.layout, []
    value_desc = ", ".join(dict.fromkeys(
        f"{c.measure['label']}" + (f" ×{c.measure['scale']:g}" if c.measure["scale"] != 1 else "")
        for c in table.cells.values()))
    out.append(f"Cells: mean ± std over seeds of {value_desc}"
               + ("; [published; Δ = measured − published]" if lay.published else "") + ".")
    if lay.select == "dev":
        out.append("Selection: each cell reports the configuration (LR/eps grid point) with the best mean dev "
                   "score over its seeds; the test set is never used to choose.")
    else:
        out.append("Every completed run of a cell is averaged (these measures do not depend on the LR/eps grid).")
    chosen = []
    for (i, j), cell in sorted(table.cells.items()):
        desc = cell.selection.describe() if cell.selection is not None else ""
        if desc:
            label = " / ".join(x for x in (table.row_labels[i], table.col_labels[j]) if x)
            chosen.append(f"{label}: {desc}")
    if chosen:
        out.append("Chosen: " + "; ".join(chosen) + ".")
    if table.sources:
        out.append("Published: " + " | ".join(table.sources) + ".")
    if any(not c.comparable for c in table.cells.values() if c.stats.n and not math.isnan(c.published)):
        out.append("No Δ where the published number is for another model: that gap is not a reproduction gap.")
    if table.differences:
        out.append("Where the published setting differs from the measured one:")
        out.extend(f"- {line}" for line in table.differences)
    out.extend(lay.notes)
    if lay.caption:
        out.insert(0, lay.caption)
    return out


def problem_lines(table: Table) -> list[str]:
    p = table.problems
    if p.empty:
        return []
    lines = [f"Not in this table ({len(p)} run{'s' if len(p) > 1 else ''}):"]
    for _, r in p.iterrows():
        who = " ".join(f"{k}={r[k]}" for k in ("task", "tuning", "optimizer", "lr", "eps", "seed")
                       if k in r and not pd.isna(r[k]))
        lines.append(f"- {r['status']}: {r['run_dir']} ({who}): {r.get('error') or ''}".rstrip(": "))
    return lines


# -- Markdown ---------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(table: Table) -> str:
    lay, n = table.layout, table.max_n()
    header = [lay.row_header or " "] + table.col_labels
    lines = [f"### {table.heading}", "",
             "| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(table.col_labels)) + "|"]
    for i, label in enumerate(table.row_labels):
        row = [label] + [cell_text(table.cells[(i, j)], n) for j in range(len(table.col_labels))]
        lines.append("| " + " | ".join(_md_escape(c) for c in row) + " |")
    lines.append("")
    body = notes(table)
    for k, line in enumerate(body):  # a bullet list needs a blank line before it in Markdown
        if line.startswith("- ") and k and not body[k - 1].startswith("- "):
            lines.append("")
        nxt = body[k + 1] if k + 1 < len(body) else ""
        lines.append(line if line.startswith("- ") else line + ("" if nxt.startswith("- ") else "  "))
        if line.startswith("- ") and nxt and not nxt.startswith("- "):
            lines.append("")
    problems = problem_lines(table)
    if problems:
        lines.append("")
        lines.extend(problems)
    return "\n".join(lines).rstrip() + "\n"


# -- LaTeX ------------------------------------------------------------------------------------
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX.get(ch, ch) for ch in str(text))
    return (out.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("−", "$-$").replace("×", r"$\times$")
            .replace("—", "---").replace("ε", r"$\varepsilon$"))


def to_latex(table: Table) -> str:
    n = table.max_n()
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{l" + "r" * len(table.col_labels) + "}", r"\toprule",
             " & ".join([tex_escape(table.layout.row_header)] + [tex_escape(c) for c in table.col_labels]) + r" \\",
             r"\midrule"]
    for i, label in enumerate(table.row_labels):
        cells = [tex_escape(cell_text(table.cells[(i, j)], n)) for j in range(len(table.col_labels))]
        lines.append(" & ".join([tex_escape(label)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + tex_escape(table.heading) + "}",
              r"\label{tab:" + "-".join([table.layout.name, *map(str, table.split.values())]) + "}", r"\end{table}"]
    trailer = notes(table) + problem_lines(table)
    lines += ["% " + line.replace("\n", " ") for line in trailer]
    return "\n".join(lines) + "\n"


# -- CSV --------------------------------------------------------------------------------------
def to_frame(table: Table) -> pd.DataFrame:
    """Long form: one row per cell, numbers unformatted, with the chosen configuration."""
    rows = []
    for (i, j), cell in sorted(table.cells.items()):
        sel = cell.selection
        rows.append({**table.split, "table": table.layout.name, "row": table.row_labels[i],
                     "column": table.col_labels[j], "measure": cell.measure["value"], "scale": cell.measure["scale"],
                     "mean": cell.stats.mean, "std": cell.stats.std, "n": cell.stats.n,
                     "chosen": sel.describe() if sel is not None else "",
                     "n_configs": sel.n_configs if sel is not None else 0,
                     "dev_mean": sel.dev_mean if sel is not None else math.nan,
                     "published": cell.published, "published_source": source_label(cell.published_source),
                     "diff": cell.diff if not math.isnan(cell.published) else math.nan,
                     "runs": ";".join(sel.runs["run_dir"]) if sel is not None and "run_dir" in sel.runs else ""})
    return pd.DataFrame(rows)


def to_csv(tables: list[Table]) -> str:
    frames = [to_frame(t) for t in tables]
    return pd.concat(frames, ignore_index=True).to_csv(index=False) if frames else ""
