"""Storage faults and W&B/aggregator identity: nothing lost, nothing mixed.

Torn or truncated checkpoints, a full disk, an unreachable W&B server, a resumed W&B run, and the
aggregator's notion of "the same cell". Disk-full cases run on a real size-limited tmpfs where this
machine lets a test mount one (root), and with an injected ``OSError(ENOSPC)`` everywhere.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import SMALL, compose_cfg
from tests.test_resume import RESUMABLE, stop_after
from zobench.run import run_cell

NO_SPACE = "No space left on device"


# -- helpers ----------------------------------------------------------------------------------
def interrupted(cfg, run: Path, monkeypatch, step: int = 3) -> None:
    with monkeypatch.context() as m:
        stop_after(m, step)
        assert run_cell(cfg, run)["status"] == "interrupted"


def same_trainable(a: Path, b: Path) -> None:
    x, y = torch.load(a / "trainable.pt"), torch.load(b / "trainable.pt")
    assert x.keys() == y.keys()
    for name in x:
        assert torch.equal(x[name], y[name]), name


def loss_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def leftovers(run: Path) -> list[str]:
    """Files a finished run must not leave: checkpoints, temp files, best-state copies, the summary's reserve."""
    names = [p.name for p in run.iterdir()]
    return sorted(n for n in names if n.startswith(("checkpoint", "best_trainable")) or n.endswith(".tmp"))


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk("128k")``: a folder on a tmpfs of that size (root only; skipped where mounting is refused)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.name != "posix" or shutil.which("mount") is None or os.geteuid() != 0:
            pytest.skip("a size-limited tmpfs needs root and mount(8); the injected-ENOSPC tests cover this case")
        where = tmp_path / f"disk-{size}-{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip() or done.returncode}); "
                        "the injected-ENOSPC tests cover this case")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path) -> Path:
    """Another writer takes every free byte of ``disk``."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def fsync_fails_for(monkeypatch, fragment: str) -> None:
    """The disk is full for files whose name holds ``fragment``: their fsync reports ENOSPC (delayed allocation)."""
    import zobench.record

    real = os.fsync

    def fsync(fd):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if fragment in Path(name).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name a file descriptor")
    monkeypatch.setattr(zobench.record.os, "fsync", fsync)


# -- 1. a truncated FO ("state") checkpoint ---------------------------------------------------
def test_a_truncated_fo_checkpoint_warns_names_it_and_the_run_starts_over(native, tmp_path, monkeypatch, caplog):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=fo_adam", "optimizer.lr=1e-3", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    run = tmp_path / "cut"
    interrupted(cfg, run, monkeypatch)
    tensors = run / json.loads((run / "checkpoint.json").read_text())["tensors"]
    assert tensors.name == "checkpoint-3.pt"
    cut_in_half(tensors)

    with caplog.at_level(logging.WARNING, logger="zobench"):
        again = run_cell(cfg, run)  # used to fail in seconds with "OSError: [Errno 22] Invalid argument", every time
    assert again["status"] == "completed", again["error"]
    warning = next(r.getMessage() for r in caplog.records if "checkpoint-3.pt" in r.getMessage())
    assert "starts over from step 0" in warning and "unreadable" in warning
    assert any("checkpoint-3.pt" in w for w in again["warnings"])  # in the summary as in the log
    assert again["steps"] == 6 and loss_steps(run) == [1, 2, 3, 4, 5, 6]
    for key in ("forward_passes", "best_step", "test_accuracy", "final_loss"):
        assert again[key] == whole[key], key
    same_trainable(tmp_path / "whole", run)
    assert leftovers(run) == [] and leftovers(tmp_path / "whole") == []


def test_a_checkpoint_that_does_not_read_back_never_replaces_the_previous_one(tmp_path, monkeypatch):
    from zobench.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path, "k")
    ckpt.save({"step": 2, "out": {}}, {"params": [torch.ones(8)]})
    real_save = torch.save

    def torn(obj, f, *a, **k):  # a writer that reports success but leaves half a file
        f.write(b"PK\x03\x04 half a zip file")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError, match="did not read back"):
        ckpt.save({"step": 4, "out": {}}, {"params": [torch.zeros(8)]})
    monkeypatch.setattr(torch, "save", real_save)
    state = Checkpointer(tmp_path, "k").load()
    assert state["step"] == 2 and torch.equal(state["tensor_state"]["params"][0], torch.ones(8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2.pt", "checkpoint.json"]


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(small_disk):
    from zobench.checkpoint import Checkpointer

    disk = small_disk("256k")
    ckpt = Checkpointer(disk, "k")
    ckpt.save({"step": 2, "out": {}}, {"params": [torch.ones(1000)]})  # 4 kB
    with pytest.raises(OSError) as caught:
        ckpt.save({"step": 4, "out": {}}, {"params": [torch.zeros(200_000)]})  # 800 kB: does not fit
    assert caught.value.errno == errno.ENOSPC and "checkpoint-4.pt" in str(caught.value)
    assert Checkpointer(disk, "k").load()["step"] == 2
    assert sorted(p.name for p in disk.iterdir()) == ["checkpoint-2.pt", "checkpoint.json"]  # no torn file, no temp


# -- 2. disk full -----------------------------------------------------------------------------
def test_disk_full_on_the_best_state_leaves_a_failed_summary_and_no_torn_file(native, small_disk):
    disk = small_disk("128k")  # room for config, metrics and the reserve, not for the 180 kB best state
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "trainer.zero_shot=false")
    summary = run_cell(cfg, disk / "run")
    assert summary["status"] == "failed" and NO_SPACE in summary["error"] and "best_trainable.pt" in summary["error"]
    on_disk = json.loads((disk / "run" / "summary.json").read_text())
    assert on_disk["status"] == "failed" and NO_SPACE in on_disk["error"] and on_disk["cell_key"] == summary["cell_key"]
    assert leftovers(disk / "run") == []  # no torn best_trainable.pt, no temp file, the reserve given back
    assert (disk / "run" / "traceback.txt").read_text().strip()


def test_disk_filled_by_another_writer_mid_run_still_leaves_the_whole_summary(native, small_disk, monkeypatch):
    """The run's own writes fail; the reserve taken at the start is given back to the summary."""
    from zobench.record import RunRecorder

    disk = small_disk("1m")
    real_log = RunRecorder.log

    def log(self, row):
        if row.get("step") == 2 and not (disk / "filler").exists():
            fill(disk)
        return real_log(self, row)

    monkeypatch.setattr(RunRecorder, "log", log)
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "trainer.zero_shot=false")
    summary = run_cell(cfg, disk / "run")  # never raises: traceback.txt is written atomically or only logged
    on_disk = json.loads((disk / "run" / "summary.json").read_text())
    assert on_disk["status"] == "failed" and NO_SPACE in on_disk["error"]
    assert on_disk["model"] == "tiny-opt" and on_disk["steps"] >= 1 and "versions" in on_disk  # the whole summary
    assert "minimal" not in on_disk
    assert any("summary.json first failed" in w for w in on_disk["warnings"])
    assert leftovers(disk / "run") == []
    assert summary["status"] == "failed"
    traceback_txt = disk / "run" / "traceback.txt"
    assert not traceback_txt.exists() or traceback_txt.read_text().strip()  # never an empty one


