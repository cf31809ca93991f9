"""Weights & Biases logging of a run: config, per-step metrics, dev evaluations and the summary.

W&B is an observer: any error from it (no network, bad key, a crash in the client) is logged
as a warning once and the run goes on. ``WANDB_MODE=offline`` writes a local run directory that
``wandb sync`` uploads later; ``logger.mode`` sets the same from the config.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("zobench")


class WandbLogger:
    def __init__(self, logger_cfg: Any, cfg: Any, run_name: str, group: str | None, run_dir: str):
        self.run, self._warned = None, False
        try:
            import wandb
            from omegaconf import OmegaConf

            tags = [f"model:{cfg.model.name}", f"task:{cfg.task.name}", f"tuning:{cfg.tuning.name}",
                    f"optimizer:{cfg.optimizer.name}", *list(logger_cfg.get("tags") or [])]
            self.run = wandb.init(
                project=logger_cfg.project, entity=logger_cfg.get("entity"),
                group=logger_cfg.get("group") or group, name=run_name, tags=tags,
                mode=logger_cfg.get("mode") or None, dir=logger_cfg.get("dir") or run_dir,
                config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous",
            )
            if self.run is not None:
                self.run.define_metric("step")
                self.run.define_metric("*", step_metric="step")
        except Exception as exc:  # noqa: BLE001 - W&B must never fail a run
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
