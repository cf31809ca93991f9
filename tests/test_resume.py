"""Checkpoint and resume: an interrupted cell ends exactly where an uninterrupted one does."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import SMALL, compose_cfg
from zobench import interrupt
from zobench.run import run_cell

RESUMABLE = ["trainer.steps=6", "trainer.eval_every=2", "trainer.save_trainable=true", "trainer.checkpoint_every=0"]


def stop_after(monkeypatch, step: int):
    """Ask the run to stop, as SIGTERM does, once ``step`` steps have run."""
    import zobench.train

    calls = {"n": 0}

    def requested():
        calls["n"] += 1
        return calls["n"] == step

    monkeypatch.setattr(zobench.train.interrupt, "requested", requested)


@pytest.mark.parametrize("optimizer", ["zo_sgd", "zo_adam", "bszo", "fo_adam", "forward_grad", "zo_sgd_block", "zo_sgd_sparse"])
def test_interrupted_run_resumes_to_identical_parameters(optimizer, native, tmp_path, monkeypatch):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", f"optimizer={optimizer}", "optimizer.lr=1e-3", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    assert whole["status"] == "completed", whole["error"]

    with monkeypatch.context() as m:
        stop_after(m, 3)
        cut = run_cell(cfg, tmp_path / "cut")
    assert cut["status"] == "interrupted"
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert state["step"] == 3 and state["cell_key"] == whole["cell_key"]
    assert (state["loss_log"] is None) == (optimizer in ("fo_adam", "forward_grad", "hybrid_zo_fo"))  # replay vs state

    resumed = run_cell(cfg, tmp_path / "cut")
    assert resumed["status"] == "completed", resumed["error"]
    a = torch.load(tmp_path / "whole" / "trainable.pt")
    b = torch.load(tmp_path / "cut" / "trainable.pt")
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit for bit on CPU
    for key in ("forward_passes", "best_step", "best_dev_accuracy", "test_accuracy", "final_loss"):
        assert resumed[key] == whole[key], key
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]  # no step logged twice
    assert not (tmp_path / "cut" / "checkpoint.json").exists()  # cleared once the cell completed


def replay_resumes_identically(cfg, tmp_path, monkeypatch, whole: dict, stop: int = 3,
                               loss_log_lengths: list[int] | None = None) -> dict:
    """Stop ``cfg`` after ``stop`` steps in ``tmp_path/cut``, check it left a replay checkpoint (a loss log, no
    tensors; with ``loss_log_lengths``, that many losses per logged step), resume it, and check the weights equal
    the uninterrupted run in ``tmp_path/whole`` bit for bit."""
    with monkeypatch.context() as m:
        stop_after(m, stop)
        assert run_cell(cfg, tmp_path / "cut")["status"] == "interrupted"
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert state["step"] == stop and state["loss_log"] is not None and state["tensors"] is None  # a replay checkpoint
    if loss_log_lengths is not None:
        assert [len(v) for v in state["loss_log"]] == loss_log_lengths
    resumed = run_cell(cfg, tmp_path / "cut")
    assert resumed["status"] == "completed", resumed.get("error")
    a, b = torch.load(tmp_path / "whole" / "trainable.pt"), torch.load(tmp_path / "cut" / "trainable.pt")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["final_loss"] == whole["final_loss"] and resumed["forward_passes"] == whole["forward_passes"]
    return resumed


def test_a_completed_cell_is_skipped_and_a_changed_one_is_not(native, tmp_path):
    cfg = compose_cfg(*SMALL, f"data.dir={native}")
    first = run_cell(cfg, tmp_path / "run")
    again = run_cell(cfg, tmp_path / "run")
    assert again["skipped"] and again["wall_time_s"] == first["wall_time_s"]
    changed = run_cell(compose_cfg(*SMALL, f"data.dir={native}", "optimizer.lr=2e-6"), tmp_path / "run")
    assert "skipped" not in changed and changed["cell_key"] != first["cell_key"]


def test_a_cell_computed_by_older_code_is_computed_again(native, tmp_path, monkeypatch):
    """A code change that alters results bumps RESULTS_VERSION: the same config is then a new cell."""
    import zobench.checkpoint as checkpoint

    cfg = compose_cfg(*SMALL, f"data.dir={native}")
    first = run_cell(cfg, tmp_path / "run")
    monkeypatch.setattr(checkpoint, "RESULTS_VERSION", checkpoint.RESULTS_VERSION + 1)
    again = run_cell(cfg, tmp_path / "run")
    assert "skipped" not in again and again["cell_key"] != first["cell_key"]


def test_a_checkpoint_of_another_config_is_neither_resumed_nor_overwritten(native, tmp_path, monkeypatch):
    cfg = compose_cfg(*SMALL, f"data.dir={native}", *RESUMABLE)
    with monkeypatch.context() as m:
        stop_after(m, 2)
        assert run_cell(cfg, tmp_path / "run")["status"] == "interrupted"
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    other = compose_cfg(*SMALL, f"data.dir={native}", *RESUMABLE, "optimizer.lr=3e-6")
    summary = run_cell(other, tmp_path / "run")
    assert summary["status"] == "failed" and summary["refused"]
    assert "another configuration" in summary["error"] and "interrupted" in summary["error"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before
    resumed = run_cell(cfg, tmp_path / "run")  # the folder's own cell still resumes
    assert resumed["status"] == "completed" and resumed["steps"] == 6


def test_a_completed_cell_is_not_replaced_by_another_config(native, tmp_path):
    """Issue 14.7: the same folder (sweep_name) with another data.dir recomputed and mixed metrics.jsonl."""
    import shutil

    first = run_cell(compose_cfg(*SMALL, f"data.dir={native}"), tmp_path / "run")
    other_data = tmp_path / "copy"
    shutil.copytree(native, other_data)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = run_cell(compose_cfg(*SMALL, f"data.dir={other_data}"), tmp_path / "run")
    assert again["status"] == "failed" and again["refused"] and "completed run" in again["error"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["cell_key"] == first["cell_key"]


def test_a_fresh_start_starts_metrics_empty(native, tmp_path):
    """A failed attempt's rows never mix with the next attempt's."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 99.0}\n{"step": 2, "loss": 98.0}\n')
    summary = run_cell(compose_cfg(*SMALL, f"data.dir={native}"), run)
    assert summary["status"] == "completed"
    losses = [json.loads(line).get("loss") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert 99.0 not in losses and 98.0 not in losses


def test_search_bookkeeping_keys_are_not_part_of_a_cell():
    """Widening a reproduction block's search grid re-ran its finished search cells (their key held the grid)."""
    from omegaconf import OmegaConf

    from zobench.checkpoint import cell_key

    cfg = compose_cfg(*SMALL)
    OmegaConf.set_struct(cfg, False)
    extra = OmegaConf.merge(cfg, {"search": {"grid": {"optimizer.lr": [1, 2]}}, "per_task": {"copa": 1}})
    assert cell_key(extra) == cell_key(cfg)
    assert cell_key(OmegaConf.merge(cfg, {"data": {"num_train": 7}})) != cell_key(cfg)
    moved = OmegaConf.merge(cfg, {"model": {"local_dir": "/another/checkout/models/x"}})  # a second worktree
    assert cell_key(moved) == cell_key(cfg)


def test_torn_checkpoint_write_leaves_the_previous_one(native, tmp_path, monkeypatch):
    from zobench.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path, "k")
    ckpt.save({"step": 2, "out": {}})

    def torn(*a, **k):
        raise OSError("disk full")

    import zobench.checkpoint

    monkeypatch.setattr(zobench.checkpoint, "write_atomic", torn)
    with pytest.raises(OSError):
        ckpt.save({"step": 4, "out": {}})
    assert Checkpointer(tmp_path, "k").load()["step"] == 2
    assert not list(tmp_path.glob(".*tmp"))


