"""W&B: an offline run directory written by a real cell, read back; a W&B failure never fails a run."""
from __future__ import annotations

import pandas as pd
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


# -- what a dashboard reads -----------------------------------------------------------------------------------
def test_dashboard_reads_forward_passes_zero_shot_at_step_0_and_numeric_cost_summary(offline, native, tmp_path):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "logger=wandb", "model=tiny-llama", "task=copa")
    summary = run_cell(cfg, tmp_path / "run", run_name="seed=0")
    assert summary["status"] == "completed", summary["error"]
    (run_file,) = (tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb")
    run = read_run(run_file)
    dev = [h for h in run["history"] if "dev_accuracy" in h]
    assert dev and all(isinstance(h["forward_passes"], int) and h["forward_passes"] > 0 for h in dev)
    (zero,) = [h for h in run["history"] if "zero_shot_accuracy" in h]
    assert zero["step"] == 0 and zero["forward_passes"] == 0
    assert zero["zero_shot_accuracy"] == pytest.approx(summary["zero_shot_accuracy"])
    s = run["summary"]
    assert s["forward_passes"] == summary["forward_passes"] and s["forward_pass_equivalents"] == summary["forward_passes"]
    assert s["step_time_ms"] == pytest.approx(summary["step_time_ms"]) and s["step_time_s"] == pytest.approx(
        summary["step_time_ms"] / 1000)
    assert s["peak_memory_gib"] == pytest.approx(summary["peak_memory_bytes"] / 2**30)
    assert s["memory_ratio"] == pytest.approx(summary["peak_memory_bytes"] / summary["inference_peak_memory_bytes"])
    lo, hi = summary["test_score_ci95"]
    assert (s["test_score_ci95_lo"], s["test_score_ci95_hi"]) == (pytest.approx(lo), pytest.approx(hi))


def test_zero_shot_row_is_logged_once():
    from zobench.wandb_logger import WandbLogger

    class Run:
        def __init__(self):
            self.rows, self.summary = [], {}

        def log(self, row):
            self.rows.append(row)

        def finish(self, exit_code=0):
            pass

    summary = {"status": "completed", "metric": "f1", "zero_shot_accuracy": 0.5, "zero_shot_f1": 0.25,
               "zero_shot_score": 0.25, "peak_memory_bytes": 2**31, "inference_peak_memory_bytes": 2**30,
               "step_time_ms": 250.0, "forward_passes": 8, "optimizer": "zo_sgd", "family": "zo", "loss": "nan"}
    for logged_live in (False, True):
        logger = WandbLogger.__new__(WandbLogger)
        logger.run, logger._warned, logger.config, logger.resumed, logger.zero_shot_logged = Run(), False, None, False, False
        rows = logger.run.rows
        if logged_live:
            logger.log({"step": 0, "zero_shot_f1": 0.25, "forward_passes": 0})
        logger.log({"step": 2, "dev_accuracy": 0.5, "dev_f1": 0.3, "forward_passes": 4})
        logger.finish(summary)
        zero = [r for r in rows if r["step"] == 0]
        assert len(zero) == 1
        if not logged_live:
            assert zero[0] == {"step": 0, "zero_shot_accuracy": 0.5, "zero_shot_f1": 0.25, "zero_shot_score": 0.25,
                               "forward_passes": 0}
    s = logger.run.summary
    assert (s["peak_memory_gib"], s["memory_ratio"], s["step_time_s"], s["forward_pass_equivalents"]) == (2.0, 2.0, 0.25, 8.0)
    assert isinstance(s["loss"], float)  # "nan" in summary.json is a number again


# -- run directories already on disk -> W&B runs ----------------------------------------------------------------
def _disk_run(root, name, optimizer, seed, status="completed", task_overrides=None):
    import json

    import yaml

    run = root / name
    run.mkdir(parents=True)
    summary = {"status": status, "error": None if status == "completed" else "RuntimeError: boom", "model": "tiny-llama",
               "task": "copa", "tuning": "full", "optimizer": optimizer, "seed": seed, "metric": "accuracy",
               "family": "zo" if optimizer.startswith("zo") else "fo", "steps": 4, "steps_budget": 4,
               "forward_passes": 8, "test_score": 0.6, "test_accuracy": 0.6, "test_score_ci95": [0.5, 0.7],
               "zero_shot_accuracy": 0.5, "zero_shot_score": 0.5, "peak_memory_bytes": 3 * 2**30,
               "inference_peak_memory_bytes": 2**30, "step_time_ms": 20.0, "final_loss": "nan"}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny-llama"}, "task": {"name": "copa"},
                                                      "optimizer": {"name": optimizer}, "seed": seed,
                                                      "logger": {"name": "none"}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 1, "loss": 1.5, "forward_passes": 2}, {"step": 2, "loss": "nan", "forward_passes": 4},
        {"step": 2, "dev_accuracy": 0.55, "forward_passes": 4})))
    if task_overrides is not None:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {
            "mode": "RunMode.MULTIRUN", "sweep": {"dir": str(root)}, "overrides": {"task": task_overrides}}}))
    return run


