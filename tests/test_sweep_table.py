"""The default table of any sweep (zobench/aggregate/sweep_table.py), what ``zobench-aggregate`` writes with and
without ``--table``, and W&B run names from a sweep's overrides (zobench.wandb_logger.short_run_name).

Run directories are synthetic: a summary.json (and where it matters a config.yaml) written here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from zobench.aggregate import build_sweep_tables, load_runs
from zobench.aggregate.cli import aggregate, main, table_names
from zobench.aggregate.layout import layout_names
from zobench.aggregate.sweep_table import to_csv, to_latex, to_markdown
from zobench.stats import seed_interval

MIB, GIB = 2**20, 2**30
BASE = dict(status="completed", error=None, model="tiny-llama", task="sst2", tuning="full", dtype="fp32",
            template="mezo", metric="accuracy", loss="lm", selection="dev_metric", steps_budget=4, steps=4,
            forward_passes=8, forward_passes_per_step=2, peak_memory_bytes=3 * GIB, inference_peak_memory_bytes=2 * GIB,
            step_time_ms=1500.0, device="cpu", best_dev_score=0.5, test_score=0.5, data={"num_dev": 8})
ZO = dict(optimizer="zo_sgd", lr=1e-3, eps=1e-3, family="zo", variant="paper")
FO = dict(optimizer="fo_adam", lr=1e-4, eps=None, family="fo", variant="none", forward_passes=4,
          peak_memory_bytes=6 * GIB)


def write_run(root: Path, name: str, **fields) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({**BASE, **fields}))
    return run


@pytest.fixture
def sweep(tmp_path) -> Path:
    """optimizer=zo_sgd,fo_adam x seed=0,1,2 on SST-2, a diverged lr, and a COPA cell with a failed seed."""
    runs = tmp_path / "runs"
    for seed, score in enumerate((0.60, 0.64, 0.65)):
        write_run(runs, f"zo-s{seed}", seed=seed, test_score=score, best_dev_score=score - 0.05, **ZO)
        write_run(runs, f"fo-s{seed}", seed=seed, test_score=score + 0.2, best_dev_score=score, **FO)
    write_run(runs, "zo-lr1", seed=0, status="diverged", error="Diverged: loss nan at step 3", test_score=None,
              **{**ZO, "lr": 1.0})
    write_run(runs, "copa-s0", task="copa", seed=0, test_score=0.7, test_score_ci95=[0.61, 0.79],
              peak_memory_bytes=100 * MIB, inference_peak_memory_bytes=80 * MIB, step_time_ms=3.25, **ZO)
    write_run(runs, "copa-s1", task="copa", seed=1, status="failed", test_score=None,
              error="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback (most recent call last): ...",
              **ZO)
    return runs


def _tables(runs: Path) -> dict:
    return {t.task: t for t in build_sweep_tables(load_runs(runs))}


def test_rows_are_the_varying_keys_with_score_interval_memory_and_time(sweep):
    tables = _tables(sweep)
    assert set(tables) == {"sst2", "copa"}  # one table per task
    sst2 = tables["sst2"]
    assert sst2.keys == ["optimizer", "lr", "eps"]  # seed is averaged over; variant follows optimizer
    assert sst2.dependent == {"variant": ["optimizer"]}
    assert sst2.fixed["model"] == "tiny-llama" and sst2.fixed["steps_budget"] == 4 and "seed" not in sst2.fixed
    assert [(r.values["optimizer"], r.values["lr"]) for r in sst2.rows] == [
        ("fo_adam", 1e-4), ("zo_sgd", 1e-3), ("zo_sgd", 1.0)]
    fo, zo, diverged = sst2.rows
    ref = seed_interval([60.0, 64.0, 65.0])
    assert (zo.score.n, zo.score.interval) == (3, "t")
    assert (zo.score.mean, zo.score.lo, zo.score.hi) == pytest.approx((ref["mean"], ref["lo"], ref["hi"]))
    assert fo.peak_bytes == 6 * GIB and fo.memory_ratio == 3.0 and fo.step_time_ms == 1500.0
    assert diverged.score.n == 0 and diverged.not_completed() == "1 diverged"

    md = to_markdown(sst2)
    half = (ref["hi"] - ref["lo"]) / 2
    assert "| optimizer | lr | eps | test accuracy ×100 (95% CI) | n | dev accuracy ×100 | peak memory (GiB) | " \
           "× inference | step time (ms) | forward passes | not completed |" in md
    assert f"| zo_sgd | 0.001 | 0.001 | 63.0 ± {half:.1f} | 3 | 58.0 | 3.00 | 1.50 | 1,500 | 8 |  |" in md
    assert f"| fo_adam | 0.0001 | — | 83.0 ± {half:.1f} | 3 | 63.0 | 6.00 | 3.00 | 1,500 | 4 |  |" in md
    assert "| zo_sgd | 1 | 0.001 | — | 0 | — | — | — | — | — | 1 diverged |" in md
    assert "Fixed: model=tiny-llama, tuning=full, steps_budget=4" in md
    assert "Set by the columns: variant (by optimizer)." in md
    # the failure is listed under the table it belongs to, with its error
    assert "- diverged: zo-lr1 (optimizer=zo_sgd, lr=1, eps=0.001, seed=0): Diverged: loss nan at step 3" in md
    assert "copa" not in md


def test_memory_and_time_for_every_task_and_failures_under_their_task(sweep):
    copa = _tables(sweep)["copa"]
    assert copa.keys == [] and copa.fixed["optimizer"] == "zo_sgd"
    (row,) = copa.rows
    assert row.score.n == 1 and row.score.interval == "bootstrap"  # one seed: the run's interval over examples
    md = to_markdown(copa)
    assert "peak memory (MiB)" in md  # every peak under 1 GiB: MiB, and the header says so
    assert "| 70.0 (61.0–79.0)‡ | 1 | 50.0 | 100 | 1.25 | 3.25 | 8 | 1 failed |" in md
    # the error cut to its first line
    assert "- failed: copa-s1 (seed=1): RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" in md
    assert "Traceback" not in md
    assert "zo-lr1" not in md


def test_csv_holds_numbers_and_every_configuration(sweep):
    tables = build_sweep_tables(load_runs(sweep))
    frame = pd.read_csv(pd.io.common.StringIO(to_csv(tables)))
    assert list(frame.columns[:6]) == ["table", "task", "metric", "optimizer", "lr", "eps"]
    zo = frame[(frame.task == "sst2") & (frame.optimizer == "zo_sgd") & (frame.lr == 1e-3)].iloc[0]
    assert zo["n"] == 3 and zo["mean"] == pytest.approx(63.0) and zo["peak_memory_gib"] == 3.0
    assert zo["memory_ratio"] == 1.5 and zo["step_time_ms"] == 1500.0 and zo["runs"] == "zo-s0;zo-s1;zo-s2"
    assert pd.api.types.is_float_dtype(frame["lo"]) and pd.api.types.is_float_dtype(frame["lr"])
    copa = frame[frame.task == "copa"].iloc[0]
    assert copa["optimizer"] == "zo_sgd" and copa["not_completed"] == "1 failed"  # fixed keys are columns too
    tex = "\n".join(to_latex(t) for t in tables)
    assert r"\toprule" in tex and "63.0 $\\pm$" in tex


def test_default_is_the_sweep_table_and_layouts_only_when_named(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    main([str(sweep), "--no-plots", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "### Sweep — task=sst2" in printed and "### Sweep — task=copa" in printed
    assert "MeZO" not in printed  # no paper layout forced onto a user's sweep
    assert {p.name for p in out.glob("*.md")} == {"sweep.md", "tables.md"}
    assert (out / "sweep.csv").exists() and (out / "sweep.tex").exists() and (out / "runs.csv").exists()

    named = tmp_path / "named"
    main([str(sweep), "--no-plots", "--table", "memory_time", "--out", str(named)])
    assert not (named / "sweep.md").exists()

    assert table_names(None) == ["sweep"]
    assert table_names("all") == [*layout_names(), "sweep"] == table_names(["all", "sweep"])
    everything = aggregate(sweep, tables="all", out=tmp_path / "all", plots=False)  # what reproduce-tables asks for
    assert (tmp_path / "all" / "sweep.md").exists() and (tmp_path / "all" / "mezo_opt13b.md").exists()
    assert "### MeZO Table 1" in everything["markdown"] and "### Sweep — task=sst2" in everything["markdown"]
    with pytest.raises(SystemExit):
        main([str(sweep), "--table", "no_such_table"])


def test_seed_only_and_single_run_sweeps(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_run(runs, f"s{seed}", seed=seed, **ZO)
    (table,) = build_sweep_tables(load_runs(runs))
    assert table.keys == [] and len(table.rows) == 1 and table.rows[0].score.n == 2
    assert "| 50.0 ± 0.0 | 2 |" in to_markdown(table)


def test_superseded_runs_are_counted_not_rows(tmp_path):
    runs = tmp_path / "runs"
    config = {"model": {"name": "tiny-llama"}, "task": {"name": "sst2"}, "seed": 0, "device": "cpu"}
    for name, status in (("old", "failed"), ("new", "completed")):
        run = write_run(runs, name, seed=0, status=status, error="boom" if status == "failed" else None, **ZO)
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    (table,) = build_sweep_tables(load_runs(runs))
    assert len(table.rows) == 1 and table.rows[0].score.n == 1 and table.problems.empty
    assert "1 superseded run (re-run since) left out" in to_markdown(table)


# -- W&B run names ------------------------------------------------------------------------------------------
def test_short_run_name_keeps_the_overrides_the_sweep_varies():
    from zobench.wandb_logger import short_run_name, varying_keys

    job = ["model=tiny-llama", "task=copa", "optimizer=zo_sgd", "seed=1", "data.dir=/data", "hydra.verbose=true",
           "+experiment=cpu/x"]
    swept = ["model=tiny-llama", "task=copa", "optimizer=zo_sgd,fo_adam", "seed=0,1,2", "data.dir=/data"]
    assert short_run_name(job, swept) == "optimizer=zo_sgd,seed=1"
    assert short_run_name(job, {"optimizer": "zo_sgd,fo_adam", "seed": "range(0,3)"}) == "optimizer=zo_sgd,seed=1"
    # a single run, or a sweep that varies nothing: every override but paths and hydra's own
    assert short_run_name(job) == "model=tiny-llama,task=copa,optimizer=zo_sgd,seed=1,+experiment=cpu/x"
    assert short_run_name(job, ["seed=1"]) == short_run_name(job)
    assert short_run_name(["data.dir=/x"]) is None
    assert varying_keys({"a": "1,2", "b": 3, "c": "choice(x,y)", "d": "[1,2]"}) == {"a", "c"}


def test_sweep_params_read_the_sweep_and_the_command_line_wins(tmp_path):
    from omegaconf import OmegaConf

    from zobench.wandb_logger import hydra_run_name, sweep_params

    # hydra.sweeper.params (an experiment file) sweeps seed and lr; the command line pins seed and sweeps optimizer
    saved = {"hydra": {"sweeper": {"params": {"seed": "0,1,2", "optimizer.lr": "1e-3,1e-4"}},
                       "overrides": {"task": ["optimizer=zo_sgd,fo_adam", "seed=0", "data.dir=/d"]}}}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(saved))
    params = sweep_params(tmp_path)
    assert params == {"seed": "0", "optimizer.lr": "1e-3,1e-4", "optimizer": "zo_sgd,fo_adam", "data.dir": "/d"}
    assert sweep_params(tmp_path / "nowhere") is None
    hc = OmegaConf.create({"mode": "RunMode.MULTIRUN", "sweep": {"dir": str(tmp_path)},
                           "sweeper": {"params": saved["hydra"]["sweeper"]["params"]},
                           "overrides": {"task": ["seed=0", "optimizer.lr=1e-3", "optimizer=fo_adam", "data.dir=/d"]}})
    assert hydra_run_name(hc) == "optimizer.lr=1e-3,optimizer=fo_adam"
    single = OmegaConf.create({"mode": "RunMode.RUN", "overrides": {"task": ["seed=0", "data.dir=/d"]}})
    assert hydra_run_name(single) == "seed=0"
    assert hydra_run_name(OmegaConf.create({})) is None  # never raises: the run is named from its config then


def test_a_per_task_memory_layout_puts_published_numbers_beside_their_own_task_only(tmp_path):
    """memory_time without its MultiRC filter: one table per task, MeZO's MultiRC numbers beside MultiRC only."""
    from omegaconf import OmegaConf

    from zobench.aggregate import build_tables, load_published
    from zobench.aggregate.layout import TABLES_DIR, Layout

    spec = OmegaConf.to_container(OmegaConf.load(TABLES_DIR / "memory_time.yaml"))
    spec["filters"].pop("task", None)
    runs = tmp_path / "runs"
    for task in ("sst2", "multirc"):
        write_run(runs, task, task=task, seed=0, batch_size=1, max_length=400, **ZO)
    tables = {t.split["task"]: t for t in build_tables(Layout.from_dict(spec, "memory_time"), load_runs(runs),
                                                       load_published())}
    assert set(tables) == {"sst2", "multirc"}

    def zo_memory(table):
        (cell,) = [c for (i, j), c in table.cells.items()
                   if table.row_labels[i] == "ZO-SGD / full" and table.col_labels[j] == "Peak memory (GiB)"]
        return cell

    assert zo_memory(tables["multirc"]).published == 26.0
    assert zo_memory(tables["sst2"]).stats.mean == 3.0 and pd.isna(zo_memory(tables["sst2"]).published)


def test_a_search_without_test_scores_shows_dev(tmp_path):
    """trainer.test=false (a learning-rate search): the score is the best dev score, and the header says so."""
    runs = tmp_path / "runs"
    for lr, dev in ((1e-3, 0.62), (1e-2, 0.70)):
        write_run(runs, f"lr{lr}", seed=0, test_score=None, best_dev_score=dev, **{**ZO, "lr": lr})
    (table,) = build_sweep_tables(load_runs(runs))
    md = to_markdown(table)
    assert table.keys == ["lr"] and "| lr | dev accuracy ×100 (95% CI) | n | peak memory (GiB) |" in md
    assert "| 0.001 | 62.0 | 1 |" in md and "| 0.01 | 70.0 | 1 |" in md
    assert "no run scored the eval set" in md
