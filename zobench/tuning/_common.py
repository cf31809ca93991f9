"""What the peft-based schemes share: key checks, the peft task type, wrapping in place."""
from __future__ import annotations

from typing import Any

from zobench.errors import bad_choice, bad_value


def int_at_least(cfg: Any, key: str, low: int) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_value(f"tuning.{key}", value, f"an integer >= {low}")
    return value


def number(cfg: Any, key: str, ok, what: str) -> float:
    """``cfg[key]``, a number for which ``ok(value)`` holds; ``what`` says what is allowed."""
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise bad_value(f"tuning.{key}", value, what)
    return value


def choice(cfg: Any, key: str, choices) -> str:
    value = cfg.get(key)
    if value not in choices:
        raise bad_choice(f"tuning.{key}", value, choices)
    return value


def is_masked_lm(model) -> bool:
    return type(model).__name__.endswith("ForMaskedLM")


def peft_task_type(model) -> str:
    """peft has no masked-LM task type; FEATURE_EXTRACTION forwards prompts and prefixes to any
    encoder and returns the base model's output (MLM logits) untouched."""
    return "FEATURE_EXTRACTION" if is_masked_lm(model) else "CAUSAL_LM"


def wrap(model, peft_config):
    """``get_peft_model``: adapters are added to the model's own modules, no weight is copied."""
    from peft import get_peft_model

    return get_peft_model(model, peft_config)
