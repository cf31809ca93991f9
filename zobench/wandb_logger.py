"""Weights & Biases logging of a run: config, per-step metrics, dev evaluations and the summary.

W&B is an observer: any error from it (no network, bad key, a crash in the client) is logged
as a warning once and the run goes on. ``WANDB_MODE=offline`` writes a local run directory that
``wandb sync`` uploads later; ``logger.mode`` sets the same from the config.

No network costs at most ``logger.init_timeout`` seconds (conf/logger/wandb.yaml; INIT_TIMEOUT_S when absent), not W&B's 90:
its own console output is silenced (resolving the user name to print it blocks 5 s per attempt on a
dead network), and the run's page is logged here instead. The W&B run id is kept in the run
directory (``wandb_run_id``): a run resumed from its checkpoint continues the same W&B run
(``resume="allow"``) instead of starting a second one with the same name; a fresh start gets a new id.

What a dashboard reads: every metrics row as logged (training rows and dev rows both carry the cumulative
``forward_passes``, so curves can be drawn against compute), the untuned model's scores at ``step`` 0
(``zero_shot_accuracy``, ``zero_shot_score``, ``zero_shot_<metric>``), and a summary whose cost figures are
numbers (``summary_metrics``): ``peak_memory_gib``, ``memory_ratio`` (peak / inference peak),
``step_time_ms`` / ``step_time_s``, ``forward_passes``, ``forward_pass_equivalents``, intervals split into
``<key>_lo`` / ``<key>_hi``: the axes of a parallel-coordinates or scatter panel.

Run names (``hydra_run_name``, ``short_run_name``): the overrides that vary across the sweep, e.g.
``optimizer=zo_sgd,seed=1``; keys every cell of the sweep shares are left out.
"""
from __future__ import annotations

import logging
import math
import secrets
import string
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger("zobench")

INIT_TIMEOUT_S = 8.0     # wandb.init's wait for the server (W&B's default: 90 s); the service's start comes on top
RUN_ID_FILE = "wandb_run_id"
GIB = 2**30
# override keys never part of a run's name: where things are, not what the run computes
NAME_IGNORED = ("hydra", "data.dir", "paths", "sweep_name", "logger")


