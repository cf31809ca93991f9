"""Block-wise ZO: one SPSA estimate per block of parameters, each from its own masked direction.

ZO-Bench's block-wise ZO (Zhang et al. 2024, "Revisiting Zeroth-Order Optimization for Memory-
Efficient LLM Fine-Tuning: A Benchmark", §"block-wise ZO"): split θ into blocks θ_1..θ_B
(zobench.optim.blocks: embeddings / each layer / head, or finer) and, for each block b, draw a
direction z_b that is zero outside the block, z_b = z(s_b) ⊙ 1_b:
    g_b = (L(θ + ε z_b) − L(θ − ε z_b)) / 2ε,        ĝ = Σ_b g_b z_b
2B forward passes (B + 1 one-sided). Each g_b z_b estimates block b's gradient from a direction in
d_b ≪ d dimensions; for a locally quadratic L (ε → 0, Gaussian z)
    block-wise   E‖ĝ − ∇L‖² = Σ_b (d_b + 1)‖∇_b L‖²
    baseline     E‖ĝ − ∇L‖² = (d + 1)‖∇L‖² / B      (SPSA averaged over B full directions)
so block-wise wins where the gradient sits in small blocks and loses where it sits in a large one
(the embeddings): which one holds for LLM fine-tuning is the question the pair of configs answers.
Two orders of update (``immediate``):
    immediate: true   (ZO-Bench's default, ``coordinate_perturbation=True`` in its run.py): block b
                      is updated right after its own estimate, θ_b ← θ_b − lr·u(g_b z_b), and block
                      b + 1 is probed at the updated θ (a Gauss–Seidel sweep over the blocks);
    immediate: false  every estimate is taken at the same θ and all blocks are updated together in
                      one sweep (a Jacobi step).
The undo of block b's last probe and its update share one pass either way, so the cost is the
same. Blocks hold disjoint tensors and every transform acts per tensor, so the two orders give the
same update from the same coefficients: they differ only in where the later probes are taken, and
the (seeds, coefficients) log replays either one.
In seed form the mask is per tensor (``BlockMask``): a block holds whole tensors, so a probe of
block b draws random numbers for block b only and a step costs about three passes of RNG over the
model, like MeZO; the transforms (sign, momentum, Adam) apply to ĝ unchanged.

Seeds across blocks (``block_seed``):
    per_block  (zobench's default) block b draws z_b from its own seed s_b = mix(s_t, b), tensor i of
               it from (s_b, i): the blocks' directions are independent.
    shared     (ZO-Bench's code) every block reuses the step's one seed: zo-bench/trainer.py
               ``zo_step_with_module_wise_perturbation_coordinate`` (and its Jacobi twin) calls
               ``torch.manual_seed(self.zo_random_seed)`` again for each block, so the k-th tensor of
               every block restarts the same random stream. Here tensor k of block b is drawn from
               (s_0, k), s_0 = mix(s_t, 0) the first block's seed and k the tensor's position in
               its block, whatever b: blocks with the same tensor shapes
               (layer 0's fc1 and layer 5's fc1, every layer's self_attn) get identical z, and
               tensors at one position with one size share the same flat z (ZO-Bench's fc1.weight
               and fc2.weight do too). ZO-Bench draws a block's later tensors further down one stream,
               zobench from (seed, position); both are deterministic functions of the position, and
               neither's numbers are the other's (torch's global generator vs zobench's chunked one).
               Each z is drawn twice in this mode (once by the sweep, then redrawn at its position),
               so a probe's random-number cost doubles; the forward passes are the same.
To run ZO-Bench's block-wise ZO: ``level: zo_bench_mlp_attn`` (or zo_bench_block, its run.py default
``transformer-block``; zo_bench_linear), ``block_seed: shared``, ``immediate: true``
(zobench/optim/blocks.py says which blocks those are, and how they differ from zobench's levels).

The fair baseline at equal forward passes is SPSA averaged over as many full-model directions as
there are blocks, ĝ = (1/B) Σ_j g_j z_j with z_j ~ N(0, I_d): ``restrict: false``
(conf/optimizer/zo_sgd_block_baseline.yaml), same B, same 2B passes.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from zobench.errors import ConfigError, bad_choice, bad_value
from zobench.optim.blocks import ALL_LEVELS, ZO_BENCH_FAMILIES, ZO_BENCH_LEVELS, Block, group_blocks
from zobench.optim.directions import draw
from zobench.optim.estimate import SeedEstimate
from zobench.optim.spsa import SIGNS, SPSA


@dataclasses.dataclass(frozen=True)
class BlockMask:
    """A direction restricted to whole tensors: z ⊙ 1_block (tensors outside it draw nothing)."""

    indices: frozenset

    def covers(self, index: int) -> bool:
        return index in self.indices

    def apply_(self, z: torch.Tensor, index: int, chunk: int, start: int) -> torch.Tensor:
        return z


BLOCK_SEEDS = ("per_block", "shared")
ZO_BENCH_SCHEMES = ("full", "lora", "icl")  # peft's prefix / prompt encoder lies outside OPT's decoder: no ZO-Bench block


@dataclasses.dataclass(frozen=True)
class SharedSeedBlockMask:
    """ZO-Bench's seed reuse: tensor i of the block gets z(shared seed, its position in the block)."""

    positions: dict  # tensor index -> position in its block
    seed: int
    distribution: str

    def covers(self, index: int) -> bool:
        return index in self.positions

    def apply_(self, z: torch.Tensor, index: int, chunk: int, start: int) -> torch.Tensor:
        return z.copy_(draw(self.seed, self.positions[index], chunk, z.numel(), z.device, z.dtype, self.distribution))


