"""ZO-Bench's block-wise and sparse ZO, as zobench's options under their own names (issue 12, point 4).

Each test transcribes the ZO-Bench code it checks against (ZO-Bench/ZO-LLM, zo-bench/):
  blocks    utils.py OPT_PERTURBATION_LEVEL_TO_REGEX, walked by trainer.py OurTrainer.grouped_module_iter
  seeds     trainer.py OurTrainer.zo_step_with_module_wise_perturbation_coordinate (one seed, reset per block)
  sparsity  gradient_pruning/pruning_utils.py fast_random_mask_like,
            estimate_pretrained_model_magnitude_pruning_threshold, compute_named_parameters_to_sparsity;
            trainer.py _inner_training_loop (mask seed redrawn when total_steps % resample_steps == 0)
"""
from __future__ import annotations

import math
import re

import pytest
import torch

from tests.conftest import compose_cfg
from tests.test_optimizers import TINY_EXAMPLES
from tests.test_tuning import tuned
from tests.tiny import load_tiny
from zobench.errors import ConfigError
from zobench.optim.blocks import LEVELS, ZO_BENCH_LEVELS, group_blocks
from zobench.optim.blockwise import BlockSPSA
from zobench.optim.directions import chunk_bounds, draw_masked
from zobench.optim.estimate import SeedEstimate
from zobench.optim.sparse import SparseSPSA, phi, zo_bench_densities
from zobench.optim.zo import ZOOptimizer
from zobench.run import run_cell
from zobench.scoring import Scorer
from zobench.validate import validate_config

# zo-bench/utils.py OPT_PERTURBATION_LEVEL_TO_REGEX, transcribed as the oracle (re.match on named_modules paths)
_DEC = r".*model\.decoder\."
ZO_BENCH_REGEX = {
    "transformer-block": rf"{_DEC}layers\.[0-9]+$|{_DEC}embed_.*|{_DEC}final_layer_norm$",
    "mlp-attn": rf"{_DEC}layers\.[0-9]+\.self_attn$|{_DEC}layers\.[0-9]+\.fc[12]$"
                rf"|{_DEC}layers\.[0-9]+\.final_layer_norm$|{_DEC}layers\.[0-9]+\.self_attn_layer_norm$"
                rf"|{_DEC}embed_.*|{_DEC}final_layer_norm$",
    "linear": rf"{_DEC}layers\.[0-9]+\.self_attn.[qkv]_proj$|{_DEC}layers\.[0-9]+\.self_attn.out_proj$"
              rf"|{_DEC}layers\.[0-9]+\.fc[12]$|{_DEC}layers\.[0-9]+\.final_layer_norm$"
              rf"|{_DEC}layers\.[0-9]+\.self_attn_layer_norm$|{_DEC}embed_.*|{_DEC}final_layer_norm$",
}


def zo_bench_blocks(model: torch.nn.Module, zo_bench_level: str) -> list[list[str]]:
    """trainer.py grouped_module_iter + the per-block parameter list of zo_step_with_module_wise_perturbation*:
    every module whose path re.match-es, in named_modules order, with its trainable parameters' full names."""
    blocks = []
    for module_name, module in model.named_modules():
        if re.match(ZO_BENCH_REGEX[zo_bench_level], module_name):
            blocks.append([f"{module_name}.{n}" for n, p in module.named_parameters() if p.requires_grad])
    return blocks


def ours(named, level: str) -> list[list[str]]:
    names = [n for n, _ in named]
    return [[names[i] for i in b.indices] for b in group_blocks(names, level)]


def meta_model(family: str, **config):
    """A real-size model on the meta device: its module tree without weights."""
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    cls, cfg = (OPTForCausalLM, OPTConfig) if family == "opt" else (LlamaForCausalLM, LlamaConfig)
    with torch.device("meta"):
        return cls(cfg(**config))


OPT_1_3B = dict(hidden_size=2048, ffn_dim=8192, num_attention_heads=32, num_hidden_layers=24, vocab_size=50272,
                max_position_embeddings=2048, word_embed_proj_dim=2048)
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_hidden_layers=32,
                 vocab_size=32000, tie_word_embeddings=False)


