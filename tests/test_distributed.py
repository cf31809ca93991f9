"""Data-parallel runs (torchrun; zobench.distributed): 2 gloo workers on a tiny model against one process.

The slow tests spawn two worker processes (torch.multiprocessing, OMP_NUM_THREADS=1), each running the same
cells through ``run_cell`` as torchrun's workers do; the test then runs the same cells in one process and
compares: both workers end with the same parameters, equal to the single process's to float tolerance
(the loss sums run in another order), with the same predictions; only rank 0 wrote files.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import SMALL, compose_cfg
from zobench import distributed
from zobench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# name -> overrides: ZO (classification loss, dev-loss selection), ZO on the lm loss with micro-batches of
# unequal token counts (batch 6 = 2 micro-batches of 3 = shards of 2 and 1), FO-SGD through DDP with
# gradient accumulation (no_sync), Forward-Grad (tangents all-reduced), the hybrid (DDP, unused ZO part),
# FO with prefix tuning on COPA.
# ZO's ε = 1e-2: a finite difference turns the fp32 rounding of a loss (~1e-7, which the order of the sums
# changes) into (1e-7 / 2ε)·lr·|z| per step in the parameters; at ε = 1e-3, lr = 1e-2 that is ~1e-5 in 4 steps.
ZO = ["optimizer.lr=1e-3", "optimizer.eps=1e-2"]
CELLS = {
    "zo": ["optimizer=zo_sgd", *ZO, "trainer.selection=dev_loss"],
    "zo_lm_micro": ["optimizer=zo_sgd", *ZO, "trainer.loss=lm", "optimizer.accumulation_steps=2", "trainer.batch_size=6"],
    "fo_micro": ["optimizer=fo_sgd", "optimizer.lr=1e-1", "optimizer.accumulation_steps=2", "trainer.batch_size=6"],
    "forward_grad": ["optimizer=forward_grad", "optimizer.lr=1e-3"],
    "hybrid": ["optimizer=hybrid_zo_fo", "optimizer.lr=1e-2"],
    # COPA: candidates of several tokens share their context (two model calls in one DDP forward); prefix tuning
    # builds its keys and values outside the model's forward
    "fo_copa_prefix": ["task=copa", "tuning=prefix", "optimizer=fo_sgd", "optimizer.lr=1e-1"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _capture_trainable(captured: dict):
    """Patch zobench.tuning.apply_tuning to keep the run's trainable tensors (read after run_cell returns)."""
    import zobench.tuning as tuning

    original = tuning.apply_tuning

    def apply_tuning(model, cfg, seed=0):
        model, named = original(model, cfg, seed)
        captured["named"], captured["init"] = named, {n: p.detach().clone() for n, p in named}
        return model, named

    tuning.apply_tuning = apply_tuning
    return original


def _cfg(native: Path, overrides):
    return compose_cfg(*SMALL, f"data.dir={native}", "trainer.save_trainable=true", *overrides)


def _run_cells(native: Path, out: Path, names, tag: str, run_dir_of, captured: dict | None = None) -> None:
    """Run ``names`` one after another; save each one's summary and final trainable tensors to out/<name>-<tag>.pt
    (the test's own record: the workers of rank > 0 write nothing of the run)."""
    from zobench.run import run_cell

    if captured is None:
        captured = {}
        _capture_trainable(captured)
    for name in names:
        summary = run_cell(_cfg(native, CELLS[name]), run_dir_of(name))
        params = {n: p.detach().clone() for n, p in captured.pop("named")}
        torch.save({"summary": summary, "params": params, "init": captured.pop("init")}, out / f"{name}-{tag}.pt")


