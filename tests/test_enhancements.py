"""ZO-Bench's enhancements and studies, each checked for what it claims (issue 5).

Block-wise ZO and its equal-cost baseline, hybrid ZO/FO, sparsity-induced ZO, the template ablation,
non-differentiable objectives, memory against sequence length. Fast unless marked ``slow``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import SMALL, compose_cfg
from tests.test_optimizers import TINY_EXAMPLES, LeastSquares, optimizer_cfg
from tests.test_tuning import tuned
from tests.tiny import load_tiny
from zobench import CONF_DIR
from zobench.errors import ConfigError
from zobench.optim import build_optimizer
from zobench.optim.blocks import LEVELS, group_blocks
from zobench.optim.blockwise import BlockSPSA
from zobench.optim.directions import direction, draw_masked
from zobench.optim.estimate import SeedEstimate
from zobench.optim.sparse import SparseSPSA, magnitude_densities
from zobench.optim.spsa import SPSA
from zobench.optim.zo import ZOOptimizer
from zobench.run import run_cell
from zobench.scoring import Scorer, metrics
from zobench.tasks import load_task
from zobench.tasks._lengthen import lengthen
from zobench.validate import validate_config

TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def changed(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Moved by a probe (ε|z| ~ 1e-3), not by the ulp-sized residue an undone probe leaves in fp32."""
    return bool((a - b).abs().max() > 1e-5)


