"""Prompt tuning (Lester et al. 2021) through peft: n trainable vectors prepended to the input embeddings.

Default as ZO-Bench (Zhang et al. 2024): 10 virtual tokens, each initialized from the input
embedding of a vocabulary token drawn at random (``init: vocab``; ZO-Bench's
``--prompt_init_by_real_tokens``); ``init: random`` draws N(0, 1) instead.
Trainable parameters: tokens · hidden. The virtual tokens occupy positions, so the hidden
sequence is longer than the input; the scorer reads that offset off the shapes.
"""
from __future__ import annotations

from typing import Any

import torch

from zobench.tuning._common import choice, int_at_least, peft_task_type, wrap

TRAINS = True
INITS = ("vocab", "random")


def check(cfg: Any) -> None:
    int_at_least(cfg, "num_virtual_tokens", 1)
    choice(cfg, "init", INITS)


def virtual_tokens(cfg: Any) -> int:
    return cfg.num_virtual_tokens


@torch.no_grad()
def apply(model, cfg: Any, seed: int):
    from peft import PromptTuningConfig, PromptTuningInit

    embeddings = model.get_input_embeddings()
    config = PromptTuningConfig(
        num_virtual_tokens=cfg.num_virtual_tokens, prompt_tuning_init=PromptTuningInit.RANDOM,
        task_type=peft_task_type(model),
    )
    model = wrap(model, config)
    weight = model.prompt_encoder[model.active_adapter].embedding.weight
    generator = torch.Generator().manual_seed(seed)
    if cfg.init == "vocab":
        ids = torch.randint(0, embeddings.weight.shape[0], (weight.shape[0],), generator=generator)
        weight.copy_(embeddings.weight[ids.to(embeddings.weight.device)].to(weight.dtype))
    else:
        weight.copy_(torch.randn(weight.shape, generator=generator))
    return model
