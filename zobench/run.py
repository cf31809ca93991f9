"""The entry point: compose -> validate -> load -> tune -> train -> evaluate -> record.

``zobench model=tiny-opt task=sst2 optimizer=zo_sgd`` (or ``python -m zobench ...``) runs one
cell; ``zobench -m optimizer=zo_sgd,fo_adam seed=0,1`` sweeps. Bad input fails before any
model loads, with a message that names the key and the allowed values.
"""
from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from zobench import CONF_DIR
from zobench.errors import ConfigError

log = logging.getLogger("zobench")

STATUSES = ("completed", "diverged", "failed", "interrupted")  # interrupted: resumable from its checkpoint


def _base_summary(cfg: Any) -> dict[str, Any]:
    from zobench.record import versions

    return {
        "status": "failed", "error": None,
        "model": cfg.model.name, "model_family": cfg.model.family, "model_kind": cfg.model.kind,
        "hub_id": cfg.model.get("hub_id"), "task": cfg.task.name, "tuning": cfg.tuning.name,
        "optimizer": cfg.optimizer.name, "seed": cfg.seed, "dtype": cfg.dtype, "device": cfg.device,
        "lr": cfg.optimizer.lr, "eps": cfg.optimizer.get("eps"), "template": cfg.task.template,
        "metric": cfg.task.metric, "loss": cfg.trainer.loss, "selection": cfg.trainer.get("selection", "dev_metric"),
        "family": cfg.optimizer.get("family"), "variant": cfg.optimizer.get("variant"),
        "steps_budget": cfg.trainer.steps, "steps": 0, "forward_passes": 0,
        "zero_shot_accuracy": None, "best_dev_accuracy": None, "best_step": None, "test_accuracy": None,
        "trainable_params": None, "total_params": None, "peak_memory_bytes": None,
        "inference_peak_memory_bytes": None, "step_time_ms": None, "wall_time_s": None,
        "versions": versions(),
    }


def run_cell(cfg: DictConfig, run_dir: str | Path, run_name: str | None = None,
             group: str | None = None) -> dict[str, Any]:
    """Run one cell into ``run_dir``; always writes summary.json and returns it.

    A ``run_dir`` that already holds a completed summary of the same cell (same ``cell_key``)
    is not run again; one that holds a checkpoint of the same cell resumes from it.

    Guarantees, whatever happens to the process:

    - One process at a time in ``run_dir``: the cell holds ``run_dir/.lock`` while it runs (the kernel
      releases it if the process dies). Another process that finds it held logs one line, writes
      nothing in ``run_dir`` and returns ``{"status": "busy", "busy": True}`` (no summary.json).
    - A stop signal (SIGTERM, SIGINT/Ctrl-C, SIGUSR2) ends the run ``interrupted`` at the end of its
      step, with a checkpoint that a re-run resumes (``zobench.interrupt``); a KeyboardInterrupt
      raised inside ends it ``interrupted`` too, resumable from its last checkpoint.
    - A traceback.txt is the current attempt's: a run that starts removes an earlier attempt's.
    - Under torchrun (WORLD_SIZE > 1, zobench.distributed) the workers run the cell together: rank 0 as
      above, the others beside it (``_follow_cell``), writing nothing, and ``run_dir`` is rank 0's.
    """
    from zobench import distributed, interrupt
    from zobench.lock import RunDirLock

    if distributed.setup(cfg.get("device", "auto")) > 1 and not distributed.is_main():
        return _follow_cell(cfg)
    run_dir = Path(run_dir)
    if distributed.active():
        from zobench.checkpoint import cell_key

        distributed.begin_cell(cell_key(cfg))
    try:
        with interrupt.graceful_interrupt(), RunDirLock(run_dir) as held:
            if not held:
                return _busy(cfg, run_dir)
            return _run_cell(cfg, run_dir, run_name, group)
    finally:
        distributed.end_cell()  # the other workers wait for this cell: told it does not run, if _run did not start


