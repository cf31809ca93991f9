"""The dev-only learning-rate search of reproduction blocks (zobench/aggregate/search.py)."""
from __future__ import annotations

import json

import pytest
import yaml

from zobench.aggregate import search
from zobench.aggregate.reproduce import block_names, plan_block
from zobench.errors import ConfigError

GRID = {"steps": 150, "eval_every": 50, "grid": {"optimizer.lr": [0.003, 0.01, 0.03]}}


def _cell(root, name, lr, dev, status="completed", tuning="prefix"):
    d = root / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"status": status, "best_dev_score": dev, "best_step": 50}))
    # as a resolved config.yaml holds them: a config group is a mapping with its chosen name
    (d / "config.yaml").write_text(yaml.safe_dump({"optimizer": {"name": "zo_sgd", "lr": lr, "eps": 0.1},
                                                   "tuning": {"name": tuning, "r": 8}}))


def test_the_best_dev_score_is_chosen_and_ties_keep_the_first_grid_point(tmp_path):
    _cell(tmp_path, "a", 0.003, 0.61)
    _cell(tmp_path, "b", 0.01, 0.70)
    _cell(tmp_path, "c", 0.03, 0.70)  # tie with 0.01: the first as written wins
    rows = search.results(tmp_path, GRID, ["tuning", "optimizer", "optimizer.eps"])  # the block's sweep keys
    assert search.choose(rows, GRID, {"tuning": "prefix", "optimizer": "zo_sgd", "optimizer.eps": 0.1}) == {"optimizer.lr": 0.01}


def test_a_diverged_grid_point_loses_and_a_missing_one_means_no_choice_yet(tmp_path):
    _cell(tmp_path, "a", 0.003, 0.55)
    _cell(tmp_path, "c", 0.03, None, status="diverged")
    rows = search.results(tmp_path, GRID, [])
    assert search.choose(rows, GRID, {}) is None  # 0.01 has not run
    _cell(tmp_path, "b", 0.01, 0.50)
    rows = search.results(tmp_path, GRID, [])
    assert search.choose(rows, GRID, {}) == {"optimizer.lr": 0.003}


def test_groups_are_chosen_apart(tmp_path):
    for tuning, best in (("prefix", 0.03), ("lora", 0.003)):
        for lr in GRID["grid"]["optimizer.lr"]:
            _cell(tmp_path, f"{tuning}-{lr}", lr, 0.9 if lr == best else 0.5, tuning=tuning)
    rows = search.results(tmp_path, GRID, ["tuning"])
    assert search.choose(rows, GRID, {"tuning": "lora"}) == {"optimizer.lr": 0.003}
    assert search.choose(rows, GRID, {"tuning": "prefix"}) == {"optimizer.lr": 0.03}


def test_a_recorded_choice_is_reused_and_from_reads_it(tmp_path):
    runs = tmp_path / "reproduce-cpu"
    directory = search.block_dir(runs, "cpu/zobench_sst2/zo_sgd_prefix")
    directory.mkdir(parents=True)
    chosen = [{"group": {"tuning": "prefix"}, "values": {"optimizer.lr": 0.01}}]
    search.write_record(directory, "cpu/zobench_sst2/zo_sgd_prefix", GRID, [], chosen)
    groups = [{"tuning": "prefix"}]
    assert search.recorded_choice(directory, GRID, groups) == chosen
    assert search.recorded_choice(directory, {**GRID, "steps": 300}, groups) is None  # another search: run it
    assert search.recorded_choice(directory, {**GRID, "eval_every": 25}, groups) is None
    assert search.recorded_choice(directory, GRID, [{"tuning": "lora"}]) is None  # the block's sweep changed
    overrides, missing = search.from_overrides(runs, {"from": "zobench_sst2/zo_sgd_prefix"})
    assert (overrides, missing) == (["optimizer.lr=0.01"], [])
    overrides, missing = search.from_overrides(runs, {"from": {"optimizer.zo_lr": "zobench_sst2/zo_sgd_prefix:optimizer.lr",
                                                               "optimizer.lr": "zobench_sst2/fo_sgd_lora"}})
    assert overrides == ["optimizer.zo_lr=0.01"] and missing == ["zobench_sst2/fo_sgd_lora"]


