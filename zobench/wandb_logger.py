"""Weights & Biases logging of a run: config, per-step metrics, dev evaluations and the summary.

W&B is an observer: any error from it (no network, bad key, a crash in the client) is logged
as a warning once and the run goes on. ``WANDB_MODE=offline`` writes a local run directory that
``wandb sync`` uploads later; ``logger.mode`` sets the same from the config.

No network costs at most ``logger.init_timeout`` seconds (conf/logger/wandb.yaml; INIT_TIMEOUT_S when absent), not W&B's 90:
its own console output is silenced (resolving the user name to print it blocks 5 s per attempt on a
dead network), and the run's page is logged here instead. The W&B run id is kept in the run
directory (``wandb_run_id``): a run resumed from its checkpoint continues the same W&B run
(``resume="allow"``) instead of starting a second one with the same name; a fresh start gets a new id.
"""
from __future__ import annotations

import logging
import secrets
import string
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("zobench")

INIT_TIMEOUT_S = 8.0     # wandb.init's wait for the server (W&B's default: 90 s); the service's start comes on top
RUN_ID_FILE = "wandb_run_id"


def _run_id(run_dir: Path, cfg: Any) -> tuple[str, bool]:
    """(id, resumed): the id this folder's W&B run had when its checkpoint will be resumed, else a new one."""
    from zobench.checkpoint import Checkpointer, cell_key
    from zobench.record import write_atomic

    path = run_dir / RUN_ID_FILE
    if cfg.trainer.get("resume", True) and Checkpointer(run_dir, cell_key(cfg)).resumable():
        try:
            previous = path.read_text().strip()
        except OSError:
            previous = ""
        if previous:
            return previous, True
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id form
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, new + "\n")
    except OSError as exc:
        log.warning("W&B run id not kept in %s (%s): a resumed run will start another W&B run", path, exc)
    return new, False


class WandbLogger:
    def __init__(self, logger_cfg: Any, cfg: Any, run_name: str, group: str | None, run_dir: str):
        self.run, self._warned = None, False
        timeout = float(logger_cfg.get("init_timeout") or INIT_TIMEOUT_S)
        started = time.monotonic()
        try:
            import wandb
            from omegaconf import OmegaConf

            run_id, resumed = _run_id(Path(run_dir), cfg)
            tags = [f"model:{cfg.model.name}", f"task:{cfg.task.name}", f"tuning:{cfg.tuning.name}",
                    f"optimizer:{cfg.optimizer.name}", *list(logger_cfg.get("tags") or [])]
            self.run = wandb.init(
                project=logger_cfg.project, entity=logger_cfg.get("entity"),
                group=logger_cfg.get("group") or group, name=run_name, tags=tags,
                mode=logger_cfg.get("mode") or None, dir=logger_cfg.get("dir") or run_dir,
                config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous",
                id=run_id, resume="allow" if resumed else None,
                settings=wandb.Settings(init_timeout=timeout, silent=True),
            )
            if self.run is not None:
                self.run.define_metric("step")
                self.run.define_metric("*", step_metric="step")
                url = getattr(self.run, "url", None)
                log.info("W&B run %s%s%s", run_id, " (resumed)" if resumed else "", f": {url}" if url else "")
        except Exception as exc:  # noqa: BLE001 - W&B must never fail a run
            waited = time.monotonic() - started
            if waited >= timeout:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                exc = TimeoutError(f"no answer from W&B within {waited:.0f} s ({type(exc).__name__}: {first}); the run "
                                   "goes on without it (WANDB_MODE=offline logs locally for `wandb sync`; "
                                   "logger.init_timeout=<s> waits longer)")
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("W&B logging disabled for this run: %s: %s", type(exc).__name__, exc)
            self._warned = True
        self.run = None

    def log(self, row: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.log(row)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
            self.run.summary.update(flat)
            self.run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
