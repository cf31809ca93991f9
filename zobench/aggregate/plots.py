"""Figures from the runs: convergence, accuracy against peak memory and against compute, memory
against sequence length.

Each figure is written as PNG (300 dpi) and PDF, one per (model, task), drawn at a paper's printed
size (zobench/aggregate/style.py: 3.3 in for one column, 6.9 in across both; 7 pt text) with the
legend below the axes. Every figure uses the same colour per optimizer and line style / marker per
tuning scheme (style.py), and its title names the model, task, device, dtype and batch size.

A line or point stands for one (tuning, optimizer) cell at the configuration dev selected (the same
choice the tables make), averaged over its seeds; the shaded band of a curve is the min–max over
seeds (with 2–5 seeds a Student-t band would be several times wider than the data). Convergence
reads each run's ``metrics.jsonl``: training rows ``{step, loss, lr, step_time_ms, forward_passes}``
and dev rows ``{step, dev_accuracy, dev_<metric>}``; the training loss is a running mean over a
window named on the axis (a ZO step's loss is one minibatch's, too noisy to read raw). The compute
axis is in forward-pass equivalents (zobench.compute: a backward or a JVP tangent counts as 2
forwards), so ZO and FO lines are compared at equal compute; accuracy against compute and against
memory plots each cell's test score with its 95% interval (Student-t over seeds; one seed: the run's
bootstrap over eval examples, said in the legend). Memory is labelled with what was measured (the
summary's ``memory_method``: the CUDA allocator's peak, or the process's CPU resident-set high-water
mark). Memory against sequence length takes ``seq_len`` (the summary's, else ``trainer.max_length``
from config.yaml) and needs at least two lengths per cell.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from zobench.aggregate import style
from zobench.aggregate.load import STATUS_OK
from zobench.aggregate.select import select_by_dev
from zobench.compute import equivalents, pass_kind

# convergence x axes: column of metrics.jsonl (or derived) -> axis label
X_AXES = {"step": "steps", "forward_passes": "forward passes",
          "forward_pass_equivalents": "forward-pass equivalents\n(backward or JVP tangent = 2 forwards)"}

CELL = ["tuning", "optimizer"]
PANEL = ["model", "task"]
LOSS_POINTS = 40  # the loss's running-mean window: the longest run's steps / LOSS_POINTS (at least 1)

MEMORY_METHODS = {  # zobench.measure.PeakMemory.method -> what the number is
    "cuda_allocator": "peak GPU memory (GiB, CUDA allocator)",
    "rss_hwm": "peak CPU resident memory (GiB, RSS high-water)",
    "rss_sampled": "peak CPU resident memory (GiB, sampled RSS)",
}


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
    # No creation date in the files: re-rendering the same runs gives the same bytes. No bbox_inches="tight":
    # constrained layout already fits the legend and labels, and the figure keeps its printed width.
    fig.savefig(paths[0], dpi=style.DPI, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
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
    """Per (model, task) panel: (panel, {(tuning, optimizer): dev-selected runs}, every run of the panel)."""
    done = runs[runs["status"].eq(STATUS_OK)] if "status" in runs else runs
    if "steps_budget" in done:
        done = done[pd.to_numeric(done["steps_budget"], errors="coerce").fillna(0) > 0]
    for panel, group in _panels(done):
        cells = {}
        for cell, cell_runs in group.groupby([c for c in CELL if c in group.columns], sort=True):
            cells[_cell_key(cell)] = select_by_dev(cell_runs).runs
        yield panel, cells, group


def _panels(done: pd.DataFrame):
    """(panel, its runs): one per model and task, and per dtype where that model and task's runs differ in it
    (a precision study beside fp32 cells): curves in different dtypes are not one cell's seeds or grid points,
    and dev selection must not choose between them. The dtype, when split, ends the panel (and the file name)."""
    for panel, group in done.groupby([c for c in PANEL if c in done.columns], sort=True):
        panel = panel if isinstance(panel, tuple) else (panel,)
        dtypes = _values(group, "dtype")
        if len(dtypes) > 1:
            for dtype in dtypes:
                yield panel + (dtype,), group[group["dtype"].astype(str).eq(dtype)]
        else:
            yield panel, group


def _cell_key(cell) -> tuple:
    cell = cell if isinstance(cell, tuple) else (cell,)
    return (cell + (None, None))[:2] if len(cell) < 2 else cell


# -- labels -------------------------------------------------------------------------------------------
def _values(runs: pd.DataFrame, column: str) -> list[str]:
    if column not in runs:
        return []
    vals = runs[column].dropna()
    if pd.api.types.is_numeric_dtype(vals):
        vals = vals.map(lambda v: f"{v:g}")
    return sorted(set(vals.astype(str)), key=lambda v: (len(v), v))


def _title(what: str, panel: tuple, runs: pd.DataFrame) -> str:
    """``what``, model and task on line 1; device, dtype and batch size (several when they vary) on line 2."""
    model, task = (list(panel) + ["", ""])[:2]
    setting = [", ".join(_values(runs, "device")), ", ".join(_values(runs, "dtype"))]
    batch = _values(runs, "batch_size")
    if batch:
        setting.append("batch " + ", ".join(batch))
    head = " · ".join(x for x in (str(model), style.task_name(task)) if x)
    return f"{what}: {head}\n" + " · ".join(x for x in setting if x)


def _metric(runs: pd.DataFrame) -> str:
    vals = _values(runs, "metric")
    return vals[0] if len(vals) == 1 else "score"


def _score_label(split: str, runs: pd.DataFrame, value: str = "test_score") -> str:
    if value.startswith("test_") and value != "test_score":
        metric = value[len("test_"):]
    else:
        metric = _metric(runs)
    return f"{split} {style.metric_name(metric)} (%)"


def memory_label(runs: pd.DataFrame) -> str:
    """What ``peak_memory_gib`` measured, from the runs' ``memory_method`` (else their ``device``)."""
    methods = _values(runs[runs["peak_memory_gib"].notna()] if "peak_memory_gib" in runs else runs, "memory_method")
    if len(methods) == 1:
        return MEMORY_METHODS.get(methods[0], f"peak memory (GiB, {methods[0]})")
    if methods:
        return "peak memory (GiB; mixed: " + ", ".join(methods) + ")"
    devices = {d.split(":")[0] for d in _values(runs, "device")}
    if devices == {"cuda"}:
        return "peak GPU memory (GiB)"
    if devices == {"cpu"}:
        return "peak CPU memory (GiB)"
    return "peak memory (GiB)"