# -- blocks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", sorted(ZO_BENCH_LEVELS))
def test_zo_bench_levels_are_its_module_blocks_on_tiny_opt(level):
    """ZO-Bench utils.py OPT_PERTURBATION_LEVEL_TO_REGEX via trainer.py OurTrainer.grouped_module_iter: the same
    blocks, the same tensors in each, in its order (embed_tokens, embed_positions, final norm, then the layers)."""
    model, _ = load_tiny("tiny-opt")
    named = list(model.named_parameters())
    expected = zo_bench_blocks(model, ZO_BENCH_LEVELS[level][0])
    assert ours(named, level) == expected
    n_layers = model.config.num_hidden_layers
    per_layer = {"zo_bench_block": 1, "zo_bench_mlp_attn": 5, "zo_bench_linear": 8}[level]
    assert len(expected) == per_layer * n_layers + 3
    names = [b.name for b in group_blocks([n for n, _ in named], level)]
    assert names[:3] == ["model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.final_layer_norm"]
    if level == "zo_bench_mlp_attn":
        assert names[3:8] == [f"model.decoder.layers.0.{m}" for m in
                              ("self_attn", "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")]
    # zobench's own levels are unchanged: attn_mlp is 2L + 2 (norms with their halves; embeddings one block; head last)
    assert len(group_blocks([n for n, _ in named], "attn_mlp")) == 2 * n_layers + 2


def test_zo_bench_mlp_attn_on_opt_1_3b_is_5l_plus_3_blocks():
    """ZO-Bench utils.py OPT_PERTURBATION_LEVEL_TO_REGEX["mlp-attn"] through trainer.py grouped_module_iter on
    OPT-1.3B's module tree (meta device, no weights): 5·24 + 3 = 123 blocks, the same as zobench's level."""
    model = meta_model("opt", **OPT_1_3B)
    named = list(model.named_parameters())
    for level, (zo_bench_level, _) in ZO_BENCH_LEVELS.items():
        assert ours(named, level) == zo_bench_blocks(model, zo_bench_level)
    assert len(ours(named, "zo_bench_mlp_attn")) == 123
    assert len(ours(named, "zo_bench_block")) == 27 and len(ours(named, "zo_bench_linear")) == 8 * 24 + 3
    assert len(ours(named, "attn_mlp")) == 2 * 24 + 2 and len(ours(named, "layer")) == 24 + 2


def test_zo_bench_levels_with_lora_keep_only_blocks_that_train():
    """ZO-Bench trainer.py zo_step_with_module_wise_perturbation_coordinate probes every matched module, even one
    with no trainable parameter (g = 0, nothing moves); zobench keeps the blocks that hold a trainable tensor,
    the same tensors in the same order. A LoRA adapter's A and B go with their projection."""
    model, _, named = tuned("tiny-opt", "lora")
    for level, (zo_bench_level, _) in ZO_BENCH_LEVELS.items():
        expected = zo_bench_blocks(model, zo_bench_level)
        assert ours(named, level) == [b for b in expected if b]
    L = len({n.split(".layers.")[1].split(".")[0] for n, _ in model.named_parameters() if ".layers." in n})
    assert len(zo_bench_blocks(model, "mlp-attn")) == 5 * L + 3  # what ZO-Bench spends forward passes on
    assert len(ours(named, "zo_bench_mlp_attn")) == L  # each layer's self_attn: its q and v adapters
    assert len(ours(named, "zo_bench_linear")) == 2 * L  # q_proj (A, B) and v_proj (A, B) apart


def test_zo_bench_levels_refuse_llama_where_zo_bench_has_no_partition():
    """ZO-Bench utils.py's regexes name OPT's decoder only (run.py raises NotImplementedError for other models):
    on LLaMA they match no module. zobench refuses the level before the model loads, and when grouping."""
    for model in (load_tiny("tiny-llama")[0], meta_model("llama", **LLAMA2_7B)):
        named = list(model.named_parameters())
        L = model.config.num_hidden_layers
        for level, (zo_bench_level, _) in ZO_BENCH_LEVELS.items():
            assert zo_bench_blocks(model, zo_bench_level) == []
            with pytest.raises(ConfigError, match=f"level={level} leaves .* in no block"):
                group_blocks([n for n, _ in named], level)
        # zobench's levels: embeddings, per layer (halves), head (final norm, with an untied lm_head)
        assert len(ours(named, "attn_mlp")) == 2 * L + 2 and len(ours(named, "layer")) == L + 2
    with pytest.raises(ConfigError, match="model.family=llama is not allowed, choose one of opt"):
        validate_config(compose_cfg("model=tiny-llama", "optimizer=zo_sgd_block",
                                    "optimizer.estimator.level=zo_bench_mlp_attn"))
    with pytest.raises(ConfigError, match="tuning=prompt: .* choose tuning from full, lora, icl"):
        validate_config(compose_cfg("optimizer=zo_sgd_block", "optimizer.estimator.level=zo_bench_block",
                                    "tuning=prompt"))
    validate_config(compose_cfg("optimizer=zo_sgd_block", "optimizer.estimator.level=zo_bench_mlp_attn",
                                "optimizer.estimator.block_seed=shared", "tuning=lora"))