def test_injected_enospc_on_the_best_state_fails_the_run_cleanly(native, tmp_path, monkeypatch):
    fsync_fails_for(monkeypatch, "best_trainable.pt")
    summary = run_cell(compose_cfg(*SMALL, f"data.dir={native}", "trainer.zero_shot=false"), tmp_path / "run")
    assert summary["status"] == "failed"
    assert f"[Errno {errno.ENOSPC}] {NO_SPACE}" in summary["error"] and "best_trainable.pt" in summary["error"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["error"] == summary["error"]
    assert leftovers(tmp_path / "run") == []


def test_save_torch_atomic_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    from zobench.record import save_torch_atomic

    path = tmp_path / "best_trainable.pt"
    save_torch_atomic({"step": 1}, path)
    fsync_fails_for(monkeypatch, "best_trainable.pt")
    with pytest.raises(OSError) as caught:
        save_torch_atomic({"step": 2}, path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert torch.load(path) == {"step": 1} and [p.name for p in tmp_path.iterdir()] == ["best_trainable.pt"]


def test_torch_save_on_a_real_full_disk_says_no_space(small_disk):
    """torch alone reports "[enforce fail at inline_container.cc] unexpected pos": save_torch_atomic names the cause."""
    from zobench.record import save_torch_atomic

    disk = small_disk("64k")
    with pytest.raises(OSError) as caught:
        save_torch_atomic({"params": [torch.zeros(100_000)]}, disk / "trainable.pt")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(disk / "trainable.pt")
    assert list(disk.iterdir()) == []


class _Finished:
    def __init__(self):
        self.summaries = []

    def log(self, row):
        pass

    def finish(self, summary):
        self.summaries.append(dict(summary))


def _full_for_summary_while(monkeypatch, full) -> None:
    """write_atomic of summary.json fails with ENOSPC while ``full(text)`` says the disk is full."""
    import zobench.record

    real = zobench.record.write_atomic

    def write_atomic(path, text):
        if Path(path).name == "summary.json" and full(text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text)

    monkeypatch.setattr(zobench.record, "write_atomic", write_atomic)


def test_the_reserve_makes_room_for_the_summary(tmp_path, monkeypatch):
    from zobench.record import RESERVE, RunRecorder

    watcher = _Finished()
    recorder = RunRecorder(tmp_path, [watcher])
    assert (tmp_path / RESERVE).stat().st_size > 0
    _full_for_summary_while(monkeypatch, lambda text: (tmp_path / RESERVE).exists())
    error = f"OSError: [Errno {errno.ENOSPC}] {NO_SPACE}"
    recorder.finish({"status": "failed", "error": error, "model": "m", "data": {"n": 1}})
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["status"] == "failed" and written["error"] == error and written["data"] == {"n": 1}
    assert not (tmp_path / RESERVE).exists() and watcher.summaries[0]["status"] == "failed"


def test_when_only_a_small_summary_fits_it_is_a_minimal_failed_one(tmp_path, monkeypatch):
    from zobench.record import RunRecorder

    summary = {"status": "completed", "error": None, "cell_key": "abc", "model": "m", "seed": 0,
               "test_accuracy": 0.9, "data": {"notes": "x" * 5000}}
    recorder = RunRecorder(tmp_path)
    _full_for_summary_while(monkeypatch, lambda text: len(text) > 1000)
    recorder.finish(summary)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["minimal"] and written["status"] == "failed" and written["cell_key"] == "abc"
    assert NO_SPACE in written["error"] and "had ended completed" in written["error"]
    assert "test_accuracy" not in written and summary["status"] == "failed"  # the caller's summary says so too


def test_when_nothing_fits_finish_raises_but_the_loggers_still_hear(tmp_path, monkeypatch):
    from zobench.record import RESERVE, RunRecorder

    watcher = _Finished()
    recorder = RunRecorder(tmp_path, [watcher])
    _full_for_summary_while(monkeypatch, lambda text: True)
    with pytest.raises(OSError):
        recorder.finish({"status": "failed", "error": "boom"})
    assert watcher.summaries and not (tmp_path / RESERVE).exists()


# -- 3. a checkpoint.json cut in half -----------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["zo_sgd", "fo_adam"])
def test_a_torn_checkpoint_json_warns_and_the_run_starts_over(optimizer, native, tmp_path, monkeypatch, caplog):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", f"optimizer={optimizer}", "optimizer.lr=1e-3", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    run = tmp_path / "cut"
    interrupted(cfg, run, monkeypatch)
    cut_in_half(run / "checkpoint.json")
    with caplog.at_level(logging.WARNING, logger="zobench"):
        again = run_cell(cfg, run)  # used to redo every step without a word
    assert again["status"] == "completed", again["error"]
    warning = next(r.getMessage() for r in caplog.records if "checkpoint.json" in r.getMessage())
    assert str(run / "checkpoint.json") in warning and "unreadable" in warning and "starts over from step 0" in warning
    assert again["warnings"] == [warning]
    assert loss_steps(run) == [1, 2, 3, 4, 5, 6] and again["test_accuracy"] == whole["test_accuracy"]
    same_trainable(tmp_path / "whole", run)
    assert leftovers(run) == []  # the FO checkpoint's tensors, which the torn JSON no longer named, are gone too


@pytest.mark.slow
def test_the_torn_checkpoint_warning_is_in_the_runs_log(native, tmp_path, monkeypatch):
    """Through the console script: Hydra's run.log in the run directory records the warning."""
    import sys

    run = tmp_path / "cli"
    overrides = [*SMALL, f"data.dir={native}", *RESUMABLE]
    interrupted(compose_cfg(*overrides), run, monkeypatch)
    cut_in_half(run / "checkpoint.json")
    done = subprocess.run([sys.executable, "-m", "zobench", *overrides, f"hydra.run.dir={run}"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-2000:]
    log_text = (run / "run.log").read_text()
    assert f"{run / 'checkpoint.json'} is unreadable" in log_text and "starts over from step 0" in log_text
    assert json.loads((run / "summary.json").read_text())["steps"] == 6


def test_a_loss_log_that_does_not_match_its_step_is_not_replayed(native, tmp_path, monkeypatch, caplog):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", *RESUMABLE)
    run = tmp_path / "run"
    interrupted(cfg, run, monkeypatch)
    state = json.loads((run / "checkpoint.json").read_text())
    state["loss_log"] = state["loss_log"][:-1]
    (run / "checkpoint.json").write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING, logger="zobench"):
        again = run_cell(cfg, run)
    assert again["status"] == "completed" and again["steps"] == 6 and loss_steps(run) == [1, 2, 3, 4, 5, 6]
    assert "its loss log holds 2 steps, not 3" in caplog.text and "starts over" in caplog.text


# -- the best-on-dev state a checkpoint recorded ----------------------------------------------
def test_a_state_checkpoint_keeps_its_best_state_when_a_later_step_becomes_best(tmp_path):
    from zobench.train import _BestState

    p = torch.zeros(3)
    best = _BestState(tmp_path, [p], pin=True)
    best.offer(2, 0.5)
    best.checkpointed()  # a checkpoint of step 2 or later refers to the state of step 2
    p += 1
    best.offer(4, 0.7)  # then the run is killed before its next checkpoint
    assert (tmp_path / "best_trainable-2.pt").exists()

    resumed = _BestState(tmp_path, [q := torch.full((3,), 9.0)], pin=True)
    assert resumed.resume(2, 0.5, replay=False) == "ok"
    resumed.restore()
    assert torch.equal(q, torch.zeros(3))  # the checkpoint's best, not the killed attempt's later one
    assert sorted(x.name for x in tmp_path.iterdir()) == ["best_trainable.pt"]
    best.step = 3
    with pytest.raises(RuntimeError, match="holds the state of step 2"):
        best.restore()  # never another step's state under this one's name


def test_a_replayed_run_recreates_a_best_state_it_cannot_trust(native, tmp_path, monkeypatch):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    run = tmp_path / "cut"
    interrupted(cfg, run, monkeypatch, step=3)  # best state: step 2
    cut_in_half(run / "best_trainable.pt")  # torn by older code that wrote it in place
    again = run_cell(cfg, run)
    assert again["status"] == "completed", again["error"]
    for key in ("best_step", "best_dev_accuracy", "test_accuracy"):
        assert again[key] == whole[key], key
    same_trainable(tmp_path / "whole", run)


def test_a_state_checkpoint_whose_best_state_is_gone_says_so(native, tmp_path, monkeypatch, caplog):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=fo_adam", "optimizer.lr=1e-3", *RESUMABLE)
    run = tmp_path / "run"
    interrupted(cfg, run, monkeypatch, step=3)
    (run / "best_trainable.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="zobench"):
        again = run_cell(cfg, run)
    assert again["status"] == "completed" and again["best_step"] in (4, 6)
    assert "does not hold the best-on-dev state of step 2" in caplog.text
    assert any("best-on-dev state of step 2" in w for w in again["warnings"])


# -- 4. W&B ---------------------------------------------------------------------------------------
@pytest.fixture
def wandb_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    yield
    import wandb

    wandb.teardown()


def test_a_resumed_run_continues_the_same_wandb_run(wandb_dirs, native, tmp_path, monkeypatch):
    from tests.wandb_records import read_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "logger=wandb", *RESUMABLE)
    run = tmp_path / "run"
    interrupted(cfg, run, monkeypatch)
    assert run_cell(cfg, run)["status"] == "completed"
    run_id = (run / "wandb_run_id").read_text().strip()
    files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2 and {f.name for f in files} == {f"run-{run_id}.wandb"}  # one W&B run, two sittings
    histories = [[h["step"] for h in read_run(f)["history"] if "loss" in h] for f in files]
    assert histories == [[1, 2, 3], [4, 5, 6]]

    from zobench.wandb_logger import _run_id

    assert _run_id(run, cfg) != (run_id, True)  # completed: no checkpoint left, so a re-run would be a W&B run of its own
    (tmp_path / "fresh").mkdir()
    assert _run_id(tmp_path / "fresh", cfg)[1] is False


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: connections are refused


@pytest.mark.slow
def test_an_unreachable_wandb_server_costs_seconds_not_minutes(wandb_dirs, native, tmp_path, monkeypatch, caplog):
    import zobench.wandb_logger as wl

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    waited = []
    real_init = wl.WandbLogger.__init__

    def timed(self, *a, **k):
        t0 = time.monotonic()
        real_init(self, *a, **k)
        waited.append(time.monotonic() - t0)

    monkeypatch.setattr(wl.WandbLogger, "__init__", timed)
    with caplog.at_level(logging.WARNING, logger="zobench"):
        summary = run_cell(compose_cfg(*SMALL, f"data.dir={native}", "logger=wandb"), tmp_path / "run")
    assert summary["status"] == "completed"
    assert waited and waited[0] <= 15, waited  # W&B's own default waits 90 s
    assert "W&B logging disabled" in caplog.text and "no answer from W&B" in caplog.text


# -- 5. the aggregator's cells ------------------------------------------------------------------
def _run(root: Path, name: str, *, finished: float, config: dict | None = None, **summary) -> Path:
    import yaml

    run = root / name
    run.mkdir(parents=True)
    base = dict(status="completed", error=None, model="tiny-opt", task="sst2", tuning="full", optimizer="zo_sgd",
                dtype="fp32", device="cpu", template="mezo", metric="accuracy", lr=1e-3, eps=1e-3, steps_budget=4,
                steps=4, seed=0, best_dev_score=0.5, test_score=0.5)
    (run / "summary.json").write_text(json.dumps({**base, **summary}))
    if config is not None:
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    os.utime(run / "summary.json", (finished, finished))
    return run


def _config(device: str, lr: float = 1e-3, **trainer) -> dict:
    return {"model": {"name": "tiny-opt"}, "task": {"name": "sst2"}, "tuning": {"name": "full"},
            "optimizer": {"name": "zo_sgd", "lr": lr}, "trainer": {"steps": 4, "log_every": 10, **trainer},
            "data": {"seed": 0}, "seed": 0, "device": device, "dtype": "fp32", "logger": {"name": "none"}}


def _status(root: Path) -> dict[str, str]:
    from zobench.aggregate import load_runs

    runs = load_runs(root)
    return dict(zip(runs["run_dir"], runs["status"]))


def test_a_failed_cuda_run_never_supersedes_a_diverged_cpu_run(tmp_path):
    _run(tmp_path, "cpu", finished=1000, config=_config("cpu"), status="diverged", error="Diverged: loss is nan at step 3")
    _run(tmp_path, "cuda", finished=2000, config=_config("cuda"), device="cuda", status="failed", error="RuntimeError: CUDA")
    assert _status(tmp_path) == {"cpu": "diverged", "cuda": "failed"}


def test_only_reruns_of_the_same_cell_supersede_each_other(tmp_path):
    from zobench.aggregate import load_runs

    _run(tmp_path, "a-diverged", finished=1000, config=_config("cpu"), status="diverged", error="Diverged")
    _run(tmp_path, "a-failed-later", finished=2000, config=_config("cpu"), status="failed", error="OSError: disk")
    _run(tmp_path, "b-old", finished=1000, config=_config("cpu", lr=1e-4), lr=1e-4, cell_key="from-older-code")
    _run(tmp_path, "b-new", finished=2000, config=_config("cpu", lr=1e-4), lr=1e-4, cell_key="from-newer-code")
    _run(tmp_path, "c-other-setting", finished=3000, config=_config("cpu", eval_every=7), status="failed", error="x")
    _run(tmp_path, "c-log-every", finished=500, config=_config("cpu", log_every=1))  # logging: the same cell as a-*
    runs = load_runs(tmp_path).set_index("run_dir")
    assert runs["status"].to_dict() == {
        "a-diverged": "superseded",      # c-log-every (completed) holds a result of the same cell, a-failed-later none
        "a-failed-later": "superseded",
        "b-new": "completed", "b-old": "superseded",  # a re-run by newer code (another cell_key) still supersedes
        "c-log-every": "completed",
        "c-other-setting": "failed",     # trainer.eval_every differs: another cell, though no summary column shows it
    }
    assert "superseded by c-log-every (completed)" in runs.loc["a-failed-later", "error"]
    assert "was failed: OSError: disk" in runs.loc["a-failed-later", "error"]


def test_a_result_outranks_a_newer_error_of_the_same_cell(tmp_path):
    _run(tmp_path, "diverged", finished=1000, config=_config("cpu"), status="diverged", error="Diverged")
    _run(tmp_path, "failed", finished=2000, config=_config("cpu"), status="failed", error="OSError: disk")
    assert _status(tmp_path) == {"diverged": "diverged", "failed": "superseded"}


def test_summaries_without_config_use_their_cell_key_then_their_columns(tmp_path):
    _run(tmp_path, "k1-old", finished=1000, cell_key="k1", status="failed", error="x")
    _run(tmp_path, "k1-new", finished=2000, cell_key="k1")
    _run(tmp_path, "k2", finished=3000, cell_key="k2", status="failed", error="y")  # same columns, another cell
    _run(tmp_path, "cols-cpu", finished=1000, seed=5)
    _run(tmp_path, "cols-cuda", finished=2000, seed=5, device="cuda", status="failed", error="z")
    assert _status(tmp_path) == {"k1-old": "superseded", "k1-new": "completed", "k2": "failed",
                                 "cols-cpu": "completed", "cols-cuda": "failed"}


def test_a_killed_run_of_unknown_device_is_superseded_by_its_rerun(tmp_path):
    import yaml

    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.yaml").write_text(yaml.safe_dump(_config("auto")))
    (killed / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    os.utime(killed / "metrics.jsonl", (1000, 1000))
    os.utime(killed / "config.yaml", (1000, 1000))
    _run(tmp_path, "rerun", finished=2000, config=_config("auto"), device="cpu")
    assert _status(tmp_path) == {"killed": "superseded", "rerun": "completed"}


def test_dev_selection_never_pools_devices(tmp_path):
    from zobench.aggregate import load_runs, select_by_dev

    _run(tmp_path, "cpu", finished=1000, config=_config("cpu"), best_dev_score=0.6, test_score=0.6)
    _run(tmp_path, "cuda", finished=2000, config=_config("cuda"), device="cuda", best_dev_score=0.7, test_score=0.7)
    runs = load_runs(tmp_path)
    assert set(runs["status"]) == {"completed"}
    sel = select_by_dev(runs)
    assert sel.n_configs == 2 and sel.chosen == {"device": "cuda"} and list(sel.runs["run_dir"]) == ["cuda"]


def test_every_file_of_a_run_gets_the_same_mode(native, tmp_path):
    """Issue 15.8: config.yaml and summary.json were owner-only (mkstemp's 0600) while metrics.jsonl was not."""
    import os
    import stat

    run_cell(compose_cfg(*SMALL, f"data.dir={native}", "trainer.save_trainable=true"), tmp_path / "run")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir() if p.is_file()}
    mask = os.umask(0)
    os.umask(mask)
    want = 0o666 & ~mask
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "predictions.jsonl", "trainable.pt"):
        assert modes[name] == want, (name, oct(modes[name]), oct(want))