def test_runs_on_disk_are_pushed_once(offline, tmp_path):
    import json

    import yaml

    from zobench.aggregate.cli import main

    runs = tmp_path / "sweep-a"
    runs.mkdir()
    (runs / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "model=tiny-llama", "optimizer=zo_sgd,fo_adam", "seed=0,1", "data.dir=/d"]}}}))
    for optimizer in ("zo_sgd", "fo_adam"):
        for seed in (0, 1):
            _disk_run(runs, f"{optimizer}-{seed}", optimizer, seed,
                      task_overrides=["model=tiny-llama", f"optimizer={optimizer}", f"seed={seed}", "data.dir=/d"])
    _disk_run(runs, "failed", "zo_sgd", 2, status="failed")
    live = _disk_run(runs, "live", "zo_sgd", 3)
    (live / "config.yaml").write_text(yaml.safe_dump({"logger": {"name": "wandb", "project": "zobench-runs"}}))
    (live / "wandb_run_id").write_text("abcd1234\n")

    main([str(runs), "--no-plots", "--wandb-runs", "zobench-runs"])
    files = sorted((runs / "aggregate").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 4  # the four completed runs; not the failed one, nor the one that logged itself live
    pushed = {r["name"]: r for r in map(read_run, files)}
    assert set(pushed) == {"optimizer=zo_sgd,seed=0", "optimizer=zo_sgd,seed=1", "optimizer=fo_adam,seed=0",
                           "optimizer=fo_adam,seed=1"}  # the sweep's varying overrides, as logged live
    run = pushed["optimizer=zo_sgd,seed=1"]
    assert run["group"] == "sweep-a" and {"optimizer:zo_sgd", "task:copa", "pushed"} <= set(run["tags"])
    assert run["config"]["optimizer"] == {"name": "zo_sgd"} and run["config"]["seed"] == 1
    assert [(h["step"], h.get("loss"), h.get("dev_accuracy"), h.get("zero_shot_accuracy"), h["forward_passes"])
            for h in run["history"]][:1] == [(0, None, None, 0.5, 0)]
    assert [h["step"] for h in run["history"]] == [0, 1, 2, 2]
    assert run["history"][3]["dev_accuracy"] == 0.55 and run["history"][3]["forward_passes"] == 4
    s = run["summary"]
    assert (s["peak_memory_gib"], s["memory_ratio"], s["step_time_ms"], s["forward_passes"]) == (3.0, 3.0, 20.0, 8)
    assert s["test_score_ci95_lo"] == 0.5 and s["status"] == "completed"
    record = json.loads((runs / "zo_sgd-1" / "wandb_pushed.json").read_text())["pushes"]
    assert [(p["project"], p["mode"]) for p in record] == [("zobench-runs", "offline")]
    assert len(list((runs / "aggregate" / "wandb").glob(f"offline-run-*-{record[0]['id']}"))) == 1

    # idempotent: pushed runs are not pushed twice; a new run is; another project gets its own push
    _disk_run(runs, "zo_sgd-9", "zo_sgd", 9)
    from zobench.aggregate.wandb_push import push_runs

    done = push_runs(runs, "zobench-runs")
    assert done["pushed"] == ["zo_sgd-9"] and len(done["already pushed"]) == 4
    assert done["logged live"] == ["live"] and done["not completed"] == ["failed"]
    assert len(list((runs / "aggregate").glob("wandb/offline-run-*/run-*.wandb"))) == 5  # beside the tables
    assert push_runs(runs, "another")["pushed"] == ["fo_adam-0", "fo_adam-1", "live", "zo_sgd-0", "zo_sgd-1", "zo_sgd-9"]
    projects = [p["project"] for p in json.loads((runs / "zo_sgd-0" / "wandb_pushed.json").read_text())["pushes"]]
    assert projects == ["zobench-runs", "another"]


def test_pushed_tables_hold_numbers(offline, tmp_path):
    import json

    from zobench.aggregate.cli import main
    from zobench.aggregate.wandb_push import table_data

    columns, rows = table_data(pd.DataFrame({"n": [3, 1], "mean": [63.0, float("nan")], "ok": [True, None],
                                             "mixed": [1, "a"], "name": ["x", None]}))
    assert columns == ["n", "mean", "ok", "mixed", "name"]
    assert rows == [[3, 63.0, True, "1", "x"], [1, None, None, "a", None]]
    assert all(type(v) in (int, float, bool, str, type(None)) for row in rows for v in row)

    runs = tmp_path / "runs"
    for seed in (0, 1):
        _disk_run(runs, f"zo-{seed}", "zo_sgd", seed)
    main([str(runs), "--no-plots", "--wandb", "zobench-tables"])
    (table,) = (runs / "aggregate").glob("wandb/offline-run-*/files/media/table/table/sweep*.table.json")
    logged = json.loads(table.read_text())
    row = dict(zip(logged["columns"], logged["data"][0]))
    assert row["n"] == 2 and row["mean"] == pytest.approx(60.0) and row["peak_memory_gib"] == 3.0
    assert row["dev_mean"] is None and row["task"] == "copa"
