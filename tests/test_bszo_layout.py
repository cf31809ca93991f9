"""The bszo_comparison layout, its published numbers and the bszo grids (full and cpu) compose and agree."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from zobench import CONF_DIR
from zobench.aggregate.layout import build_tables, load_layout
from zobench.aggregate.published import load_published

FULL = sorted(p for p in (CONF_DIR / "experiment/full/bszo").glob("*.yaml") if p.stem != "base")
CPU = sorted((CONF_DIR / "experiment/cpu/bszo_precision").glob("*.yaml"))


def test_published_rows_carry_sources_and_match_the_paper_averages():
    pub = load_published(["bszo2026_table1_table3.csv", "bszo2026_bszo_b.csv"])
    assert pub["table"].isin(["Table 1", "Table 3"]).all()
    assert set(pub["dtype"]) == {"fp32", "fp16", "bf16"}
    main = load_published(["bszo2026_table1_table3.csv"])
    # Table 3's AVG column (not shipped) is the mean of the six tasks: the transcription reproduces it
    for (model, optimizer), avg in {("opt-13b", "bszo"): 73.76, ("opt-13b", "zo_sgd"): 67.09,
                                    ("opt-1.3b", "bszo"): 74.92, ("mistral-7b", "bszo"): 77.83,
                                    ("opt-13b", "hizoo"): 55.58, ("opt-1.3b", "lozo"): 70.15}.items():
        rows = main[(main["model"] == model) & (main["optimizer"] == optimizer)]
        assert len(rows) == 6 and abs(rows["value"].mean() - avg) < 0.01
    rob = main[(main["model"] == "roberta-large") & (main["optimizer"] == "bszo")]
    assert len(rob) == 5 and abs(rob["value"].mean() - 77.28) < 0.01
    # each (model, dtype, task, optimizer) once in the layout's file, so lookup never sees two rows
    assert not main.duplicated(["model", "dtype", "task", "optimizer"]).any()


def _run(model, dtype, task, optimizer, score, seed=0, extra_observations=None):
    if optimizer == "bszo" and extra_observations is None:
        extra_observations = "reuse"   # conf/optimizer/bszo.yaml's default, read from config.yaml by the loader
    return dict(model=model, dtype=dtype, task=task, tuning="full", template="mezo", optimizer=optimizer, steps_budget=20000,
                num_dev=500, num_train=1000, status="completed", test_score=score, best_dev_score=score,
                lr=1e-7, eps=1e-4, seed=seed, data_seed=seed, extra_observations=extra_observations)


def test_layout_sets_runs_beside_the_papers_opt13b_bf16_numbers():
    layout = load_layout("bszo_comparison")
    runs = pd.DataFrame([_run("opt-13b", "bf16", "sst2", "bszo", 0.90),
                         _run("opt-13b", "fp32", "sst2", "bszo", 0.91),
                         _run("smollm2-135m", "fp16", "sst2", "zo_sgd", 0.60)])
    tables = build_tables(layout, runs, load_published(layout.published.files))
    by = {tuple(t.split.values()): t for t in tables}
    assert set(by) == {("opt-13b", "bf16"), ("opt-13b", "fp32"), ("smollm2-135m", "fp16")}
    rows, cols = by[("opt-13b", "bf16")].row_labels, by[("opt-13b", "bf16")].col_labels
    cell = by[("opt-13b", "bf16")].cells[(rows.index("BSZO"), cols.index("SST-2"))]
    assert cell.published == pytest.approx(93.23) and cell.stats.mean == pytest.approx(90.0)
    trec = by[("opt-13b", "bf16")].cells[(rows.index("HiZOO"), cols.index("TREC"))]
    assert trec.published == pytest.approx(19.8)
    assert cell.comparable
    fp32 = by[("opt-13b", "fp32")]
    assert any("dtype: published bf16; measured fp32" in d for d in fp32.differences)  # the paper ran OPT-13B in bf16
    cpu = by[("smollm2-135m", "fp16")].cells[(rows.index("MeZO"), cols.index("SST-2"))]
    assert cpu.published == pytest.approx(85.89) and not cpu.comparable   # another model: shown, no difference


@pytest.mark.parametrize("path", FULL + CPU, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_bszo_blocks_plan(path):
    from zobench.aggregate.reproduce import plan_block

    scale = path.parent.parent.name
    block = plan_block(f"{scale}/{path.parent.name}/{path.stem}")
    assert block.jobs
    if scale == "cpu":  # one learning rate for the three dtypes: a prefix block's dev search
        assert block.search["from"] in ("zobench_sst2/zo_sgd_prefix", "zobench_sst2/zo_adam_prefix")
        assert {j["dtype"] for j in block.jobs} == {"fp32", "fp16", "bf16"}
    else:
        assert len(block.jobs) >= 5   # a 5-point LR grid at least


def test_cpu_precision_blocks_run_after_the_searches_they_reuse_not_at_the_head():
    lines = [l.split("#", 1)[0].strip() for l in (CONF_DIR / "experiment/cpu/order.txt").read_text().splitlines()]
    lines = [l for l in lines if l]
    ours = [i for i, l in enumerate(lines) if l.startswith("bszo_precision/")]
    assert len(ours) == len(CPU)
    assert min(ours) > max(lines.index("zobench_sst2/zo_sgd_prefix"), lines.index("zobench_sst2/zo_adam_prefix"),
                           lines.index("claims/template_none_zo"))


def test_bszo_b_runs_land_in_their_own_row_beside_the_papers_bszo_b_numbers():
    """extra_observations (optimizer.estimator.extra_observations) tells BSZO (reuse) from BSZO-B (probe)."""
    layout = load_layout("bszo_comparison")
    runs = pd.DataFrame([_run("opt-13b", "bf16", "sst2", "bszo", 0.90),
                         _run("opt-13b", "bf16", "sst2", "bszo", 0.80, extra_observations="probe")])
    table, = build_tables(layout, runs, load_published(layout.published.files))
    rows, col = table.row_labels, table.col_labels.index("SST-2")
    bszo, bszo_b = table.cells[(rows.index("BSZO"), col)], table.cells[(rows.index("BSZO-B"), col)]
    assert bszo.stats.mean == pytest.approx(90.0) and bszo.published == pytest.approx(93.23)
    assert bszo_b.stats.mean == pytest.approx(80.0) and bszo_b.published == pytest.approx(91.86)  # Table 3, BSZO-B


def test_the_loader_reads_extra_observations_from_a_runs_config(tmp_path):
    from zobench.aggregate.load import load_runs

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("optimizer:\n  name: bszo\n  estimator:\n    extra_observations: probe\n")
    (run / "summary.json").write_text('{"status": "completed", "test_score": 0.5}')
    assert load_runs(tmp_path)["extra_observations"].tolist() == ["probe"]