def saved_activation_bytes(model: torch.nn.Module, fn) -> int:
    """Bytes autograd saves for backward while ``fn`` runs, parameters (and views of them) excluded."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    total = 0

    def pack(t):
        nonlocal total
        if t.untyped_storage().data_ptr() not in weights:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


# -- blocks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("scheme", ["full", "lora", "prefix", "prompt"])
@pytest.mark.parametrize("model_name", ["tiny-opt", "tiny-llama", "tiny-roberta"])
def test_blocks_cover_every_trainable_parameter_exactly_once(model_name, scheme, level):
    _, _, named = tuned(model_name, scheme)
    names = [n for n, _ in named]
    blocks = group_blocks(names, level)
    indices = [i for b in blocks for i in b.indices]
    assert sorted(indices) == list(range(len(names)))  # every tensor, once
    assert [b.depth for b in blocks] == sorted(b.depth for b in blocks)  # depth order
    if scheme == "lora":
        assert all(b.name.startswith("base_model.model.") for b in blocks)  # peft-wrapped names
    expected = {("full", "layer"): 4, ("full", "attn_mlp"): 6, ("lora", "layer"): 2, ("lora", "attn_mlp"): 2,
                ("lora", "linear"): 8, ("prefix", "layer"): 1, ("prompt", "layer"): 1}
    if (scheme, level) in expected:  # 2 layers + embeddings + head; LoRA: q and v adapters of 2 layers
        assert len(blocks) == expected[(scheme, level)], [b.name for b in blocks]


FAMILY_NAMES = {  # parameter names of the real families (no weights needed to group them)
    "opt-1.3b": ["model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight",
                 "model.decoder.final_layer_norm.weight", "model.decoder.layers.0.self_attn.q_proj.weight",
                 "model.decoder.layers.0.self_attn_layer_norm.weight", "model.decoder.layers.0.fc1.weight",
                 "model.decoder.layers.0.final_layer_norm.bias", "model.decoder.layers.10.fc2.weight"],
    "llama2-7b": ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                  "model.layers.0.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
                  "model.layers.0.post_attention_layernorm.weight", "model.layers.31.mlp.up_proj.weight",
                  "model.norm.weight", "lm_head.weight"],
    "roberta-large": ["roberta.embeddings.word_embeddings.weight", "roberta.embeddings.LayerNorm.weight",
                      "roberta.encoder.layer.0.attention.self.query.weight",
                      "roberta.encoder.layer.0.attention.output.LayerNorm.weight",
                      "roberta.encoder.layer.0.intermediate.dense.weight",
                      "roberta.encoder.layer.0.output.dense.weight",
                      "roberta.encoder.layer.0.output.LayerNorm.bias", "lm_head.dense.weight", "lm_head.bias"],
}


@pytest.mark.parametrize("family", sorted(FAMILY_NAMES))
def test_real_family_names_group_into_embeddings_layers_halves_and_head(family):
    names = FAMILY_NAMES[family]
    layer = {b.name: [names[i] for i in b.indices] for b in group_blocks(names, "layer")}
    assert list(layer)[0] == "embeddings" and list(layer)[-1] == "head"
    assert all("embed" in n for n in layer["embeddings"])
    assert not any(".layers." in n or ".layer." in n for n in layer["head"])
    halves = {b.name.rsplit(".", 1)[-1]: [names[i] for i in b.indices] for b in group_blocks(names, "attn_mlp")
              if b.name not in ("embeddings", "head") and ".0." in b.name + "."}
    attn, mlp = halves["attn"], halves["mlp"]
    assert all(("attn" in n or "attention" in n or "input_layernorm" in n) and "post_attention" not in n for n in attn)
    assert all(any(k in n for k in ("fc", "mlp", "final_layer_norm", "post_attention", "intermediate", ".output."))
               and ".attention." not in n for n in mlp)


def test_an_unknown_level_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match="optimizer.estimator.level='block'.*layer, attn_mlp, linear"):
        group_blocks(["w"], "block")


# -- block-wise ZO -----------------------------------------------------------------------------

def block_step(est: BlockSPSA):
    """One step of ``est`` on tiny-opt, recording before each forward which tensors differ from the start."""
    model, tok = load_tiny("tiny-opt")
    scorer, named = Scorer(model, tok, "causal"), list(model.named_parameters())
    opt = ZOOptimizer(named, est, lr=1e-2, eps=1e-3, seed=7)
    start = [p.detach().clone() for _, p in named]
    touched, values = [], []

    def loss():
        touched.append({i for i, (_, p) in enumerate(named) if changed(p, start[i])})
        values.append(float(scorer.loss(TINY_EXAMPLES)))
        return torch.tensor(values[-1])

    return opt.step(loss), opt, named, start, touched, values


def test_a_block_wise_step_moves_each_block_only_along_its_own_direction():
    est = BlockSPSA("layer")
    stats, opt, named, start, touched, values = block_step(est)
    blocks = est.blocks
    assert [b.name for b in blocks] == ["embeddings", "model.decoder.layers.0", "model.decoder.layers.1", "head"]
    assert stats["forward_passes"] == 2 * len(blocks) == len(values)  # 2 per block
    _, seeds, coeffs, lr = opt.seed_log[0]
    for b, block in enumerate(blocks):
        assert touched[2 * b] == touched[2 * b + 1] == set(block.indices)  # each probe perturbs its block only
        assert coeffs[b] == pytest.approx((values[2 * b] - values[2 * b + 1]) / 2e-3, rel=1e-12)  # g_b, not g_b/B
        for i in block.indices:  # θ_i ← θ_i − lr·g_b·z_b,i: block b's direction, nobody else's
            expected = start[i] - lr * coeffs[b] * direction(seeds[b], i, start[i])
            torch.testing.assert_close(named[i][1].detach(), expected, rtol=0, atol=2e-6)


def test_immediate_updates_probe_each_block_at_the_updated_weights_and_replay_from_the_log():
    """ZO-Bench's default (coordinate_perturbation): block b is updated before block b + 1 is probed."""
    est = BlockSPSA("layer", immediate=True)
    stats, opt, named, start, touched, values = block_step(est)
    blocks = est.blocks
    assert stats["forward_passes"] == 2 * len(blocks) == len(values)
    _, seeds, coeffs, lr = opt.seed_log[0]
    earlier = set()
    for b, block in enumerate(blocks):
        # block b's probes: its own tensors perturbed, every earlier block already moved by its update
        assert touched[2 * b] == touched[2 * b + 1] == set(block.indices) | earlier
        assert coeffs[b] == pytest.approx((values[2 * b] - values[2 * b + 1]) / 2e-3, rel=1e-12)
        earlier |= set(block.indices)
    for b, block in enumerate(blocks):  # each block moved along its own direction only, once
        for i in block.indices:
            expected = start[i] - lr * coeffs[b] * direction(seeds[b], i, start[i])
            torch.testing.assert_close(named[i][1].detach(), expected, rtol=0, atol=2e-6)
    # the log replays it: the same coefficients through the all-at-once update give the same weights
    model2, _ = load_tiny("tiny-opt")
    named2 = list(model2.named_parameters())
    replay = ZOOptimizer(named2, BlockSPSA("layer"), lr=1e-2, eps=1e-3, seed=7)
    replay._sweep(SeedEstimate(seeds, coeffs, 0.0, 0, masks=est.direction_masks(seeds)), 0.0, -lr)
    for (_, a), (_, b) in zip(named, named2):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"immediate": True, "restrict": False}, "immediate=true needs optimizer.estimator.restrict=true"),
    ({"immediate": True, "one_sided": True}, "not allowed with optimizer.estimator.one_sided=true"),
])
def test_immediate_updates_refuse_settings_without_blocks_or_with_a_stale_base_loss(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BlockSPSA("layer", **kwargs)


def test_immediate_updates_refuse_the_conservative_rule_before_any_model_loads():
    with pytest.raises(ConfigError, match="conservative=true is not allowed with optimizer.estimator.immediate"):
        validate_config(compose_cfg("optimizer=zo_sgd_block", "optimizer.conservative=true"))
    validate_config(compose_cfg("optimizer=zo_sgd_block", "optimizer.conservative=true",
                                "optimizer.estimator.immediate=false"))  # the Jacobi order takes it
    model, _ = load_tiny("tiny-opt")
    with pytest.raises(ConfigError, match="conservative=true is not allowed with optimizer.estimator.immediate"):
        ZOOptimizer(list(model.named_parameters()), BlockSPSA("layer", immediate=True), lr=1e-2, eps=1e-3,
                    conservative=True)


def test_the_baseline_is_spsa_over_as_many_full_directions_at_equal_cost():
    runs = []
    for est in (BlockSPSA("layer", restrict=False), SPSA(num_directions=4), BlockSPSA("layer")):
        model, tok = load_tiny("tiny-opt")
        scorer = Scorer(model, tok, "causal")
        opt = ZOOptimizer(list(model.named_parameters()), est, lr=1e-2, eps=1e-3, seed=3)
        passes = [opt.step(lambda: scorer.loss(TINY_EXAMPLES))["forward_passes"] for _ in range(2)]
        runs.append((passes, [p.detach().clone() for p in model.parameters()]))
    (base_passes, base), (spsa_passes, spsa), (block_passes, block) = runs
    assert base_passes == spsa_passes == block_passes == [8, 8]  # B = 4 blocks: 2B forward passes each
    assert all(torch.equal(a, b) for a, b in zip(base, spsa))  # exactly zo_sgd with q = B
    assert not all(torch.equal(a, b) for a, b in zip(base, block))


@pytest.mark.parametrize("level,blocks", [("layer", 4), ("attn_mlp", 6), ("linear", 19)])
def test_block_yaml_and_baseline_yaml_spend_the_same_forward_passes(level, blocks):
    spent = {}
    for name in ("zo_sgd_block", "zo_sgd_block_baseline"):
        model, tok = load_tiny("tiny-opt")
        scorer = Scorer(model, tok, "causal")
        cfg = optimizer_cfg(name, **{"estimator.level": level})
        opt = build_optimizer(cfg, list(model.named_parameters()), 1, 0, model=model)
        spent[name] = opt.step(lambda: scorer.loss(TINY_EXAMPLES))["forward_passes"]
    assert spent == {"zo_sgd_block": 2 * blocks, "zo_sgd_block_baseline": 2 * blocks}


# -- hybrid ZO/FO ------------------------------------------------------------------------------

def hybrid(model, zo_layers, lr=0.1, zo_lr=1e-2, steps=10):
    cfg = optimizer_cfg("hybrid_zo_fo", lr=lr, zo_lr=zo_lr, zo_layers=zo_layers)
    return build_optimizer(cfg, list(model.named_parameters()), steps, 0, model=model)


def test_hybrid_backprops_the_deep_layers_exactly_and_perturbs_the_shallow_ones():
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference = copy.deepcopy(model)
    Scorer(reference, tok, "causal").loss(TINY_EXAMPLES).backward()  # autograd on every parameter, at θ
    grads = {n: p.grad for n, p in reference.named_parameters()}

    opt = hybrid(model, 1, lr=0.1, zo_lr=1e-2)
    stats = opt.step(lambda: scorer.loss(TINY_EXAMPLES))
    shallow, deep = [n for n, _ in opt.zo_named], [n for n, _ in opt.fo_named]
    assert all("embed" in n or ".layers.0." in n for n in shallow) and any(".layers.0." in n for n in shallow)
    assert all(".layers.1." in n or n.startswith("model.decoder.final_layer_norm") for n in deep)
    assert sorted(shallow + deep) == sorted(start)
    assert stats["forward_passes"] == 3  # forward + backward at θ, then two ZO probes

    for n, p in opt.fo_named:  # the deep part: one SGD step on the exact gradient
        torch.testing.assert_close(p.detach(), start[n] - 0.1 * grads[n], rtol=0, atol=1e-7)
    _, seeds, coeffs, lr = opt.zo.seed_log[0]
    for i, (n, p) in enumerate(opt.zo_named):  # the shallow part: ZO-SGD along z over θ_s only
        expected = start[n] - lr * sum(c * direction(s, i, p) for s, c in zip(seeds, coeffs))
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=2e-6)
        assert p.requires_grad  # frozen only while the backward ran