def _legend(fig, axes, ncols: int | None = None) -> None:
    """One legend for the figure, below the axes (constrained layout makes room: nothing overlaps)."""
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        ncols = ncols or _legend_columns(fig.get_figwidth(), labels)
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncols=ncols)


def _legend_columns(width_in: float, labels: list[str]) -> int:
    """Columns that fit ``width_in``: each takes a handle (~0.5 in) and its longest label (~0.055 in a character
    at the legend's font size)."""
    longest = max((len(lab) for lab in labels), default=1)
    return max(1, min(len(labels), int(width_in // (0.5 + 0.055 * longest))))


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))


# -- convergence ----------------------------------------------------------------------------------------
def _seed_band(frames: list[pd.DataFrame], x: str, y: str) -> pd.DataFrame:
    """Per x: mean, min and max of ``y`` over the runs (seeds), and how many runs have that x."""
    frames = [f[[x, y]].dropna() for f in frames if not f.empty and x in f and y in f]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=[x, "mean", "min", "max", "n"])
    both = pd.concat(frames)
    return (both.groupby(x)[y].agg(["mean", "min", "max", "count"]).rename(columns={"count": "n"})
            .reset_index().sort_values(x))


def _smooth(train: pd.DataFrame, window: int) -> pd.DataFrame:
    if train.empty or "loss" not in train or window <= 1:
        return train
    train = train.sort_values("step")
    return train.assign(loss=train["loss"].rolling(window, min_periods=1).mean())


def _draw(ax, band: pd.DataFrame, x: str, key: tuple, label: str, marker: bool) -> None:
    if band.empty:
        return
    kw = style.cell_style(*key)
    if not marker:
        kw.pop("marker")
    ax.plot(band[x], band["mean"], label=label, **kw)
    spread = band[band["n"] >= 2]
    if not spread.empty:
        ax.fill_between(spread[x], spread["min"], spread["max"], color=kw["color"], alpha=0.18, lw=0)