def _follow_cell(cfg: DictConfig) -> dict[str, Any]:
    """A torchrun worker of rank > 0: run rank 0's cell beside it, its shard of every batch and evaluation,
    writing no file (rank 0 writes the run directory) and logging warnings only. Returns its own summary,
    which ends as rank 0's does (every decision is shared); a cell rank 0 does not run is ``skipped``."""
    import os

    from zobench import distributed, interrupt
    from zobench.checkpoint import cell_key
    from zobench.train import Diverged

    tqdm_before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # no progress bar beside rank 0's
    try:
        with interrupt.graceful_interrupt(), distributed.quiet_logs():
            run_dir = distributed.wait_for_cell(cell_key(cfg))
            if run_dir is None:
                return {"status": "skipped", "error": None, "skipped": True, "rank": distributed.rank()}
            summary = _base_summary(cfg)
            summary["rank"] = distributed.rank()
            try:
                _run(cfg, Path(run_dir), distributed.NullRecorder(), summary, distributed.FollowerCheckpointer(run_dir))
                summary["status"] = "completed"
            except (Exception, KeyboardInterrupt) as exc:  # the same statuses as rank 0's (_run_cell)
                if isinstance(exc, KeyboardInterrupt):
                    interrupt.request()
                summary["status"] = ("diverged" if isinstance(exc, Diverged) else "interrupted"
                                     if isinstance(exc, (interrupt.Interrupted, KeyboardInterrupt)) else "failed")
                summary["error"] = f"{type(exc).__name__}: {exc}"
                if summary["status"] == "failed":
                    log.error("rank %d: run failed: %s", distributed.rank(), summary["error"], exc_info=True)
            return summary
    finally:
        if tqdm_before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_before