def test_hybrid_keeps_fewer_activations_as_more_layers_go_zo():
    examples = [type(e)(e.context * 6, e.candidates, e.gold) for e in TINY_EXAMPLES]  # longer inputs
    saved = {}
    for k in (0, 1, 2):
        model, tok = load_tiny("tiny-opt")
        scorer, opt = Scorer(model, tok, "causal"), hybrid(model, k)
        saved[k] = saved_activation_bytes(model, lambda: opt.step(lambda: scorer.loss(examples)))
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    fo = build_optimizer(optimizer_cfg("fo_sgd"), list(model.named_parameters()), 1, 0)
    saved["fo"] = saved_activation_bytes(model, lambda: fo.step(lambda: scorer.loss(examples)))
    assert saved["fo"] > saved[0] > saved[1] > saved[2] > 0, saved  # K = 2: the head alone backprops


def test_hybrid_with_nothing_layered_is_all_zo_and_runs():
    _, _, named = tuned("tiny-opt", "prompt")
    cfg = optimizer_cfg("hybrid_zo_fo")
    opt = build_optimizer(cfg, named, 1, 0)
    assert opt.fo is None and len(opt.zo_named) == 1
    quad = LeastSquares()  # no layers, no embeddings: all head, so all backprop
    opt = build_optimizer(cfg, list(quad.named_parameters()), 1, 0)
    assert opt.zo is None and opt.step(quad.loss)["forward_passes"] == 1


