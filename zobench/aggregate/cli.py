"""``zobench-aggregate RUNS_DIR [--table NAME ...] [--out DIR]``: runs -> tables and figures.

Reads every summary.json under RUNS_DIR, builds the named layouts of ``conf/tables/`` (all of
them by default) and writes, under ``--out`` (default ``RUNS_DIR/aggregate``)::

    <table>.md  <table>.tex  <table>.csv   each layout, one section per split (e.g. per model)
    tables.md                              every table in one file (also printed)
    runs.csv                               every run, one row each, status included
    figures/*.png|pdf                      convergence, accuracy vs memory, memory vs sequence length
    COMMAND.txt                            the commands that wrote there, when, at which commit (appended)
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


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def aggregate(runs_dir: str | Path, tables: list[str] | None = None, out: str | Path | None = None,
              plots: bool = True, command: str | None = None) -> dict:
    """Write the tables and figures of ``runs_dir``; returns {"markdown": str, "files": [...], "runs": df}."""
    runs_dir = Path(runs_dir)
    out = Path(out) if out else runs_dir / "aggregate"
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(runs_dir)
    published = load_published()
    files, sections = [], []
    for name in tables or layout_names():
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
                        help=f"a layout of conf/tables/ (repeatable; default all: {', '.join(layout_names())})")
    parser.add_argument("--out", help="output folder (default RUNS_DIR/aggregate)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--wandb", metavar="PROJECT", help="also push the tables and figures to this W&B project")
    parser.add_argument("--wandb-entity", help="W&B team or user (default: yours)")
    parser.add_argument("--wandb-group", help="W&B group, e.g. the sweep's name")
    args = parser.parse_args(argv)
    if not Path(args.runs_dir).is_dir():
        parser.error(f"{args.runs_dir} is not a directory")
    for name in args.tables or []:
        if name not in layout_names():
            parser.error(f"unknown table {name!r}; choose from {', '.join(layout_names())}")
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
    print(f"[zobench-aggregate] {len(runs)} runs ({', '.join(f'{v} {k}' for k, v in counts.items()) or 'none'}); "
          f"wrote {len(result['files'])} files under {Path(args.out) if args.out else Path(args.runs_dir) / 'aggregate'}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
