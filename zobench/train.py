"""The training loop: step budget, dev evaluation, best-on-dev selection, final evaluation.

Selection never looks at the eval set: the state with the best dev score (the task's metric)
is restored before the eval set is scored. Memory is measured over training steps only
(evaluation excluded), beside an inference peak of the same model on the same batch. A NaN
or infinite loss stops the run as ``diverged``.
"""
from __future__ import annotations

import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from zobench.measure import PeakMemory, StepTimer
from zobench.optim.closure import MicroBatchLoss
from zobench.scoring import Scorer, metrics
from zobench.tasks.base import Example, TaskData

log = logging.getLogger("zobench")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def batches(examples: Sequence[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Endless batches: each epoch is a fresh shuffle of the train set (seeded)."""
    rng, order, pos = random.Random(seed), [], 0
    while True:
        if pos + batch_size > len(order):
            rest = order[pos:]
            order = list(range(len(examples)))
            rng.shuffle(order)
            order, pos = rest + order, 0
        yield [examples[i] for i in order[pos : pos + batch_size]]
        pos += batch_size


def evaluate(scorer: Scorer, examples: Sequence[Example], batch_size: int) -> dict[str, float]:
    if not examples:
        return {}
    return metrics(scorer.predict(examples, batch_size), examples)


class _BestState:
    """The trainable tensors of the best-on-dev step, kept on disk so they take no memory."""

    def __init__(self, path: Path, params: Sequence[torch.Tensor]):
        self.path, self.params, self.step, self.score = path, params, None, -math.inf

    def offer(self, step: int, score: float) -> bool:
        if score <= self.score:
            return False
        self.step, self.score = step, score
        torch.save([p.detach().cpu() for p in self.params], self.path)
        return True

    @torch.no_grad()
    def restore(self) -> None:
        for p, saved in zip(self.params, torch.load(self.path)):
            p.copy_(saved)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class Progress:
    """A tqdm bar in a terminal; plain log lines every ``log_every`` steps otherwise."""

    def __init__(self, total: int, log_every: int):
        self.total, self.log_every, self.bar = total, log_every, None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="train", dynamic_ncols=True)
        self.t0, self.dev = time.perf_counter(), None

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", dev=self.dev)
        elif step % self.log_every == 0 or step == self.total:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / step * (self.total - step)
            log.info("step %d/%d loss %.4f dev %s eta %.0fs", step, self.total, loss, self.dev, eta)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def fit(cfg: Any, scorer: Scorer, optimizer, data: TaskData, named_params, recorder, device: torch.device,
        run_dir: Path, out: dict[str, Any]) -> None:
    """Run the cell's training and evaluations, filling the summary fields in ``out`` as they are known

    (so a run that diverges or fails half-way still records what it measured).
    """
    tr, metric = cfg.trainer, cfg.task.metric
    out.update(steps=0, forward_passes=0)
    if tr.zero_shot:
        zs = evaluate(scorer, data.eval, tr.eval_batch_size)
        out["zero_shot_accuracy"], out["zero_shot_score"] = zs["accuracy"], zs[metric]
        log.info("zero-shot eval %s %.4f", metric, zs[metric])
    if tr.steps == 0:
        final = evaluate(scorer, data.eval, tr.eval_batch_size)
        out.update(test_accuracy=final["accuracy"], test_score=final[metric])
        return

    stream = batches(data.train, tr.batch_size, cfg.seed)
    first = next(stream)
    meter, timer = PeakMemory(device), StepTimer(device)
    meter.reset()
    with torch.no_grad():
        scorer.loss(first, tr.loss)
    out["inference_peak_memory_bytes"] = meter.read()["peak_bytes"]
    out["memory_method"] = meter.method

    best = _BestState(run_dir / "best_trainable.pt", [p for _, p in named_params])
    peaks: list[dict[str, int]] = []
    progress = Progress(tr.steps, tr.log_every)
    meter.reset()
    try:
        batch = first
        for step in range(1, tr.steps + 1):
            with timer:
                loss_fn = MicroBatchLoss(lambda part: scorer.loss(part, tr.loss), batch, optimizer.accumulation_steps)
                stats = optimizer.step(loss_fn)
            out["steps"], out["forward_passes"] = step, out["forward_passes"] + stats["forward_passes"]
            out["forward_passes_per_step"], out["final_loss"] = stats["forward_passes"], stats["loss"]
            recorder.log({"step": step, "loss": stats["loss"], "lr": stats["lr"],
                          "step_time_ms": timer.last_ms, "forward_passes": out["forward_passes"]})
            if not math.isfinite(stats["loss"]):
                raise Diverged(f"loss is {stats['loss']} at step {step}")
            progress.update(step, stats["loss"])
            if step % tr.eval_every == 0 or step == tr.steps:
                peaks.append(meter.read())
                dev = evaluate(scorer, data.dev, tr.eval_batch_size)
                if dev:
                    recorder.log({"step": step, "dev_accuracy": dev["accuracy"], f"dev_{metric}": dev[metric]})
                    progress.dev = f"{dev[metric]:.3f}"
                    if best.offer(step, dev[metric]):
                        out["best_dev_accuracy"], out["best_dev_score"], out["best_step"] = dev["accuracy"], dev[metric], step
                meter.reset()
            if step < tr.steps:
                batch = next(stream)
    finally:
        progress.close()
        if peaks or out["steps"]:
            peaks.append(meter.read())
            out["peak_memory_bytes"] = max(p["peak_bytes"] for p in peaks)
            if "reserved_bytes" in peaks[0]:
                out["peak_memory_reserved_bytes"] = max(p["reserved_bytes"] for p in peaks)
            out["step_time_ms"] = timer.median_ms(tr.warmup_steps)
            out["optimizer_state_bytes"] = optimizer.state_bytes()

    if best.step is not None and best.step != out["steps"]:
        best.restore()  # best-on-dev, never chosen by the eval set
    best.discard()
    if best.step is None:
        out["best_step"] = out["steps"]  # no dev set: the final state is the one evaluated
    final = evaluate(scorer, data.eval, tr.eval_batch_size)
    out.update(test_accuracy=final["accuracy"], test_score=final[metric])
    log.info("eval %s %.4f (state of step %s)", metric, final[metric], out["best_step"])
