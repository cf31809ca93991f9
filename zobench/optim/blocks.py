"""Blocks of trainable parameters, by name, for any model family: what block-wise ZO perturbs one
at a time and where hybrid ZO/FO splits the network.

Levels (ZO-Bench's ``perturbed_module_level``; Zhang et al. 2024, "Revisiting Zeroth-Order
Optimization for Memory-Efficient LLM Fine-Tuning: A Benchmark", block-wise ZO):
  layer     the embeddings, each transformer layer, the head     ("transformer-block")
  attn_mlp  the embeddings, each layer's attention and MLP halves, the head  ("mlp-attn")
  linear    each module: a linear layer's weight and bias together (norms and embeddings are
            modules too; a LoRA adapter's A and B are two)             ("linear")

A transformer layer is found by a ``<stack>.<index>.`` segment in the parameter name:
``model.decoder.layers.N`` (OPT), ``model.layers.N`` (LLaMA, Mistral, SmolLM2), ``roberta.encoder.layer.N``
(RoBERTa), ``transformer.h.N`` (GPT-2), also behind peft's ``base_model.model.`` prefix. The stack's
path is part of the block's name, so two stacks (encoder and decoder) never merge. Within a layer,
the first name segment after the index says the half (the pre-attention norm goes with the
attention, the pre-MLP norm with the MLP; post-LN RoBERTa's ``attention.output.LayerNorm`` is
under ``attention``); a segment neither list knows becomes the layer's ``other`` block, so every
parameter lands in exactly one block whatever the family. Outside the layers, names with an
embedding marker (``embed``, ``wte``, ``wpe``, ``project_in``, peft's ``prompt_encoder``) are the
embeddings; everything else (final norm, LM head, OPT's ``project_out``) is the head.
Blocks are listed in depth order: embeddings, layers by (stack, index), head.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from zobench.errors import bad_choice

LEVELS = ("layer", "attn_mlp", "linear")

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.|_)(?:embed\w*|wte|wpe|project_in|prompt_encoder)(?:\.|_|$)")
ATTENTION = frozenset({"self_attn", "attention", "attn", "self_attn_layer_norm", "input_layernorm", "ln_1",
                       "crossattention", "encoder_attn", "encoder_attn_layer_norm"})
MLP = frozenset({"mlp", "fc1", "fc2", "intermediate", "output", "final_layer_norm", "post_attention_layernorm",
                 "feed_forward", "ln_2", "pre_feedforward_layernorm", "post_feedforward_layernorm"})


@dataclasses.dataclass(frozen=True)
class Block:
    """A named group of trainable tensors: ``indices`` into the optimizer's parameter list."""

    name: str
    indices: tuple[int, ...]
    depth: int  # 0: embeddings; 1 + n: the n-th transformer layer in depth order; last: head


def _place(name: str) -> tuple[str, str | None, str]:
    """(kind, layer path, rest): kind is embeddings | layer | head; rest is the name after the index."""
    match = _LAYER.search(name)
    if match:
        return "layer", name[: match.end() - 1], name[match.end():]
    return ("embeddings" if _EMBEDDING.search(name) else "head"), None, ""


def _half(rest: str) -> str:
    first = rest.split(".", 1)[0]
    return "attn" if first in ATTENTION else "mlp" if first in MLP else "other"


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def group_blocks(names: Sequence[str], level: str = "layer") -> list[Block]:
    """The blocks of the parameters called ``names`` (in optimizer order) at ``level``, in depth order."""
    if level not in LEVELS:
        raise bad_choice("optimizer.estimator.level", level, LEVELS)
    places = [_place(name) for name in names]
    layers = list(dict.fromkeys(layer for kind, layer, _ in places if kind == "layer"))
    stacks = {stack: rank for rank, stack in enumerate(dict.fromkeys(p.rsplit(".", 1)[0] for p in layers))}
    ordered = sorted(layers, key=lambda p: (stacks[p.rsplit(".", 1)[0]], int(p.rsplit(".", 1)[1])))
    depth_of = {layer: 1 + rank for rank, layer in enumerate(ordered)}

    groups: dict[tuple, list[int]] = {}
    labels: dict[tuple, str] = {}
    for i, (name, (kind, layer, rest)) in enumerate(zip(names, places)):
        depth = 0 if kind == "embeddings" else len(layers) + 1 if kind == "head" else depth_of[layer]
        if level == "linear":
            key, label = (depth, _module(name)), _module(name) or name
        elif kind != "layer":
            key, label = (depth,), kind
        elif level == "attn_mlp":
            half = _half(rest)
            key, label = (depth, ("attn", "mlp", "other").index(half)), f"{layer}.{half}"
        else:
            key, label = (depth,), layer
        groups.setdefault(key, []).append(i)
        labels[key] = label
    order = sorted(groups, key=lambda k: (k[0], min(groups[k])))
    return [Block(labels[k], tuple(groups[k]), k[0]) for k in order]