def test_signal_handler_only_sets_a_flag():
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with interrupt.graceful_interrupt():
        assert not interrupt.requested()
        os.kill(os.getpid(), signal.SIGTERM)  # would end the process without the handler
        assert interrupt.requested()
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


def test_the_inference_peak_is_measured_before_the_optimizer_state_exists(native, tmp_path, monkeypatch):
    """Issue 16.3: ZO-Adam read 1.04x inference because its moments were allocated before the inference peak."""
    import zobench.optim as optim
    import zobench.train as train

    order = []
    real_build, real_loss = optim.build_optimizer, train.Scorer.loss

    def build(*a, **k):
        order.append("build")
        return real_build(*a, **k)

    def loss(self, *a, **k):
        order.append("forward")
        return real_loss(self, *a, **k)

    monkeypatch.setattr(optim, "build_optimizer", build)
    monkeypatch.setattr(train.Scorer, "loss", loss)
    summary = run_cell(compose_cfg(*SMALL, f"data.dir={native}", "optimizer=zo_adam", "trainer.zero_shot=false"),
                       tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    assert order.index("build") > order.index("forward")  # the inference forward first, then the moments
    n = summary["trainable_params"]
    assert summary["optimizer_state_bytes"] == 2 * 4 * n
    assert summary["peak_over_inference"] == pytest.approx(summary["peak_memory_bytes"] / summary["inference_peak_memory_bytes"])
    assert summary["peak_without_state_over_inference"] == pytest.approx(
        (summary["peak_memory_bytes"] - 2 * 4 * n) / summary["inference_peak_memory_bytes"])