def test_hybrid_resumes_bit_for_bit(native, tmp_path, monkeypatch):
    from tests.test_resume import RESUMABLE, stop_after

    cfg = compose_cfg(*SMALL, f"data.dir={native}", "optimizer=hybrid_zo_fo", "optimizer.zo_lr=1e-3", *RESUMABLE)
    whole = run_cell(cfg, tmp_path / "whole")
    assert whole["status"] == "completed", whole["error"]
    with monkeypatch.context() as m:
        stop_after(m, 3)
        assert run_cell(cfg, tmp_path / "cut")["status"] == "interrupted"
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert state["loss_log"] is None and state["tensors"]  # not a replay: tensors and optimizer state
    resumed = run_cell(cfg, tmp_path / "cut")
    assert resumed["status"] == "completed", resumed["error"]
    a, b = torch.load(tmp_path / "whole" / "trainable.pt"), torch.load(tmp_path / "cut" / "trainable.pt")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert resumed["final_loss"] == whole["final_loss"] and resumed["forward_passes"] == whole["forward_passes"]


# -- sparsity-induced ZO -----------------------------------------------------------------------

def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.75, 0.9])
def test_realized_density_is_the_configured_one_not_phi_of_it(sparsity, monkeypatch):
    import zobench.optim.directions as directions

    monkeypatch.setattr(directions, "CHUNK", 1 << 16)  # several chunks per tensor: each has its own mask seed
    params = [("a", torch.zeros(200_000)), ("b", torch.zeros(300, 400))]
    est = SparseSPSA(sparsity, group="layer")
    est.setup(params)
    est.begin_step(run_seed=0, step=0)
    d = 1 - sparsity
    for i, (_, p) in enumerate(params):
        n = p.numel()
        kept = sum(int(draw_masked(11, i, c, a, b - a, p.device, p.dtype, "gaussian", est.mask).count_nonzero())
                   for c, a, b in directions.chunk_bounds(n))
        sigma = math.sqrt(d * (1 - d) / n)
        assert abs(kept / n - d) < 4 * sigma, (kept / n, d)
        zo_bench = 1 - phi(sparsity)  # ZO-Bench's `normal_() < ratio` zeroes a share Φ(ratio)
        assert abs(kept / n - zo_bench) > 4 * sigma
    assert est.realized_density([p for _, p in params]) == pytest.approx([d, d], abs=0.01)


