"""``zobench-aggregate RUNS_DIR [--table NAME ...] [--out DIR]``: runs -> tables and figures.

Reads every summary.json under RUNS_DIR. With no ``--table`` it writes the sweep table
(zobench/aggregate/sweep_table.py: per task, the config keys that vary across the runs, each
configuration's score with its 95% interval over seeds, n, peak memory, its ratio to inference, step
time and forward passes, and the runs that did not complete); ``--table NAME`` builds a paper layout of
``conf/tables/`` instead (repeatable; ``--table sweep`` is the sweep table, ``--table all`` every layout
and the sweep table, as ``make reproduce-tables`` writes). Under ``--out`` (default ``RUNS_DIR/aggregate``)::

    <table>.md  <table>.tex  <table>.csv   each table, one section per split (a task, a model)
    tables.md                              every table in one file (also printed)
    runs.csv                               every run, one row each, status included
    figures/*.png|pdf                      convergence, accuracy vs memory, memory vs sequence length
    COMMAND.txt                            the commands that wrote there, when, at which commit (appended)

``--wandb PROJECT`` pushes the tables (numbers as numbers) and figures as one W&B run;
``--wandb-runs PROJECT`` uploads every completed run directory as a W&B run of its own (config,
metrics.jsonl as history, summary), once: zobench/aggregate/wandb_push.py.
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
from pathlib import Path

from zobench import ROOT
from zobench.aggregate.layout import build_tables, layout_names, load_layout
from zobench.aggregate.load import load_runs
from zobench.aggregate.plots import plot_all
from zobench.aggregate.published import load_published
from zobench.aggregate.render import to_csv, to_latex, to_markdown
from zobench.aggregate import sweep_table

SWEEP = sweep_table.NAME  # the sweep table: the default
ALL = "all"               # every layout of conf/tables/ and the sweep table (make reproduce-tables)


def table_names(tables: list[str] | str | None) -> list[str]:
    """What ``tables`` asks for, in order: None -> [sweep]; "all" (alone or in a list) -> every layout, then sweep."""
    if tables is None:
        return [SWEEP]
    tables = [tables] if isinstance(tables, str) else list(tables)
    out: list[str] = []
    for name in tables:
        for one in ([*layout_names(), SWEEP] if name == ALL else [name]):
            if one not in out:
                out.append(one)
    return out


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_sweep(runs, out: Path, files: list, sections: list) -> None:
    built = sweep_table.build_sweep_tables(runs)
    if not built:
        print("[zobench-aggregate] sweep: no runs, skipped", file=sys.stderr)
        return
    md = "\n".join(sweep_table.to_markdown(t) for t in built)
    sections.append(md)
    for suffix, text in ((".md", md), (".tex", "\n".join(sweep_table.to_latex(t) for t in built)),
                         (".csv", sweep_table.to_csv(built))):
        path = out / f"{SWEEP}{suffix}"
        path.write_text(text)
        files.append(path)


def aggregate(runs_dir: str | Path, tables: list[str] | str | None = None, out: str | Path | None = None,
              plots: bool = True, command: str | None = None) -> dict:
    """Write the tables and figures of ``runs_dir``; returns {"markdown": str, "files": [...], "runs": df}.

    ``tables``: None, the sweep table; layout names of conf/tables/ (and/or "sweep"); "all", every layout
    and the sweep table (what ``make reproduce-tables`` writes)."""
    runs_dir = Path(runs_dir)
    out = Path(out) if out else runs_dir / "aggregate"
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(runs_dir)
    names = table_names(tables)
    published = load_published() if any(n != SWEEP for n in names) else None
    files, sections = [], []
    for name in names:
        if name == SWEEP:
            _write_sweep(runs, out, files, sections)
            continue
        layout = load_layout(name)
        built = [t for t in build_tables(layout, runs, published)
                 if any(c.stats.n for c in t.cells.values()) or not t.problems.empty]
        if not built:
            print(f"[zobench-aggregate] {name}: no runs in its scope, skipped", file=sys.stderr)
            continue
        md = "\n".join(to_markdown(t) for t in built)
        sections.append(md)
        for suffix, text in ((".md", md), (".tex", "\n".join(to_latex(t) for t in built)), (".csv", to_csv(built))):
            path = out / f"{layout.name}{suffix}"
            path.write_text(text)
            files.append(path)
    markdown = "\n".join(sections)
    (out / "tables.md").write_text(markdown)
    runs.to_csv(out / "runs.csv", index=False)
    files += [out / "tables.md", out / "runs.csv"]
    if plots and not runs.empty:
        files += plot_all(runs, runs_dir, out / "figures")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = command or " ".join(shlex.quote(a) for a in ["zobench-aggregate", *sys.argv[1:]])
    # Appended, not overwritten: the folder keeps how its runs were made and every re-rendering.
    with open(out / "COMMAND.txt", "a") as log:
        log.write(f"{command}\n# {stamp}, zobench commit {_git_commit()}\n")
    return {"markdown": markdown, "files": files, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zobench-aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", help="a folder of run directories (searched recursively for summary.json)")
    parser.add_argument("--table", action="append", dest="tables", metavar="NAME",
                        help=f"a paper layout of conf/tables/ ({', '.join(layout_names())}), '{SWEEP}' or '{ALL}' "
                             f"(repeatable; default: the sweep table: per task, the config keys that vary x score, "
                             "memory and time)")
    parser.add_argument("--out", help="output folder (default RUNS_DIR/aggregate)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--wandb", metavar="PROJECT", help="also push the tables and figures to this W&B project")
    parser.add_argument("--wandb-entity", help="W&B team or user (default: yours)")
    parser.add_argument("--wandb-group", help="W&B group, e.g. the sweep's name")
    parser.add_argument("--wandb-runs", metavar="PROJECT",
                        help="upload every completed run directory as a W&B run (config, metrics history, summary); "
                             "a run already pushed to PROJECT (wandb_pushed.json in its folder) is not pushed again")
    args = parser.parse_args(argv)
    if not Path(args.runs_dir).is_dir():
        parser.error(f"{args.runs_dir} is not a directory")
    for name in args.tables or []:
        if name not in (*layout_names(), SWEEP, ALL):
            parser.error(f"unknown table {name!r}; choose from {', '.join([*layout_names(), SWEEP, ALL])}")
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(a) for a in ["zobench-aggregate", *argv])
    result = aggregate(args.runs_dir, args.tables, args.out, plots=not args.no_plots, command=command)
    runs = result["runs"]
    counts = runs["status"].value_counts().to_dict() if not runs.empty else {}
    print(result["markdown"])
    if args.wandb:
        from zobench.aggregate.wandb_push import push_to_wandb

        out_dir = Path(args.out) if args.out else Path(args.runs_dir) / "aggregate"
        pushed = push_to_wandb(result["files"], runs, args.wandb, args.wandb_entity, group=args.wandb_group,
                               wandb_dir=str(out_dir))
        print(f"[zobench-aggregate] W&B push to {args.wandb}: {'done' if pushed else 'skipped (see warning)'}",
              file=sys.stderr)
    if args.wandb_runs:
        from zobench.aggregate.wandb_push import push_runs

        out_dir = Path(args.out) if args.out else Path(args.runs_dir) / "aggregate"
        done = push_runs(args.runs_dir, args.wandb_runs, args.wandb_entity, group=args.wandb_group,
                         wandb_dir=str(out_dir), runs=runs)
        print(f"[zobench-aggregate] W&B runs to {args.wandb_runs}: "
              + ", ".join(f"{len(v)} {k}" for k, v in done.items() if v), file=sys.stderr)
    print(f"[zobench-aggregate] {len(runs)} runs ({', '.join(f'{v} {k}' for k, v in counts.items()) or 'none'}); "
          f"wrote {len(result['files'])} files under {Path(args.out) if args.out else Path(args.runs_dir) / 'aggregate'}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
