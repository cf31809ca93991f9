"""In-context learning: MeZO's ICL baseline row. Nothing trains; demonstrations are prepended.

As MeZO (Malladi et al. 2023, after Brown et al. 2020): k demonstrations drawn from the train
sample (the first k of the seeded train sample, the same for every query), each rendered as
``context + gold candidate``, joined by a blank line, then a blank line and the query. The
model's whole context is used (``max_length: null``); what does not fit is cut from the left,
so the query and the candidates are always kept and the earliest demonstrations go first.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from zobench.errors import ConfigError, bad_value
from zobench.tasks.base import Example, TaskData
from zobench.tuning._common import int_at_least

TRAINS = False


def check(cfg: Any) -> None:
    int_at_least(cfg, "num_demonstrations", 0)
    if not isinstance(cfg.get("separator"), str):
        raise bad_value("tuning.separator", cfg.get("separator"), 'a string, e.g. "\\n\\n"')
    if cfg.get("max_length") is not None:
        int_at_least(cfg, "max_length", 8)


def check_data(cfg: Any, data_cfg: Any) -> None:
    if cfg.num_demonstrations > 0 and data_cfg.num_train == 0:
        raise ConfigError(
            f"data.num_train=0 is not allowed with tuning=icl: the {cfg.num_demonstrations} demonstrations "
            f"are drawn from the train sample (set data.num_train >= {cfg.num_demonstrations}, "
            f"or tuning.num_demonstrations=0 for zero-shot)."
        )


def apply(model, cfg: Any, seed: int):
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def max_length(cfg: Any, context: int | None) -> int | None:
    return cfg.get("max_length") or context


def demonstrations(train: Sequence[Example], k: int, separator: str = "\n\n") -> str:
    """The text put before every query: ``demo_1 sep demo_2 ... sep demo_k sep`` ('' when k = 0)."""
    demos = [ex.context + ex.candidates[ex.gold] for ex in train[:k]]
    return "".join(d + separator for d in demos)


def with_demonstrations(examples: Sequence[Example], prefix: str) -> list[Example]:
    return [dataclasses.replace(ex, context=prefix + ex.context) for ex in examples]


def prepare_data(cfg: Any, data: TaskData) -> TaskData:
    prefix = demonstrations(data.train, cfg.num_demonstrations, cfg.separator)
    info = dict(data.info)
    info["icl"] = {"num_demonstrations": min(cfg.num_demonstrations, len(data.train)), "prefix_chars": len(prefix)}
    return TaskData(train=data.train, dev=with_demonstrations(data.dev, prefix),
                    eval=with_demonstrations(data.eval, prefix), info=info)