def _worker(rank: int, world: int, port: int, native: str, out: str, names: list[str]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    out_path = Path(out)
    captured: dict = {}
    _capture_trainable(captured)
    try:
        # rank 0 runs in out/<name>/dist; a worker of rank > 0 is handed a folder it must never create
        _run_cells(Path(native), out_path, names, f"rank{rank}",
                   lambda name: out_path / name / ("dist" if rank == 0 else f"rank{rank}-must-not-exist"), captured)
        _interrupt_and_resume(Path(native), out_path, rank, RESUMED, captured)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


RESUMED = ("zo", "fo_micro")  # stopped by a signal on rank 1 after step 2, then resumed: a replay, a state checkpoint


def _interrupt_and_resume(native: Path, out: Path, rank: int, names, captured: dict) -> None:
    """A stop signal reaches rank 1 only, after step 2: both workers stop after that step (rank 0 writes the
    checkpoint); run again, both resume from it (rank 0 reads it and broadcasts it) and finish."""
    from zobench import interrupt
    from zobench.run import run_cell

    for name in names:
        run_dir = out / name / ("resumed" if rank == 0 else f"rank{rank}-must-not-exist")
        cfg = _cfg(native, CELLS[name])
        asked, real = [], interrupt.requested
        interrupt.requested = lambda: asked.append(1) or (rank == 1 and len(asked) >= 2)
        try:
            first = run_cell(cfg, run_dir)
        finally:
            interrupt.requested = real
        second = run_cell(cfg, run_dir)
        params = {n: p.detach().clone() for n, p in captured.pop("named")}
        torch.save({"first": first, "second": second, "params": params}, out / f"{name}-resumed-rank{rank}.pt")


# -- fast: the pieces ----------------------------------------------------------------------------------------

def test_shards_partition_in_order():
    items = list(range(7))
    parts = [distributed.shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]
    assert [distributed.shard(items[:1], r, 2) for r in range(2)] == [[0], []]
    assert distributed.shard(items) == items  # one process: the whole batch


def test_single_process_is_untouched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup("cpu") == 1 and not distributed.active()
    assert distributed.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0] and distributed.any_true(True)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.hydra_overrides() == []
    assert distributed.is_main() and distributed.world_size() == 1


def test_hydra_overrides_for_other_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert distributed.hydra_overrides() == []
    monkeypatch.setenv("RANK", "1")
    extra = distributed.hydra_overrides()
    assert "hydra.output_subdir=null" in extra and "hydra/job_logging=stdout" in extra
    assert any(o.startswith("hydra.run.dir=") and "zobench-rank1" in o for o in extra)


def test_refused_with_torchrun(monkeypatch, small_cfg):
    monkeypatch.setenv("WORLD_SIZE", "4")
    distributed.check_config(small_cfg("optimizer=zo_sgd", "trainer.batch_size=2"))  # ZO: a worker may hold none
    with pytest.raises(ConfigError, match="batch_size"):
        distributed.check_config(small_cfg("optimizer=fo_sgd", "trainer.batch_size=6", "optimizer.accumulation_steps=2"))
    with pytest.raises(ConfigError, match="f1"):
        distributed.check_config(small_cfg("optimizer=zo_sgd", "trainer.loss=f1"))


# -- slow: two gloo workers against one process ----------------------------------------------------------------

