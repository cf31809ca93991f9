"""The table of any sweep (``zobench-aggregate RUNS_DIR``, no ``--table``): what varied, what it scored, what it cost.

One table per task (each task has its own metric). Its rows are the configurations the runs hold:
one column per config key that varies across the task's runs (``optimizer``, ``lr``, ``tuning``, ...;
the seeds ``seed`` / ``data_seed`` never: they are what a row averages over), then

    test <metric> ×100   mean over the row's completed seeds ± the half-width of its 95% Student-t
                         interval over seeds (zobench.stats.seed_interval); one seed: the run's own 95%
                         bootstrap interval over eval examples, marked ‡; none: mean alone. When no run
                         scored the eval set (trainer.test=false: a learning-rate search), the best dev
                         score instead, and the header says ``dev``
    n                    completed seeds
    dev <metric> ×100    mean best-dev score (what a selection would read), beside a test score
    zero-shot ×100       the untuned model's score, where the runs scored it
    peak memory (GiB)    mean training peak (MiB when every peak is under 1 GiB; the header says which)
    × inference          its ratio to an inference pass of the same model on the same batch
    step time (ms)       median milliseconds per training step (evaluation excluded), mean over seeds
    forward passes       total forward passes of a run
    not completed        how many of the row's runs failed, diverged, were interrupted or never finished

A key that varies only together with an earlier one (``variant`` with ``optimizer``) is named under the
table rather than given a column; ``lr``, ``eps`` and ``steps_budget`` always get theirs when they vary.
The keys every run shares are listed under the table (``Fixed:``), and so is every run that did not
complete, with its error cut to one line. Superseded runs (a cell re-run since) are counted, not listed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from zobench.aggregate.load import STATUS_OK
from zobench.aggregate.predictions import run_interval
from zobench.aggregate.seeds import BOOTSTRAP, SeedStats
from zobench.aggregate.select import config_keys

NAME = "sweep"
DASH = "—"
ONE_SEED = "‡"
SCALE = 100.0
GIB, MIB = 2**30, 2**20
SEED_KEYS = ("seed", "data_seed")
ALWAYS_SHOWN = ("lr", "eps", "steps_budget")  # hyperparameters a reader looks for, even when set by another key
FIXED_SHOWN = ("model", "tuning", "optimizer", "lr", "eps", "steps_budget", "batch_size", "max_length", "dtype",
               "device", "template", "loss", "selection", "variant", "num_train", "num_dev", "num_eval")
NOT_COMPLETED = ("failed", "diverged", "interrupted", "incomplete")
ERROR_CHARS = 160


@dataclass
class Row:
    values: dict[str, Any]          # the varying keys' values
    runs: pd.DataFrame              # the row's completed runs (one per seed)
    others: pd.DataFrame            # its runs that did not complete
    score: SeedStats                # the table's score over the completed seeds (SweepTable.score)
    dev: float = math.nan
    zero_shot: float = math.nan
    peak_bytes: float = math.nan
    memory_ratio: float = math.nan
    step_time_ms: float = math.nan
    forward_passes: float = math.nan
    forward_pass_equivalents: float = math.nan

    def not_completed(self) -> str:
        counts = self.others["status"].value_counts() if not self.others.empty else {}
        return ", ".join(f"{n} {status}" for status, n in sorted(dict(counts).items()))


@dataclass
class SweepTable:
    task: str | None
    metric: str
    keys: list[str]                                     # the columns of varying keys
    rows: list[Row]
    fixed: dict[str, Any] = field(default_factory=dict)
    dependent: dict[str, list[str]] = field(default_factory=dict)  # key -> the column keys that set it
    problems: pd.DataFrame = field(default_factory=pd.DataFrame)    # failed, diverged, interrupted, incomplete
    superseded: int = 0
    score: str = "test_score"   # best_dev_score when no run scored the eval set (trainer.test=false)

    @property
    def score_label(self) -> str:
        return f"{'test' if self.score == 'test_score' else 'dev'} {self.metric} ×100 (95% CI)"

    @property
    def heading(self) -> str:
        n = sum(len(r.runs) + len(r.others) for r in self.rows)
        what = f"task={self.task}" if self.task is not None else "runs with no task"
        return f"Sweep — {what} ({self.metric}; {n} run{'s' if n != 1 else ''}, {len(self.rows)} configuration" \
               f"{'s' if len(self.rows) != 1 else ''})"

    @property
    def memory_unit(self) -> tuple[str, float]:
        peaks = [r.peak_bytes for r in self.rows if not math.isnan(r.peak_bytes)]
        return ("GiB", GIB) if not peaks or max(peaks) >= GIB else ("MiB", MIB)

    def has(self, column: str) -> bool:
        return any(not math.isnan(getattr(r, column)) for r in self.rows)


# -- building -----------------------------------------------------------------------------------------------
def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def _text(value: Any) -> str | None:
    """A value as the text that tells configurations apart (1e-3 and 0.001 alike); None when missing."""
    if not _known(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 2**53 else f"{value:g}"
    return f"{value:.12g}" if isinstance(value, float) else str(value)


def _distinct(series: pd.Series, dropna: bool) -> int:
    values = {_text(v) for v in series}
    return len(values - {None}) if dropna else len(values)


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """Config keys (zobench.aggregate.select.config_keys: CONFIG_KEYS and device) with more than one value:
    among the completed runs (a key missing from some counts as a value), or among the non-null values of
    every run (a run that failed with another lr is a configuration of its own)."""
    keys = [k for k in config_keys(runs) if k not in ("task", *SEED_KEYS)]
    done = runs[runs["status"].eq(STATUS_OK)] if "status" in runs else runs
    return [k for k in keys if _distinct(done[k], dropna=False) > 1 or _distinct(runs[k], dropna=True) > 1]


def _determined(runs: pd.DataFrame, key: str, by: list[str]) -> bool:
    if not by:
        return False
    seen: dict[tuple, str | None] = {}
    for group, value in zip(zip(*(map(_text, runs[c]) for c in by)), map(_text, runs[key])):
        if seen.setdefault(group, value) != value:
            return False
    return True


def column_keys(runs: pd.DataFrame, varying: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(the keys given a column, {key: the fewest column keys that set it}) in CONFIG_KEYS order."""
    shown, dependent = [], {}
    for key in varying:
        if key not in ALWAYS_SHOWN and _determined(runs, key, shown):
            dependent[key] = list(shown)
        else:
            shown.append(key)
    for key, by in dependent.items():  # name the fewest columns that set it: "variant (by optimizer)"
        dependent[key] = next(([c] for c in by if _determined(runs, key, [c])), by)
    return shown, dependent


