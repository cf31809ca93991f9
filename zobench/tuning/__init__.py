"""Tuning schemes: which parameters train. Everything downstream sees only the returned list.

One module per scheme, one ``conf/tuning/<name>.yaml`` per scheme (the Hydra group is the registry):

  full    every weight of the model                                  (MeZO "FT")
  lora    rank-r adapters on the query and value projections (peft)  (Hu et al. 2022; MeZO r=8, α=16)
  prefix  per-layer key/value prefixes (peft), init from real activations (Li & Liang 2021; MeZO)
  prompt  virtual input tokens (peft), init from vocabulary embeddings (Lester et al. 2021; ZO-Bench)
  icl     nothing trains: k demonstrations are prepended to every query (MeZO's ICL row)

peft wraps the model in place: the frozen weights are the loaded tensors themselves, with
``requires_grad=False``, so neither a ZO perturbation nor a backward pass touches them and no
copy of the base model ever exists.

A scheme module provides ``TRAINS``, ``check(cfg)`` and ``apply(model, cfg, seed) -> model``, and
may provide ``virtual_tokens(cfg)`` (positions its tokens occupy), ``max_length(cfg, context)``,
``check_data(cfg, data_cfg)`` and ``prepare_data(cfg, data)``.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Sequence

import torch

from zobench.errors import bad_choice

SCHEMES = ("full", "lora", "prefix", "prompt", "icl")

__all__ = ["SCHEMES", "apply_tuning", "count_trainable", "trainable_bytes", "validate_tuning", "prepare_data",
           "input_budget", "trains", "no_training"]


def scheme(name: str) -> ModuleType:
    if name not in SCHEMES:
        raise bad_choice("tuning", name, SCHEMES)
    return importlib.import_module(f"{__name__}.{name}")


def trains(tuning_cfg: Any) -> bool:
    """False for a scheme with nothing to train (ICL)."""
    return scheme(tuning_cfg.name).TRAINS


def validate_tuning(tuning_cfg: Any, data_cfg: Any = None) -> None:
    """The scheme's keys, checked without a model (ConfigError names the key and what is allowed)."""
    module = scheme(tuning_cfg.get("name"))
    module.check(tuning_cfg)
    if hasattr(module, "check_data") and data_cfg is not None:
        module.check_data(tuning_cfg, data_cfg)


def no_training(trainer_cfg: Any) -> bool:
    """For a scheme that trains nothing: set ``trainer.steps=0`` and ``trainer.zero_shot=false`` in place
    (conf/tuning_trainer/<scheme>.yaml already does unless a command line or sweep overrides them).
    Returns True when an override was changed. A zero-shot pass would score the same prompts as
    the final evaluation and be mislabeled."""
    changed = trainer_cfg.steps != 0 or bool(trainer_cfg.zero_shot)
    trainer_cfg.steps, trainer_cfg.zero_shot = 0, False
    return changed


def apply_tuning(model, tuning_cfg: Any, seed: int = 0):
    """Apply the scheme and return ``(model, [(name, parameter), ...])`` of trainable parameters.

    The model may come back wrapped (a peft ``PeftModel`` around the same module); ``seed`` draws
    the scheme's random initialization (LoRA's A, the prefix and prompt tokens) without touching
    the global RNG.
    """
    module = scheme(tuning_cfg.name)
    module.check(tuning_cfg)
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = module.apply(model, tuning_cfg, seed)
    model.train(was_training)  # peft switches to train mode; the loop decides the mode, not the wrapper
    return model, [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def prepare_data(tuning_cfg: Any, data):
    """The task data the scheme scores: ICL prepends demonstrations; other schemes leave it as is."""
    module = scheme(tuning_cfg.name)
    return module.prepare_data(tuning_cfg, data) if hasattr(module, "prepare_data") else data


def model_context(model) -> int | None:
    """Positions the model can take (its position table), or None where it has no fixed limit."""
    config = getattr(model, "config", None)
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        n -= (config.pad_token_id or 0) + 1  # RoBERTa's positions start after padding_idx
    return n


def input_budget(model, tuning_cfg: Any, max_length: int) -> int:
    """Tokens per scored sequence, before left truncation.

    ``trainer.max_length`` (ICL: ``tuning.max_length``, by default the model's whole context),
    capped so that input plus the scheme's virtual tokens (prefix / prompt occupy positions)
    fit the model's position table.
    """
    module = scheme(tuning_cfg.name)
    if hasattr(module, "max_length"):
        max_length = module.max_length(tuning_cfg, model_context(model)) or max_length
    context = model_context(model)
    if context is None:
        return max_length
    virtual = module.virtual_tokens(tuning_cfg) if hasattr(module, "virtual_tokens") else 0
    return max(1, min(max_length, context - virtual))


def count_trainable(named_params: Sequence[tuple[str, torch.Tensor]]) -> int:
    return sum(p.numel() for _, p in named_params)


def trainable_bytes(named_params: Sequence[tuple[str, torch.Tensor]]) -> int:
    return sum(p.numel() * p.element_size() for _, p in named_params)
