"""Prefix tuning (Li & Liang 2021) through peft: trainable keys and values prepended in every layer.

MeZO's setting (Malladi et al. 2023): 5 prefix tokens, no reparametrization (peft's
``prefix_projection=False``), so the parameters are the prefix keys and values themselves:
2 · layers · tokens · d_kv, with d_kv = hidden for multi-head attention (KV heads · head dim
under grouped-query attention, which is what the keys and values are).

Initialization (``init``):
  real_activations  MeZO's ``init_by_real_act``: run the frozen model on ``tokens`` vocabulary ids
                    drawn at random and take each layer's key and value activations as the prefix.
                    For a causal LM the prefixed model then starts exactly as the model reading
                    those tokens first. MeZO shows this initialization matters for ZO.
  random            N(0, 1), as peft's embedding initializes it.
"""
from __future__ import annotations

from typing import Any

import torch

from zobench.errors import ConfigError
from zobench.tuning._common import choice, int_at_least, is_masked_lm, peft_task_type, wrap

TRAINS = True
INITS = ("real_activations", "random")


def check(cfg: Any) -> None:
    int_at_least(cfg, "num_virtual_tokens", 1)
    choice(cfg, "init", INITS)


def virtual_tokens(cfg: Any) -> int:
    return cfg.num_virtual_tokens  # the inputs' positions start after the prefix


@torch.no_grad()
def real_activations(model, token_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the (keys, values) the model computes for ``token_ids``, each (tokens, heads · head_dim).

    Causal LMs return them as their KV cache (keys after the rotary embedding, as the cache
    stores them). Encoders keep no cache, so the key and value projections are hooked instead.
    """
    ids = token_ids[None].to(next(model.parameters()).device)
    if not is_masked_lm(model):
        cache = model(input_ids=ids, use_cache=True).past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return [tuple(t[0].transpose(0, 1).reshape(ids.shape[1], -1) for t in kv) for kv in layers]
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda m, a, out, name=name: captured.__setitem__(name, out[0]))
        for name, module in model.named_modules()
        if name.endswith(("attention.self.key", "attention.self.value"))
    ]
    try:
        model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    keys = [v for n, v in captured.items() if n.endswith(".key")]
    values = [v for n, v in captured.items() if n.endswith(".value")]
    if not keys or len(keys) != len(values):
        raise ConfigError(f"tuning.init=real_activations cannot find the key/value projections of {type(model).__name__}.")
    return list(zip(keys, values))


def apply(model, cfg: Any, seed: int):
    from peft import PrefixTuningConfig

    n = cfg.num_virtual_tokens
    generator = torch.Generator().manual_seed(seed)
    activations = None
    if cfg.init == "real_activations":
        ids = torch.randint(0, model.get_input_embeddings().weight.shape[0], (n,), generator=generator)
        activations = real_activations(model, ids)  # from the base model, before it is wrapped
    config = PrefixTuningConfig(num_virtual_tokens=n, prefix_projection=False, task_type=peft_task_type(model))
    model = wrap(model, config)
    weight = model.prompt_encoder[model.active_adapter].embedding.weight
    with torch.no_grad():
        if activations is None:
            weight.copy_(torch.randn(weight.shape, generator=generator))
        else:
            # peft reads row t as [layer 0 keys | layer 0 values | layer 1 keys | ...], heads contiguous.
            flat = torch.cat([t for kv in activations for t in kv], dim=1)
            if flat.shape != weight.shape:
                raise ConfigError(
                    f"prefix init: activations {tuple(flat.shape)} do not match peft's prefix {tuple(weight.shape)}."
                )
            weight.copy_(flat.to(weight.dtype))
    return model