def _predictions(run_dir: Path) -> list[int]:
    return [json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_workers_match_one_process(native, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    names = list(CELLS)
    mp.spawn(_worker, args=(2, _free_port(), str(native), str(tmp_path), names), nprocs=2, join=True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    import zobench.tuning as tuning

    original = tuning.apply_tuning
    try:
        _run_cells(native, tmp_path, names, "single", lambda name: tmp_path / name / "single")
    finally:
        tuning.apply_tuning = original
    for name in names:
        ranks = [torch.load(tmp_path / f"{name}-rank{r}.pt", weights_only=False) for r in (0, 1)]
        single = torch.load(tmp_path / f"{name}-single.pt", weights_only=False)
        s0, s1, s = ranks[0]["summary"], ranks[1]["summary"], single["summary"]
        assert s0["status"] == s1["status"] == s["status"] == "completed", (name, s0.get("error"), s1.get("error"))
        assert s0["world_size"] == 2 and s0["distributed_backend"] == "gloo" and s1["rank"] == 1
        assert name != "fo_copa_prefix" or s0["scoring"] == "shared_context"
        # both workers hold the same parameters, with no parameter traffic during the steps
        for key, p in ranks[0]["params"].items():
            assert torch.equal(p, ranks[1]["params"][key]), (name, key)
        # ... and the single process's, to float tolerance (the shards' losses are summed in another order)
        apart = max((single["params"][k] - p).abs().max().item() for k, p in ranks[0]["params"].items())
        moved = max((single["params"][k] - p).abs().max().item() for k, p in single["init"].items())
        assert apart <= 1e-6 and moved > 1e-4, (name, apart, moved)  # trained, and to the same place
        print(f"{name}: max |2 workers - 1 process| = {apart:.1e}, max |trained - initial| = {moved:.1e}")
        assert s0["best_step"] == s["best_step"] and s0["test_accuracy"] == s["test_accuracy"], name
        assert s0["final_loss"] == pytest.approx(s["final_loss"], rel=1e-5, abs=1e-6), name
        assert s0["forward_passes"] == s["forward_passes"], name
        assert _predictions(tmp_path / name / "dist") == _predictions(tmp_path / name / "single"), name
        # only rank 0 wrote the run directory
        assert not (tmp_path / name / "rank1-must-not-exist").exists(), name
        written = sorted(p.name for p in (tmp_path / name / "dist").iterdir())
        assert {"summary.json", "metrics.jsonl", "predictions.jsonl", "config.yaml", "trainable.pt"} <= set(written)
        rows = [json.loads(line) for line in (tmp_path / name / "dist" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # one writer: no row twice
        want = [json.loads(line) for line in (tmp_path / name / "single" / "metrics.jsonl").read_text().splitlines()]
        assert [r["loss"] for r in rows if "loss" in r] == pytest.approx([r["loss"] for r in want if "loss" in r],
                                                                          abs=1e-6), name  # the whole batch's loss
    for name in RESUMED:  # stopped on one worker, resumed on both: the uninterrupted run's parameters
        whole = torch.load(tmp_path / f"{name}-rank0.pt", weights_only=False)["params"]
        for r in (0, 1):
            record = torch.load(tmp_path / f"{name}-resumed-rank{r}.pt", weights_only=False)
            assert record["first"]["status"] == "interrupted", (name, r, record["first"].get("error"))
            assert record["second"]["status"] == "completed", (name, r, record["second"].get("error"))
            for key, p in record["params"].items():
                assert torch.equal(p, whole[key]), (name, r, key)
        first = torch.load(tmp_path / f"{name}-resumed-rank0.pt", weights_only=False)["first"]
        assert first["steps"] == 2
        assert not (tmp_path / name / "resumed" / "checkpoint.json").exists()  # cleared when the run completed


@pytest.mark.slow
def test_torchrun_command_line(native, tmp_path):
    """``torchrun --nproc_per_node=2 -m zobench ...`` end to end (a launcher script stands for the console
    script with ``hydra_overrides()`` on rank > 0's command line): rank 0's run directory holds the results,
    rank 1 wrote no folder under the runs directory."""
    launcher = tmp_path / "launch.py"
    launcher.write_text("import sys\nfrom zobench import distributed\nsys.argv += distributed.hydra_overrides()\n"
                        "from zobench.run import cli\ncli()\n")
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           str(launcher), *SMALL, f"data.dir={native}", f"paths.runs_dir={runs}", "optimizer=zo_sgd", "optimizer.lr=1e-2"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = list(runs.rglob("summary.json"))
    assert len(summaries) == 1, summaries
    summary = json.loads(summaries[0].read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    run_dirs = [p for p in runs.rglob("*") if p.is_dir() and p.parent.name.startswith("seed")]
    assert run_dirs == [summaries[0].parent], run_dirs  # no folder of rank 1's
