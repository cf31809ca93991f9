"""W&B: an offline run directory written by a real cell, read back; a W&B failure never fails a run."""
from __future__ import annotations

import pytest

from tests.conftest import SMALL, compose_cfg
from tests.wandb_records import read_run
from zobench.run import run_cell


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def test_offline_run_logs_config_steps_dev_and_summary(offline, native, tmp_path):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "logger=wandb", "model=tiny-llama", "task=copa")
    summary = run_cell(cfg, tmp_path / "run", run_name="task=copa", group="my-sweep")
    assert summary["status"] == "completed", summary["error"]
    (run_file,) = (tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb")
    run = read_run(run_file)
    assert run["name"] == "task=copa" and run["group"] == "my-sweep"
    assert {"model:tiny-llama", "task:copa", "tuning:full", "optimizer:zo_sgd"} <= set(run["tags"])
    assert run["config"]["trainer"]["steps"] == 4 and run["config"]["model"]["name"] == "tiny-llama"
    steps = [h for h in run["history"] if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3, 4]
    assert [h["step"] for h in run["history"] if "dev_accuracy" in h] == [2, 4]
    assert run["summary"]["status"] == "completed"
    assert run["summary"]["test_accuracy"] == pytest.approx(summary["test_accuracy"])


def test_a_wandb_error_never_fails_a_run(native, tmp_path, monkeypatch, caplog):
    import wandb

    def broken(*a, **k):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "logger=wandb")
    summary = run_cell(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    assert "W&B logging disabled" in caplog.text and "wandb is down" in caplog.text


def test_aggregator_pushes_tables_and_figures(offline, native, tmp_path, monkeypatch):
    from zobench.aggregate.cli import main

    for seed in (0, 1):
        run_cell(compose_cfg(*SMALL, f"data.dir={native}", "task=multirc", f"seed={seed}"), tmp_path / "runs" / f"s{seed}")
    main([str(tmp_path / "runs"), "--table", "memory_time", "--wandb", "zobench-tables"])
    (run_file,) = (tmp_path / "runs" / "aggregate").glob("wandb/offline-run-*/run-*.wandb")
    logged = {k.split("/")[0] + "/" + k.split("/")[1] for row in read_run(run_file)["history"] for k in row if "/" in k}
    assert "runs/_type" in logged  # the run list, as a wandb.Table
    tables = [p.stem for p in (tmp_path / "runs" / "aggregate").glob("*.csv") if p.name != "runs.csv"]
    figures = [p.stem for p in (tmp_path / "runs" / "aggregate" / "figures").glob("*.png")]
    assert tables and figures
    assert {f"table/{t}" for t in tables} <= logged
    assert {f"figure/{f}" for f in figures} <= logged
