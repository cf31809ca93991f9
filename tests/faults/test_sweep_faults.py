"""Nothing lost, nothing mixed: sweeps and runs under signals, failures and concurrency.

The fast tests call ``run_cell`` in this process (real signals to it). The ones marked slow drive the
CLI (``python -m zobench``) as a subprocess and signal it as ``kill``, a scheduler or Ctrl-C do:
``python -m pytest -m slow tests/faults/test_sweep_faults.py``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.conftest import SMALL, compose_cfg
from zobench import interrupt
from zobench.lock import RunDirLock
from zobench.run import run_cell

ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
ROOT = Path(__file__).resolve().parents[2]
RESUMABLE = ["trainer.steps=6", "trainer.eval_every=2", "trainer.checkpoint_every=0"]
# cells that train long enough to be signalled half-way (a signal ends them within a step)
LONG = ["device=cpu", "trainer.steps=3000", "trainer.eval_every=3000", "trainer.checkpoint_every=0",
        "trainer.batch_size=4", "trainer.eval_batch_size=16", "data.num_train=16", "data.num_dev=8", "data.num_eval=8"]
LINE = re.compile(r"^\[zobench\] sweep: (\d+) completed, (\d+) diverged, (\d+) failed, (\d+) interrupted, (\d+) skipped(.*)$")


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- fast: run_cell in this process

def test_a_locked_run_dir_is_busy_and_left_untouched(native, tmp_path, caplog):
    cfg = compose_cfg(*SMALL, f"data.dir={native}")
    run = tmp_path / "run"
    assert run_cell(cfg, run)["status"] == "completed"
    (run / "summary.json").unlink()  # as if a run were under way there
    with RunDirLock(run) as held:  # another process's run (flock: one open file, another lock)
        assert held
        before = files(run)
        caplog.clear()
        summary = run_cell(cfg, run)
        assert summary["status"] == "busy" and summary["busy"]
        assert files(run) == before  # nothing written: no summary, no config, no metrics row
        busy = [r for r in caplog.records if "busy" in r.getMessage()]
        assert len(busy) == 1 and str(run) in busy[0].getMessage()
    again = run_cell(cfg, run)  # released: the cell runs
    assert again["status"] == "completed" and not (run / ".lock").exists()


def test_a_lock_dies_with_its_process(tmp_path):
    """flock is released by the kernel: a killed run never leaves a folder locked."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from zobench.lock import RunDirLock\n"
                               f"lock = RunDirLock({str(tmp_path)!r}); assert lock.acquire(); print('held', flush=True)\n"
                               "time.sleep(600)"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not RunDirLock(tmp_path).acquire()
        holder.kill()
        holder.wait(timeout=30)
        lock = RunDirLock(tmp_path)
        assert lock.acquire()  # the .lock file is still there; its lock is not
        lock.release()
        assert not (tmp_path / ".lock").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_run_that_starts_removes_an_earlier_traceback(native, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "traceback.txt").write_text("Traceback (most recent call last):\nRuntimeError: an earlier attempt\n")
    assert run_cell(compose_cfg(*SMALL, f"data.dir={native}"), run)["status"] == "completed"
    assert not (run / "traceback.txt").exists()


def test_ctrl_c_ends_a_run_interrupted_and_resumable(native, tmp_path, monkeypatch):
    """A real SIGINT half-way: the step ends, a checkpoint is written, status interrupted; a re-run resumes."""
    import zobench.train

    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer.lr=1e-3", *RESUMABLE)
    real, calls, before = interrupt.requested, {"n": 0}, signal.getsignal(signal.SIGINT)

    def sigint_at_step_3():
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C; without a handler: KeyboardInterrupt here
        return real()

    with monkeypatch.context() as m:
        m.setattr(zobench.train.interrupt, "requested", sigint_at_step_3)
        cut = run_cell(cfg, tmp_path / "run")
    assert cut["status"] == "interrupted" and cut["error"].startswith("Interrupted: stopped by a signal after step 3")
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"] == 3
    assert not (tmp_path / "run" / "traceback.txt").exists()
    assert signal.getsignal(signal.SIGINT) is before  # given back after the run
    resumed = run_cell(cfg, tmp_path / "run")
    assert resumed["status"] == "completed" and resumed["steps"] == 6
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_keyboard_interrupt_raised_inside_is_interrupted_not_failed(native, tmp_path, monkeypatch):
    """Where no handler could catch Ctrl-C first, the summary still says interrupted, with an error."""
    import zobench.distributed

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(zobench.distributed, "evaluate", ctrl_c)
    summary = run_cell(compose_cfg(*SMALL, f"data.dir={native}"), tmp_path / "run")
    assert summary["status"] == "interrupted" and summary["error"].startswith("KeyboardInterrupt")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"
    assert not (tmp_path / "run" / "traceback.txt").exists()


