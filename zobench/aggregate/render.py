"""Tables to Markdown, LaTeX and CSV, with what was left out listed under them.

A cell reads ``mean† (lo–hi, n=k)``: the mean over seeds, † when it differs from the table's
reference row on the same eval examples (zobench/aggregate/compare.py), and its 95% interval with
the number of seeds: Student-t over seeds, or with one seed (``n=1‡``) the run's bootstrap interval
over eval examples; then ``[published; Δ measured − published]`` where the layout puts published
numbers beside. Under every table: what the interval and † mean, the protocol (loss, metric,
selection rule, variant), how cells were chosen, which configuration each cell took, the published
sources, where the published setting differs from the measured one, and every failed, diverged,
incomplete or superseded run in the table's scope, with its error.
"""
from __future__ import annotations

import math

import pandas as pd

from zobench.aggregate.compare import MARK, legend
from zobench.aggregate.layout import Cell, Table
from zobench.aggregate.protocol import protocol_line, same_runs_warning
from zobench.aggregate.published import source_label
from zobench.aggregate.seeds import BOOTSTRAP
from zobench.aggregate.steps import PER_STEP

DASH = "—"
ONE_SEED = "‡"  # n=1: the interval is the run's bootstrap over eval examples, not over seeds


def _num(fmt: str, value: float) -> str:
    return DASH if value is None or math.isnan(value) else fmt.format(value)


def cell_text(cell: Cell, max_n: int | None = None, delta: str = "Δ") -> str:
    """``61.0† (48.3–73.7, n=2) [70.0; Δ −9.0]``; ``max_n`` is kept for callers and no longer used:
    every cell shows its n."""
    fmt, s = cell.measure["fmt"], cell.stats
    text = _num(fmt, s.mean)
    if s.n and cell.comparison is not None and cell.comparison.significant:
        text += MARK
    if s.n:
        n = f"n={s.n}" + (ONE_SEED if s.interval == BOOTSTRAP else "")
        text += f" ({_num(fmt, s.lo)}–{_num(fmt, s.hi)}, {n})" if s.has_interval else f" ({n})"
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
    one_run = [c for c in table.cells.values() if c.stats.interval == BOOTSTRAP]
    one_run_text = (f"; {ONE_SEED} one seed: the run's 95% percentile bootstrap over eval examples (eval-set "
                    "sampling only, not seed variation)" if one_run else "")
    if any(c.measure["value"] in PER_STEP for c in one_run):
        one_run_text += ("; for a step time, of its median over the run's training steps (step-to-step noise "
                         "only, not the machine's load)")
    out.append(f"Cells: mean over seeds of {value_desc} (95% interval, n = seeds): Student-t over seeds"
               + one_run_text
               + ("; [published; Δ = measured − published]" if lay.published else "") + ".")
    comparisons = [c.comparison for c in table.cells.values() if c.comparison is not None and c.stats.n]
    line = legend(comparisons, table.compare)
    if line:
        out.append(line)
    out.extend(table.compare_notes)
    line = protocol_line(table)
    if line:
        out.append(line)
    line = same_runs_warning(table)
    if line:
        out.append(line)
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
# Kept rather than DataFrame.to_markdown: that needs `tabulate` (not a dependency), pads every cell to the
# column width (the tests and the committed tables match the cells' exact text) and does not escape "|".
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
            .replace("—", "---").replace("–", "--").replace("ε", r"$\varepsilon$")
            .replace("†", r"$^\dagger$").replace("‡", r"$^\ddagger$"))


def to_latex(table: Table) -> str:
    """A booktabs ``table`` float through pandas' ``Styler.to_latex``; cells are escaped here first
    (``tex_escape`` also turns †, ‡, Δ, −, ×, ε into math, which Styler's ``escape="latex"`` does not)."""
    n = table.max_n()
    header = [tex_escape(table.layout.row_header)] + [tex_escape(c) for c in table.col_labels]
    rows = [[tex_escape(label)] + [tex_escape(cell_text(table.cells[(i, j)], n)) for j in range(len(table.col_labels))]
            for i, label in enumerate(table.row_labels)]
    label = "tab:" + "-".join([table.layout.name, *map(str, table.split.values())])
    tex = (pd.DataFrame(rows, columns=header).style.hide(axis="index")
           .to_latex(hrules=True, column_format="l" + "r" * len(table.col_labels), environment="table",
                     position="t", position_float="centering", caption=tex_escape(table.heading), label=label))
    tex = tex.replace("\\centering\n", "\\centering\n\\small\n", 1)
    trailer = notes(table) + problem_lines(table)
    return tex + "".join("% " + line.replace("\n", " ") + "\n" for line in trailer)


# -- CSV --------------------------------------------------------------------------------------
def to_frame(table: Table) -> pd.DataFrame:
    """Long form: one row per cell, numbers unformatted, with the chosen configuration."""
    rows = []
    for (i, j), cell in sorted(table.cells.items()):
        sel = cell.selection
        rows.append({**table.split, "table": table.layout.name, "row": table.row_labels[i],
                     "column": table.col_labels[j], "measure": cell.measure["value"], "scale": cell.measure["scale"],
                     "mean": cell.stats.mean, "std": cell.stats.std, "n": cell.stats.n,
                     "lo": cell.stats.lo, "hi": cell.stats.hi, "interval": cell.stats.interval,
                     **_comparison_columns(cell), **_protocol_columns(sel),
                     "forward_pass_equivalents": _mean(sel, "forward_pass_equivalents"),
                     "chosen": sel.describe() if sel is not None else "",
                     "n_configs": sel.n_configs if sel is not None else 0,
                     "dev_mean": sel.dev_mean if sel is not None else math.nan,
                     "published": cell.published, "published_source": source_label(cell.published_source),
                     "diff": cell.diff if not math.isnan(cell.published) else math.nan,
                     "runs": ";".join(sel.runs["run_dir"]) if sel is not None and "run_dir" in sel.runs else ""})
    return pd.DataFrame(rows)


def _comparison_columns(cell: Cell) -> dict:
    c = cell.comparison
    if c is None:
        return {"reference": "", "delta_vs_reference": math.nan, "delta_lo": math.nan, "delta_hi": math.nan,
                "p_value": math.nan, "significant": False, "test": "", "paired_examples": 0}
    return {"reference": c.reference, "delta_vs_reference": c.delta, "delta_lo": c.lo, "delta_hi": c.hi,
            "p_value": c.p_value, "significant": c.significant, "test": c.test, "paired_examples": c.n_examples}


def _protocol_columns(sel) -> dict:
    from zobench.aggregate.protocol import PROTOCOL_KEYS, UNKNOWN

    out = {}
    for key in PROTOCOL_KEYS:
        vals = [] if sel is None or key not in sel.runs else sel.runs[key].dropna().astype(str).unique().tolist()
        out[key] = ";".join(vals) if vals else UNKNOWN
    return out


def _mean(sel, column: str) -> float:
    if sel is None or column not in sel.runs:
        return math.nan
    vals = pd.to_numeric(sel.runs[column], errors="coerce").dropna()
    return float(vals.mean()) if len(vals) else math.nan


def to_csv(tables: list[Table]) -> str:
    frames = [to_frame(t) for t in tables]
    return pd.concat(frames, ignore_index=True).to_csv(index=False) if frames else ""
