"""The aggregator: summaries -> DataFrame -> dev-selected, seed-grouped tables beside published numbers.

Unit parts run on fake run directories written here; one test makes real tiny-model runs through
``zobench.run.run_cell`` and aggregates them through the console script's ``main``; one executes
``notebooks/results.ipynb`` against those runs (``ZOBENCH_RUNS_DIR``).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from zobench import ROOT
from zobench.aggregate import (SeedStats, build_tables, group_seeds, layout_names, load_layout, load_published,
                               load_runs, plot_convergence, plot_memory_vs_seq_len, problems, select_by_dev,
                               to_csv, to_latex, to_markdown)
from zobench.aggregate.layout import Layout, mask

# -- fake runs --------------------------------------------------------------------------------
BASE = dict(status="completed", error=None, model="tiny-opt", task="sst2", tuning="full", optimizer="zo_sgd",
            dtype="fp32", template="mezo", metric="accuracy", lr=1e-3, eps=1e-3, steps_budget=4, steps=4, seed=0,
            forward_passes=8, forward_passes_per_step=2, best_dev_score=0.5, best_dev_accuracy=0.5,
            test_score=0.5, test_accuracy=0.5, peak_memory_bytes=2 * 2**30, inference_peak_memory_bytes=2**30,
            step_time_ms=10.0)


def write_run(root: Path, name: str, config: dict | None = None, metrics: list[dict] | None = None,
              summary: bool = True, **fields) -> Path:
    run = root / name
    run.mkdir(parents=True)
    if summary:
        (run / "summary.json").write_text(json.dumps({**BASE, **fields}))
    if config is not None:
        import yaml

        (run / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return run


def test_load_runs_lists_unfinished_and_superseded_runs(tmp_path):
    write_run(tmp_path, "a", seed=0)
    write_run(tmp_path, "b", seed=1, status="diverged", error="Diverged: loss is nan at step 3", test_score=None)
    write_run(tmp_path, "killed", summary=False, metrics=[{"step": 1, "loss": 1.0}],
              config={"model": {"name": "tiny-opt"}, "task": {"name": "sst2"}, "seed": 2, "trainer": {"max_length": 64}})
    old = write_run(tmp_path, "c-old", seed=3, status="failed", error="RuntimeError: boom")
    new = write_run(tmp_path, "c-new", seed=3)
    os.utime(old / "summary.json", (1, 1))  # older than c-new
    runs = load_runs(tmp_path)
    status = dict(zip(runs["run_dir"], runs["status"]))
    assert status == {"a": "completed", "b": "diverged", "killed": "incomplete", "c-old": "superseded",
                      "c-new": "completed"}
    killed = runs.set_index("run_dir").loc["killed"]
    assert killed["task"] == "sst2" and killed["seq_len"] == 64  # identity from config.yaml
    assert set(problems(runs)["run_dir"]) == {"b", "killed", "c-old"}
    assert runs.set_index("run_dir").loc["a", "memory_ratio"] == pytest.approx(2.0)
    assert new.exists()


def test_seed_stats():
    s = SeedStats.of([0.5, 0.7, float("nan")])
    assert (s.mean, s.n) == (pytest.approx(0.6), 2) and s.std == pytest.approx(0.1414, abs=1e-4)
    one = SeedStats.of([0.9])
    assert one.n == 1 and math.isnan(one.std)  # one seed has no spread, not a spread of 0
    assert SeedStats.of([]).n == 0


def test_group_seeds_one_row_per_configuration(tmp_path):
    for i, (lr, seed, test) in enumerate([(1e-3, 0, 0.5), (1e-3, 1, 0.7), (1e-4, 0, 0.6)]):
        write_run(tmp_path, f"r{i}", lr=lr, seed=seed, test_score=test)
    g = group_seeds(load_runs(tmp_path), ["test_score"], ["lr"]).set_index("lr")
    assert g.loc[1e-3, "n"] == 2 and g.loc[1e-3, "test_score_mean"] == pytest.approx(0.6)
    assert g.loc[1e-4, "n"] == 1


def test_selection_uses_dev_never_test(tmp_path):
    # lr 1e-3: better on dev, worse on test; lr 1e-4: the reverse. Dev decides.
    for seed in (0, 1):
        write_run(tmp_path, f"a{seed}", lr=1e-3, seed=seed, best_dev_score=0.8, test_score=0.55 + 0.1 * seed)
        write_run(tmp_path, f"b{seed}", lr=1e-4, seed=seed, best_dev_score=0.6, test_score=0.95)
    sel = select_by_dev(load_runs(tmp_path))
    assert sel.chosen == {"lr": 1e-3} and sel.n_configs == 2 and len(sel.runs) == 2
    assert sel.runs["test_score"].mean() == pytest.approx(0.6)
    assert "best of 2 on dev" in sel.describe()


def test_selection_compares_each_tuning_schemes_runs_at_its_full_budget(tmp_path):
    """A one-seed 100-step probe (the precision study's) with a better dev score does not replace the main cell;
    another scheme's shorter budget is its own full budget."""
    for seed in (0, 1, 2):
        write_run(tmp_path, f"main{seed}", tuning="prefix", steps_budget=400, seed=seed, best_dev_score=0.6, test_score=0.65)
    write_run(tmp_path, "probe", tuning="prefix", steps_budget=100, dtype="bf16", best_dev_score=0.9, test_score=0.57)
    write_run(tmp_path, "full", tuning="full", steps_budget=200, best_dev_score=0.5, test_score=0.55)
    runs = load_runs(tmp_path)
    sel = select_by_dev(runs[runs["tuning"] == "prefix"])
    assert sorted(sel.runs["run_dir"]) == ["main0", "main1", "main2"] and sel.n_configs == 1
    assert select_by_dev(runs[runs["tuning"] == "full"]).runs["run_dir"].tolist() == ["full"]
    assert select_by_dev(runs[runs["steps_budget"] == 100]).runs["run_dir"].tolist() == ["probe"]  # asked for


def test_selection_without_dev_scores_takes_one_configuration(tmp_path):
    write_run(tmp_path, "z1", steps_budget=0, lr=1e-3, best_dev_score=None)
    write_run(tmp_path, "z2", steps_budget=0, lr=1e-4, best_dev_score=None)
    assert len(select_by_dev(load_runs(tmp_path)).runs) == 1


def test_mask_operators():
    df = pd.DataFrame({"steps_budget": [0, 4, None], "optimizer": ["zo_sgd", "fo_adam", "zo_sgd"], "lr": [1e-6, 1e-5, 1e-6]})
    assert mask(df, {"steps_budget": {"gt": 0}}).tolist() == [False, True, False]
    assert mask(df, {"optimizer": ["zo_sgd"], "lr": 1.0e-6}).tolist() == [True, False, True]
    assert mask(df, {"optimizer": {"ne": "zo_sgd"}}).tolist() == [False, True, False]
    assert not mask(df, {"no_such_column": 1}).any()
    assert mask(df, {"no_such_column": 1}, missing_ok=True).all()
    with pytest.raises(ValueError, match="unknown operator"):
        mask(df, {"lr": {"approx": 1}})


LAYOUT = {
    "title": "T", "row_header": "Method", "split_by": ["model"],
    "rows": [{"specs": [{"label": "Zero-shot", "where": {"steps_budget": 0}},
                        {"label": "ZO", "where": {"optimizer": "zo_sgd", "steps_budget": {"gt": 0}}}]}],
    "columns": [{"key": "task", "values": ["sst2", "copa"], "labels": {"sst2": "SST-2"}}],
    "value": "test_score", "scale": 100, "fmt": "{:.1f}",
    "published": {"files": ["p.csv"], "where": {"model": "tiny-opt"}, "ignore": ["model"]},
}
PUBLISHED = ("model,task,optimizer,steps_budget,measure,value,paper,table,note,protocol\n"
             "tiny-opt,sst2,zo_sgd,1000,test_score,70.0,Paper A,Table 9,ZO row,selected on dev\n"
             "tiny-opt,sst2,,0,test_score,40.0,Paper A,Table 9,zero-shot row,no training\n")


@pytest.fixture
def fake_grid(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_run(runs, f"zo-a-{seed}", seed=seed, lr=1e-3, best_dev_score=0.7, test_score=0.60 + 0.02 * seed)
        write_run(runs, f"zo-b-{seed}", seed=seed, lr=1e-4, best_dev_score=0.5, test_score=0.90)
        write_run(runs, f"other-model-{seed}", model="tiny-llama", seed=seed, test_score=0.55)
    write_run(runs, "zs", steps_budget=0, steps=0, best_dev_score=None, test_score=0.45)
    write_run(runs, "copa-0", task="copa", seed=0, test_score=0.52)
    write_run(runs, "bad", task="copa", seed=1, status="failed", error="RuntimeError: out of memory", test_score=None)
    pub_dir = tmp_path / "published"
    pub_dir.mkdir()
    (pub_dir / "p.csv").write_text(PUBLISHED)
    return load_runs(runs), load_published(["p.csv"], pub_dir)


def test_layout_builds_dev_selected_seed_grouped_cells(fake_grid):
    runs, published = fake_grid
    tables = build_tables(Layout.from_dict(LAYOUT, "t"), runs, published)
    assert [t.split for t in tables] == [{"model": "tiny-llama"}, {"model": "tiny-opt"}]
    t = tables[1]
    assert t.row_labels == ["Zero-shot", "ZO"] and t.col_labels == ["SST-2", "copa"]
    zo = t.cells[(1, 0)]
    assert zo.stats.n == 2 and zo.stats.mean == pytest.approx(61.0)  # lr 1e-3 (dev), not 1e-4 (test 90)
    assert zo.published == 70.0 and zo.diff == pytest.approx(-9.0)
    assert t.cells[(0, 0)].stats.mean == pytest.approx(45.0) and t.cells[(0, 0)].published == 40.0
    assert t.cells[(1, 1)].stats.n == 1  # copa: one seed completed, the other failed
    assert list(t.problems["run_dir"]) == ["bad"]
    assert any("steps_budget: published 0, 1000; measured 0, 4" in d for d in t.differences)
    # the other model's table shows the published number but no difference: it is another model
    other = tables[0].cells[(1, 0)]
    assert other.published == 70.0 and math.isnan(other.diff)


def test_renderers_show_cells_published_and_problems(fake_grid):
    runs, published = fake_grid
    tables = build_tables(Layout.from_dict(LAYOUT, "t"), runs, published)
    md = to_markdown(tables[1])
    # mean (95% Student-t interval over 2 seeds: 61 ± t(0.975, 1)·1.414/√2 = 61 ± 12.7, n) [published; Δ]
    assert "| ZO | 61.0 (48.3–73.7, n=2) [70.0; Δ −9.0] | 52.0 (n=1) |" in md
    assert "Student-t over seeds" in md
    assert "Protocol: loss unknown; metric accuracy; selection unknown; variant unknown." in md  # old runs
    assert "- failed: bad" in md and "out of memory" in md
    assert "lr=0.001 (best of 2 on dev" in md
    assert "Paper A, Table 9" in md
    assert "No Δ where the published number is for another model" in to_markdown(tables[0])
    tex = to_latex(tables[1])
    assert "61.0 (48.3--73.7, n=2)" in tex and r"\toprule" in tex and "Zero-shot" in tex
    frame = pd.read_csv(pd.io.common.StringIO(to_csv(tables)))
    row = frame[(frame.model == "tiny-opt") & (frame.row == "ZO") & (frame.column == "SST-2")].iloc[0]
    assert row["n"] == 2 and row["published"] == 70.0 and row["diff"] == pytest.approx(-9.0)
    assert (row["lo"], row["hi"]) == (pytest.approx(48.29, abs=0.01), pytest.approx(73.71, abs=0.01))
    assert row["runs"].count(";") == 1


def test_published_numbers_need_their_source(tmp_path):
    (tmp_path / "bad.csv").write_text("task,measure,value,paper,table,note\nsst2,test_score,1.0,Paper,Table 1,\n")
    with pytest.raises(ValueError, match="no 'note'"):
        load_published(["bad.csv"], tmp_path)


def test_shipped_published_numbers_have_sources():
    pub = load_published()
    assert len(pub) >= 30
    assert pub["value"].map(lambda v: isinstance(v, float) and not math.isnan(v)).all()
    mezo = pub[pub["file"].eq("mezo2023_table1_opt13b.csv")].set_index(["task", "tuning", "optimizer"], drop=False)
    assert mezo.loc[("sst2", "full", "zo_sgd"), "value"].item() == 91.4  # MeZO Table 1, OPT-13B
    assert mezo.loc[("multirc", "full", "fo_adam"), "value"].item() == 71.1


@pytest.mark.parametrize("name", layout_names())
def test_every_shipped_layout_builds(name, fake_grid):
    runs, _ = fake_grid
    layout = load_layout(name)
    for table in build_tables(layout, runs, load_published()):
        to_markdown(table), to_latex(table), to_csv([table])


def test_every_experiment_composes_to_a_sweep_over_existing_choices():
    from zobench.aggregate.reproduce import GROUPS, block_names, plan_block

    for scale in ("cpu", "full"):
        names = block_names(scale)
        assert names and all(n.rsplit("/", 1)[1] != "base" for n in names)
        for name in names:
            block = plan_block(name)
            assert block.jobs, name
            assert all(str(job.get("seed", 0)).isdigit() for job in block.jobs)
            for group in GROUPS:  # every choice a block names exists (none left out today)
                assert group not in block.skipped, (name, block.skipped)
    from zobench.aggregate.reproduce import _compose

    assert _compose(["+experiment=cpu/zobench_sst2/zo_sgd_full"]).model.name == "smollm2-135m"  # cpu/base.yaml
    assert {j["optimizer.lr"] for j in plan_block("full/mezo_opt13b/zo_full").jobs} == {1e-6, 1e-7}  # MeZO's grid
    # ZO-Bench's SST2 table: one block per cell, each with ZO-Bench's own sweep grid for that cell
    adam = plan_block("full/zobench_sst2/zo_adam/lora").jobs
    assert {j["optimizer.lr"] for j in adam} == {1e-4, 1e-5, 1e-6}
    assert {j["optimizer.eps"] for j in adam} == {1e-2, 1e-3, 1e-4, 1e-5} and len(adam) == 3 * 4 * 3  # x 3 seeds
    # the reference variants: what ZO-Bench's code ran (its sweeps set no --optimizer: HF's AdamW inside)
    assert {j["optimizer.variant"] for j in plan_block("full/zobench_sst2/zo_sgd_sign/full").jobs} == {"zobench_code"}
    assert {j["optimizer.variant"] for j in plan_block("full/copa_winogrande_opt13b/zo_sgd_cons/copa").jobs} == {"zobench_code"}
    assert {j["optimizer.variant"] for j in plan_block("full/zobench_sst2/fo_sgd/prompt").jobs} == {"zobench_code"}
    assert "optimizer.variant" not in plan_block("full/zobench_sst2/fo_sgd/lora").jobs[0]  # its sweep sets --optimizer=sgd
    # seeds as the references varied them: the data sample, z at HF's seed 42
    mezo = plan_block("full/mezo_opt13b/zo_lora").jobs
    assert {j["data.seed"] for j in mezo} == {0, 1, 2} and "seed" not in mezo[0]
    cells = {tuple(n.split("/")[2:]) for n in block_names("full") if n.startswith("full/zobench_sst2/")}
    assert len(cells) == 8 * 4  # 8 optimizers x 4 schemes
    mmt = plan_block("full/copa_winogrande_opt13b/zo_sgd_mmt/winogrande").jobs
    assert {j["optimizer.eps"] for j in mmt} == {1e-3, 1e-4, 1e-5} and {j["task"] for j in mmt} == {"winogrande"}


def test_cost_model_estimates():
    from zobench.aggregate.reproduce import cpu_seconds, gpu_seconds

    cell = dict(model="smollm2-135m", task="sst2", tuning="full", optimizer="zo_sgd", family="zo", steps=6,
                batch=8, eval_every=3, zero_shot=False, max_length=512, num_dev=16, num_eval=48)
    assert 10 < cpu_seconds(cell) < 60
    assert cpu_seconds({**cell, "tuning": "lora"}) < cpu_seconds(cell)
    # bf16 forwards run ~3x faster on AMX CPUs (zobench.aggregate.cost.FWD_DTYPE); the parameter sweeps do not
    assert cpu_seconds({**cell, "dtype": "bf16"}) < cpu_seconds({**cell, "dtype": "fp16"}) < cpu_seconds(cell)
    wall, gpu_h = gpu_seconds({**cell, "model": "opt-13b", "steps": 20000, "batch": 16})
    assert wall == pytest.approx(20000 * 2.702) and gpu_h == pytest.approx(wall / 3600)  # MeZO Table 23
    assert gpu_seconds({**cell, "model": "llama2-7b"}) is None


def test_plots_read_metrics_and_sequence_lengths(tmp_path):
    runs_dir = tmp_path / "runs"
    metrics = [{"step": 1, "loss": 2.0, "lr": 1e-3, "step_time_ms": 5, "forward_passes": 2},
               {"step": 2, "loss": 1.5, "lr": 1e-3, "step_time_ms": 5, "forward_passes": 4},
               {"step": 2, "dev_accuracy": 0.6}]
    for i, seq_len in enumerate((64, 128, 256)):
        for opt, mult in (("zo_sgd", 1.0), ("fo_adam", 3.0)):
            write_run(runs_dir, f"{opt}-{seq_len}", optimizer=opt, lr=1e-3 * (i + 1), seq_len=seq_len,
                      peak_memory_bytes=int(mult * seq_len * 2**24), metrics=metrics)
    write_run(runs_dir, "from-config", optimizer="zo_adam", peak_memory_bytes=2**30, metrics=metrics,
              config={"trainer": {"max_length": 512}})
    runs = load_runs(runs_dir)
    assert runs.set_index("run_dir").loc["from-config", "seq_len"] == 512  # trainer.max_length from config.yaml
    paths = plot_memory_vs_seq_len(runs, tmp_path / "fig")
    assert sorted(p.name for p in paths) == ["memory-vs-seq-len_tiny-opt_sst2.pdf", "memory-vs-seq-len_tiny-opt_sst2.png"]
    conv = plot_convergence(runs, runs_dir, tmp_path / "fig")
    assert {p.suffix for p in conv} == {".png", ".pdf"} and all(p.stat().st_size > 1000 for p in conv)


# -- real runs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Four tiny-model cells (2 learning rates x 2 seeds) and one that diverges, run for real."""
    from tests.conftest import SMALL, compose_cfg
    from tests.native_data import write_native
    from zobench.run import run_cell

    tmp = tmp_path_factory.mktemp("aggregate")
    data, runs = write_native(tmp / "data"), tmp / "runs"
    for lr in ("1e-3", "1e-4"):
        for seed in (0, 1):
            cfg = compose_cfg(*SMALL, f"data.dir={data}", "optimizer=zo_sgd", f"optimizer.lr={lr}", f"seed={seed}")
            assert run_cell(cfg, runs / f"zo_sgd-lr{lr}-seed{seed}")["status"] == "completed"
    cfg = compose_cfg(*SMALL, f"data.dir={data}", "optimizer.lr=1e38", "optimizer.eps=1")
    assert run_cell(cfg, runs / "diverges")["status"] == "diverged"
    return runs


def test_cli_aggregates_real_runs(real_runs, tmp_path, capsys):
    from zobench.aggregate.cli import main

    out = tmp_path / "out"
    main([str(real_runs), "--table", "mezo_opt13b", "--table", "zobench_sst2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "### MeZO Table 1" in printed and "model=tiny-opt" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| MeZO |"))
    assert "n=2)" in row and "[91.4]" in row  # two seeds; MeZO's OPT-13B number beside, no Δ (another model)
    assert "diverged: diverges" in printed
    for name in ("mezo_opt13b.md", "mezo_opt13b.tex", "mezo_opt13b.csv", "tables.md", "runs.csv", "COMMAND.txt"):
        assert (out / name).exists(), name
    assert (out / "figures" / "convergence_tiny-opt_sst2.png").exists()
    csv = pd.read_csv(out / "mezo_opt13b.csv")
    cell = csv[(csv.row == "MeZO") & (csv.column == "SST-2")].iloc[0]
    assert cell["n"] == 2 and cell["n_configs"] == 2 and "on dev" in cell["chosen"]
    # Re-rendering the same runs: the same figure bytes, and COMMAND.txt keeps both commands.
    pdf = out / "figures" / "convergence_tiny-opt_sst2.pdf"
    first = pdf.read_bytes()
    main([str(real_runs), "--table", "mezo_opt13b", "--out", str(out)])
    assert pdf.read_bytes() == first
    commands = [line for line in (out / "COMMAND.txt").read_text().splitlines() if not line.startswith("#")]
    assert len(commands) == 2 and "--table zobench_sst2" in commands[0] and "zobench_sst2" not in commands[1]


def test_notebook_executes_against_the_runs(real_runs, monkeypatch):
    import nbclient  # dev extras: make install puts them in place
    import nbformat

    monkeypatch.setenv("ZOBENCH_RUNS_DIR", str(real_runs))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(ROOT / "notebooks" / "results.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))
    assert "MeZO Table 1" in text and "diverged" in text
    assert (real_runs / "aggregate" / "notebook-figures" / "convergence_tiny-opt_sst2.png").exists()


def test_zobench_sst2_table_shows_relizo_numbers_beside_opt_1_3b_runs(tmp_path):
    """ReLIZO's Table 4 (OPT-1.3B, ZO-Bench's methodology) is joined per (optimizer, scheme)."""
    runs = tmp_path / "runs"
    write_run(runs, "zo-lora", model="opt-1.3b", tuning="lora", num_dev=500, test_score=0.88)
    write_run(runs, "sign-prompt", model="opt-1.3b", tuning="prompt", optimizer="zo_sgd_sign", num_dev=500,
              test_score=0.70)
    write_run(runs, "mmt-full", model="opt-1.3b", tuning="full", optimizer="zo_sgd_mmt", num_dev=500,
              test_score=0.85)
    (table,) = build_tables(load_layout("zobench_sst2"), load_runs(runs), load_published())
    cell = {(table.row_labels[i], table.col_labels[j]): c for (i, j), c in table.cells.items()}
    assert cell[("ZO-SGD", "LoRA")].published == 90.1
    assert cell[("ZO-SGD", "LoRA")].diff == pytest.approx(88.0 - 90.1)
    assert cell[("ZO-SGD-Sign", "Prompt")].published == 72.9
    assert cell[("FO-SGD", "FT")].published == 91.1 and cell[("FO-SGD", "FT")].stats.n == 0
    assert math.isnan(cell[("ZO-SGD-MMT", "FT")].published)  # no published number: none shipped
    assert any("ReLIZO (Wang et al. 2024), Table 4" in s for s in table.sources)


def test_block_wise_runs_with_either_update_order_are_two_configurations(tmp_path):
    """optimizer.estimator.immediate is read from config.yaml: the two orders are not pooled or superseded."""
    for order in (True, False):
        cfg = {"optimizer": {"name": "zo_sgd_block", "estimator": {"level": "layer", "restrict": True,
                                                                  "immediate": order}}}
        write_run(tmp_path, f"order-{order}", config=cfg, optimizer="zo_sgd_block", test_score=0.5 + 0.1 * order)
    runs = load_runs(tmp_path)
    assert set(runs["status"]) == {"completed"} and set(runs["block_immediate"]) == {True, False}
    assert len(group_seeds(runs, ["test_score"], ["block_immediate"])) == 2


# -- intervals, paired comparisons, protocol (issue 13) ----------------------------------------
def write_predictions(run: Path, gold, pred, zero_shot=None, ids=None, groups=None) -> None:
    """predictions.jsonl (and zero_shot_predictions.jsonl) in the format of zobench/evaluation.py."""
    ids = ids if ids is not None else [f"dev:{i}" for i in range(len(gold))]
    groups = groups if groups is not None else [None] * len(gold)
    for name, preds in (("predictions.jsonl", pred), ("zero_shot_predictions.jsonl", zero_shot)):
        if preds is not None:
            (run / name).write_text("".join(
                json.dumps({"id": i, "gold": int(g), "prediction": int(p), "scores": [-1.0, -2.0], "group": grp}) + "\n"
                for i, g, p, grp in zip(ids, gold, preds, groups)))


def _system(seed, gold, accuracy):
    import numpy as np

    rng, gold = np.random.default_rng(seed), np.asarray(gold)
    return np.where(rng.random(len(gold)) < accuracy, gold, 1 - gold)


NEW = dict(loss="lm", selection="dev_metric", family="zo", num_eval=800)


def _cell(table, row, column):
    return table.cells[(table.row_labels.index(row), table.col_labels.index(column))]


def test_cells_carry_a_t_interval_over_seeds_and_csv_numbers(tmp_path):
    from zobench.stats import seed_interval

    for seed, score in enumerate((0.60, 0.64, 0.65)):
        write_run(tmp_path, f"s{seed}", seed=seed, test_score=score, **NEW)
    (table,) = build_tables(Layout.from_dict(LAYOUT, "t"), load_runs(tmp_path))
    cell = _cell(table, "ZO", "SST-2")
    ref = seed_interval([60.0, 64.0, 65.0])
    assert (cell.stats.n, cell.stats.interval) == (3, "t")
    assert (cell.stats.lo, cell.stats.hi) == (pytest.approx(ref["lo"]), pytest.approx(ref["hi"]))
    md = to_markdown(table)
    assert f"| ZO | 63.0 ({ref['lo']:.1f}–{ref['hi']:.1f}, n=3) |" in md
    assert "Protocol: loss lm; metric accuracy; selection dev_metric; variant none." in md
    frame = pd.read_csv(pd.io.common.StringIO(to_csv([table])))
    row = frame[(frame.row == "ZO") & (frame.column == "SST-2")].iloc[0]
    assert row["n"] == 3 and row["lo"] == pytest.approx(ref["lo"]) and row["hi"] == pytest.approx(ref["hi"])
    assert row["loss"] == "lm" and row["selection"] == "dev_metric" and row["forward_pass_equivalents"] == 8.0


def test_one_seed_shows_its_bootstrap_interval_over_eval_examples(tmp_path):
    """n=1: the summary's test_score_ci95, else a bootstrap of predictions.jsonl (footnote ‡ says so)."""
    from zobench.stats import bootstrap_ci

    write_run(tmp_path, "with-ci", test_score=0.61, test_score_ci95=[0.57, 0.66], **NEW)
    gold = [i % 2 for i in range(400)]
    pred = _system(1, gold, 0.7)
    run = write_run(tmp_path, "copa", task="copa", test_score=0.7, **NEW)
    write_predictions(run, gold, pred)
    (table,) = build_tables(Layout.from_dict(LAYOUT, "t"), load_runs(tmp_path))
    md = to_markdown(table)
    assert "| ZO | 61.0 (57.0–66.0, n=1‡) |" in md
    lo, hi = bootstrap_ci(gold, pred)
    copa = _cell(table, "ZO", "copa").stats
    assert copa.interval == "bootstrap" and (copa.lo, copa.hi) == (pytest.approx(100 * lo), pytest.approx(100 * hi))
    assert "‡ one seed: the run's 95% percentile bootstrap over eval examples" in md


def test_significant_gain_over_zero_shot_is_marked_and_a_null_one_is_not(tmp_path):
    """Each cell against its own runs' zero_shot_predictions.jsonl, paired by example id over 800 examples."""
    from zobench.stats import paired_bootstrap

    gold = [i % 2 for i in range(800)]
    zs = _system(0, gold, 0.6)
    preds = {seed: _system(10 + seed, gold, 0.8) for seed in (0, 1)}
    for seed in (0, 1):
        run = write_run(tmp_path, f"sst2-{seed}", seed=seed, test_score=0.8, **NEW)
        write_predictions(run, gold, preds[seed], zero_shot=zs)
        run = write_run(tmp_path, f"copa-{seed}", task="copa", seed=seed, test_score=0.6, **NEW)
        write_predictions(run, gold, _system(20 + seed, gold, 0.6), zero_shot=zs)
    (table,) = build_tables(Layout.from_dict(LAYOUT, "t"), load_runs(tmp_path))
    sst2, copa = _cell(table, "ZO", "SST-2").comparison, _cell(table, "ZO", "copa").comparison
    ref = paired_bootstrap(gold, [preds[0], preds[1]], zs)  # correctness averaged over the 2 seeds
    assert sst2.significant and sst2.delta == pytest.approx(100 * ref["delta"]) and sst2.p_value == ref["p_value"]
    assert sst2.pairing == "averaged over seeds" and sst2.n_examples == 800 and sst2.test == "paired bootstrap"
    assert not copa.significant
    md = to_markdown(table)
    zo_line = next(line for line in md.splitlines() if line.startswith("| ZO |"))
    assert zo_line.count("†") == 1 and "† (" in zo_line.split("|")[2]
    assert "† differs from zero-shot" in md and "paired bootstrap" in md and "same 800 eval examples" in md
    frame = pd.read_csv(pd.io.common.StringIO(to_csv([table])))
    row = frame[(frame.row == "ZO") & (frame.column == "SST-2")].iloc[0]
    assert bool(row["significant"]) and row["p_value"] < 0.05 and row["delta_vs_reference"] == pytest.approx(sst2.delta)


def test_untuned_models_own_run_is_the_zero_shot_reference_when_runs_scored_none(tmp_path):
    """trainer.zero_shot=false (the CPU study): no zero_shot_predictions.jsonl in the trained runs; the
    completed steps_budget == 0 run with the same model, task, template and dtype stands in (its
    predictions.jsonl, paired by example id), and the legend names it."""
    from zobench.stats import paired_bootstrap

    gold = [i % 2 for i in range(800)]
    zs = {"sst2": _system(0, gold, 0.6), "copa": _system(1, gold, 0.6)}
    preds = {seed: _system(10 + seed, gold, 0.8) for seed in (0, 1)}
    for seed in (0, 1):
        write_predictions(write_run(tmp_path, f"sst2-{seed}", seed=seed, tuning="lora", test_score=0.8, zero_shot=False,
                                    **NEW), gold, preds[seed])
        write_predictions(write_run(tmp_path, f"copa-{seed}", task="copa", seed=seed, tuning="lora", test_score=0.6,
                                    zero_shot=False, **NEW), gold, _system(20 + seed, gold, 0.6))
    for task in ("sst2", "copa"):
        write_predictions(write_run(tmp_path, f"zs-{task}", task=task, tuning="full", steps_budget=0, steps=0,
                                    test_score=0.6, best_dev_score=None, **NEW), gold, zs[task])
    # decoys, sorted first: another dtype, another template, a run that failed; none may stand in
    for name, fields in (("a-bf16", {"dtype": "bf16"}), ("a-template", {"template": "other"}),
                         ("a-failed", {"status": "failed"})):
        write_predictions(write_run(tmp_path, name, tuning="full", steps_budget=0, steps=0, test_score=0.8,
                                    best_dev_score=None, **{**NEW, **fields}), gold, _system(30, gold, 0.8))
    (table,) = build_tables(Layout.from_dict(LAYOUT, "t"), load_runs(tmp_path))
    sst2, copa = _cell(table, "ZO", "SST-2").comparison, _cell(table, "ZO", "copa").comparison
    ref = paired_bootstrap(gold, [preds[0], preds[1]], zs["sst2"])
    assert sst2.significant and sst2.delta == pytest.approx(100 * ref["delta"]) and sst2.p_value == ref["p_value"]
    assert sst2.source == "zs-sst2" and sst2.reference == "zero-shot (the untuned model's own run)"
    assert sst2.pairing == "averaged over seeds" and sst2.n_examples == 800
    assert copa is not None and not copa.significant and copa.source == "zs-copa"
    assert _cell(table, "Zero-shot", "SST-2").comparison is None  # the untuned model is not set against itself
    md = to_markdown(table)
    zo_line = next(line for line in md.splitlines() if line.startswith("| ZO |"))
    assert zo_line.count("†") == 1 and "† (" in zo_line.split("|")[2]
    legend = next(line for line in md.splitlines() if line.startswith("† differs from"))
    assert "untuned model's own run" in legend and "`zs-sst2`" in legend and "steps_budget=0" in legend


def test_within_seed_pairing_reads_data_seed_as_a_seed_axis(tmp_path):
    """seed fixed, data.seed varied, the eval set moving with it: each run pairs with its own data seed's."""
    gold = [i % 2 for i in range(300)]
    for ds in (1, 2):
        ids = [f"d{ds}:{i}" for i in range(300)]
        run = write_run(tmp_path, f"r{ds}", seed=42, data_seed=ds, **NEW)
        write_predictions(run, gold, _system(ds, gold, 0.9), zero_shot=_system(5 + ds, gold, 0.5), ids=ids)
    (table,) = build_tables(Layout.from_dict(LAYOUT, "t"), load_runs(tmp_path))
    cmp = _cell(table, "ZO", "SST-2").comparison
    assert cmp.pairing == "within seed" and cmp.n_examples == 600 and cmp.significant


def test_named_reference_row_with_mcnemar(tmp_path):
    """compare: {reference: zo_sgd, test: mcnemar}: one seed a side, exact McNemar on the paired examples."""
    from zobench.stats import mcnemar

    gold = [i % 2 for i in range(600)]
    zo, fo, sign = _system(1, gold, 0.70), _system(2, gold, 0.85), _system(3, gold, 0.70)
    for opt, pred in (("zo_sgd", zo), ("fo_adam", fo), ("zo_sgd_sign", sign)):
        write_predictions(write_run(tmp_path, opt, optimizer=opt, **NEW), gold, pred)
    layout = Layout.from_dict({"title": "T", "rows": [{"key": "optimizer", "values": ["zo_sgd", "fo_adam", "zo_sgd_sign"],
                                                        "labels": {"zo_sgd": "ZO-SGD"}}],
                               "columns": [{"key": "task"}], "compare": {"reference": "zo_sgd", "test": "mcnemar"}}, "t")
    (table,) = build_tables(layout, load_runs(tmp_path))
    assert _cell(table, "ZO-SGD", "sst2").comparison is None  # the reference itself
    fo_cmp, sign_cmp = _cell(table, "FO-Adam", "sst2").comparison, _cell(table, "ZO-SGD-Sign", "sst2").comparison
    assert fo_cmp.test == "McNemar" and fo_cmp.p_value == mcnemar(gold, fo, zo)["p_value"] and fo_cmp.significant
    assert not sign_cmp.significant and sign_cmp.reference == "ZO-SGD"
    assert "† differs from ZO-SGD at 95%: two-sided exact McNemar test" in to_markdown(table)


def test_eval_sets_that_move_with_the_seed_are_paired_within_seed(tmp_path):
    gold = [i % 2 for i in range(300)]
    for seed in (0, 1):
        ids = [f"s{seed}:{i}" for i in range(300)]
        run = write_run(tmp_path, f"r{seed}", seed=seed, **NEW)
        write_predictions(run, gold, _system(seed, gold, 0.9), zero_shot=_system(5 + seed, gold, 0.5), ids=ids)
    (table,) = build_tables(Layout.from_dict(LAYOUT, "t"), load_runs(tmp_path))
    cmp = _cell(table, "ZO", "SST-2").comparison
    assert cmp.pairing == "within seed" and cmp.n_examples == 600 and cmp.significant
    assert "pairs within seed, pooled" in to_markdown(table)


def test_multirc_questions_are_the_resampling_clusters(tmp_path):
    """One run: its bootstrap interval resamples whole questions (zobench.stats cluster bootstrap)."""
    from zobench.stats import bootstrap_ci

    gold = [i % 2 for i in range(400)]
    groups = [f"q{i // 8}" for i in range(400)]
    import numpy as np

    right = np.repeat(np.random.default_rng(0).random(50) < 0.7, 8)
    pred = np.where(right, gold, 1 - np.array(gold))
    run = write_run(tmp_path, "m", task="multirc", metric="f1", **NEW)
    write_predictions(run, gold, pred, groups=groups)
    layout = Layout.from_dict({"title": "T", "rows": [{"key": "optimizer"}], "columns": [{"key": "task"}]}, "t")
    (table,) = build_tables(layout, load_runs(tmp_path))
    s = _cell(table, "ZO-SGD", "multirc").stats
    assert (s.lo, s.hi) == bootstrap_ci(gold, pred, "f1", groups=groups)


def test_old_runs_without_predictions_get_no_mark_and_unknown_protocol(fake_grid):
    runs, published = fake_grid
    tables = build_tables(Layout.from_dict(LAYOUT, "t"), runs, published)
    assert all(c.comparison is None for t in tables for c in t.cells.values())
    assert "†" not in to_markdown(tables[1])


def test_rows_holding_the_same_runs_are_flagged(tmp_path):
    write_run(tmp_path, "a", **NEW)
    layout = Layout.from_dict({"title": "T", "rows": [{"specs": [{"label": "A", "where": {"task": "sst2"}},
                                                                {"label": "B", "where": {"optimizer": "zo_sgd"}}]}]}, "t")
    (table,) = build_tables(layout, load_runs(tmp_path))
    assert "Warning: rows A = B hold the same runs" in to_markdown(table)


@pytest.mark.parametrize("compare, key", [({"test": "ttest"}, "compare.test"), ({"level": 95}, "compare.level"),
                                          ({"refrence": "x"}, "compare.refrence"), ({"n_boot": 0}, "compare.n_boot")])
def test_bad_compare_block_names_the_key(compare, key):
    from zobench.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        Layout.from_dict({**LAYOUT, "compare": compare}, "t")


def test_forward_pass_equivalents_column_and_compute_axis(tmp_path):
    """FO's forward + backward is 3 forward equivalents: 4 FO steps cost as much as 6 ZO steps."""
    metrics = [{"step": 1, "loss": 2.0, "lr": 1e-3, "step_time_ms": 5, "forward_passes": 1},
               {"step": 2, "loss": 1.5, "lr": 1e-3, "step_time_ms": 5, "forward_passes": 2},
               {"step": 2, "dev_accuracy": 0.6}]
    write_run(tmp_path, "zo", forward_passes=12, steps=6, metrics=metrics, family="zo")
    write_run(tmp_path, "fo", optimizer="fo_adam", forward_passes=4, steps=4, forward_passes_per_step=1,
              metrics=metrics, config={"optimizer": {"name": "fo_adam", "family": "fo"}})
    runs = load_runs(tmp_path).set_index("run_dir")
    assert runs.loc["zo", "forward_pass_equivalents"] == runs.loc["fo", "forward_pass_equivalents"] == 12.0
    assert runs.loc["fo", "forward_pass_equivalents_per_step"] == 3.0
    from zobench.aggregate.plots import plot_accuracy_vs_compute, read_metrics

    train, dev = read_metrics(tmp_path / "fo", "fo")
    assert train["forward_pass_equivalents"].tolist() == [3.0, 6.0] and dev["forward_pass_equivalents"].tolist() == [6.0]
    runs = load_runs(tmp_path)
    paths = plot_convergence(runs, tmp_path, tmp_path / "fig", x_axes=("forward_pass_equivalents",))
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert {p.name for p in plot_accuracy_vs_compute(runs, tmp_path / "fig")} == {
        "accuracy-vs-compute_tiny-opt_sst2.png", "accuracy-vs-compute_tiny-opt_sst2.pdf"}
    with pytest.raises(ValueError, match="x_axes"):
        plot_convergence(runs, tmp_path, tmp_path / "fig", x_axes=("wall_time",))
    (table,) = build_tables(load_layout("memory_time"), runs.assign(task="multirc"))
    text = to_markdown(table)
    assert "| FO-Adam / full | 2.00 (n=1) | 2.00 (n=1) | 10 (n=1) | 1 (n=1) | 3 (n=1) |" in text


def test_a_published_number_of_another_variant_gets_no_difference():
    """conf/published rows name the variant that produced them: ZO-Bench's ZO-SGD-Sign numbers ran its code
    (variant zobench_code), so a run of the paper's rule is shown beside them without a Δ."""
    from zobench.aggregate.layout import Cell, _same_variant
    from zobench.aggregate.select import Selection

    published = pd.DataFrame({"variant": ["zobench_code", "paper", None]}, index=[0, 1, 2])
    cell = lambda variants, row: Cell(SeedStats.of(pd.Series([0.9])), {}, Selection(pd.DataFrame({"variant": variants}), 1),
                                      published_source=f"ReLIZO, Table 4#{row}")
    assert not _same_variant(published, cell(["paper"], 0))
    assert _same_variant(published, cell(["zobench_code"], 0))
    assert _same_variant(published, cell(["none"], 1))  # runs from before variants were recorded ran the paper's rule
    assert _same_variant(published, cell(["paper"], 2))  # a published row with no variant (zero-shot) is no condition
    relizo = load_published()
    assert set(relizo["variant"].dropna()) >= {"paper", "zobench_code"}


def test_one_run_step_time_shows_its_bootstrap_over_steps_and_dtypes_get_their_own_tables(tmp_path):
    """A one-run step time: its median's 95% bootstrap over the run's training steps (warm-up dropped, as the
    summary drops it), marked ‡; fp16/bf16 runs are never averaged with fp32 ones as if seeds."""
    import numpy as np

    from zobench.aggregate.steps import median_interval, step_values

    times = [900.0] + [100.0 + 10 * (i % 5) for i in range(30)]  # step 1 is warm-up
    metrics = [{"step": i + 1, "loss": 1.0, "lr": 1e-3, "step_time_ms": t, "forward_passes": 2 * (i + 1)}
               for i, t in enumerate(times)]
    write_run(tmp_path, "fp32", metrics=metrics, config={"trainer": {"warmup_steps": 1}}, step_time_ms=120.0)
    write_run(tmp_path, "bf16", dtype="bf16", step_time_ms=40.0, peak_memory_bytes=2**30)
    values = step_values(tmp_path / "fp32", "step_time_ms")
    assert len(values) == 30 and 900.0 not in values
    lo, hi = median_interval(values)
    assert lo <= np.median(values) <= hi and lo >= 100 and hi <= 140
    tables = {t.split["dtype"]: t for t in build_tables(load_layout("memory_time"), load_runs(tmp_path))}
    assert set(tables) == {"fp32", "bf16"}
    text = to_markdown(tables["fp32"])
    assert f"| ZO-SGD / full | 2.00 (n=1) | 2.00 (n=1) | 120 ({lo:.0f}–{hi:.0f}, n=1‡) |" in text
    assert "over the run's training steps" in text
    assert "| ZO-SGD / full | 1.00 (n=1) | 1.00 (n=1) | 40 (n=1) |" in to_markdown(tables["bf16"])


def test_cost_model_counts_each_optimizers_own_forward_passes():
    """STEP_COST's forwards per step are each ZO optimizer's own count at its YAML defaults (BSZO's read 4
    where its runs log 3, and the plan over-estimated its cells); ZO-SGD-Cons adds L(θ) and its two candidates
    (zobench/optim/zo.py ``step``: its runs log 5 forwards a step; the model had 4)."""
    import torch

    from zobench.aggregate.cost import STEP_COST
    from zobench.bench import _build_optimizer

    named = list(torch.nn.Linear(4, 4).named_parameters())
    for name, (fwds, _) in STEP_COST.items():
        if name in ("fo_sgd", "fo_adam", "forward_grad"):  # FO: forward + backward ~ 3; Forward-Grad needs a model
            continue
        if name == "hybrid_zo_fo":  # its runs log 3 passes a step (2 ZO + 1 FO forward); priced with its backward
            from zobench.compute import equivalents
            assert fwds == equivalents(3, 1, "hybrid"), name
            continue
        opt = _build_optimizer(name, named)
        own = getattr(opt, "estimator", None)
        own = own if own is not None and hasattr(own, "forward_passes_per_step") else opt
        count = own.forward_passes_per_step() if callable(own.forward_passes_per_step) else own.forward_passes_per_step
        assert fwds == count + (3 if name == "zo_sgd_cons" else 0), name  # Cons: L(θ) and its two candidates


def test_the_plan_checks_its_estimate_on_cells_that_ran_alone(tmp_path, capsys):
    """The +-30% check of the CPU plan reads only runs whose recorded 1-min load stayed within the core count
    (+0.5): a cell that shared the cores with a test suite measures the contention, not the cost model."""
    from zobench.aggregate.reproduce import Block, measure_done, print_plan, ran_alone

    alone = {"cpu_count": 2, "load_average_1m_start": 1.9, "load_average_1m_end": 2.4}
    assert ran_alone(alone)
    assert not ran_alone({**alone, "load_average_1m_end": 4.1})  # a test suite beside it
    assert not ran_alone({"wall_time_s": 60.0})  # from before the load was recorded: unknown, not alone
    job = {"optimizer": "zo_sgd", "seed": 0}
    block = Block("cpu/zobench_sst2/zo_sgd_prefix", [job, {**job, "seed": 1}, {**job, "seed": 2}], seconds=300.0,
                  estimates=[("main", job, 100.0), ("main", {**job, "seed": 1}, 100.0), ("main", {**job, "seed": 2}, 100.0)])
    for seed, wall, loads in ((0, 110.0, alone), (1, 300.0, {**alone, "load_average_1m_end": 4.1}), (2, 60.0, alone)):
        run = tmp_path / "zobench_sst2" / "zo_sgd_prefix" / f"seed={seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"status": "completed", "optimizer": "zo_sgd", "seed": seed,
                                                      "wall_time_s": wall, **loads}))
    measure_done([block], tmp_path)
    assert block.done["main"] == (3, 470.0, 300.0) and sorted(block.alone) == [(60.0, 100.0), (110.0, 100.0)]
    block.seconds = 315.0  # + the block's process start-up: spent once its every cell is done, not "left"
    print_plan([block], "cpu")
    out = capsys.readouterr().out
    assert "left: ~0.0 min on idle cores" in out
    line = next(l for l in out.splitlines() if "ran alone" in l)
    assert "2, measured 2.8 min against an estimate of 3.3 min (x0.85)" in line
    assert "per cell x0.60-x1.10, 1 of 2 within +-30%" in line


def test_an_optimizer_the_layout_does_not_label_gets_its_figure_name_not_its_id(tmp_path):
    """memory_time.yaml labels nine optimizers; the precision study's HiZOO and the hybrid ran too and showed as
    'hizoo' and 'hybrid_zo_fo'. Unlabelled optimizers take zobench.aggregate.style.OPTIMIZER_NAMES."""
    write_run(tmp_path, "hizoo", optimizer="hizoo", tuning="prefix")
    write_run(tmp_path, "hybrid", optimizer="hybrid_zo_fo", tuning="lora")
    (table,) = build_tables(load_layout("memory_time"), load_runs(tmp_path))
    assert {"HiZOO / prefix", "Hybrid ZO-FO / lora"} <= set(table.row_labels)
    assert not any(label.startswith(("hizoo", "hybrid_zo_fo")) for label in table.row_labels)
