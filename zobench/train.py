"""The training loop: step budget, dev evaluation, best-on-dev selection, final evaluation.

Selection never looks at the eval set: the state with the best dev score (the task's metric)
is restored before the eval set is scored. Memory is measured over training steps only
(evaluation excluded), beside an inference peak of the same model on the same batch. A NaN
or infinite loss stops the run as ``diverged``.
"""
from __future__ import annotations

import logging
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from zobench import distributed, interrupt
from zobench.measure import PeakMemory, StepTimer, release_memory, synchronize
from zobench.optim.closure import MicroBatchLoss
from zobench.record import save_torch_atomic
from zobench.evaluation import PREDICTIONS, ZERO_SHOT_PREDICTIONS, summary_fields  # evaluate: distributed.evaluate
from zobench.scoring import Scorer
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


SELECTIONS = ("dev_metric", "dev_loss")  # trainer.selection: best dev task metric (default, BSZO) | lowest dev loss (MeZO)


def _dev_score(scorer: Scorer, dev: Sequence[Example], tr: Any, metric: str) -> tuple[dict[str, float], float] | None:
    """The dev row to log and the selection score (higher is better) under ``trainer.selection``.

    dev_metric: the task metric on dev (zobench's default; BSZO's metric_for_best_model=accuracy).
    dev_loss: minus the training loss on dev (MeZO: HF Trainer's load_best_model_at_end keeps the lowest eval_loss,
    its metric_for_best_model default).
    """
    if not dev:
        return None
    result = distributed.evaluate(scorer, dev, tr.eval_batch_size)  # = evaluate() in one process
    row = {"dev_accuracy": result.metrics["accuracy"], f"dev_{metric}": result.metrics[metric]}
    if tr.get("selection", "dev_metric") == "dev_loss":
        row["dev_loss"] = distributed.loss_over(scorer, dev, tr.loss, tr.eval_batch_size)
        return row, -row["dev_loss"]
    return row, result.metrics[metric]


class _BestState:
    """The trainable tensors of the best-on-dev step, kept on disk so they take no memory.

    ``best_trainable.pt`` holds ``{"step", "params"}`` and is replaced atomically (temp file, fsync,
    rename): a full disk or a kill never leaves a torn one. A resumed run must restore the best state
    its checkpoint recorded, not a later one written after that checkpoint by the attempt that was
    killed: with a state checkpoint (``pin``), the checkpoint's best state is kept aside as
    ``best_trainable-<step>.pt`` (a rename) when a later step becomes best, until the next checkpoint;
    a replay checkpoint needs no copy, its loss log re-creates that state (``fit``/``_restore``).

    ``writes=False`` (a data-parallel worker of rank > 0): the best step and score are followed, no file is
    touched, and ``restore`` receives rank 0's state (zobench.distributed).
    """

    def __init__(self, run_dir: Path, params: Sequence[torch.Tensor], pin: bool, writes: bool = True):
        self.run_dir, self.path, self.params = Path(run_dir), Path(run_dir) / "best_trainable.pt", params
        self.step, self.score, self.pin, self.writes = None, -math.inf, pin, writes
        self.pinned: int | None = None  # the best step the latest checkpoint refers to

    def _pinned_path(self, step: int) -> Path:
        return self.run_dir / f"best_trainable-{step}.pt"

    def offer(self, step: int, score: float) -> bool:
        if score <= self.score:
            return False
        if self.writes and self.pin and self.pinned is not None and self.pinned == self.step and self.path.exists():
            os.replace(self.path, self._pinned_path(self.step))  # the checkpoint's best state stays restorable
        self.save(step)
        self.score = score
        return True

    def save(self, step: int) -> None:
        if self.writes:
            save_torch_atomic({"step": step, "params": [p.detach().cpu() for p in self.params]}, self.path)
        self.step = step

    def checkpointed(self) -> None:
        """A checkpoint now refers to the current best state: copies kept for earlier checkpoints go."""
        self.pinned = self.step
        if not self.writes:
            return
        for path in self.run_dir.glob("best_trainable-*.pt"):
            path.unlink(missing_ok=True)

    def saved_step(self) -> int | str | None:
        """The step best_trainable.pt holds; "legacy" for a file of older code (a bare list); None if unreadable."""
        try:
            saved = torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # noqa: BLE001 - absent, torn
            return None
        if isinstance(saved, list):
            return "legacy"
        return saved.get("step") if isinstance(saved, dict) else None

    def resume(self, step: int | None, score: float, replay: bool) -> str:
        """Take the checkpoint's best step; return "ok", "replay" (re-create it while replaying) or "lost"."""
        self.step, self.score, self.pinned = step, score, step
        if not self.writes:
            return "ok"  # rank 0's answer is what counts (fit broadcasts it)
        if step is None:
            self.discard()
            return "ok"
        pinned = self._pinned_path(step)
        if pinned.exists():
            os.replace(pinned, self.path)
        self.checkpointed()
        if self.saved_step() in (step, "legacy"):
            return "ok"
        return "replay" if replay else "lost"

    def forget(self) -> None:
        self.step, self.score, self.pinned = None, -math.inf, None
        self.discard()

    @torch.no_grad()
    def restore(self) -> None:
        if self.writes:
            saved = torch.load(self.path)
            if isinstance(saved, dict):
                if saved.get("step") != self.step:  # never evaluate another step's state under this one's name
                    raise RuntimeError(f"{self.path} holds the state of step {saved.get('step')}, not of the best step {self.step}")
                saved = saved["params"]
            for p, tensor in zip(self.params, saved):
                p.copy_(tensor)
        distributed.broadcast_(self.params)  # data parallel: every worker gets rank 0's best state (no-op alone)

    def discard(self) -> None:
        if not self.writes:
            return
        self.path.unlink(missing_ok=True)
        for path in self.run_dir.glob("best_trainable-*.pt"):
            path.unlink(missing_ok=True)


