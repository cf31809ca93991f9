"""Sweeps that survive, with real processes: failure isolation, resumable re-runs, launchers, kills.

Slow (each test starts the CLI as a subprocess): ``make test-slow``; CI runs them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import SMALL

pytestmark = pytest.mark.slow
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def zobench(*args, timeout=600, check=True):
    done = subprocess.run([sys.executable, "-m", "zobench", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def summaries(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))}


def test_a_failing_cell_never_stops_the_sweep_and_a_rerun_skips_completed_cells(native, tmp_path):
    args = ["-m", *SMALL, f"data.dir={native}", f"paths.runs_dir={tmp_path}", "trainer.loss=lm,hinge",
            "optimizer=zo_sgd,fo_sgd"]
    first = zobench(*args, check=False)
    cells = summaries(tmp_path / "multirun" / "sweep")
    assert len(cells) == 4
    failed = {k: v for k, v in cells.items() if v["status"] == "failed"}
    assert len(failed) == 2 and all("trainer.loss=hinge" in name for name in failed)
    assert all("trainer.loss" in v["error"] for v in failed.values())
    assert all(v["status"] == "completed" for k, v in cells.items() if k not in failed)

    second = zobench(*args, check=False)
    again = summaries(tmp_path / "multirun" / "sweep")
    for name, cell in cells.items():
        if cell["status"] == "completed":
            assert again[name]["wall_time_s"] == cell["wall_time_s"]  # skipped: the summary is untouched
        else:
            assert again[name]["status"] == "failed"  # re-run, fails again the same way
    assert "already holds a completed run" in second.stdout + second.stderr
    assert first.returncode == second.returncode == 1  # a sweep with failed cells says so in its exit status
    assert "[zobench] sweep: 2 completed, 0 diverged, 2 failed, 0 interrupted, 0 skipped" in first.stdout + first.stderr
    assert "0 completed, 0 diverged, 2 failed, 0 interrupted, 2 skipped" in second.stdout + second.stderr


def test_joblib_launcher_runs_cells_in_parallel(native, tmp_path):
    zobench("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMALL, f"data.dir={native}",
            f"paths.runs_dir={tmp_path}", "seed=0,1")
    cells = summaries(tmp_path / "multirun" / "sweep")
    assert sorted(c["seed"] for c in cells.values()) == [0, 1]
    assert all(c["status"] == "completed" for c in cells.values())


def test_submitit_local_launcher(native, tmp_path):
    zobench("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *SMALL,
            f"data.dir={native}", f"paths.runs_dir={tmp_path}", "optimizer=zo_sgd,fo_adam")
    cells = summaries(tmp_path / "multirun" / "sweep")
    assert sorted(c["optimizer"] for c in cells.values()) == ["fo_adam", "zo_sgd"]
    assert all(c["status"] == "completed" for c in cells.values())


def _start(run_dir: Path, native: Path, *extra: str) -> subprocess.Popen:
    args = ["device=cpu", "trainer.steps=30", "trainer.eval_every=30", "trainer.batch_size=4",
            "data.num_train=16", "data.num_dev=8", "data.num_eval=8", f"data.dir={native}",
            "trainer.save_trainable=true", "optimizer.lr=1e-3", f"hydra.run.dir={run_dir}", *extra]
    return subprocess.Popen([sys.executable, "-m", "zobench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV), args


def _wait_for_steps(run_dir: Path, n: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = run_dir / "metrics.jsonl"
        if path.exists() and sum('"loss"' in line for line in path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} did not reach step {n}")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(how, native, tmp_path):
    whole_dir, cut_dir = tmp_path / "whole", tmp_path / "cut"
    extra = ["trainer.checkpoint_every=2"] if how == "SIGKILL" else ["trainer.checkpoint_every=0"]
    proc, _ = _start(whole_dir, native, *extra)
    assert proc.wait(timeout=600) == 0, proc.stdout.read()

    proc, args = _start(cut_dir, native, *extra)
    _wait_for_steps(cut_dir, 5)
    proc.send_signal(getattr(signal, how))
    code = proc.wait(timeout=300)
    summary_path = cut_dir / "summary.json"
    if how == "SIGTERM":
        assert code == 1  # a single run that stopped early says so
        assert json.loads(summary_path.read_text())["status"] == "interrupted"
    else:
        assert code == -signal.SIGKILL and not summary_path.exists()  # nothing could be written
    assert json.loads((cut_dir / "checkpoint.json").read_text())["step"] >= 4

    zobench(*args)  # the same command again: resumes
    resumed, whole = json.loads(summary_path.read_text()), json.loads((whole_dir / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["forward_passes"] == whole["forward_passes"]
    a, b = torch.load(whole_dir / "trainable.pt"), torch.load(cut_dir / "trainable.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
