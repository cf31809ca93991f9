"""Figures: a fixed style per optimizer and tuning scheme, labels that say what was measured, seed bands,
and files a paper can use (PNG at 300 dpi and PDF, printed width, legend outside the axes)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from zobench import ROOT
from zobench.aggregate import style
from zobench.aggregate.load import load_runs
from zobench.aggregate.plots import (memory_label, plot_accuracy_vs_compute, plot_accuracy_vs_memory, plot_all,
                                     plot_convergence, plot_memory_vs_seq_len)

BASE = dict(status="completed", error=None, model="tiny-opt", task="multirc", dtype="bf16", template="mezo",
            metric="f1", lr=1e-3, eps=1e-3, steps_budget=8, steps=8, forward_passes=16, forward_passes_per_step=2,
            best_dev_score=0.5, test_score=0.5, test_f1=0.5, peak_memory_bytes=2 * 2**30,
            inference_peak_memory_bytes=2**30, step_time_ms=10.0, device="cuda", batch_size=4,
            memory_method="cuda_allocator", seq_len=128)


def _run(root: Path, name: str, metrics: bool = True, **fields) -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({**BASE, **fields}))
    if metrics:
        seed = fields.get("seed", 0)
        rows = [{"step": s, "loss": 1.0 / s + 0.01 * seed, "forward_passes": 2 * s} for s in range(1, 9)]
        rows += [{"step": s, "dev_f1": 0.4 + 0.02 * s + 0.01 * seed} for s in (4, 8)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def grid(tmp_path):
    for opt in ("zo_sgd", "fo_adam"):
        for tuning in ("lora", "prefix"):
            for seed in range(2):
                _run(tmp_path, f"{opt}-{tuning}-{seed}", optimizer=opt, tuning=tuning, seed=seed,
                     test_score=0.6 + 0.05 * seed, test_f1=0.6 + 0.05 * seed,
                     peak_memory_bytes=(2 + seed) * 2**30)
            for seq_len in (256, 512):  # memory against length: not trained cells of their own
                _run(tmp_path, f"{opt}-{tuning}-L{seq_len}", metrics=False, optimizer=opt, tuning=tuning, seed=9, lr=1e-4,
                     seq_len=seq_len, peak_memory_bytes=seq_len / 64 * 2**30, best_dev_score=0.1)
    return tmp_path


def test_every_configured_optimizer_and_scheme_has_a_fixed_style():
    optimizers = {p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml")}
    schemes = {p.stem for p in (ROOT / "conf" / "tuning").glob("*.yaml")}
    assert optimizers <= set(style.OPTIMIZER_COLORS) and optimizers <= set(style.OPTIMIZER_NAMES)
    assert schemes <= set(style.TUNING_LINESTYLES) and schemes <= set(style.TUNING_MARKERS)
    colors = [style.OPTIMIZER_COLORS[o] for o in optimizers]
    assert len(set(colors)) == len(colors)  # no two optimizers share a colour
    assert len({str(style.TUNING_LINESTYLES[t]) for t in schemes}) == len(schemes)
    # an unknown name: the same pick every time (CRC-32, not Python's salted hash)
    assert style.optimizer_color("my_new_zo") == style.optimizer_color("my_new_zo")
    assert style.optimizer_color("my_new_zo").startswith("#") and style.tuning_linestyle("adapters") is not None
    assert style.cell_style("lora", "zo_sgd") == {"color": "#0072B2", "linestyle": "--", "marker": "s"}


def test_memory_label_names_what_was_measured():
    assert memory_label(pd.DataFrame({"peak_memory_gib": [1.0], "memory_method": ["rss_hwm"], "device": ["cpu"]})) \
        == "peak CPU resident memory (GiB, RSS high-water)"
    assert "GPU" in memory_label(pd.DataFrame({"peak_memory_gib": [1.0], "memory_method": ["cuda_allocator"]}))
    assert memory_label(pd.DataFrame({"peak_memory_gib": [1.0], "device": ["cpu"]})) == "peak CPU memory (GiB)"
    assert "mixed" in memory_label(pd.DataFrame({"peak_memory_gib": [1.0, 2.0],
                                                 "memory_method": ["rss_hwm", "cuda_allocator"]}))


def test_figures_are_paper_sized_and_labelled(grid, monkeypatch):
    import matplotlib.figure

    seen = []
    real = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
        seen.append((Path(path).name, fig.get_figwidth(), texts, fig.legends, fig.get_axes(), kwargs))
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    runs = load_runs(grid)
    paths = plot_all(runs, grid, grid / "fig")
    names = {p.name for p in paths}
    assert names == {f"{kind}_tiny-opt_multirc.{ext}" for ext in ("png", "pdf") for kind in
                     ("convergence", "accuracy-vs-memory", "accuracy-vs-compute", "memory-vs-seq-len")}
    assert all(p.stat().st_size > 0 for p in paths)
    for name, width, texts, legends, axes, kwargs in seen:
        title = next(t for t in texts if t.startswith(("Convergence", "Test score", "Memory")))
        assert "tiny-opt" in title and "MultiRC" in title and "cuda" in title and "bf16" in title and "batch 4" in title
        assert width in (style.COLUMN_IN, style.TEXT_IN)
        assert legends and not any(ax.get_legend() for ax in axes)  # one legend, outside the axes
        assert not any("accuracy" in t for t in texts)  # MultiRC's metric is F1
        assert "FO-Adam / LoRA" in " ".join(texts) and "ZO-SGD / prefix" in " ".join(texts)
        if name.endswith(".png"):
            assert kwargs["dpi"] >= 200
        all_labels = " ".join(ax.get_xlabel() + " " + ax.get_ylabel() for ax in axes)
        if "memory" in name:
            assert "peak GPU memory (GiB, CUDA allocator)" in all_labels
        if name.startswith(("accuracy", "convergence")):
            assert "F1 (%)" in all_labels
    conv = [s for s in seen if s[0].startswith("convergence")][0]
    ax = conv[4][0]
    assert conv[1] == style.TEXT_IN and all(float(t).is_integer() for t in ax.get_xticks())
    assert any(len(ax.collections) for ax in conv[4])  # the seed bands (2 seeds a cell)
    # one x axis: one column wide
    one = plot_convergence(runs, grid, grid / "one", x_axes=("step",))
    assert one and seen[-1][1] == style.COLUMN_IN


def test_same_optimizer_same_colour_across_figures(grid, monkeypatch):
    import matplotlib.figure

    colours = {}
    real = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        for ax in fig.get_axes():
            for line in ax.get_lines():
                if line.get_label().startswith(("ZO-SGD", "FO-Adam")):
                    colours.setdefault(line.get_label().split(" (")[0], set()).add(line.get_color())
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    runs = load_runs(grid)
    plot_convergence(runs, grid, grid / "fig")
    plot_memory_vs_seq_len(runs, grid / "fig")
    assert colours["ZO-SGD / LoRA"] == colours["ZO-SGD / prefix"] == {"#0072B2"}
    assert colours["FO-Adam / LoRA"] == {"#000000"}
    assert plot_accuracy_vs_memory(runs, grid / "fig") and plot_accuracy_vs_compute(runs, grid / "fig")


def test_a_precision_study_beside_fp32_cells_gets_a_figure_per_dtype_and_the_loss_a_log_axis(grid, monkeypatch):
    """Runs of one model and task in several dtypes are not seeds or grid points of one cell: dev selection
    would pick a dtype, and a legend would not say which. Each dtype gets its own figures, the dtype in the
    title and the file name; the zero-shot line is drawn only in its own dtype. A diverged run (loss 10^4, as
    Forward-Grad full's) would flatten every other loss curve on a linear axis: the loss axis is log."""
    import matplotlib.figure

    seen = {}
    real = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        seen[Path(path).name] = ([t.get_text() for t in fig.findobj(matplotlib.text.Text)], fig.get_axes())
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    for seed in range(2):
        _run(grid, f"zo_sgd-prefix-fp32-{seed}", optimizer="zo_sgd", tuning="prefix", seed=seed, dtype="fp32",
             test_score=0.9, test_f1=0.9, best_dev_score=0.9)
    _run(grid, "zero-shot-fp32", metrics=False, optimizer="zo_sgd", tuning="full", seed=0, dtype="fp32",
         steps_budget=0, steps=0, test_score=0.3, test_f1=0.3)
    runs = load_runs(grid)
    names = {p.name for p in plot_convergence(runs, grid, grid / "fig") + plot_accuracy_vs_memory(runs, grid / "fig")}
    assert names == {f"{kind}_tiny-opt_multirc_{dtype}.{ext}" for kind in ("convergence", "accuracy-vs-memory")
                     for dtype in ("bf16", "fp32") for ext in ("png", "pdf")}
    texts, axes = seen["convergence_tiny-opt_multirc_fp32.png"]
    title = next(t for t in texts if t.startswith("Convergence"))
    assert "fp32" in title and "bf16" not in title
    assert "FO-Adam / LoRA" not in " ".join(texts)  # the bf16 cells stay in their own figure
    assert axes[0].get_yscale() == "log" and axes[-1].get_yscale() == "linear"  # loss row log, dev row linear
    assert any("zero-shot" in t for t in seen["accuracy-vs-memory_tiny-opt_multirc_fp32.png"][0])
    assert not any("zero-shot" in t for t in seen["accuracy-vs-memory_tiny-opt_multirc_bf16.png"][0])


def test_a_long_legend_grows_the_figure_instead_of_collapsing_its_axes(tmp_path):
    """The CPU study's accuracy-vs-memory figure has ~20 cells in a one-column legend: in a fixed 3-inch figure
    constrained layout collapsed the axes to nothing and drew the legend over them (with a UserWarning)."""
    import warnings

    for i, opt in enumerate(list(style.OPTIMIZER_NAMES)[:20]):
        _run(tmp_path, f"{opt}", optimizer=opt, tuning="prefix", seed=0, peak_memory_bytes=(1 + i / 10) * 2**30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied because axes sizes collapsed to zero"
        paths = plot_accuracy_vs_memory(load_runs(tmp_path), tmp_path / "fig")
    assert paths