def test_a_choice_at_the_grid_edge_is_flagged_in_findings(tmp_path):
    assert search.at_edge(GRID["grid"], {"optimizer.lr": 0.03}) == ["optimizer.lr"]
    assert search.at_edge(GRID["grid"], {"optimizer.lr": 0.003}) == ["optimizer.lr"]
    assert search.at_edge(GRID["grid"], {"optimizer.lr": 0.01}) == []
    assert search.at_edge({"optimizer.lr": [1e-5, 1e-4]}, {"optimizer.lr": 1e-4}) == []  # two points: no interior
    assert search.at_edge(GRID["grid"], None) == []
    from zobench.aggregate.findings import write_findings

    runs = tmp_path / "reproduce-cpu"
    runs.mkdir()
    directory = search.block_dir(runs, "cpu/zobench_sst2/zo_sgd_prefix")
    directory.mkdir(parents=True)
    for lr, dev in ((0.003, 0.6), (0.01, 0.7), (0.03, 0.72)):
        _cell(directory, f"lr{lr}", lr, dev)
    rows = search.results(directory, GRID, ["tuning"])
    chosen = [{"group": {"tuning": "prefix"}, "values": search.choose(rows, GRID, {"tuning": "prefix"})}]
    search.write_record(directory, "cpu/zobench_sst2/zo_sgd_prefix", GRID, rows, chosen)
    text = (tmp_path / "F.md").read_text() if write_findings(runs, tmp_path / "F.md") is not None else ""
    line = next(x for x in text.splitlines() if x.startswith("| cpu/zobench_sst2/zo_sgd_prefix"))
    assert "0.01: 0.7" in line and "0.03: 0.72" in line and "optimizer.lr=0.03 **at the grid's edge**" in line


@pytest.mark.parametrize("bad, key", [({"steps": 10, "grid": {"optimizer.lr": [1]}}, "eval_every"),
                                      ({"steps": 0, "eval_every": 5, "grid": {"optimizer.lr": [1]}}, "search.steps"),
                                      ({"steps": 10, "eval_every": 5, "grid": {"optimizer.lr": []}}, "search.grid"),
                                      ({"from": "x", "steps": 3}, "from")])
def test_bad_search_entries_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        search.spec({"search": bad})


def test_every_cpu_block_plans_and_searched_blocks_run_their_grid_at_seed_0_on_dev_only():
    names = block_names("cpu")
    assert names[0] == "cpu/zobench_sst2/zo_sgd_prefix"  # order.txt: the headline cells first
    block = plan_block("cpu/zobench_sst2/zo_sgd_prefix")
    assert {j["seed"] for j in block.jobs} == {0, 1, 2}
    assert [j["optimizer.lr"] for j in block.search_jobs] == [0.003, 0.01, 0.03, 0.1]
    assert {j["seed"] for j in block.search_jobs} == {0}
    assert "trainer.test=false" in search.search_overrides(block.search)
    for name in names:  # every from: names a block that has a grid
        for source in search.sources(plan_block(name).search):
            assert "grid" in plan_block(f"cpu/{source}").search, (name, source)


def test_cut_blocks_are_named_with_a_reason_left_out_of_the_study_and_still_runnable_by_name(capsys):
    """conf/experiment/cpu/cut.txt: what the CPU study leaves out to fit its 8 hours, each with why."""
    from zobench.aggregate.reproduce import cut_blocks, main

    cut = cut_blocks("cpu")
    assert "cpu/zobench_sst2/fo_adam_prefix" in cut and all(cut.values())  # every cut says why
    assert set(cut) <= set(block_names("cpu"))  # a cut names a block that exists
    main(["--scale", "cpu", "--dry-run", "--only", "zobench_sst2"])
    plan = capsys.readouterr().out
    assert "cut to fit" in plan and "fo_adam_prefix: ~11 min" in plan
    planned = [line.split()[0] for line in plan.splitlines() if line.startswith("  cpu/") and "cells" in line]
    assert "cpu/zobench_sst2/zo_sgd_prefix" in planned and "cpu/zobench_sst2/fo_adam_prefix" not in planned
    main(["--scale", "cpu", "--dry-run", "--only", "zobench_sst2/fo_adam_prefix"])
    planned = [line.split()[0] for line in capsys.readouterr().out.splitlines()
               if line.startswith("  cpu/") and "cells" in line]
    assert planned == ["cpu/zobench_sst2/fo_adam_prefix"]


def test_every_searched_key_a_block_reads_from_another_block_passes_the_sweep_precheck(tmp_path):
    """reproduce passes a ``from:`` block's searched values on the command line (``optimizer.zo_lr=...``); Hydra applies
    them before the sweeper's choices, so a key of a group only the sweeper params choose failed the hybrid block
    (``zo_lr`` against the default optimizer). The precheck refuses that as Hydra would: each block must pass it."""
    from zobench.cli_check import precheck

    for name in block_names("cpu"):
        s = plan_block(name).search
        if not s or "from" not in s:
            continue
        keys = ["optimizer.lr"] if isinstance(s["from"], str) else list(s["from"])
        precheck(["-m", f"+experiment={name}", "model=tiny-opt", f"paths.runs_dir={tmp_path}",
                  *[f"{k}=0.001" for k in keys]])
