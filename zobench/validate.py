"""Check a composed config before anything heavy happens: no model or dataset is loaded here.

Every message names the key and what is allowed, e.g.
``trainer.steps=-1 is not allowed: expected an integer >= 0.``
"""
from __future__ import annotations

from typing import Any

from zobench.errors import ConfigError, bad_choice, bad_value
from zobench.models import DEVICES, DTYPES, KINDS, weights_source
from zobench.optim import FAMILIES
from zobench.optim.schedule import SCHEDULES
from zobench.scoring import LOSSES
from zobench.tasks import validate_task
from zobench.tuning import SCHEMES


def _int_at_least(cfg: Any, key: str, low: int) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_value(key, value, f"an integer >= {low}")


def _positive(cfg: Any, key: str) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise bad_value(key, value, "a number > 0")


def _get(cfg: Any, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate_config(cfg: Any) -> None:
    if cfg.dtype not in DTYPES:
        raise bad_choice("dtype", cfg.dtype, DTYPES)
    if cfg.device not in DEVICES:
        raise bad_choice("device", cfg.device, DEVICES)
    _int_at_least(cfg, "seed", 0)
    for key, low in [("trainer.steps", 0), ("trainer.batch_size", 1), ("trainer.eval_every", 1),
                     ("trainer.eval_batch_size", 1), ("trainer.max_length", 8), ("trainer.warmup_steps", 0),
                     ("trainer.log_every", 1), ("data.num_train", 0), ("data.num_dev", 0),
                     ("data.num_eval", 1), ("data.seed", 0)]:
        _int_at_least(cfg, key, low)
    if cfg.trainer.steps > 0 and cfg.data.num_train == 0:
        raise bad_value("data.num_train", 0, "at least 1 training example when trainer.steps > 0")
    if cfg.trainer.loss not in LOSSES:
        raise bad_choice("trainer.loss", cfg.trainer.loss, LOSSES)
    if cfg.model.kind not in KINDS:
        raise bad_choice("model.kind", cfg.model.kind, KINDS)
    weights_source(cfg.model)
    if cfg.tuning.name not in SCHEMES:
        raise bad_choice("tuning", cfg.tuning.name, SCHEMES)
    validate_optimizer(cfg.optimizer)
    validate_task(cfg.task, cfg.data)


def validate_optimizer(opt: Any) -> None:
    if opt.family not in FAMILIES:
        raise bad_choice("optimizer.family", opt.family, FAMILIES)
    _positive({"optimizer": opt}, "optimizer.lr")
    wd = opt.weight_decay
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0:
        raise bad_value("optimizer.weight_decay", wd, "a number >= 0")
    if opt.schedule not in SCHEDULES:
        raise bad_choice("optimizer.schedule", opt.schedule, SCHEDULES)
    if opt.family == "zo":
        _positive({"optimizer": opt}, "optimizer.eps")
    elif opt.get("eps") is not None:
        raise ConfigError(f"optimizer.eps={opt.eps!r} is a ZO perturbation scale; {opt.name} is first-order: leave it null.")