def test_global_densities_come_from_weight_magnitudes():
    g = torch.Generator().manual_seed(0)
    big, small, zeros = torch.randn(4000, generator=g), 0.5 * torch.randn(4000, generator=g), torch.zeros(2000)
    params = [big, small, zeros]
    dens = magnitude_densities(params, 0.25)
    n = sum(p.numel() for p in params)
    kept = sum(d * p.numel() for d, p in zip(dens, params))
    assert kept == pytest.approx(0.25 * n, rel=1e-9)  # exactly 1 − sparsity
    assert dens[0] > dens[1] > dens[2] == 0.0  # magnitude pruning keeps the large weights
    everything = torch.cat([p.abs() for p in params])
    threshold = everything.kthvalue(n - int(0.25 * n)).values  # the global magnitude-pruning threshold
    for d, p in zip(dens, params):
        assert d == pytest.approx(float((p.abs() > threshold).float().mean()), abs=2 / p.numel())
    assert magnitude_densities([torch.zeros(10), torch.zeros(30)], 0.4) == pytest.approx([0.4, 0.4])  # ties share


def test_mask_is_regenerated_from_the_seed_and_redrawn_every_n_steps():
    p = torch.zeros(20_000)

    def mask_at(run_seed, step, every=3):
        est = SparseSPSA(0.75, group="layer", resample_every=every)
        est.setup([("w", p)])
        est.begin_step(run_seed, step)
        return est.mask.keep(0, 0, p.numel(), p.device)

    assert torch.equal(mask_at(0, 0), mask_at(0, 2))  # one mask for steps 0..2
    assert not torch.equal(mask_at(0, 2), mask_at(0, 3))  # redrawn at step 3
    assert torch.equal(mask_at(0, 3), mask_at(0, 5)) and torch.equal(mask_at(0, 4), mask_at(0, 4))
    assert not torch.equal(mask_at(0, 0), mask_at(1, 0))  # another run seed, another mask
    assert not torch.equal(mask_at(0, 1, every=1), mask_at(0, 0, every=1))


def test_a_sparse_step_moves_only_the_masked_entries():
    w = torch.zeros(5000, requires_grad=False)
    target = torch.linspace(-1, 1, 5000)
    est = SparseSPSA(0.75, group="layer", resample_every=2)
    opt = ZOOptimizer([("w", w)], est, lr=0.1, eps=1e-3, seed=5)
    masks = []
    for _ in range(4):
        before = w.clone()
        opt.step(lambda: ((w - target) ** 2).sum())
        mask = est.mask.keep(0, 0, w.numel(), w.device)
        assert torch.equal(w != before, mask)  # moved exactly where the mask keeps z
        masks.append(mask)
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[2], masks[3]) and not torch.equal(masks[1], masks[2])


