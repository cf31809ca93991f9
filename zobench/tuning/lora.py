"""LoRA (Hu et al. 2022) through peft: W x + (α/r)·B A x on the chosen projections, W frozen.

Defaults are MeZO's (Malladi et al. 2023): r = 8, α = 16 on the attention query and value
projections, no dropout. A is Kaiming-uniform, B = 0, so the adapted model starts equal to
the base model. Trainable parameters: r·(d_in + d_out) per adapted matrix.
"""
from __future__ import annotations

from typing import Any

from zobench.errors import ConfigError
from zobench.tuning._common import int_at_least, number, peft_task_type, wrap

TRAINS = True

# The query and value projections by transformers model_type (what `target_modules: null` means).
QUERY_VALUE = {
    "opt": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],   # LLaMA, Vicuna, SmolLM2
    "mistral": ["q_proj", "v_proj"],
    "roberta": ["query", "value"],
    "bert": ["query", "value"],
    "qwen2": ["q_proj", "v_proj"],
    "gptj": ["q_proj", "v_proj"],
    "gpt_neo": ["q_proj", "v_proj"],
    "gpt_neox": ["query_key_value"],  # fused q/k/v: LoRA on the whole projection
    "gpt2": ["c_attn"],               # fused q/k/v (Conv1D)
}


def check(cfg: Any) -> None:
    int_at_least(cfg, "r", 1)
    number(cfg, "alpha", lambda v: v > 0, "a number > 0")
    number(cfg, "dropout", lambda v: 0 <= v < 1, "a probability in [0, 1)")
    targets = cfg.get("target_modules")
    if targets is not None and (isinstance(targets, str) or not all(isinstance(t, str) for t in targets) or not targets):
        raise ConfigError(
            f"tuning.target_modules={targets!r} is not allowed: expected null (the query and value projections) "
            f"or a list of module names, e.g. [q_proj,v_proj]."
        )


def target_modules(model, cfg: Any) -> list[str]:
    if cfg.get("target_modules") is not None:
        return list(cfg.target_modules)
    model_type = model.config.model_type
    if model_type not in QUERY_VALUE:
        raise ConfigError(
            f"tuning=lora does not know the query/value projections of model_type={model_type!r} "
            f"(known: {', '.join(QUERY_VALUE)}): set tuning.target_modules=[...]."
        )
    return QUERY_VALUE[model_type]


def apply(model, cfg: Any, seed: int):
    from peft import LoraConfig

    config = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target_modules(model, cfg),
        bias="none", task_type=peft_task_type(model),
    )
    try:
        return wrap(model, config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"tuning.target_modules: {exc}") from None