def plot_convergence(runs: pd.DataFrame, root: str | Path, out_dir: str | Path,
                     x_axes: tuple[str, ...] = tuple(X_AXES)) -> list[Path]:
    """Training loss and dev score against each of ``x_axes`` (steps, forward passes, forward-pass
    equivalents); one figure per (model, task): one column wide for one x axis, two for more."""
    unknown = [x for x in x_axes if x not in X_AXES]
    if unknown or not x_axes:
        raise ValueError(f"x_axes={list(x_axes)!r}: choose from {', '.join(X_AXES)}")
    plt, root, paths = _matplotlib(), Path(root), []
    for panel, cells, group in _cells(runs):
        metric = _metric(group)
        dev_col = f"dev_{metric}"
        curves = {}
        for key, cell_runs in cells.items():
            metrics = [read_metrics(root / r["run_dir"], pass_kind(r.to_dict())) for _, r in cell_runs.iterrows()]
            curves[key] = (metrics, len(cell_runs))
        longest = max((int(t["step"].max()) for ms, _ in curves.values() for t, _ in ms
                       if not t.empty and "step" in t), default=1)
        window = max(1, round(longest / LOSS_POINTS))
        with plt.rc_context(style.rc()):
            width = style.COLUMN_IN if len(x_axes) == 1 else style.TEXT_IN
            labels = {key: f"{style.cell_label(*key)} (n={n})" for key, (_, n) in curves.items()}
            legend_rows = -(-len(labels) // _legend_columns(width, list(labels.values())))
            # the axes keep ~3.2 in whatever the legend below them takes (~0.16 in a row)
            fig, axes = plt.subplots(2, len(x_axes), figsize=(width, 3.2 + 0.16 * legend_rows), squeeze=False,
                                     sharex="col", sharey="row")
            for key, (metrics, n) in curves.items():
                label = labels[key]
                for col, x in enumerate(x_axes):
                    loss = _seed_band([_smooth(t, window) for t, _ in metrics], x, "loss")
                    dev = _seed_band([d.assign(**{dev_col: 100 * d[dev_col]}) if dev_col in d else d
                                      for _, d in metrics], x, dev_col)
                    _draw(axes[0, col], loss, x, key, label, marker=False)
                    _draw(axes[1, col], dev, x, key, label, marker=True)
            loss_label = "training loss" + (f"\n(mean of {window} steps)" if window > 1 else "")
            for ax in axes[0]:
                ax.set_yscale("log")  # a diverged run's loss (10^3-10^4) would flatten every other curve to 0
            axes[0, 0].set_ylabel(loss_label)
            axes[1, 0].set_ylabel(f"dev {style.metric_name(metric)} (%)")
            for col, x in enumerate(x_axes):
                axes[1, col].set_xlabel(X_AXES[x])
                for row in range(2):
                    _integer_ticks(axes[row, col])
            fig.suptitle(_title("Convergence", panel, group) + " · band: min–max over seeds")
            _legend(fig, axes[::-1])  # the dev row's handles: line style and marker
            paths += _save(fig, Path(out_dir), _slug("convergence", *panel))
    return paths


# -- test score against memory and compute --------------------------------------------------------------
def _score_point(r: pd.DataFrame, value: str):
    """(mean, lo, hi, legend note) of a cell's test score ×100: Student-t over seeds; one seed, its bootstrap."""
    from zobench.aggregate.seeds import SeedStats

    s = SeedStats.of(100 * pd.to_numeric(r[value], errors="coerce"))
    if not s.n:
        return None
    if s.has_interval:
        return s.mean, s.lo, s.hi, f"n={s.n}"
    lo_col, hi_col = f"{value}_ci95_lo", f"{value}_ci95_hi"
    if s.n == 1 and lo_col in r and hi_col in r and r[lo_col].notna().all() and r[hi_col].notna().all():
        return s.mean, 100 * float(r[lo_col].iloc[0]), 100 * float(r[hi_col].iloc[0]), "n=1, eval bootstrap"
    return s.mean, s.mean, s.mean, f"n={s.n}"


def _untrained(runs: pd.DataFrame, panel: tuple, value: str) -> list[tuple[str, float]]:
    """The panel's cells that train nothing (zero-shot, ICL: ``steps_budget`` 0): (legend label, mean test
    score ×100), drawn as reference lines: they have no compute or training memory to stand at."""
    if "steps_budget" not in runs or value not in runs:
        return []
    done = runs[runs["status"].eq(STATUS_OK)] if "status" in runs else runs
    done = done[pd.to_numeric(done["steps_budget"], errors="coerce").fillna(0).eq(0)]
    for col, want in zip(PANEL + ["dtype"], panel):  # the dtype where _panels split by it
        if col in done:
            done = done[done[col].astype(str).eq(str(want))]
    out = []
    for tuning, r in done.groupby("tuning", sort=True) if "tuning" in done else []:
        score = pd.to_numeric(r[value], errors="coerce").dropna()
        if len(score):
            name = "ICL" if tuning == "icl" else "zero-shot"
            out.append((f"{name} (n={len(score)})", 100 * float(score.mean())))
    return out


def _dodge(xs: list[float], step: float = 0.025) -> list[float]:
    """Offsets in data units (``step`` of the x range) that set cells at the same x apart (equal compute:
    their bars would hide each other), so each is drawn beside the true x, symmetric about it."""
    span = (max(xs) - min(xs)) or max(abs(xs[0]), 1.0)
    out, seen = [0.0] * len(xs), {}
    for i, x in enumerate(xs):
        seen.setdefault(round(x, 9), []).append(i)
    for same in seen.values():
        for k, i in enumerate(same):
            out[i] = (k - (len(same) - 1) / 2) * step * span
    return out


def _score_against(runs: pd.DataFrame, out_dir, x_col: str, what: str, stem: str, xlabel, value: str) -> list[Path]:
    plt, paths = _matplotlib(), []
    for panel, cells, group in _cells(runs):
        points = []
        for key, r in cells.items():
            if x_col not in r or value not in r:
                continue
            xs = pd.to_numeric(r[x_col], errors="coerce").dropna()
            p = _score_point(r, value)
            if len(xs) and p is not None:
                points.append((key, xs, p))
        if not points:
            continue
        untrained = _untrained(runs, panel, value)
        labels = [f"{style.cell_label(*key)} ({note})" for key, _, (_, _, _, note) in points]
        with plt.rc_context(style.rc()):
            # the axes keep ~3 in whatever the one-column legend below them takes (~0.16 in a row)
            fig, ax = plt.subplots(figsize=(style.COLUMN_IN, 2.4 + 0.16 * (len(labels) + len(untrained))))
            dodge = _dodge([float(xs.mean()) for _, xs, _ in points])
            for (key, xs, (mean, lo, hi, note)), dx, label in zip(points, dodge, labels):
                kw = style.cell_style(*key)
                xerr = [[xs.mean() - xs.min()], [xs.max() - xs.mean()]] if len(xs) > 1 else None
                ax.errorbar([xs.mean() + dx], [mean], yerr=[[mean - lo], [hi - mean]], xerr=xerr, fmt=kw["marker"],
                            color=kw["color"], ms=5, capsize=2, elinewidth=0.8, label=label)
            for name, score in untrained:
                ax.axhline(score, color=style.optimizer_color(None), lw=0.9, ls=(0, (4, 2)), label=name)
            ax.set(xlabel=xlabel(group) if callable(xlabel) else xlabel, ylabel=_score_label("test", group, value))
            ax.margins(x=0.15, y=0.15)
            fig.suptitle(_title(what, panel, group) + "\nbars: 95% CI of the mean; x: min–max over seeds")
            _legend(fig, ax, ncols=1)
            paths += _save(fig, Path(out_dir), _slug(stem, *panel))
    return paths


def plot_accuracy_vs_memory(runs: pd.DataFrame, out_dir: str | Path, value: str = "test_score") -> list[Path]:
    """Test score (mean over seeds, 95% interval) against peak memory, one point per (tuning, optimizer) cell."""
    return _score_against(runs, out_dir, "peak_memory_gib", "Test score vs memory", "accuracy-vs-memory",
                          memory_label, value)


def plot_accuracy_vs_compute(runs: pd.DataFrame, out_dir: str | Path, value: str = "test_score") -> list[Path]:
    """Test score (mean over seeds, 95% interval) against total forward-pass equivalents, one point per cell."""
    return _score_against(runs, out_dir, "forward_pass_equivalents", "Test score vs compute", "accuracy-vs-compute",
                          "training forward-pass equivalents\n(backward or JVP tangent = 2 forwards)", value)


# -- memory against sequence length ---------------------------------------------------------------------
def plot_memory_vs_seq_len(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Peak memory against sequence length (``seq_len``), one line per (tuning, optimizer) cell, min–max band."""
    plt, paths = _matplotlib(), []
    if "seq_len" not in runs or "peak_memory_gib" not in runs:
        return paths
    done = runs[runs["status"].eq(STATUS_OK) & runs["seq_len"].notna() & runs["peak_memory_gib"].notna()]
    for panel, group in _panels(done):
        lines = {}
        for cell, cell_runs in group.groupby([c for c in CELL if c in group.columns], sort=True):
            band = _seed_band([cell_runs], "seq_len", "peak_memory_gib")
            if len(band) >= 2:
                lines[_cell_key(cell)] = band
        if not lines:
            continue
        with plt.rc_context(style.rc()):
            fig, ax = plt.subplots(figsize=(style.COLUMN_IN, 2.8))
            for key, band in lines.items():
                _draw(ax, band, "seq_len", key, style.cell_label(*key), marker=True)
            ax.set(xlabel="sequence length (tokens, trainer.max_length)", ylabel=memory_label(group))
            _integer_ticks(ax)
            fig.suptitle(_title("Memory vs sequence length", panel, group))
            _legend(fig, ax)
            paths += _save(fig, Path(out_dir), _slug("memory-vs-seq-len", *panel))
    return paths


def plot_all(runs: pd.DataFrame, root: str | Path, out_dir: str | Path) -> list[Path]:
    return (plot_convergence(runs, root, out_dir) + plot_accuracy_vs_memory(runs, out_dir)
            + plot_accuracy_vs_compute(runs, out_dir) + plot_memory_vs_seq_len(runs, out_dir))