def test_tensors_outside_every_zo_bench_block_are_refused_not_frozen():
    """ZO-Bench utils.py's regexes leave OPT-350m's project_in/project_out in no block, so its block-wise ZO never
    updates them; zobench raises instead of silently freezing them."""
    model = meta_model("opt", hidden_size=64, ffn_dim=128, num_attention_heads=4, num_hidden_layers=2,
                       vocab_size=100, word_embed_proj_dim=32, do_layer_norm_before=False)
    covered = {n for b in zo_bench_blocks(model, "mlp-attn") for n in b}
    left = [n for n, _ in model.named_parameters() if n not in covered]
    assert left and all("project_" in n for n in left)
    with pytest.raises(ConfigError, match="project_"):
        group_blocks([n for n, _ in model.named_parameters()], "zo_bench_mlp_attn")


def test_an_unknown_level_lists_both_families_of_levels():
    with pytest.raises(ConfigError, match="layer, attn_mlp, linear, zo_bench_block, zo_bench_mlp_attn, zo_bench_linear"):
        validate_config(compose_cfg("optimizer=zo_sgd_block", "optimizer.estimator.level=mlp-attn"))
    assert set(LEVELS).isdisjoint(ZO_BENCH_LEVELS)


# -- one seed for every block ------------------------------------------------------------------

def block_z(est: BlockSPSA, seeds: list[int], params) -> list[list[torch.Tensor]]:
    """Each block's direction, tensor by tensor, as the sweeps draw it."""
    masks = est.direction_masks(seeds)
    out = []
    for s, block in zip(seeds, est.blocks):
        zs = []
        for i in block.indices:
            p = params[i]
            zs.append(torch.cat([draw_masked(s, i, c, a, b - a, p.device, p.dtype, "gaussian", masks[s])
                                 for c, a, b in chunk_bounds(p.numel())]))
        out.append(zs)
    return out


def test_shared_block_seed_gives_same_shaped_blocks_identical_z_and_the_step_follows_it():
    """ZO-Bench trainer.py zo_step_with_module_wise_perturbation_coordinate: torch.manual_seed(self.zo_random_seed)
    before each block's perturbation and update, so every block restarts one random stream: layer 0's and
    layer 1's fc1 (and self_attn, ...) get the same z; fc1.weight and fc2.weight (same size, first in their
    blocks) the same flat z. With block_seed=per_block (zobench's default) the blocks are independent."""
    model, tok = load_tiny("tiny-opt")
    named = list(model.named_parameters())
    params = [p for _, p in named]
    start = [p.detach().clone() for p in params]
    est = BlockSPSA("zo_bench_mlp_attn", block_seed="shared", immediate=True)
    opt = ZOOptimizer(named, est, lr=1e-2, eps=1e-3, seed=7)
    scorer = Scorer(model, tok, "causal")
    stats = opt.step(lambda: scorer.loss(TINY_EXAMPLES))
    assert stats["forward_passes"] == 2 * 13
    _, seeds, coeffs, lr = opt.seed_log[0]
    assert len(set(seeds)) == len(seeds) == 13  # distinct log keys; the z they stand for are shared
    z = block_z(est, seeds, params)
    by_name = {b.name: k for k, b in enumerate(est.blocks)}
    for part in ("self_attn", "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"):
        a, b = z[by_name[f"model.decoder.layers.0.{part}"]], z[by_name[f"model.decoder.layers.1.{part}"]]
        assert all(torch.equal(x, y) for x, y in zip(a, b)), part
    fc1, fc2 = z[by_name["model.decoder.layers.0.fc1"]][0], z[by_name["model.decoder.layers.0.fc2"]][0]
    assert fc1.numel() == fc2.numel() and torch.equal(fc1, fc2)
    for k, block in enumerate(est.blocks):  # the step moved each block along that z, by its own g_b
        for zi, i in zip(z[k], block.indices):
            torch.testing.assert_close(params[i].detach(), start[i] - lr * coeffs[k] * zi.view_as(start[i]),
                                       rtol=0, atol=2e-6)
    independent = BlockSPSA("zo_bench_mlp_attn")
    independent.setup(named)
    zp = block_z(independent, seeds, params)
    assert not torch.equal(zp[by_name["model.decoder.layers.0.fc1"]][0], zp[by_name["model.decoder.layers.1.fc1"]][0])
    # the (seeds, coefficients) log replays the shared-seed step
    model2, _ = load_tiny("tiny-opt")
    named2 = list(model2.named_parameters())
    replay_est = BlockSPSA("zo_bench_mlp_attn", block_seed="shared")
    replay = ZOOptimizer(named2, replay_est, lr=1e-2, eps=1e-3, seed=7)
    replay._sweep(SeedEstimate(seeds, coeffs, 0.0, 0, masks=replay_est.direction_masks(seeds)), 0.0, -lr)
    for (_, a), (_, b) in zip(named, named2):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)


