"""Figures from the runs: convergence, accuracy against peak memory, memory against sequence length.

Each figure is written as PNG and PDF, one per (model, task). A line or point stands for one
(tuning, optimizer) cell at the configuration dev selected (the same choice the tables make),
averaged over its seeds. Convergence reads each run's ``metrics.jsonl``: training rows
``{step, loss, lr, step_time_ms, forward_passes}`` and dev rows ``{step, dev_accuracy, dev_<metric>}``.
Memory against sequence length takes ``seq_len`` (the summary's, else ``trainer.max_length``
from config.yaml) and needs at least two lengths per cell.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from zobench.aggregate.load import STATUS_OK
from zobench.aggregate.select import select_by_dev

CELL = ["tuning", "optimizer"]
PANEL = ["model", "task"]


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(str(p) for p in parts)).strip("-")


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    # No creation date in the files: re-rendering the same runs gives the same bytes.
    fig.savefig(paths[0], dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    _matplotlib().close(fig)
    return paths


def read_metrics(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, dev rows) of one run's metrics.jsonl; dev rows get forward_passes from training rows."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
    df = pd.DataFrame(rows)
    if df.empty or "step" not in df:
        return pd.DataFrame(), pd.DataFrame()
    train = df[df["loss"].notna()] if "loss" in df else df.iloc[:0]
    dev_cols = [c for c in df.columns if c.startswith("dev_")]
    dev = df[df[dev_cols].notna().any(axis=1)] if dev_cols else df.iloc[:0]
    train = train.apply(pd.to_numeric, errors="coerce")
    dev = dev[["step", *dev_cols]].apply(pd.to_numeric, errors="coerce")
    if not train.empty and "forward_passes" in train:
        fp = train.drop_duplicates("step", keep="last").set_index("step")["forward_passes"]
        dev = dev.assign(forward_passes=dev["step"].map(fp))
    return train.reset_index(drop=True), dev.reset_index(drop=True)


def _cells(runs: pd.DataFrame):
    """Per (model, task) panel: {cell label: dev-selected runs}."""
    done = runs[runs["status"].eq(STATUS_OK)] if "status" in runs else runs
    if "steps_budget" in done:
        done = done[pd.to_numeric(done["steps_budget"], errors="coerce").fillna(0) > 0]
    for panel, group in done.groupby([c for c in PANEL if c in done.columns], sort=True):
        cells = {}
        for cell, cell_runs in group.groupby([c for c in CELL if c in group.columns], sort=True):
            cells[" / ".join(map(str, cell if isinstance(cell, tuple) else (cell,)))] = select_by_dev(cell_runs).runs
        yield (panel if isinstance(panel, tuple) else (panel,)), cells


def _mean_curve(frames: list[pd.DataFrame], x: str, y: str) -> pd.DataFrame:
    frames = [f[[x, y]].dropna() for f in frames if not f.empty and x in f and y in f]
    if not frames:
        return pd.DataFrame(columns=[x, y])
    return pd.concat(frames).groupby(x, as_index=False)[y].mean().sort_values(x)


def plot_convergence(runs: pd.DataFrame, root: str | Path, out_dir: str | Path) -> list[Path]:
    """Loss and dev score against steps and against forward passes; one figure per (model, task)."""
    plt, root, paths = _matplotlib(), Path(root), []
    for panel, cells in _cells(runs):
        fig, axes = plt.subplots(2, 2, figsize=(10, 7))
        metric = None
        for label, cell_runs in cells.items():
            metrics = [read_metrics(root / d) for d in cell_runs["run_dir"]]
            if metric is None:
                metric = str(cell_runs["metric"].iloc[0]) if "metric" in cell_runs else "accuracy"
            dev_col = f"dev_{metric}"
            for col, x in enumerate(("step", "forward_passes")):
                loss = _mean_curve([t for t, _ in metrics], x, "loss")
                dev = _mean_curve([d for _, d in metrics], x, dev_col)
                axes[0, col].plot(loss[x], loss["loss"], label=label, lw=1)
                axes[1, col].plot(dev[x], dev[dev_col], marker="o", ms=3, label=label, lw=1)
        for col, x in enumerate(("steps", "forward passes")):
            axes[0, col].set(xlabel=x, ylabel="training loss")
            axes[1, col].set(xlabel=x, ylabel=f"dev {metric or 'score'}")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if handles:  # beside the panels: with dozens of (scheme, optimizer) lines it would cover them
            fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.suptitle(f"Convergence — {' / '.join(map(str, panel))} (mean over seeds, dev-selected config)")
        paths += _save(fig, Path(out_dir), _slug("convergence", *panel))
    return paths


def plot_accuracy_vs_memory(runs: pd.DataFrame, out_dir: str | Path, value: str = "test_score") -> list[Path]:
    """Test score against peak memory, one point per (tuning, optimizer) cell."""
    plt, paths = _matplotlib(), []
    for panel, cells in _cells(runs):
        points = [(label, r["peak_memory_gib"].mean(), 100 * r[value].mean()) for label, r in cells.items()
                  if "peak_memory_gib" in r and r["peak_memory_gib"].notna().any() and r[value].notna().any()]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for label, x, y in points:
            ax.scatter(x, y)
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="peak memory (GiB)", ylabel=f"{value} ×100",
               title=f"Accuracy vs peak memory — {' / '.join(map(str, panel))}")
        paths += _save(fig, Path(out_dir), _slug("accuracy-vs-memory", *panel))
    return paths


def plot_memory_vs_seq_len(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Peak memory against sequence length (``seq_len``), one line per (tuning, optimizer) cell."""
    plt, paths = _matplotlib(), []
    if "seq_len" not in runs or "peak_memory_gib" not in runs:
        return paths
    done = runs[runs["status"].eq(STATUS_OK) & runs["seq_len"].notna() & runs["peak_memory_gib"].notna()]
    for panel, group in done.groupby([c for c in PANEL if c in done.columns], sort=True):
        lines = {}
        for cell, cell_runs in group.groupby([c for c in CELL if c in group.columns], sort=True):
            curve = cell_runs.groupby("seq_len", as_index=False)["peak_memory_gib"].mean().sort_values("seq_len")
            if len(curve) >= 2:
                lines[" / ".join(map(str, cell if isinstance(cell, tuple) else (cell,)))] = curve
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for label, curve in lines.items():
            ax.plot(curve["seq_len"], curve["peak_memory_gib"], marker="o", label=label)
        panel = panel if isinstance(panel, tuple) else (panel,)
        ax.set(xlabel="sequence length (tokens, trainer.max_length)", ylabel="peak memory (GiB)",
               title=f"Memory vs sequence length — {' / '.join(map(str, panel))}")
        ax.legend(fontsize=7)
        paths += _save(fig, Path(out_dir), _slug("memory-vs-seq-len", *panel))
    return paths


def plot_all(runs: pd.DataFrame, root: str | Path, out_dir: str | Path) -> list[Path]:
    return (plot_convergence(runs, root, out_dir) + plot_accuracy_vs_memory(runs, out_dir)
            + plot_memory_vs_seq_len(runs, out_dir))