def _sort_key(values: tuple) -> tuple:
    out = []
    for v in values:
        if not _known(v):
            out.append((2, 0.0, ""))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((0, float(v), ""))
        else:
            out.append((1, 0.0, str(v)))
    return tuple(out)


def _mean(runs: pd.DataFrame, column: str) -> float:
    if column not in runs:
        return math.nan
    vals = pd.to_numeric(runs[column], errors="coerce").dropna()
    return float(vals.mean()) if len(vals) else math.nan


def _score_stats(runs: pd.DataFrame, column: str) -> SeedStats:
    values = pd.to_numeric(runs[column], errors="coerce") if column in runs else pd.Series(dtype=float)
    stats = SeedStats.of(values * SCALE)
    if stats.n == 1:  # no spread over seeds: the run's own interval over eval examples, if it has one
        ci = run_interval(runs[values.notna()].iloc[0], column)
        if ci is not None:
            stats = stats.with_bootstrap(ci[0] * SCALE, ci[1] * SCALE)
    return stats


def _row(values: dict, group: pd.DataFrame, score: str) -> Row:
    done = group[group["status"].eq(STATUS_OK)]
    others = group[group["status"].isin(NOT_COMPLETED)]
    return Row(values, done, others, _score_stats(done, score), dev=_mean(done, "best_dev_score") * SCALE,
               zero_shot=_mean(done, "zero_shot_score") * SCALE, peak_bytes=_mean(done, "peak_memory_bytes"),
               memory_ratio=_mean(done, "memory_ratio"), step_time_ms=_mean(done, "step_time_ms"),
               forward_passes=_mean(done, "forward_passes"),
               forward_pass_equivalents=_mean(done, "forward_pass_equivalents"))


def _fixed(runs: pd.DataFrame, varying: list[str]) -> dict[str, Any]:
    out = {}
    for key in FIXED_SHOWN:
        if key in runs and key not in varying:
            known = [v for v in runs[key] if _known(v)]
            if known:
                out[key] = known[0]
    return out


