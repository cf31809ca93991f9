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

ZO-Bench's own partition, as levels of their own (``zo_bench_block``, ``zo_bench_mlp_attn``,
``zo_bench_linear`` = its ``perturbed_module_level`` transformer-block, mlp-attn, linear). ZO-Bench
builds blocks from modules, not parameter names: zo-bench/trainer.py ``OurTrainer.grouped_module_iter``
walks ``model.named_modules()`` and yields every module whose path matches the level's regex in
zo-bench/utils.py ``OPT_PERTURBATION_LEVEL_TO_REGEX``; a block is that module's trainable parameters.
The regexes name OPT's decoder only (``model.decoder.…``), and zo-bench/run.py refuses block-wise ZO
for any other model, so these levels are OPT's:
  every level         each ``model.decoder.embed_*`` module (tokens, positions) and the decoder's
                      ``final_layer_norm``, one block each                           (3 blocks)
  zo_bench_block      + each ``layers.N``                                           (L + 3)
  zo_bench_mlp_attn   + each layer's self_attn, self_attn_layer_norm, fc1, fc2, final_layer_norm
                                                                                    (5L + 3)
  zo_bench_linear     + each layer's q/k/v/out_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm
                                                                                    (8L + 3)
in ZO-Bench's order, ``named_modules()``'s: embed_tokens, embed_positions, the final norm, then the
layers (so the final norm comes before layer 0, not last), each layer's modules in registration
order. zobench's ``attn_mlp`` on OPT is 2L + 2 blocks (the norms go with their halves, the two
embeddings are one block, the final norm is the head, which comes last). Differences kept on purpose:
  - a block with no trainable tensor (with LoRA: the embeddings, norms, fc1, fc2) is dropped;
    ZO-Bench still probes it, two forward passes at an unchanged θ for g = 0, which moves nothing;
  - a trainable tensor outside every block (an untied LM head, OPT-350m's project_in/out, peft's
    prompt_encoder) raises ConfigError; ZO-Bench silently never updates it.
A LoRA adapter's A and B sit under their projection, so they share its block at every level.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from zobench.errors import ConfigError, bad_choice

LEVELS = ("layer", "attn_mlp", "linear")  # zobench's own: depth order, every family
# ZO-Bench's (module docstring): level -> (its perturbed_module_level, the OPT decoder-layer modules that are blocks)
ZO_BENCH_LEVELS = {
    "zo_bench_block": ("transformer-block", r"layers\.\d+"),
    "zo_bench_mlp_attn": ("mlp-attn", r"layers\.\d+\.(?:self_attn|self_attn_layer_norm|fc1|fc2|final_layer_norm)"),
    "zo_bench_linear": ("linear", r"layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|self_attn_layer_norm"
                                  r"|fc1|fc2|final_layer_norm)"),
}
ALL_LEVELS = LEVELS + tuple(ZO_BENCH_LEVELS)
ZO_BENCH_FAMILIES = ("opt",)  # zo-bench/run.py: module_wise_perturbation raises NotImplementedError for other models

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
    if level not in ALL_LEVELS:
        raise bad_choice("optimizer.estimator.level", level, ALL_LEVELS)
    places = [_place(name) for name in names]
    layers = list(dict.fromkeys(layer for kind, layer, _ in places if kind == "layer"))
    stacks = {stack: rank for rank, stack in enumerate(dict.fromkeys(p.rsplit(".", 1)[0] for p in layers))}
    ordered = sorted(layers, key=lambda p: (stacks[p.rsplit(".", 1)[0]], int(p.rsplit(".", 1)[1])))
    depth_of = {layer: 1 + rank for rank, layer in enumerate(ordered)}

    if level in ZO_BENCH_LEVELS:
        return _zo_bench_blocks(names, level, places, depth_of)
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


def _zo_bench_module(name: str, pattern: re.Pattern) -> str | None:
    """The module of parameter ``name`` that is one of ZO-Bench's blocks (the ancestor path matching), or None."""
    parts = name.split(".")
    found = [m for m in (".".join(parts[:k]) for k in range(1, len(parts))) if pattern.fullmatch(m)]
    if len(found) > 1:  # cannot happen with ZO-Bench's patterns; it would perturb such a tensor twice
        raise ConfigError(f"parameter {name} lies in two nested ZO-Bench blocks: {', '.join(found)}")
    return found[0] if found else None


def _zo_bench_blocks(names: Sequence[str], level: str, places: list, depth_of: dict) -> list[Block]:
    """ZO-Bench's blocks (module docstring), in ``named_modules()`` order = order of first parameter."""
    layer_modules = ZO_BENCH_LEVELS[level][1]
    pattern = re.compile(r"(?:.*\.)?model\.decoder\.(?:embed_[^.]*|final_layer_norm|" + layer_modules + ")")
    groups: dict[str, list[int]] = {}
    outside = []
    for i, name in enumerate(names):
        module = _zo_bench_module(name, pattern)
        if module is None:
            outside.append(name)
        else:
            groups.setdefault(module, []).append(i)
    if outside:
        raise ConfigError(
            f"optimizer.estimator.level={level} leaves {len(outside)} trainable tensor(s) in no block "
            f"(e.g. {', '.join(outside[:3])}): ZO-Bench's blocks (zo-bench/utils.py OPT_PERTURBATION_LEVEL_TO_REGEX) "
            f"are OPT decoder modules only. Choose optimizer.estimator.level from {', '.join(LEVELS)}.")
    blocks = []
    for module, indices in sorted(groups.items(), key=lambda kv: kv[1][0]):
        kind, layer, _ = places[indices[0]]
        depth = depth_of[layer] if kind == "layer" else 0 if kind == "embeddings" else len(depth_of) + 1
        blocks.append(Block(module, tuple(indices), depth))
    return blocks