def test_sigint_is_handled_like_sigterm():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.graceful_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested() and interrupt.stopped()
    assert signal.getsignal(signal.SIGINT) is before


def test_the_sweep_line():
    from zobench.sweep import outcome, summary_line

    outcomes = [outcome(s) for s in ({"status": "completed"}, {"status": "completed", "skipped": True},
                                     {"status": "failed", "refused": True}, {"status": "busy", "busy": True},
                                     {"status": "diverged"}, {"status": "interrupted"}, {"status": "failed"})]
    assert summary_line(Counter(outcomes)) == "1 completed, 1 diverged, 1 failed, 1 interrupted, 1 skipped, 1 refused, 1 busy"
    assert summary_line(Counter()) == "0 completed, 0 diverged, 0 failed, 0 interrupted, 0 skipped"


# ---------------------------------------------------------------- slow: the CLI, real processes and signals

def zobench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zobench", *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV, cwd=ROOT)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zobench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)


def last_line(out: str) -> tuple[int, ...] | None:
    match = LINE.match(out.strip().splitlines()[-1]) if out.strip() else None
    return (*map(int, match.groups()[:5]), match.group(6)) if match else None


def wait_for_training(root: Path, cells: int, proc: subprocess.Popen, steps: int = 3, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        found = [p for p in root.rglob("metrics.jsonl") if p.read_text().count('"loss"') >= steps]
        if len(found) >= cells:
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{cells} cells did not reach step {steps}: {proc.communicate()[0][-3000:]}")


def cells(sweep_dir: Path) -> dict[int, Path]:
    """Cell folders by seed (the control folder and other dot-folders are not cells)."""
    found = {}
    for d in sweep_dir.iterdir():
        match = re.search(r"(?:^|,)seed=(\d+)", d.name)
        if d.is_dir() and match:
            found[int(match.group(1))] = d
    return found


def summary(cell: Path) -> dict | None:
    path = cell / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.slow
def test_sigterm_to_a_joblib_sweep_reaches_every_worker(native, tmp_path):
    """Case 1: the workers were orphaned and finished their cells; now each cell checkpoints and ends interrupted."""
    proc = start("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *LONG, f"data.dir={native}",
                 f"paths.runs_dir={tmp_path}", "seed=0,1,2")
    sweep_dir = tmp_path / "multirun" / "sweep"
    wait_for_training(sweep_dir, 2, proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)  # to the sweep's process only, as `kill` or a scheduler does
    out = proc.communicate(timeout=400)[0]
    assert proc.returncode == 1, out[-3000:]
    assert last_line(out) == (0, 0, 0, 2, 0, ", 1 not started"), out[-3000:]
    ran = cells(sweep_dir)
    ended = {seed: summary(d) for seed, d in ran.items() if summary(d)}
    assert len(ended) == 2 and all(s["status"] == "interrupted" for s in ended.values()), ended
    for seed in ended:
        assert json.loads((ran[seed] / "checkpoint.json").read_text())["step"] >= 3
    (never,) = set(ran) - set(ended)
    assert not (ran[never] / "metrics.jsonl").exists()  # the third cell did not start
    assert not list(sweep_dir.glob(".zobench-sweep-*"))
    deadline = time.time() + 30  # and no worker is left behind
    while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_a_sweep(how, native, tmp_path):
    """Cases 2 and 3: the running cell ends interrupted (resumable), no further cell starts, exit 1."""
    proc = start("-m", *LONG, f"data.dir={native}", f"paths.runs_dir={tmp_path}", "seed=0,1,2")
    sweep_dir = tmp_path / "multirun" / "sweep"
    wait_for_training(sweep_dir, 1, proc)
    proc.send_signal(getattr(signal, how))
    out = proc.communicate(timeout=400)[0]
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert last_line(out) == (0, 0, 0, 1, 0, ""), out[-3000:]
    ran = cells(sweep_dir)
    assert list(ran) == [0]  # the next cells were not started: not even their folders
    cut = summary(ran[0])
    assert cut["status"] == "interrupted" and cut["error"].startswith("Interrupted: stopped by a signal")
    assert json.loads((ran[0] / "checkpoint.json").read_text())["step"] == cut["steps"] >= 3
    assert not list(sweep_dir.glob(".zobench-sweep-*"))


@pytest.mark.slow
def test_ctrl_c_to_a_run_ends_it_interrupted_and_a_rerun_resumes(native, tmp_path):
    """Case 3 on the command line: no KeyboardInterrupt traceback, no failed summary with error null."""
    run_dir = tmp_path / "run"
    args = ["device=cpu", "trainer.steps=30", "trainer.eval_every=30", "trainer.batch_size=4", "data.num_train=16",
            "data.num_dev=8", "data.num_eval=8", f"data.dir={native}", "trainer.checkpoint_every=0",
            f"hydra.run.dir={run_dir}"]
    proc = start(*args)
    wait_for_training(run_dir, 1, proc, steps=5)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    cut = json.loads((run_dir / "summary.json").read_text())
    assert cut["status"] == "interrupted" and cut["error"]
    assert json.loads((run_dir / "checkpoint.json").read_text())["step"] == cut["steps"] >= 5
    again = zobench(*args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from the checkpoint of step" in again.stdout + again.stderr
    done = json.loads((run_dir / "summary.json").read_text())
    assert done["status"] == "completed" and done["steps"] == 30 and done["forward_passes"] == 60


@pytest.mark.slow
def test_a_sweep_ends_with_its_counts_and_fails_when_a_cell_did(native, tmp_path):
    """Case 4, with both launchers: one line of counts; exit 1 on a failed, refused or interrupted cell."""
    args = ["-m", *SMALL, f"paths.runs_dir={tmp_path}", "optimizer.eps=1", "optimizer.lr=1e-6,1e38"]
    first = zobench(*args, f"data.dir={native}", "trainer.loss=lm,hinge")  # hinge: failed; lr=1e38: diverged
    assert first.returncode == 1 and last_line(first.stdout) == (1, 1, 2, 0, 0, ""), first.stdout[-3000:] + first.stderr[-3000:]

    again = zobench(*args, f"data.dir={native}", "trainer.loss=lm,hinge", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert again.returncode == 1 and last_line(again.stdout) == (0, 1, 2, 0, 1, ""), again.stdout[-3000:] + again.stderr[-3000:]

    good = zobench(*args, f"data.dir={native}", "trainer.loss=lm")  # completed (skipped) and diverged: a result
    assert good.returncode == 0 and last_line(good.stdout) == (0, 1, 0, 0, 1, ""), good.stdout[-3000:] + good.stderr[-3000:]

    other = tmp_path / "other-data"  # data.dir is not in a cell's folder name: the same folders, other cells
    shutil.copytree(native, other)
    refused = zobench(*args, f"data.dir={other}", "trainer.loss=lm")
    assert refused.returncode == 1 and last_line(refused.stdout) == (0, 0, 0, 0, 0, ", 2 refused"), refused.stdout[-3000:]


@pytest.mark.slow
def test_a_cell_another_process_runs_is_skipped_and_untouched(native, tmp_path):
    """Case 5 on the command line: the folder's lock is held (by this test, as by another sweep)."""
    args = ["-m", *SMALL, f"data.dir={native}", f"paths.runs_dir={tmp_path}"]
    assert zobench(*args, "seed=0").returncode == 0  # cell seed=0 exists, then is "being re-run" elsewhere
    sweep_dir = tmp_path / "multirun" / "sweep"
    held = cells(sweep_dir)[0]
    (held / "summary.json").unlink()
    before = files(held)
    with RunDirLock(held) as ok:
        assert ok
        done = zobench(*args, "seed=0,1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert last_line(done.stdout) == (1, 0, 0, 0, 0, ", 1 busy")
    assert sum("busy: another process is running" in line for line in (done.stdout + done.stderr).splitlines()) == 1
    after = files(held)
    assert {k: v for k, v in after.items() if not k.startswith(".hydra/")} == \
        {k: v for k, v in before.items() if not k.startswith(".hydra/")}  # zobench wrote nothing; run.log included


@pytest.mark.slow
def test_two_sweeps_with_one_name_train_each_cell_once(native, tmp_path):
    """Case 5 for real: two sweeps at once over the same cells, in opposite orders."""
    common = ["-m", "device=cpu", "trainer.steps=150", "trainer.eval_every=150", "trainer.batch_size=4",
              "data.num_train=16", "data.num_dev=8", "data.num_eval=8", f"data.dir={native}", f"paths.runs_dir={tmp_path}"]
    a, b = start(*common, "seed=0,1"), start(*common, "seed=1,0")
    outs = [p.communicate(timeout=600)[0] for p in (a, b)]
    assert a.returncode == b.returncode == 0, outs[0][-3000:] + outs[1][-3000:]
    lines = [last_line(out) for out in outs]
    assert sum(line[0] for line in lines) == 2, lines  # each cell trained once, by one of them
    for line in lines:
        completed, _, failed, interrupted, skipped, extra = line
        busy = int(re.search(r"(\d+) busy", extra).group(1)) if "busy" in extra else 0
        assert failed == interrupted == 0 and completed + skipped + busy == 2, lines
    for cell in cells(tmp_path / "multirun" / "sweep").values():
        assert summary(cell)["status"] == "completed" and not (cell / "traceback.txt").exists()
        rows = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r] == list(range(1, 151))  # one run's rows, once