def build_sweep_table(runs: pd.DataFrame, task: str | None) -> SweepTable:
    """The table of one task's runs (every status but superseded)."""
    live = runs[runs["status"].ne("superseded")] if "status" in runs else runs
    superseded = int(runs["status"].eq("superseded").sum()) if "status" in runs else 0
    metric = next((str(v) for v in live.get("metric", pd.Series(dtype=object)) if _known(v)), "score")
    varying = varying_keys(live) if not live.empty else []
    keys, dependent = column_keys(live, varying)
    done = live[live["status"].eq(STATUS_OK)] if "status" in live else live
    score = "test_score" if "test_score" in done and pd.to_numeric(done["test_score"], errors="coerce").notna().any() \
        else "best_dev_score"
    rows = []
    if not live.empty:
        groups: dict[tuple, list] = {}
        for index, texts in zip(live.index, zip(*(map(_text, live[k]) for k in keys)) if keys else
                                ((() for _ in live.index))):
            groups.setdefault(texts, []).append(index)
        for members in groups.values():
            group = live.loc[members]
            first = group.iloc[0]
            rows.append(_row({k: first[k] if _known(first[k]) else None for k in keys}, group, score))
        rows.sort(key=lambda r: _sort_key(tuple(r.values[k] for k in keys)))
    problems = live[live["status"].isin(NOT_COMPLETED)] if "status" in live else live.iloc[:0]
    return SweepTable(task, metric, keys, rows, _fixed(live, varying), dependent, problems, superseded, score)


def build_sweep_tables(runs: pd.DataFrame) -> list[SweepTable]:
    """One SweepTable per task, in name order; runs that record no task last (their problems only)."""
    if runs.empty:
        return []
    task = runs["task"] if "task" in runs else pd.Series(None, index=runs.index, dtype=object)
    known = task.map(_known)
    tables = [build_sweep_table(runs[task.eq(t) & known], t) for t in sorted(task[known].unique(), key=str)]
    if (~known).any():
        tables.append(build_sweep_table(runs[~known], None))
    return tables


# -- rendering ----------------------------------------------------------------------------------------------
def _fmt_value(value: Any) -> str:
    if not _known(value):
        return DASH
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _score(stats: SeedStats) -> str:
    if not stats.n:
        return DASH
    text = f"{stats.mean:.1f}"
    if stats.interval == BOOTSTRAP and stats.has_interval:
        return f"{text} ({stats.lo:.1f}–{stats.hi:.1f}){ONE_SEED}"
    if stats.has_interval:
        return f"{text} ± {(stats.hi - stats.lo) / 2:.1f}"
    return text


def _ms(value: float) -> str:
    if math.isnan(value):
        return DASH
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _num(fmt: str, value: float) -> str:
    return DASH if value is None or math.isnan(value) else fmt.format(value)


def columns(table: SweepTable) -> list[tuple[str, Any]]:
    """(header, function of a Row -> text) for each column shown."""
    unit, size = table.memory_unit
    metric = table.metric
    out: list[tuple[str, Any]] = [(k, (lambda r, k=k: _fmt_value(r.values[k]))) for k in table.keys]
    out += [(table.score_label, lambda r: _score(r.score)), ("n", lambda r: str(len(r.runs)))]
    if table.score == "test_score" and table.has("dev"):
        out.append((f"dev {metric} ×100", lambda r: _num("{:.1f}", r.dev)))
    if table.has("zero_shot"):
        out.append(("zero-shot ×100", lambda r: _num("{:.1f}", r.zero_shot)))
    out += [(f"peak memory ({unit})", lambda r: _num("{:,.2f}" if unit == "GiB" else "{:,.0f}", r.peak_bytes / size)),
            ("× inference", lambda r: _num("{:.2f}", r.memory_ratio)),
            ("step time (ms)", lambda r: _ms(r.step_time_ms)),
            ("forward passes", lambda r: _num("{:,.0f}", r.forward_passes))]
    if any(not r.others.empty for r in table.rows):
        out.append(("not completed", lambda r: r.not_completed()))
    return out


def short_error(error: Any) -> str:
    text = str(error).strip().splitlines()[0] if _known(error) and str(error).strip() else ""
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 1] + "…"