def _busy(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from zobench.checkpoint import cell_key

    _log_outside(run_dir, "busy: another process is running %s; skipped here, nothing written", run_dir)
    return {"status": "busy", "error": None, "busy": True, "cell_key": cell_key(cfg)}


def _log_outside(run_dir: Path, message: str, *args: Any) -> None:
    """Log a warning, but not into a log file inside ``run_dir``: its run.log is another process's."""
    inside, detached = run_dir.resolve(), []
    for logger in {logging.getLogger(), log}:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().parent == inside:
                logger.removeHandler(handler)
                detached.append((logger, handler))
    try:
        log.warning(message, *args)
    finally:
        for logger, handler in detached:
            logger.addHandler(handler)


def _run_cell(cfg: DictConfig, run_dir: Path, run_name: str | None, group: str | None) -> dict[str, Any]:
    """run_cell's work, with the run directory locked and the stop signals handled."""
    from zobench import interrupt
    from zobench.checkpoint import Checkpointer, cell_key
    from zobench.record import RunRecorder

    started, run_dir, load = time.time(), Path(run_dir), _machine_load()
    key = cell_key(cfg)
    done = _completed_summary(run_dir, key) if cfg.trainer.get("resume", True) else None
    if done is not None:
        log.info("skipped: %s already holds a completed run of this cell", run_dir)
        return {**done, "skipped": True}
    other = _other_cell(run_dir, key)
    if other is not None:  # refused before anything is written: the folder's results stay as they are
        message = (f"{run_dir} holds {other} of another configuration (cell_key {key} here): a folder holds one "
                   "cell's results. Use another sweep_name (or hydra.run.dir), or delete that folder to recompute it.")
        log.error("run refused: %s", message)
        return {"status": "failed", "error": f"OccupiedRunDir: {message}", "refused": True, "cell_key": key}
    (run_dir / "traceback.txt").unlink(missing_ok=True)  # an earlier attempt's: never left beside this one's results
    loggers = _loggers(cfg, run_dir, run_name, group)
    recorder = RunRecorder(run_dir, loggers)
    summary: dict[str, Any] = {"status": "failed", "error": None}
    try:
        summary = _base_summary(cfg)
        summary["cell_key"] = key
        recorder.write_config(cfg)
        _run(cfg, run_dir, recorder, summary, Checkpointer(run_dir, key))
        summary["status"] = "completed"
    except (Exception, KeyboardInterrupt) as exc:  # recorded, never lost: the summary says how the run ended
        from zobench.train import Diverged

        if isinstance(exc, KeyboardInterrupt):  # raised where no handler was installed: a stop all the same
            interrupt.request()
        summary["status"] = ("diverged" if isinstance(exc, Diverged) else
                             "interrupted" if isinstance(exc, (interrupt.Interrupted, KeyboardInterrupt)) else "failed")
        summary["error"] = f"{type(exc).__name__}: {str(exc) or 'stopped; a re-run resumes from the last checkpoint'}"
        if summary["status"] == "failed" and not isinstance(exc, ConfigError):
            text = traceback.format_exc()
            try:  # on a full disk: no empty traceback.txt, and no exception past the summary (the log keeps the text)
                from zobench.record import write_atomic

                write_atomic(run_dir / "traceback.txt", text)
            except OSError as err:
                log.error("traceback.txt not written (%s):\n%s", err, text)
        log.error("run %s: %s", summary["status"], summary["error"])
    finally:
        summary["wall_time_s"] = round(time.time() - started, 3)
        # how busy the machine was (wall time on shared cores is not the cell's cost): the 1-minute load average
        # at start and end, the cores, and this process's CPU time (user + system) during the run
        end = _machine_load()
        summary["load_average_1m_start"], summary["load_average_1m_end"] = load["load"], end["load"]
        summary["cpu_count"] = end["cpus"]
        summary["cpu_time_s"] = round(end["cpu_s"] - load["cpu_s"], 3)
        recorder.finish(summary)
    from zobench.measure import release_memory

    release_memory()  # the next cell of a sweep in this process starts from a clean heap
    return summary


def _machine_load() -> dict[str, Any]:
    """The 1-minute load average (None where the OS has none), the CPU count and this process's CPU seconds."""
    import os

    try:
        load = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        load = None
    times = os.times()
    return {"load": load, "cpus": os.cpu_count(), "cpu_s": times.user + times.system}


def _completed_summary(run_dir: Path, key: str) -> dict[str, Any] | None:
    import json

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") == "completed" and summary.get("cell_key") == key else None


def _other_cell(run_dir: Path, key: str) -> str | None:
    """What of another cell's results ``run_dir`` holds (a finished or interrupted summary, a checkpoint), or None.

    A failed attempt of another config is not kept: it is a record of an error, and the folder is re-run.
    Nor is a run of the same config by older code (its config.yaml gives this cell_key today: only
    RESULTS_VERSION moved), which is computed again, as a version bump means.
    """
    import json

    from omegaconf import OmegaConf

    from zobench.checkpoint import cell_key

    try:
        if cell_key(OmegaConf.load(run_dir / "config.yaml")) == key:
            return None
    except Exception:  # noqa: BLE001 - absent or unreadable: judge by the records below
        pass

    for name, what in (("summary.json", "a {status} run"), ("checkpoint.json", "the checkpoint")):
        try:
            record = json.loads((run_dir / name).read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            continue  # unreadable: nothing usable to protect (a torn write is caught where it is read)
        other = record.get("cell_key")
        if other and other != key and (name == "checkpoint.json" or record.get("status") != "failed"):
            return what.format(status=record.get("status")) + f" (cell_key {other})"
    return None


def _loggers(cfg, run_dir: Path, run_name: str | None, group: str | None) -> list:
    if cfg.logger.name != "wandb":
        return []
    from zobench.wandb_logger import WandbLogger

    name = run_name or f"{cfg.model.name}-{cfg.task.name}-{cfg.tuning.name}-{cfg.optimizer.name}-seed{cfg.seed}"
    return [WandbLogger(cfg.logger, cfg, name, group, str(run_dir))]


def _run(cfg, run_dir: Path, recorder, summary: dict[str, Any], checkpointer=None) -> None:
    from zobench import distributed
    from zobench.models import count_params, load_model, resolve_device
    from zobench.optim import build_optimizer
    from zobench.scoring import Scorer
    from zobench.tasks import load_task
    from zobench.train import fit
    from zobench.tuning import apply_tuning, count_trainable, input_budget, no_training, prepare_data, trains
    from zobench.validate import validate_config

    distributed.start_cell(run_dir)  # torchrun: the other workers run this cell beside rank 0 (no-op alone)
    validate_config(cfg)
    distributed.check_config(cfg)  # what a data-parallel run refuses (WORLD_SIZE > 1 only)
    if not trains(cfg.tuning) and no_training(cfg.trainer):  # ICL in a sweep that sets trainer.steps
        log.warning("tuning=%s trains nothing: trainer.steps=0, trainer.zero_shot=false", cfg.tuning.name)
        summary["steps_budget"] = 0
    data = prepare_data(cfg.tuning, load_task(cfg.task, cfg.data))  # data errors surface before the model loads
    summary["data"] = data.info
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, cfg.seed)
    model, named = apply_tuning(model, cfg.tuning, cfg.seed)
    if distributed.active():  # the workers start from the same trainable parameters (checked; rank 0's if not)
        summary["world_size"], summary["distributed_backend"] = distributed.world_size(), distributed.backend()
        distributed.sync_parameters(named)
    if cfg.model.get("device_map") is not None:  # one model over several devices (accelerate)
        summary["device_map"] = distributed.placement(model)
    summary["trainable_params"], summary["total_params"] = count_trainable(named), count_params(model)
    optimizer = None  # a scheme that trains nothing (ICL) needs none
    if trains(cfg.tuning):  # built by fit after the inference peak is measured: its state is not in that baseline
        def optimizer():
            return build_optimizer(cfg.optimizer, named, cfg.trainer.steps, cfg.seed, model=model)
    summary["max_length"] = input_budget(model, cfg.tuning, cfg.trainer.max_length)
    if cfg.trainer.get("pad_to_length") is not None:  # memory vs length: every sequence exactly this long
        from zobench.tasks._lengthen import lengthen

        data = lengthen(data, tokenizer, cfg.trainer.pad_to_length, summary["max_length"])
        summary["max_length"] = summary["seq_len"] = cfg.trainer.pad_to_length
    scorer = Scorer(model, tokenizer, cfg.model.kind, summary["max_length"],
                    shared_context=cfg.trainer.get("shared_context", True))
    summary["scoring"] = ("shared_context" if scorer.shared_context
                          else f"per_candidate ({scorer.shared_context_off})")
    device = resolve_device(cfg.device)
    summary["device"] = device.type
    fit(cfg, scorer, optimizer, data, named, recorder, device, run_dir, summary, checkpointer)


def result_table(summary: dict[str, Any]) -> str:
    """The end of a run, for a person: scores with their 95% intervals, then what it cost."""
    metric = summary.get("metric") or "accuracy"

    def score(key: str) -> str | None:
        value, ci = summary.get(f"{key}_score"), summary.get(f"{key}_score_ci95")
        if value is None:
            return None
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
        return f"{value:.3f}{interval}"

    rows = [("status", summary.get("status") + (f": {summary['error']}" if summary.get("error") else ""))]
    n = f" (n={summary['num_eval']}, 95% bootstrap interval)" if summary.get("num_eval") else ""
    for label, key in ((f"zero-shot {metric}", "zero_shot"), (f"test {metric}", "test")):
        if score(key) is not None:
            rows.append((label + n, score(key)))
    if summary.get("best_dev_score") is not None:
        rows.append((f"best dev {metric}", f"{summary['best_dev_score']:.3f} at step {summary.get('best_step')}"))
    if summary.get("steps_budget"):
        rows.append(("steps", f"{summary.get('steps', 0)} of {summary['steps_budget']}"))
    if summary.get("forward_passes"):
        rows.append(("forward passes", f"{summary['forward_passes']:,}"))
    if summary.get("step_time_ms") is not None:
        rows.append(("step time", f"{summary['step_time_ms'] / 1e3:.2f} s (median)"))
    gib = 1024 ** 3
    if summary.get("peak_memory_bytes"):
        peak = f"{summary['peak_memory_bytes'] / gib:.2f} GiB"
        if summary.get("inference_peak_memory_bytes"):
            peak += f" ({summary['peak_memory_bytes'] / summary['inference_peak_memory_bytes']:.2f}x inference)"
        rows.append(("peak memory", peak))
    if summary.get("wall_time_s") is not None:
        rows.append(("wall time", f"{summary['wall_time_s'] / 60:.1f} min"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"[zobench]   {k:<{width}}  {v}" for k, v in rows)


def _print_summary(summary: dict[str, Any], run_dir: str) -> None:
    print(f"[zobench] {run_dir}\n{result_table(summary)}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    from zobench.wandb_logger import hydra_run_name

    run_name = hydra_run_name(hc)  # the overrides the sweep varies: optimizer=zo_sgd,seed=1
    group = Path(hc.sweep.dir).name if multirun else None
    if multirun:
        from zobench import sweep

        if not sweep.may_start(hc.runtime.output_dir):  # the sweep was stopped: no cell starts
            _skip_on_other_ranks(cfg)
            return
    from zobench.models import infer_model

    try:  # model.family / model.kind left auto (model=hf): read from the model's config (the hub if need be)
        # before the cell starts, so that validation, the cell's key and its config.yaml have the real values
        inferred = infer_model(cfg.model, hub=True)
        if inferred:
            log.info("model %s: model_type %s (%s) -> model.family=%s, model.kind=%s", cfg.model.name,
                     inferred["model_type"], inferred["source"], inferred["family"], inferred["kind"])
    except ConfigError as exc:  # the model cannot be told: nothing is written in the run directory
        log.error("run refused: %s", exc)
        if not multirun:
            sys.exit(f"zobench: bad config: {exc}")
        sweep.cell_ended({"status": "failed", "error": f"ConfigError: {exc}"}, hc.runtime.output_dir)
        _skip_on_other_ranks(cfg)
        return
    summary = run_cell(cfg, hc.runtime.output_dir, run_name, group)
    _print_summary(summary, hc.runtime.output_dir)
    if multirun:  # a failed cell is recorded and the sweep goes on; its end line and exit code come at the end
        sweep.cell_ended(summary, hc.runtime.output_dir)
    elif summary["status"] in ("failed", "interrupted", "busy"):
        sys.exit(1)


def _skip_on_other_ranks(cfg: DictConfig) -> None:
    """Under torchrun, rank 0 tells the other workers that this cell does not run (they wait for it)."""
    from zobench import distributed

    if distributed.active():
        from zobench.checkpoint import cell_key

        distributed.skip_cell(cell_key(cfg))


def cli() -> None:
    """Console script: ``--version`` (zobench's version and git commit); otherwise check the command line
    first, so a typo costs a second, then run Hydra."""
    from zobench.cli_check import precheck

    if any(a in ("--version", "-V") for a in sys.argv[1:]):  # Hydra's own --version would print Hydra's
        from zobench import version_line

        print(version_line())
        return
    precheck(sys.argv[1:])
    from zobench import distributed

    sys.argv += distributed.hydra_overrides()  # torchrun rank > 0: no .hydra/ or run.log of its own
    main()


if __name__ == "__main__":
    cli()