def check_block_layout(opt, model, tuning) -> None:
    """ZO-Bench's levels cover OPT's decoder modules only: refuse other families and schemes before loading."""
    est = opt.get("estimator") or {}
    level = est.get("level") if str(est.get("_target_", "")).endswith("BlockSPSA") else None
    if level not in ZO_BENCH_LEVELS:
        return
    if model.family not in ZO_BENCH_FAMILIES:
        raise ConfigError(
            f"optimizer.estimator.level={level} is ZO-Bench's OPT partition (zo-bench/utils.py "
            f"OPT_PERTURBATION_LEVEL_TO_REGEX; its run.py refuses block-wise ZO for other models): model.family="
            f"{model.family} is not allowed, choose one of {', '.join(ZO_BENCH_FAMILIES)}, or a level from layer, attn_mlp, linear.")
    if tuning.name not in ZO_BENCH_SCHEMES:
        raise ConfigError(
            f"optimizer.estimator.level={level} with tuning={tuning.name}: the trainable prefix/prompt lies outside "
            f"OPT's decoder modules, in no ZO-Bench block; choose tuning from {', '.join(ZO_BENCH_SCHEMES)}, "
            "or a level from layer, attn_mlp, linear.")


class BlockSPSA(SPSA):
    """SPSA with one direction per block (``restrict=True``: z_b zero outside block b, ĝ = Σ_b g_b z_b)
    or, as its fair baseline, as many unrestricted directions averaged (``restrict=False``)."""

    def __init__(self, level: str = "layer", restrict: bool = True, one_sided: bool = False, sign: str | None = None,
                 immediate: bool = False, block_seed: str = "per_block"):
        if level not in ALL_LEVELS:
            raise bad_choice("optimizer.estimator.level", level, ALL_LEVELS)
        self._check_immediate(immediate, restrict, one_sided)
        self._check_block_seed(block_seed, restrict)
        super().__init__(1, one_sided, sign)
        self.level, self.restrict, self.immediate, self.block_seed = level, restrict, immediate, block_seed
        self.average = not restrict  # blocks sum (each block its own estimate); the baseline averages
        self.blocks: list[Block] = []
        self._masks: list[BlockMask] = []

    @staticmethod
    def check_config(est, key: str = "optimizer.estimator") -> None:
        """The YAML keys, checked before any model loads (called by zobench.validate)."""
        if est.get("level", "layer") not in ALL_LEVELS:
            raise bad_choice(f"{key}.level", est.level, ALL_LEVELS)
        BlockSPSA._check_block_seed(est.get("block_seed", "per_block"), est.get("restrict", True), key)
        for flag in ("restrict", "one_sided", "immediate"):
            if not isinstance(est.get(flag, False), bool):
                raise bad_value(f"{key}.{flag}", est[flag], "true or false")
        BlockSPSA._check_immediate(est.get("immediate", False), est.get("restrict", True), est.get("one_sided", False),
                                   key)
        if est.get("sign") not in SIGNS:
            raise bad_choice(f"{key}.sign", est.sign, ("null", "coordinate", "projected"))

    def setup(self, named_params: Sequence[tuple[str, torch.Tensor]], model=None) -> None:
        self.blocks = group_blocks([n for n, _ in named_params], self.level)
        if not self.blocks:
            raise ConfigError("block-wise ZO found no trainable parameters to group into blocks")
        self.num_directions = len(self.blocks)  # B probes: the baseline spends the same
        self._masks = [BlockMask(frozenset(b.indices)) for b in self.blocks]

    def direction_masks(self, seeds: list[int]) -> dict:
        """Block b's direction is z(seeds[b]) ⊙ 1_b; with ``block_seed: shared``, z(seeds[0]) drawn at each tensor's
        position in its block instead (a function of the step's seeds alone, so the log still replays it)."""
        if not self._masks:
            raise RuntimeError("BlockSPSA.setup(named_params) must run before the first step (ZOOptimizer does it)")
        if not self.restrict:
            return {}
        if self.block_seed == "shared":
            return {s: SharedSeedBlockMask({i: k for k, i in enumerate(b.indices)}, seeds[0], self.distribution)
                    for s, b in zip(seeds, self.blocks)}
        return dict(zip(seeds, self._masks))

    @staticmethod
    def _check_block_seed(block_seed: str, restrict: bool, key: str = "optimizer.estimator") -> None:
        if block_seed not in BLOCK_SEEDS:
            raise bad_choice(f"{key}.block_seed", block_seed, BLOCK_SEEDS)
        if block_seed == "shared" and not restrict:
            raise ConfigError(f"{key}.block_seed=shared needs {key}.restrict=true: the baseline's B full-model "
                              "directions would all be the same direction.")

    @staticmethod
    def _check_immediate(immediate: bool, restrict: bool, one_sided: bool, key: str = "optimizer.estimator") -> None:
        if immediate and not restrict:
            raise ConfigError(f"{key}.immediate=true needs {key}.restrict=true: the baseline's directions each span "
                              "the whole model, so there is no block to update on its own.")
        if immediate and one_sided:
            raise ConfigError(f"{key}.immediate=true is not allowed with {key}.one_sided=true: each block's update "
                              "moves θ, so every one-sided estimate would need L(θ) again.")

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], loss_fn, eps: float, seed: int, apply_block=None) -> SeedEstimate:
        """``apply_block(part, indices)``: with ``immediate``, the optimizer's update of one block from its
        own estimate ``part`` (which still has the block's last probe pending), called after each block."""
        if not self.immediate or apply_block is None:
            return super().__call__(params, loss_fn, eps, seed)
        return super().__call__(params, loss_fn, eps, seed,
                                on_direction=lambda j, part: apply_block(part, frozenset(self.blocks[j].indices)))
