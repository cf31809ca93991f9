"""The CLI end to end on tiny models: every task with ZO-SGD and FO-Adam, and how runs end."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMALL, compose_cfg
from tests.native_data import SHARED_DATA
from zobench.run import run_cell

REQUIRED = ["status", "error", "model", "task", "tuning", "optimizer", "seed", "steps", "forward_passes",
            "zero_shot_accuracy", "best_dev_accuracy", "best_step", "test_accuracy", "trainable_params",
            "total_params", "peak_memory_bytes", "inference_peak_memory_bytes", "step_time_ms", "wall_time_s",
            "versions"]


def read_metrics(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r], [r for r in rows if "dev_accuracy" in r]


@pytest.mark.parametrize("task", ["sst2", "copa", "winogrande", "multirc"])
@pytest.mark.parametrize("optimizer", ["zo_sgd", "fo_adam"])
def test_cell_runs_end_to_end(task, optimizer, small_cfg, tmp_path):
    cfg = small_cfg(f"task={task}", f"optimizer={optimizer}", "model=tiny-opt")
    summary = run_cell(cfg, tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in REQUIRED:
        assert key in on_disk, key
    assert (tmp_path / "run" / "config.yaml").exists()
    steps, devs = read_metrics(tmp_path / "run")
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert [r["step"] for r in devs] == [2, 4]
    assert set(steps[0]) >= {"step", "loss", "lr", "step_time_ms", "forward_passes"}
    per_step = 2 if optimizer == "zo_sgd" else 1
    assert summary["forward_passes"] == 4 * per_step == steps[-1]["forward_passes"]
    assert summary["trainable_params"] == summary["total_params"] > 0
    assert 0 <= summary["test_accuracy"] <= 1 and 0 <= summary["zero_shot_accuracy"] <= 1
    best = max(devs, key=lambda r: (r[f"dev_{summary['metric']}"], -r["step"]))
    assert summary["best_step"] == best["step"]  # selected on dev, first best kept
    assert summary["peak_memory_bytes"] > 0 and summary["inference_peak_memory_bytes"] > 0
    assert not (tmp_path / "run" / "best_trainable.pt").exists()
    # the machine's load beside the wall time: the cost of a cell on shared cores is not its wall time alone
    assert 0 < summary["cpu_time_s"] and summary["cpu_count"] >= 1
    assert all(summary[k] is None or summary[k] >= 0 for k in ("load_average_1m_start", "load_average_1m_end"))


def test_same_seed_same_trajectory(small_cfg, tmp_path):
    losses = []
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        run_cell(small_cfg("model=tiny-llama", f"seed={seed}", "optimizer.lr=1e-3"), tmp_path / name)
        losses.append([r["loss"] for r in read_metrics(tmp_path / name)[0]])
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_nan_loss_ends_the_run_as_diverged_without_traceback(small_cfg, tmp_path):
    summary = run_cell(small_cfg("optimizer.lr=1e38", "optimizer.eps=1"), tmp_path / "run")
    assert summary["status"] == "diverged"
    assert "at step" in summary["error"]
    assert not (tmp_path / "run" / "traceback.txt").exists()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_an_exception_is_recorded_as_failed(small_cfg, tmp_path, monkeypatch):
    import zobench.distributed

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(zobench.distributed, "evaluate", boom)  # every evaluation of a run goes through it
    summary = run_cell(small_cfg(), tmp_path / "run")
    assert summary["status"] == "failed" and "disk on fire" in summary["error"]
    assert "RuntimeError" in (tmp_path / "run" / "traceback.txt").read_text()


def test_console_script_runs_a_cell(native, tmp_path):
    run_dir = tmp_path / "cli"
    done = subprocess.run(
        [sys.executable, "-m", "zobench", "model=tiny-llama", "task=copa", f"data.dir={native}", *SMALL,
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.split()[1:] == ["status", "completed"] for line in lines if line.startswith("[zobench]"))
    test_line = next(line for line in lines if "test accuracy" in line)  # a score with its interval and n
    assert "(n=12, 95% bootstrap interval)" in test_line and re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", test_line)
    assert any("GiB" in line and "x inference" in line for line in lines)
    assert json.loads((run_dir / "summary.json").read_text())["task"] == "copa"


def test_console_script_rejects_a_typo_in_a_second(native):
    done = subprocess.run([sys.executable, "-m", "zobench", "trainer.stepz=3", f"data.dir={native}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "trainer.stepz is not a key of trainer" in done.stderr
    assert "Did you mean trainer.steps?" in done.stderr


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")
@pytest.mark.parametrize("task", ["sst2", "copa", "winogrande", "multirc"])
def test_integration_on_the_real_task_data(task, tmp_path):
    cfg = compose_cfg(*SMALL, f"data.dir={SHARED_DATA}", f"task={task}", "model=tiny-opt")
    summary = run_cell(cfg, tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    assert summary["data"]["num_eval"] == 12
    if task == "multirc":
        assert "disjoint" in summary["data"]["split"]