def test_shared_block_seed_is_refused_for_the_baseline():
    with pytest.raises(ConfigError, match="block_seed=shared needs optimizer.estimator.restrict=true"):
        validate_config(compose_cfg("optimizer=zo_sgd_block_baseline", "+optimizer.estimator.block_seed=shared"))
    with pytest.raises(ConfigError, match=r"block_seed='same'.*per_block, shared"):
        validate_config(compose_cfg("optimizer=zo_sgd_block", "optimizer.estimator.block_seed=same"))


# -- sparsity: kept share 1 − Φ(s) ---------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75, 1.0])
def test_zo_bench_rule_keeps_one_minus_phi_of_s(sparsity):
    """ZO-Bench pruning_utils.py fast_random_mask_like(z, s): mask = normal_() < s, then z[mask] = 0 (trainer.py
    zo_perturb_parameters), so with sparse_gradient_group="layer" a share 1 − Φ(s) of every tensor is kept:
    s = 1.0 keeps 15.9%, s = 0.75 keeps 22.7%, s = 0 keeps half."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(300, 400, generator=g), torch.randn(50_000, generator=g)]
    zo_bench = [float((torch.empty_like(p).normal_(generator=g) >= sparsity).float().mean()) for p in params]
    est = SparseSPSA(sparsity, group="layer", sparsity_rule="zo_bench")
    est.setup([(str(i), p) for i, p in enumerate(params)])
    est.begin_step(run_seed=0, step=0)
    want = 1 - phi(sparsity)
    assert est.densities == pytest.approx([want, want], abs=1e-12)
    for kept, oracle, p in zip(est.realized_density(params), zo_bench, params):
        sigma = math.sqrt(want * (1 - want) / p.numel())
        assert abs(kept - want) < 4 * sigma and abs(oracle - want) < 4 * sigma
    if sparsity == 1.0:
        assert want == pytest.approx(0.1587, abs=1e-4)


def test_zo_bench_global_threshold_is_pruning_utils_and_masks_small_weights_more():
    """ZO-Bench pruning_utils.py estimate_pretrained_model_magnitude_pruning_threshold (torch.quantile of |θ| over
    all model.parameters(), every entry when there are < 1e7) and compute_named_parameters_to_sparsity
    (s_i = mean(|θ_i| ≤ t)); the mask then keeps 1 − Φ(s_i): a tensor of small weights is masked more."""
    g = torch.Generator().manual_seed(1)
    large, small, mixed = 2.0 * torch.randn(6000, generator=g), 0.1 * torch.randn(6000, generator=g), \
        torch.randn(3000, generator=g)
    frozen = torch.randn(9000, generator=g)  # in the threshold (model.parameters()), not trained
    params, everything = [large, small, mixed], [large, small, mixed, frozen]
    for s in (0.3, 0.6, 0.9):
        t = torch.quantile(torch.cat([p.abs() for p in everything]), s).item()
        oracle = [1 - phi(float(p.abs().le(t).float().mean())) for p in params]
        got = zo_bench_densities(params, s, "global", everything)
        assert got == pytest.approx(oracle, abs=2 * 0.4 / 3000)  # one entry's share of s_i, through Φ' ≤ 0.4
        assert got[1] < got[2] < got[0]  # small weights kept least, large most
        assert 1 - phi(1) - 1e-3 < got[1] and got[0] < 0.5 + 1e-3  # between 1 − Φ(1) and 1 − Φ(0)
    without_frozen = zo_bench_densities(params, 0.6, "global")  # the threshold moves with the tensors it sees
    assert without_frozen != pytest.approx(zo_bench_densities(params, 0.6, "global", everything), abs=1e-3)


def test_zo_bench_rule_takes_the_threshold_over_all_model_parameters_frozen_included():
    """ZO-Bench trainer.py _inner_training_loop computes the threshold from model (all parameters, LoRA's frozen
    base weights included) before training; with LoRA, B = 0 sits below t: s_i = 1, kept 1 − Φ(1)."""
    model, _, named = tuned("tiny-opt", "lora")
    est = SparseSPSA(0.5, group="global", sparsity_rule="zo_bench")
    est.setup(named, model)
    t = torch.quantile(torch.cat([p.detach().abs().flatten() for p in model.parameters()]), 0.5).item()
    oracle = [1 - phi(float(p.detach().abs().le(t).float().mean())) for _, p in named]
    assert est.densities == pytest.approx(oracle, abs=1e-3)
    for (name, _), d in zip(named, est.densities):
        if "lora_B" in name:
            assert d == pytest.approx(1 - phi(1.0))


def test_zo_bench_rule_redraws_the_mask_when_step_is_a_multiple_of_n():
    """ZO-Bench trainer.py _inner_training_loop: `if total_steps % sparse_gradient_resample_steps == 0` a new
    sparse_grad_random_seed, before total_steps += 1: one mask for steps 0..N-1, a new one at N, 2N, ..."""
    every, seed, epochs = 3, None, []
    for total_steps in range(8):  # the transcribed loop: the seed each step runs with
        if total_steps % every == 0:
            seed = total_steps
        epochs.append(seed)
    p = torch.zeros(20_000)
    est = SparseSPSA(0.75, group="layer", resample_every=every, sparsity_rule="zo_bench")
    est.setup([("w", p)])
    masks = []
    for step in range(8):
        est.begin_step(0, step)
        masks.append(est.mask.keep(0, 0, p.numel(), p.device))
    for a in range(8):
        for b in range(8):
            assert torch.equal(masks[a], masks[b]) == (epochs[a] == epochs[b])


def test_sparsity_rule_is_checked_before_any_model_loads():
    validate_config(compose_cfg("optimizer=zo_sgd_sparse", "optimizer.estimator.sparsity_rule=zo_bench",
                                "optimizer.estimator.sparsity=1.0"))
    with pytest.raises(ConfigError, match=r"optimizer.estimator.sparsity=1.0 .*\[0, 1\)"):
        validate_config(compose_cfg("optimizer=zo_sgd_sparse", "optimizer.estimator.sparsity=1.0"))
    with pytest.raises(ConfigError, match=r"sparsity_rule='phi'.*exact, zo_bench"):
        validate_config(compose_cfg("optimizer=zo_sgd_sparse", "optimizer.estimator.sparsity_rule=phi"))


# -- the options in the CLI --------------------------------------------------------------------

@pytest.mark.parametrize("overrides,per_step", [
    (("optimizer=zo_sgd_block", "optimizer.estimator.level=zo_bench_mlp_attn", "optimizer.estimator.block_seed=shared"),
     26),
    (("optimizer=zo_sgd_sparse", "optimizer.estimator.sparsity_rule=zo_bench", "optimizer.estimator.sparsity=0.5"), 2),
])
def test_zo_bench_options_complete_a_cell(overrides, per_step, small_cfg, tmp_path):
    summary = run_cell(small_cfg(*overrides), tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    assert summary["forward_passes_per_step"] == per_step  # tiny-opt: 5·2 + 3 = 13 blocks, 2 passes each
