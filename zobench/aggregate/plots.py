"""Figures from the runs: convergence, accuracy against peak memory and against compute, memory
against sequence length.

Each figure is written as PNG and PDF, one per (model, task). A line or point stands for one
(tuning, optimizer) cell at the configuration dev selected (the same choice the tables make),
averaged over its seeds. Convergence reads each run's ``metrics.jsonl``: training rows
``{step, loss, lr, step_time_ms, forward_passes}`` and dev rows ``{step, dev_accuracy, dev_<metric>}``.
The compute axis is in forward-pass equivalents (zobench.compute: a backward or a JVP tangent
counts as 2 forwards), so ZO and FO lines are compared at equal compute; accuracy against compute
plots each cell's test score with its 95% interval against its runs' total forward-pass equivalents.
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
from zobench.compute import equivalents, pass_kind

# convergence x axes: column of metrics.jsonl (or derived) -> axis label
X_AXES = {"step": "steps", "forward_passes": "forward passes",
          "forward_pass_equivalents": "forward-pass equivalents (backward, JVP tangent = 2 forwards)"}

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


def read_metrics(run_dir: Path, kind: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, dev rows) of one run's metrics.jsonl; dev rows get forward_passes from training rows.
    With the run's pass ``kind`` (zobench.compute.pass_kind) both get ``forward_pass_equivalents``."""
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
    if kind is not None:
        train, dev = (_with_equivalents(f, kind) for f in (train, dev))
    return train.reset_index(drop=True), dev.reset_index(drop=True)


def _with_equivalents(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    if df.empty or "forward_passes" not in df:
        return df
    return df.assign(forward_pass_equivalents=[equivalents(fp, step, kind) if pd.notna(fp) else None
                                               for fp, step in zip(df["forward_passes"], df["step"])])


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


def plot_convergence(runs: pd.DataFrame, root: str | Path, out_dir: str | Path,
                     x_axes: tuple[str, ...] = tuple(X_AXES)) -> list[Path]:
    """Loss and dev score against each of ``x_axes`` (steps, forward passes, forward-pass equivalents);
    one figure per (model, task)."""
    unknown = [x for x in x_axes if x not in X_AXES]
    if unknown or not x_axes:
        raise ValueError(f"x_axes={list(x_axes)!r}: choose from {', '.join(X_AXES)}")
    plt, root, paths = _matplotlib(), Path(root), []
    for panel, cells in _cells(runs):
        fig, axes = plt.subplots(2, len(x_axes), figsize=(5 * len(x_axes), 7), squeeze=False)
        metric = None
        for label, cell_runs in cells.items():
            metrics = [read_metrics(root / r["run_dir"], pass_kind(r.to_dict())) for _, r in cell_runs.iterrows()]
            if metric is None:
                metric = str(cell_runs["metric"].iloc[0]) if "metric" in cell_runs else "accuracy"
            dev_col = f"dev_{metric}"
            for col, x in enumerate(x_axes):
                loss = _mean_curve([t for t, _ in metrics], x, "loss")
                dev = _mean_curve([d for _, d in metrics], x, dev_col)
                axes[0, col].plot(loss[x], loss["loss"], label=label, lw=1)
                axes[1, col].plot(dev[x], dev[dev_col], marker="o", ms=3, label=label, lw=1)
        for col, x in enumerate(X_AXES[x] for x in x_axes):
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


def plot_accuracy_vs_compute(runs: pd.DataFrame, out_dir: str | Path, value: str = "test_score") -> list[Path]:
    """Test score (mean over seeds, 95% interval) against total forward-pass equivalents, one point per cell."""
    from zobench.aggregate.seeds import SeedStats

    plt, paths = _matplotlib(), []
    for panel, cells in _cells(runs):
        points = []
        for label, r in cells.items():
            if "forward_pass_equivalents" not in r or value not in r:
                continue
            x = pd.to_numeric(r["forward_pass_equivalents"], errors="coerce").mean()
            s = SeedStats.of(100 * pd.to_numeric(r[value], errors="coerce"))
            if pd.notna(x) and s.n:
                points.append((label, x, s))
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for label, x, s in points:
            err = [[s.mean - s.lo], [s.hi - s.mean]] if s.has_interval else None
            ax.errorbar([x], [s.mean], yerr=err, fmt="o", capsize=3)
            ax.annotate(f"{label} (n={s.n})", (x, s.mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="forward-pass equivalents (backward, JVP tangent = 2 forwards)", ylabel=f"{value} ×100",
               title=f"Accuracy vs compute — {' / '.join(map(str, panel))} (95% CI over seeds)")
        paths += _save(fig, Path(out_dir), _slug("accuracy-vs-compute", *panel))
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
            + plot_accuracy_vs_compute(runs, out_dir) + plot_memory_vs_seq_len(runs, out_dir))