def notes(table: SweepTable) -> list[str]:
    what = ("test: the eval set, scored with the state dev selected" if table.score == "test_score" else
            "dev: the best dev score of each run (no run scored the eval set: trainer.test=false)")
    out = [f"Cells: mean over the completed seeds (n) of each configuration ({what}) ± the half-width of its 95% "
           f"Student-t interval over seeds ({ONE_SEED} one seed: the run's 95% bootstrap interval over eval examples). "
           "Peak memory: "
           "the training steps' peak; × inference: its ratio to an inference pass of the same model and batch; "
           "step time: median milliseconds per training step (evaluation excluded)."]
    if table.fixed:
        out.append("Fixed: " + ", ".join(f"{k}={_fmt_value(v)}" for k, v in table.fixed.items()) + ".")
    if table.dependent:
        by_columns: dict[tuple, list[str]] = {}
        for key, by in table.dependent.items():
            by_columns.setdefault(tuple(by), []).append(key)
        out.append("Set by the columns: " + "; ".join(f"{', '.join(keys)} (by {', '.join(by)})"
                                                       for by, keys in by_columns.items()) + ".")
    if table.superseded:
        out.append(f"{table.superseded} superseded run{'s' if table.superseded > 1 else ''} (re-run since) left out: "
                   "runs.csv lists them.")
    return out


def problem_lines(table: SweepTable) -> list[str]:
    p = table.problems
    if p.empty:
        return []
    lines = [f"Not completed ({len(p)} run{'s' if len(p) > 1 else ''}):"]
    for _, r in p.iterrows():
        who = ", ".join(f"{k}={_fmt_value(r[k])}" for k in (*table.keys, *SEED_KEYS) if k in r and _known(r[k]))
        error = short_error(r.get("error"))
        lines.append(f"- {r['status']}: {r['run_dir']}" + (f" ({who})" if who else "") + (f": {error}" if error else ""))
    return lines


def to_markdown(table: SweepTable) -> str:
    cols = columns(table)
    esc = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = [f"### {table.heading}", "", "| " + " | ".join(esc(h) for h, _ in cols) + " |",
             "|" + "|".join(":---" if h in table.keys else "---:" for h, _ in cols) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(esc(f(row)) for _, f in cols) + " |")
    if not table.rows:
        lines.append("| " + " | ".join([DASH] * len(cols)) + " |")
    lines.append("")
    lines += [line + "  " for line in notes(table)]
    problems = problem_lines(table)
    if problems:
        lines += ["", *problems]
    return "\n".join(lines).rstrip() + "\n"


def to_latex(table: SweepTable) -> str:
    from zobench.aggregate.render import tex_escape

    cols = columns(table)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "".join("l" if h in table.keys else "r" for h, _ in cols) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h, _ in cols) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(" & ".join(tex_escape(f(row)) for _, f in cols) + r" \\")
    label = f"{NAME}-{table.task}" if table.task is not None else f"{NAME}-no-task"
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + tex_escape(table.heading) + "}",
              r"\label{tab:" + label + "}", r"\end{table}"]
    lines += ["% " + line.replace("\n", " ") for line in notes(table) + problem_lines(table)]
    return "\n".join(lines) + "\n"


def to_frame(table: SweepTable) -> pd.DataFrame:
    """One row per configuration, numbers as numbers (NaN where none)."""
    records = []
    for row in table.rows:
        s = row.score
        records.append({"table": NAME, "task": table.task, "metric": table.metric, **table.fixed, **row.values,
                        "score": "test" if table.score == "test_score" else "dev",
                        "mean": s.mean, "lo": s.lo, "hi": s.hi, "n": len(row.runs), "n_scored": s.n,
                        "interval": s.interval,
                        "scale": SCALE, "dev_mean": row.dev, "zero_shot_mean": row.zero_shot,
                        "peak_memory_gib": row.peak_bytes / GIB, "memory_ratio": row.memory_ratio,
                        "step_time_ms": row.step_time_ms, "forward_passes": row.forward_passes,
                        "forward_pass_equivalents": row.forward_pass_equivalents,
                        "not_completed": row.not_completed(),
                        "runs": ";".join(row.runs["run_dir"]) if "run_dir" in row.runs else ""})
    return pd.DataFrame(records)


def to_csv(tables: list[SweepTable]) -> str:
    frames = [to_frame(t) for t in tables if t.rows]
    if not frames:
        return ""
    frame = pd.concat(frames, ignore_index=True)
    keys = list(dict.fromkeys([*(k for t in tables for k in t.keys), *(k for t in tables for k in t.fixed)]))
    head = ["table", "task", "metric", *keys]
    return frame[head + [c for c in frame.columns if c not in head]].to_csv(index=False)
