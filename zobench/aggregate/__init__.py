"""Aggregate: run directories -> one DataFrame -> paper tables (Markdown, LaTeX, CSV) and figures.

    load.py       summary.json (+ a few config.yaml settings) -> one row per run; unfinished and
                  superseded runs are rows too, so they are listed, never silently dropped
    seeds.py      mean, std, n and a 95% interval over seeds (one seed: the run's bootstrap interval)
    predictions.py  predictions.jsonl / zero_shot_predictions.jsonl of a run (per-example results)
    compare.py    paired tests of each cell against a reference row on the same eval examples (†)
    protocol.py   the protocol line under a table (loss, metric, selection, variant); same-runs check
    select.py     per cell, the LR/eps grid point with the best mean dev score (never test)
    layout.py     conf/tables/<name>.yaml -> rows x columns of cells
    published.py  conf/published/*.csv: published numbers with their sources, joined beside
    render.py     Markdown, LaTeX, CSV, with what was left out listed under each table
    sweep_table.py  the default table of any sweep: per task, the config keys that vary x score (95% CI over
                  seeds), n, peak memory, ratio to inference, step time, forward passes; failed runs under it
    wandb_push.py ``--wandb``: tables (numbers as numbers) and figures to W&B; ``--wandb-runs``: run dirs as W&B runs
    plots.py      convergence (x: steps, forward passes, forward-pass equivalents), accuracy vs memory,
                  accuracy vs compute, memory vs sequence length (PNG + PDF)
    cli.py        ``zobench-aggregate RUNS_DIR [--table NAME|sweep|all ...] [--out DIR]`` (default: the sweep table)
    reproduce.py  ``make reproduce-tables``: run the paper grids (conf/experiment/), then aggregate
    cost.py       the plan's cost model: seconds of a cell on 2 CPU cores, or on GPUs from MeZO Table 23
    findings.py   ``make findings``: the claims of conf/claims/ evaluated on runs into FINDINGS.md;
                  claims.py reads them, findings_effect.py / findings_intervals.py / findings_render.py
                  hold the effect and verdict, the example-level intervals and the Markdown

In a notebook::

    from zobench.aggregate import load_runs, load_layout, build_tables, load_published, to_markdown
    runs = load_runs("runs/reproduce-cpu")
    for table in build_tables(load_layout("mezo_opt13b"), runs, load_published()):
        print(to_markdown(table))
"""
from zobench.aggregate.layout import Layout, Table, build_tables, layout_names, load_layout
from zobench.aggregate.load import load_runs, problems
from zobench.aggregate.plots import (plot_accuracy_vs_compute, plot_accuracy_vs_memory, plot_all, plot_convergence,
                                     plot_memory_vs_seq_len, read_metrics)
from zobench.aggregate.published import load_published
from zobench.aggregate.render import to_csv, to_frame, to_latex, to_markdown
from zobench.aggregate.seeds import SeedStats, group_seeds
from zobench.aggregate.select import select_by_dev
from zobench.aggregate.sweep_table import build_sweep_table, build_sweep_tables



def aggregate(runs_dir, tables=None, out=None, plots=True, command=None) -> dict:
    """Tables and figures of ``runs_dir`` written under ``out`` (see ``zobench.aggregate.cli``). ``tables``:
    None, the sweep table; layout names (and/or "sweep"); "all", every layout and the sweep table."""
    from zobench.aggregate.cli import aggregate as _aggregate  # lazy: `python -m ...cli` stays clean

    return _aggregate(runs_dir, tables, out, plots, command)


__all__ = ["aggregate", "Layout", "Table", "build_tables", "layout_names", "load_layout", "load_runs", "problems",
           "plot_accuracy_vs_compute", "plot_accuracy_vs_memory", "plot_all", "plot_convergence", "plot_memory_vs_seq_len", "read_metrics",
           "load_published", "to_csv", "to_frame", "to_latex", "to_markdown", "SeedStats", "group_seeds",
           "select_by_dev", "build_sweep_table", "build_sweep_tables"]