class Progress:
    """A tqdm bar in a terminal; plain log lines every ``log_every`` steps otherwise.

    The ETA counts what is left of everything: training steps at their measured pace, the dev
    evaluations still due at the measured time of one, and the final eval-set scoring (one dev
    evaluation's time scaled by eval/dev examples; the dev time is known after the first one).
    """

    def __init__(self, total: int, log_every: int, eval_every: int = 0, num_dev: int = 0, num_eval: int = 0,
                 first_step: int = 1):
        self.total, self.log_every, self.bar = total, log_every, None
        self.eval_every, self.num_dev, self.num_eval, self.first_step = eval_every, num_dev, num_eval, first_step
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=first_step - 1, desc="train", dynamic_ncols=True)
        self.t0, self.dev, self.eval_s, self.evals = time.perf_counter(), None, 0.0, 0

    def eta_s(self, step: int) -> float:
        train_s = (time.perf_counter() - self.t0 - self.eval_s) / max(step - self.first_step + 1, 1)
        left = train_s * (self.total - step)
        if self.evals:
            per_eval = self.eval_s / self.evals
            due = (self.total // self.eval_every - step // self.eval_every) if self.eval_every else 0
            due += int(self.total % self.eval_every != 0 and step < self.total) if self.eval_every else 0
            left += per_eval * due + per_eval * self.num_eval / max(self.num_dev, 1)
        return left

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", dev=self.dev)
        elif step % self.log_every == 0 or step == self.total:
            log.info("step %d/%d loss %.4f dev %s eta %.0fs", step, self.total, loss, self.dev, self.eta_s(step))

    def evaluated(self, step: int, seconds: float, metric: str, score: float, best_score, best_step) -> None:
        """A dev evaluation's line: its score, the best so far, its time."""
        self.eval_s, self.evals, self.dev = self.eval_s + seconds, self.evals + 1, f"{score:.3f}"
        best = f"best {best_score:.3f} at step {best_step}" if best_score is not None else "no best yet"
        line = (f"step {step}/{self.total} dev {metric} {score:.4f} ({best}); evaluated in {seconds:.1f}s, "
                f"eta {self.eta_s(step):.0f}s")
        if self.bar is not None:
            self.bar.write(line)
        else:
            log.info(line)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _loss_size(scorer: Scorer, loss: str):
    """What a micro-batch's weight counts: gold tokens for the token-averaged ``lm`` loss, else examples."""
    return scorer.gold_tokens if loss == "lm" else len


class _StepLosses:
    """The loss closure of one step: times every forward, and records (or replays) its values.

    Recording the loss values an estimator sees is what makes a ZO checkpoint a log: replaying
    them re-runs the estimator's exact float operations without the forward passes
    (zobench.checkpoint). ``forward_ms`` accumulates synchronized forward time. ``sharded``
    (data parallel, zobench.distributed.ShardedLoss): this worker's shard is forwarded and the value is the
    whole part's loss, combined over the workers (what is recorded, and replayed).
    """

    def __init__(self, scorer: Scorer, loss: str, device: torch.device, replay: list[float] | None = None,
                 sharded=None):
        self.scorer, self.loss, self.device, self.sharded = scorer, loss, device, sharded
        self.values: list[float] = []
        self.replay = iter(replay) if replay is not None else None
        self.forward_ms = 0.0

    def __call__(self, part) -> torch.Tensor:
        if self.replay is not None:
            return torch.tensor(next(self.replay), dtype=torch.float64)
        synchronize(self.device)
        t0 = time.perf_counter()
        value = self.scorer.loss(part, self.loss) if self.sharded is None else self.sharded(part)
        self.values.append(float(value.detach()))  # synchronizes: the forward is done
        self.forward_ms += (time.perf_counter() - t0) * 1e3
        return value


def _full_batch(optimizer, losses: _StepLosses, train, scorer: Scorer, tr: Any) -> dict:
    """``{"full_batch": ...}`` for an optimizer that declares ``needs_full_batch`` (MeZO-SVRG's anchor steps): the whole
    train set in micro-batches of ``trainer.batch_size``, through the step's recorder (timed, logged, replayed); else {}."""
    if not getattr(optimizer, "needs_full_batch", False):
        return {}
    from zobench.optim.mezo_svrg import full_batch_loss

    return {"full_batch": full_batch_loss(losses, train, tr.batch_size, _loss_size(scorer, tr.loss))}


def _replayable(optimizer) -> bool:
    """ZO optimizers whose every decision follows from the loss values they observe."""
    return getattr(optimizer, "family", None) == "zo" and getattr(optimizer.estimator, "replayable", True)


def fit(cfg: Any, scorer: Scorer, optimizer, data: TaskData, named_params, recorder, device: torch.device,
        run_dir: Path, out: dict[str, Any], checkpointer=None) -> None:
    """Run the cell's training and evaluations, filling the summary fields in ``out`` as they are known

    (so a run that diverges or fails half-way still records what it measured). With a
    ``checkpointer``, progress is saved every ``trainer.checkpoint_every`` steps and when a stop
    is requested (SIGTERM/SIGUSR2), and a checkpoint of the same cell is resumed.

    ``optimizer`` is the optimizer, None (a scheme that trains nothing), or a zero-argument function that
    builds it: a fresh run then calls it only after measuring the inference peak, so that the optimizer's
    state (ZO-Adam's moments, HiZOO's H, FO-Adam's) is in the training peak and not in the inference
    baseline; ``optimizer_state_bytes`` is reported beside both.

    Data parallel (torchrun, zobench.distributed): every worker runs this with the same batches; each step
    forwards this worker's shard and combines the losses (ZO) or gradients (FO, DDP) over the workers;
    evaluations are sharded and gathered; only rank 0 (``main``) writes files, and rank 0's checkpoint,
    decisions on it and best state are broadcast to the others.
    """
    tr, metric = cfg.trainer, cfg.task.metric
    main = distributed.is_main()
    build = optimizer if callable(optimizer) and not hasattr(optimizer, "step") else None
    resume = checkpointer.load() if checkpointer is not None and tr.resume else None
    resume = distributed.broadcast_object(resume)  # rank 0 reads the checkpoint, every worker resumes it
    if build is not None:
        optimizer = build() if resume is not None else None  # a fresh run builds it after the inference peak
    if resume is not None and optimizer is not None:
        problem = _resume_problem(resume, _replayable(optimizer))
        if problem is not None:
            resume = checkpointer.unusable(f"{checkpointer.json_path} {problem}")
    out.update(steps=0, forward_passes=0)
    if resume is not None:
        out.update(resume["out"])
        recorder.truncate_after(resume["step"])  # rows logged after the checkpoint are redone
        log.info("resuming from the checkpoint of step %d", resume["step"])
    else:
        recorder.reset()  # a fresh start: rows of an earlier attempt are never mixed with this run's
    if checkpointer is not None and checkpointer.warnings:  # an unusable checkpoint, in the summary as in the log
        out["warnings"] = [*(out.get("warnings") or []), *checkpointer.warnings]
    if resume is None and tr.zero_shot:
        zs = distributed.evaluate(scorer, data.eval, tr.eval_batch_size)
        if main:
            zs.write(run_dir / ZERO_SHOT_PREDICTIONS)
        out.update(summary_fields("zero_shot", zs, metric))
        recorder.log({"step": 0, **{k: out[k] for k in dict.fromkeys(("zero_shot_accuracy", f"zero_shot_{metric}", "zero_shot_score"))},
                      "forward_passes": 0})  # the untuned model at step 0 of the curves (and of W&B)
        log.info("zero-shot eval %s %.4f %s", metric, zs.metrics[metric], _ci_text(out["zero_shot_score_ci95"]))
    out["num_eval"] = len(data.eval)
    if tr.steps == 0 or (optimizer is None and build is None):
        _final_eval(scorer, data, tr, metric, run_dir, out)
        return

    stream = batches(data.train, tr.batch_size, cfg.seed)
    meter, timer = PeakMemory(device), StepTimer(device)
    out["memory_method"] = meter.method
    first = None
    if resume is None:  # the inference peak: the same model on the same batch, before any optimizer state exists
        first = next(stream)
        release_memory()
        meter.reset()
        with torch.no_grad():
            scorer.loss(distributed.shard(first) or first, tr.loss)  # data parallel: what a worker forwards
        out["inference_peak_memory_bytes"] = meter.read()["peak_bytes"]
        out["baseline_memory_bytes"] = meter.baseline_bytes
        if optimizer is None:
            optimizer = build()
    replay = _replayable(optimizer)
    best = _BestState(run_dir, [p for _, p in named_params], pin=not replay, writes=main)
    sharded = None
    if distributed.active():  # this worker's shard of each batch; ZO all-reduces the losses, FO the gradients (DDP)
        family = getattr(optimizer, "family", None)
        sharded = distributed.ShardedLoss(scorer, tr.loss, _loss_size(scorer, tr.loss), ddp=family in ("fo", "hybrid"),
                                          find_unused=family == "hybrid")  # the hybrid's ZO part is frozen in backprop
    loss_log: list[list[float]] = []
    forward_ms: list[float] = []
    peaks: list[dict[str, int]] = []
    done = 0
    if resume is not None:
        kept = distributed.broadcast_object(best.resume(resume["best_step"], resume["best_score"], replay))
        if kept == "lost":  # only when files were removed by hand, or torn by code that wrote them in place
            message = (f"{best.path} does not hold the best-on-dev state of step {resume['best_step']} that the "
                       "checkpoint recorded: dev selection starts again with the steps after the checkpoint")
            log.warning(message)
            out["warnings"] = [*(out.get("warnings") or []), message]
            best.forget()
            out.update({k: None for k in ("best_dev_accuracy", "best_dev_score", "best_dev_loss", "best_step") if k in out})
            resume["stale_evals"] = 0
        regenerate = best.save if kept == "replay" else None  # replaying the loss log passes through that state
        done = _restore(resume, optimizer, named_params, stream, tr, scorer, device, replay,
                        best_step=resume["best_step"], at_best=regenerate, train=data.train)
        loss_log, timer.times_ms = resume["loss_log"] or [], resume["times_ms"]
        forward_ms, peaks = resume["forward_ms"], resume["peaks"]
    else:
        best.discard()  # a fresh start: an earlier attempt's best state is not this run's
    if first is None:
        first = next(stream)

    def save_checkpoint(step: int) -> None:
        if not main:
            return
        tensors = None if replay else {"params": [p.detach().cpu() for _, p in named_params],
                                       "optimizer": optimizer.state_dict()}
        checkpointer.save({"step": step, "out": out, "best_step": best.step, "best_score": best.score, "stale_evals": stale,
                           "loss_log": loss_log if replay else None, "times_ms": timer.times_ms,
                           "forward_ms": forward_ms, "peaks": peaks + [meter.read()]}, tensors)
        best.checkpointed()

    progress = Progress(tr.steps, tr.log_every, tr.eval_every, len(data.dev), len(data.eval) if tr.test else 0,
                        first_step=done + 1)
    patience = tr.get("early_stopping_patience")
    stale = resume.get("stale_evals", 0) if resume is not None else 0
    meter.reset()
    try:
        batch = first
        for step in range(done + 1, tr.steps + 1):
            losses = _StepLosses(scorer, tr.loss, device, sharded=sharded)
            with timer:
                closure = MicroBatchLoss(losses, batch, optimizer.accumulation_steps, size_of=_loss_size(scorer, tr.loss))
                if sharded is not None:
                    sharded.sync_part = closure.parts[-1]  # FO: DDP all-reduces the gradients with the last micro-batch
                stats = optimizer.step(closure, **_full_batch(optimizer, losses, data.train, scorer, tr))
            loss_log.append(losses.values)
            forward_ms.append(losses.forward_ms)
            out["steps"], out["forward_passes"] = step, out["forward_passes"] + stats["forward_passes"]
            out["forward_passes_per_step"], out["final_loss"] = stats["forward_passes"], stats["loss"]
            recorder.log({"step": step, "loss": stats["loss"], "lr": stats["lr"], "step_time_ms": timer.last_ms,
                          "forward_time_ms": losses.forward_ms, "forward_passes": out["forward_passes"]})
            if not math.isfinite(stats["loss"]):
                raise Diverged(f"loss is {stats['loss']} at step {step}")
            progress.update(step, stats["loss"])
            if step % tr.eval_every == 0 or step == tr.steps:
                peaks.append(meter.read())
                eval_t0 = time.perf_counter()
                dev = _dev_score(scorer, data.dev, tr, metric)
                if dev is not None:
                    row, score = dev
                    recorder.log({"step": step, **row, "forward_passes": out["forward_passes"]})
                    if best.offer(step, score):
                        out["best_dev_accuracy"], out["best_dev_score"], out["best_step"] = row["dev_accuracy"], row[f"dev_{metric}"], step
                        if "dev_loss" in row:
                            out["best_dev_loss"] = row["dev_loss"]
                        stale = 0
                    else:
                        stale += 1
                    progress.evaluated(step, time.perf_counter() - eval_t0, metric, row[f"dev_{metric}"],
                                       out.get("best_dev_score"), out.get("best_step"))
                meter.reset()
                if patience and stale >= patience and step < tr.steps:  # BSZO: early_stopping_patience evaluations
                    out["stopped_early_at"] = step
                    log.info("early stop at step %d: no dev improvement in %d evaluations", step, stale)
                    break
            if checkpointer is not None and step < tr.steps:
                if distributed.any_true(interrupt.requested()):  # data parallel: every worker stops after this step
                    save_checkpoint(step)
                    raise interrupt.Interrupted(f"stopped by a signal after step {step}; the checkpoint resumes it")
                if tr.checkpoint_every and step % tr.checkpoint_every == 0:
                    save_checkpoint(step)
            if step < tr.steps:
                batch = next(stream)
    finally:
        progress.close()
        if peaks or out["steps"]:
            peaks.append(meter.read())
            out["peak_memory_bytes"] = max(p["peak_bytes"] for p in peaks)
            if "reserved_bytes" in peaks[0]:
                out["peak_memory_reserved_bytes"] = max(p["reserved_bytes"] for p in peaks)
            if out.get("baseline_memory_bytes") is not None:
                out["peak_memory_above_baseline_bytes"] = out["peak_memory_bytes"] - out["baseline_memory_bytes"]
                out["inference_peak_above_baseline_bytes"] = out["inference_peak_memory_bytes"] - out["baseline_memory_bytes"]
            out["step_time_ms"] = timer.median_ms(tr.warmup_steps)
            if forward_ms:
                kept = forward_ms[tr.warmup_steps:] or forward_ms
                out["forward_time_ms"] = statistics.median(kept)  # the forward passes of a step
                out["update_time_ms"] = out["step_time_ms"] - out["forward_time_ms"]  # RNG/perturbation, or backward
            out["optimizer_state_bytes"] = optimizer.state_bytes()
            if out.get("inference_peak_memory_bytes"):  # the ratio both ways: with the state, and without it
                out["peak_over_inference"] = out["peak_memory_bytes"] / out["inference_peak_memory_bytes"]
                out["peak_without_state_over_inference"] = (
                    (out["peak_memory_bytes"] - out["optimizer_state_bytes"]) / out["inference_peak_memory_bytes"])

    if best.step is not None and best.step != out["steps"]:
        best.restore()  # best-on-dev, never chosen by the eval set
    best.discard()
    if best.step is None:
        out["best_step"] = out["steps"]  # no dev set: the final state is the one evaluated
    if tr.save_trainable and main:
        save_torch_atomic({n: p.detach().cpu() for n, p in named_params}, run_dir / "trainable.pt")
    _final_eval(scorer, data, tr, metric, run_dir, out)
    if checkpointer is not None:
        checkpointer.clear()


def _ci_text(ci) -> str:
    return f"[95% CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""


def _final_eval(scorer: Scorer, data: TaskData, tr: Any, metric: str, run_dir: Path, out: dict[str, Any]) -> None:
    """Score the eval set with the selected state: predictions.jsonl and the test fields with their 95% interval.

    ``trainer.test=false`` (a dev-only run, e.g. the learning-rate search) never scores the eval set."""
    if not tr.get("test", True):
        log.info("trainer.test=false: the eval set is not scored (best dev %s: %s)", metric, out.get("best_dev_score"))
        return
    final = distributed.evaluate(scorer, data.eval, tr.eval_batch_size)  # = evaluate() in one process
    if distributed.is_main():
        final.write(run_dir / PREDICTIONS)
    out.update(summary_fields("test", final, metric))
    log.info("eval %s %.4f %s (state of step %s, n=%d)", metric, final.metrics[metric], _ci_text(out["test_score_ci95"]),
             out.get("best_step"), len(data.eval))


_RESUMED_KEYS = ("out", "best_step", "best_score", "times_ms", "forward_ms", "peaks")


def _resume_problem(resume: dict[str, Any], replay: bool) -> str | None:
    """Why a loaded checkpoint cannot resume this optimizer, or None."""
    missing = [k for k in _RESUMED_KEYS if k not in resume]
    if missing:
        return f"lacks {', '.join(missing)}"
    if replay and not isinstance(resume.get("loss_log"), list):
        return "holds no loss log for this replayed (ZO) optimizer"
    if not replay and not isinstance(resume.get("tensor_state"), dict):
        return "names no tensor file for this optimizer's state"
    return None


def _restore(resume, optimizer, named_params, stream, tr, scorer, device, replay: bool,
             best_step: int | None = None, at_best=None, train=()) -> int:
    """Bring the optimizer and the batch stream to the checkpoint's step; return that step.

    ``at_best(step)`` is called once the replay has re-created the state of ``best_step``."""
    step = resume["step"]
    if replay:
        for done, values in enumerate(resume["loss_log"], start=1):
            batch = next(stream)
            losses = _StepLosses(scorer, tr.loss, device, replay=values)
            optimizer.step(MicroBatchLoss(losses, batch, optimizer.accumulation_steps, size_of=_loss_size(scorer, tr.loss)),
                           **_full_batch(optimizer, losses, train, scorer, tr))
            if at_best is not None and done == best_step:
                at_best(done)
        return step
    state = resume["tensor_state"]
    with torch.no_grad():
        for (_, p), saved in zip(named_params, state["params"]):
            p.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])
    for _ in range(step):
        next(stream)
    return step