def test_sparse_densities_on_a_model_are_magnitude_derived():
    model, _ = load_tiny("tiny-opt")
    named = list(model.named_parameters())
    est = SparseSPSA(0.75)
    est.setup(named)
    n = [p.numel() for _, p in named]
    assert sum(d * k for d, k in zip(est.densities, n)) == pytest.approx(0.25 * sum(n), rel=1e-6)
    by_name = dict(zip([m for m, _ in named], est.densities))
    assert by_name["model.decoder.final_layer_norm.weight"] == 1.0  # |1.0| ≫ the random weights
    assert 0 < by_name["model.decoder.layers.0.fc1.weight"] < 0.5


# -- the YAMLs in the CLI ----------------------------------------------------------------------

@pytest.mark.parametrize("name,per_step", [("zo_sgd_block", 8), ("zo_sgd_block_baseline", 8), ("zo_sgd_sparse", 2),
                                           ("hybrid_zo_fo", 3)])
def test_each_new_optimizer_completes_a_cell(name, per_step, small_cfg, tmp_path):
    summary = run_cell(small_cfg(f"optimizer={name}"), tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    assert summary["forward_passes_per_step"] == per_step and summary["forward_passes"] == 4 * per_step




# -- non-differentiable objectives -------------------------------------------------------------

def test_accuracy_and_f1_losses_are_minus_the_batch_metrics():
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    batch = TINY_EXAMPLES + [type(e)(e.context + " Indeed", e.candidates, e.gold) for e in TINY_EXAMPLES]
    want = metrics(scorer.predict(batch), batch)
    assert float(scorer.loss(batch, "accuracy")) == -want["accuracy"]
    assert float(scorer.loss(batch, "f1")) == -want["f1"]


def test_zo_sgd_minimizes_negative_accuracy_in_the_cli(small_cfg, tmp_path):
    summary = run_cell(small_cfg("trainer.loss=accuracy", "optimizer.lr=1e-2"), tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and all(-1 <= v <= 0 and (v * 8) == round(v * 8) for v in losses)  # means of k/4


@pytest.mark.parametrize("optimizer", ["fo_sgd", "fo_adam", "hybrid_zo_fo", "forward_grad"])
@pytest.mark.parametrize("loss", ["accuracy", "f1"])
def test_gradient_based_optimizers_refuse_non_differentiable_objectives(optimizer, loss):
    with pytest.raises(ConfigError) as exc:
        validate_config(compose_cfg(f"optimizer={optimizer}", f"trainer.loss={loss}"))
    assert f"trainer.loss='{loss}'" in str(exc.value) and "lm, classification" in str(exc.value)
    validate_config(compose_cfg("optimizer=zo_sgd_sparse", f"trainer.loss={loss}"))  # ZO takes it


# -- template ablation -------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_template_none_renders_differently_and_runs_in_the_cli(task, native, small_cfg, tmp_path):
    data = {"dir": str(native), "num_train": 6, "num_dev": 2, "num_eval": 4, "seed": 0}
    base = OmegaConf.load(CONF_DIR / "task" / f"{task}.yaml")
    mezo = load_task(OmegaConf.merge(base, {"template": "mezo"}), data)
    none = load_task(OmegaConf.merge(base, {"template": "none"}), data)
    for a, b in zip(mezo.train + mezo.eval, none.train + none.eval):
        assert a.gold == b.gold and (a.context, a.candidates) != (b.context, b.candidates)
    summary = run_cell(small_cfg(f"task={task}", "task.template=none"), tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    assert summary["template"] == "none"


def sweep_params(experiment: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment={experiment}"], return_hydra_config=True)
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


def test_template_ablation_sweeps_both_templates_both_families_and_every_task():
    params = sweep_params("template_ablation")
    assert sorted(params["task"]) == TASKS and params["task.template"] == ["mezo", "none"]
    assert params["optimizer"] == ["zo_sgd", "fo_sgd"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run([sys.executable, "-m", "zobench", *args], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_template_ablation_runs_as_a_sweep_in_the_cli(native, tmp_path):
    cli("-m", "+experiment=template_ablation", "task=sst2", *SMALL, f"data.dir={native}", f"paths.runs_dir={tmp_path}")
    cells = [json.loads(p.read_text()) for p in (tmp_path / "multirun" / "template_ablation").rglob("summary.json")]
    assert sorted((c["template"], c["optimizer"]) for c in cells) == [
        ("mezo", "fo_sgd"), ("mezo", "zo_sgd"), ("none", "fo_sgd"), ("none", "zo_sgd")]
    assert all(c["status"] == "completed" for c in cells)


# -- memory against sequence length ------------------------------------------------------------

@pytest.mark.parametrize("model_name,kind", [("tiny-opt", "causal"), ("tiny-roberta", "masked")])
def test_every_scored_sequence_has_exactly_pad_to_length_tokens(model_name, kind, native):
    data = load_task(OmegaConf.load(CONF_DIR / "task" / "sst2.yaml"),
                     {"dir": str(native), "num_train": 6, "num_dev": 2, "num_eval": 4, "seed": 0})
    model, tok = load_tiny(model_name)
    long = lengthen(data, tok, 96, 512)
    scorer = Scorer(model, tok, kind, 96)
    for short, ex in zip(data.train + data.eval, long.train + long.eval):
        assert ex.context.endswith(short.context) and ex.candidates == short.candidates
        if kind == "causal":
            assert {len(scorer._causal_sequence(ex.context, c)[0]) for c in ex.candidates} == {96}
        else:
            assert len(scorer._masked_sequence(ex)[0]) == 96
    with pytest.raises(ConfigError, match="trainer.pad_to_length=600 .* 512 tokens"):
        lengthen(data, tok, 600, 512)


def test_zo_keeps_no_activations_while_fo_keeps_more_as_inputs_grow(native):
    data = load_task(OmegaConf.load(CONF_DIR / "task" / "sst2.yaml"),
                     {"dir": str(native), "num_train": 4, "num_dev": 0, "num_eval": 1, "seed": 0})
    saved = {}
    for length in (32, 64, 128):
        for name in ("zo_sgd", "fo_sgd", "fo_adam"):
            model, tok = load_tiny("tiny-opt")
            batch = lengthen(data, tok, length, 512).train
            scorer = Scorer(model, tok, "causal", length)
            opt = build_optimizer(optimizer_cfg(name), list(model.named_parameters()), 1, 0)
            saved[name, length] = saved_activation_bytes(model, lambda: opt.step(lambda: scorer.loss(batch)))
    assert all(saved["zo_sgd", n] == 0 for n in (32, 64, 128))  # nothing kept for a backward
    for name in ("fo_sgd", "fo_adam"):
        assert saved[name, 128] > 1.8 * saved[name, 64] > 3.2 * saved[name, 32] > 0, saved


def test_a_padded_cell_records_seq_len(small_cfg, tmp_path):
    summary = run_cell(small_cfg("++trainer.pad_to_length=64", "trainer.max_length=64"), tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    assert summary["seq_len"] == summary["max_length"] == 64


def test_memory_vs_length_sweeps_lengths_and_the_three_optimizers():
    params = sweep_params("memory_vs_length")
    assert params["optimizer"] == ["zo_sgd", "fo_sgd", "fo_adam"]
    assert [int(n) for n in params["trainer.pad_to_length"]] == [64, 128, 256, 512, 1024]


@pytest.mark.slow
def test_memory_vs_length_runs_as_a_sweep_and_plots(native, tmp_path):
    from zobench.aggregate import load_runs, plot_memory_vs_seq_len

    cli("-m", "+experiment=memory_vs_length", "model=tiny-opt", "device=cpu", f"data.dir={native}",
        f"paths.runs_dir={tmp_path}", "trainer.pad_to_length=32,64", "trainer.steps=2", "trainer.eval_every=2")
    runs = load_runs(tmp_path / "multirun" / "memory_vs_length")
    assert len(runs) == 6 and runs["status"].eq("completed").all()
    assert sorted(runs["seq_len"].unique()) == [32, 64]
    paths = plot_memory_vs_seq_len(runs, tmp_path / "fig")
    assert {p.suffix for p in paths} == {".png", ".pdf"}