# -- run names --------------------------------------------------------------------------------------------
def _parse(override: str):
    """(key, is_sweep) of one Hydra override string; a string Hydra cannot parse is split at its first '='."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_override(override)
        return parsed.key_or_group, parsed.is_sweep_override()
    except Exception:  # noqa: BLE001 - a name is never worth a failed run
        key, _, value = override.partition("=")
        return key.lstrip("+~"), "," in value


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in NAME_IGNORED)


def varying_keys(sweep_params: Mapping[str, Any] | Iterable[str]) -> set[str]:
    """Keys that take several values in a sweep: ``{key: "a,b"}`` (hydra.sweeper.params) or
    ``["key=a,b", ...]`` (the sweep's command line); ranges, choice() and glob() count as sweeps."""
    items = ([f"{k}={v}" for k, v in sweep_params.items()] if isinstance(sweep_params, Mapping)
             else [str(o) for o in sweep_params])
    found = set()
    for item in items:
        key, sweep = _parse(item)
        if sweep:
            found.add(key)
    return found


def short_run_name(task_overrides: Iterable[str], sweep_params: Mapping[str, Any] | Iterable[str] | None = None
                   ) -> str | None:
    """A run's name from its overrides: only those whose key the sweep varies, in the job's order.

    ``task_overrides``: the job's ``hydra.overrides.task`` (``["model=tiny-llama", "optimizer=zo_sgd", "seed=1"]``);
    ``sweep_params``: what the sweep asked for (``sweep_params(...)``: ``{"optimizer": "zo_sgd,fo_adam",
    "seed": "0,1"}``), or None when unknown (a single run): then every override is kept. Paths, ``hydra.*``
    and ``logger`` keys are never kept. When the sweep varies nothing (one cell), every override is kept.
    None when nothing is left (the caller names the run from its config)."""
    overrides = [str(o) for o in task_overrides]
    kept = [o for o in overrides if not _ignored(_parse(o)[0])]
    if sweep_params is not None:
        varying = varying_keys(sweep_params)
        shown = [o for o in kept if _parse(o)[0] in varying]
        kept = shown or kept
    return ",".join(kept) or None


def sweep_params(sweep_dir: str | Path, config_params: Mapping[str, Any] | None = None) -> dict[str, str] | None:
    """What a Hydra sweep swept: ``hydra.sweeper.params`` overlaid with the sweep's command line
    (``<sweep_dir>/multirun.yaml``: hydra.overrides.task, which wins for the same key, as in Hydra's
    BasicSweeper). None when ``multirun.yaml`` cannot be read: the command line is unknown then."""
    try:
        import yaml

        saved = yaml.safe_load((Path(sweep_dir) / "multirun.yaml").read_text()) or {}
    except Exception:  # noqa: BLE001 - absent or unreadable
        return None
    hydra_node = saved.get("hydra") or {}
    params = config_params if config_params is not None else (hydra_node.get("sweeper") or {}).get("params")
    out = {str(k): str(v) for k, v in (params or {}).items()}
    for override in (hydra_node.get("overrides") or {}).get("task") or []:
        key, _ = _parse(str(override))
        out[key] = str(override).partition("=")[2]
    return out


def hydra_run_name(hc: Any) -> str | None:
    """The W&B name of the Hydra job ``hc`` (``HydraConfig.get()``): ``short_run_name`` of its overrides,
    reading what the sweep varied from the sweep's ``multirun.yaml`` (every override outside a sweep)."""
    try:
        overrides = list(hc.overrides.task)
        params = None
        if str(hc.mode).endswith("MULTIRUN"):
            sweeper = hc.get("sweeper") or {}
            config_params = sweeper.get("params") if hasattr(sweeper, "get") else None
            if config_params is not None:
                from omegaconf import OmegaConf

                config_params = OmegaConf.to_container(config_params, resolve=False) \
                    if OmegaConf.is_config(config_params) else dict(config_params)
            params = sweep_params(hc.sweep.dir, config_params)
        return short_run_name(overrides, params)
    except Exception as exc:  # noqa: BLE001 - a name is never worth a failed run
        log.warning("W&B run name from the overrides failed (%s: %s); the run is named from its config",
                    type(exc).__name__, exc)
        return None


# -- what a run's W&B record holds --------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _number(value: Any) -> Any:
    """summary.json writes NaN/inf as strings (JSON has none): back to floats."""
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return value


def zero_shot_row(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The untuned model's scores as a metrics row at step 0 (None when the run scored none)."""
    metric = summary.get("metric") or "accuracy"
    keys = dict.fromkeys(("zero_shot_accuracy", f"zero_shot_{metric}", "zero_shot_score"))
    row = {k: _number(summary[k]) for k in keys if summary.get(k) is not None}
    return {"step": 0, **row, "forward_passes": 0} if row else None


def summary_metrics(summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run's summary as W&B summary metrics: scalars as they are (numbers stay numbers), each 95%
    interval ``<key>_ci95`` split into ``<key>_ci95_lo`` / ``_hi``, and the cost figures a
    parallel-coordinates or scatter panel plots: ``peak_memory_gib``, ``inference_peak_memory_gib``,
    ``memory_ratio``, ``step_time_ms``, ``step_time_s``, ``forward_passes``, ``forward_pass_equivalents``."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        value = _number(value)
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        elif key.endswith("_ci95") and isinstance(value, (list, tuple)) and len(value) == 2:
            out[f"{key}_lo"], out[f"{key}_hi"] = (_number(v) for v in value)
    peak, inference = _finite(summary.get("peak_memory_bytes")), _finite(summary.get("inference_peak_memory_bytes"))
    if peak is not None:
        out["peak_memory_gib"] = peak / GIB
    if inference is not None:
        out["inference_peak_memory_gib"] = inference / GIB
    if peak is not None and inference:
        out["memory_ratio"] = peak / inference
    step_ms = _finite(summary.get("step_time_ms"))
    if step_ms is not None:
        out["step_time_ms"], out["step_time_s"] = step_ms, step_ms / 1000
    passes = _finite(summary.get("forward_passes"))
    if passes is not None:
        out["forward_passes"] = int(passes) if passes == int(passes) else passes
        try:
            from zobench.compute import forward_pass_equivalents

            fpe = forward_pass_equivalents({k: _number(v) for k, v in summary.items()}, config)
        except Exception:  # noqa: BLE001 - an unknown optimizer family: no equivalents
            fpe = None
        if fpe is not None:
            out["forward_pass_equivalents"] = fpe
    return out


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
        self.config: dict | None = None
        self.resumed, self.zero_shot_logged = False, False
        timeout = float(logger_cfg.get("init_timeout") or INIT_TIMEOUT_S)
        started = time.monotonic()
        try:
            import wandb
            from omegaconf import OmegaConf

            run_id, resumed = _run_id(Path(run_dir), cfg)
            self.resumed = resumed
            self.config = OmegaConf.to_container(cfg, resolve=True)
            tags = [f"model:{cfg.model.name}", f"task:{cfg.task.name}", f"tuning:{cfg.tuning.name}",
                    f"optimizer:{cfg.optimizer.name}", *list(logger_cfg.get("tags") or [])]
            self.run = wandb.init(
                project=logger_cfg.project, entity=logger_cfg.get("entity"),
                group=logger_cfg.get("group") or group, name=run_name, tags=tags,
                mode=logger_cfg.get("mode") or None, dir=logger_cfg.get("dir") or run_dir,
                config=self.config, reinit="finish_previous",
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
        """One metrics row as it is (training and dev rows both carry ``forward_passes``)."""
        if self.run is None:
            return
        try:
            self.run.log(row)
            if row.get("step") == 0 and any(str(k).startswith("zero_shot_") for k in row):
                self.zero_shot_logged = True
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def finish(self, summary: dict[str, Any]) -> None:
        """The zero-shot scores at step 0 (unless a row already carried them, or a resumed W&B run has
        them from its first attempt), then the summary as numbers (``summary_metrics``)."""
        if self.run is None:
            return
        try:
            row = None if self.zero_shot_logged or self.resumed else zero_shot_row(summary)
            if row is not None:
                self.run.log(row)
            self.run.summary.update(summary_metrics(summary, self.config))
            self.run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
