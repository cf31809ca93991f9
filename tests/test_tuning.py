"""Tuning schemes: exact trainable counts (closed forms), nothing frozen is copied or touched,
prefix / prompt initializations, masked-LM scoring under peft, ICL prompts, configs and checks."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from tests.tiny import load_tiny
from zobench import CONF_DIR
from zobench.errors import ConfigError
from zobench.models import count_params
from zobench.scoring import Scorer
from zobench.tasks.base import Example
from zobench.tuning import SCHEMES, apply_tuning, count_trainable, input_budget, validate_tuning
from zobench.tuning.icl import demonstrations, with_demonstrations

MODELS = ["tiny-opt", "tiny-llama", "tiny-roberta"]
PEFT_SCHEMES = ["lora", "prefix", "prompt"]
CAUSAL = [Example("a gripping, funny film. It was", (" terrible", " great"), 1),
          Example("dull and long. It was", (" terrible", " great"), 0),
          Example("Question: is it?\n", ("No", "Yes"), 1)]
MASKED = [Example("a gripping, funny film. It was", ("a", "b"), 1),  # byte tokenizer: one-byte verbalizers
          Example("dull and long, and then some more. It was", ("a", "b"), 0),
          Example("Question: is it?\n", ("N", "Y"), 1)]



def tuning_cfg(name: str, **overrides):
    cfg = OmegaConf.load(CONF_DIR / "tuning" / f"{name}.yaml")
    cfg.merge_with(overrides)
    return cfg


def tuned(model_name: str, scheme: str, seed: int = 0, **overrides):
    base, tok = load_tiny(model_name)
    model, named = apply_tuning(base, tuning_cfg(scheme, **overrides), seed)
    return model, tok, named


def kv_dim(config) -> int:
    """Width of one layer's keys (= values): hidden, or KV heads · head dim under grouped-query attention."""
    heads = config.num_attention_heads
    return getattr(config, "num_key_value_heads", heads) * (config.hidden_size // heads)


# -- exact counts -------------------------------------------------------------------------------


def closed_form(scheme: str, config, base_params: int) -> int:
    layers, hidden = config.num_hidden_layers, config.hidden_size
    if scheme == "full":
        return base_params
    if scheme == "lora":  # r·(d_in + d_out) for the query (hidden -> hidden) and value (hidden -> d_kv) matrices
        return layers * 8 * ((hidden + hidden) + (hidden + kv_dim(config)))
    if scheme == "prefix":  # 2 · layers · tokens · hidden (d_kv under GQA)
        return 2 * layers * 5 * kv_dim(config)
    if scheme == "prompt":  # tokens · hidden
        return 10 * hidden
    return 0  # icl


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("model_name", MODELS)
def test_trainable_counts_match_closed_forms(model_name, scheme):
    base, _ = load_tiny(model_name)
    base_params = count_params(base)
    model, named = apply_tuning(base, tuning_cfg(scheme))
    assert count_trainable(named) == closed_form(scheme, model.config, base_params)
    assert all(p.requires_grad for _, p in named)
    assert {id(p) for _, p in named} == {id(p) for p in model.parameters() if p.requires_grad}


def test_closed_forms_on_the_multi_head_models_are_the_papers():
    """OPT and RoBERTa have d_kv = hidden: the issue's formulas, literally."""
    for name in ("tiny-opt", "tiny-roberta"):
        config = load_tiny(name)[0].config
        layers, hidden = config.num_hidden_layers, config.hidden_size
        assert closed_form("lora", config, 0) == 2 * layers * 8 * (hidden + hidden)
        assert closed_form("prefix", config, 0) == 2 * layers * 5 * hidden


def test_lora_rank_alpha_targets_are_configurable():
    model, _, named = tuned("tiny-opt", "lora", r=2, alpha=4, target_modules=["k_proj", "out_proj", "fc1"])
    config = model.config
    per_layer = 2 * (32 + 32) + 2 * (32 + 32) + 2 * (32 + config.ffn_dim)
    assert count_trainable(named) == config.num_hidden_layers * per_layer
    layer = model.base_model.model.model.decoder.layers[0].self_attn.k_proj
    assert layer.scaling["default"] == 4 / 2
    with pytest.raises(ConfigError, match="tuning.target_modules"):
        tuned("tiny-opt", "lora", target_modules=["no_such_module"])


# -- frozen weights: one copy, never touched -------------------------------------------------------


@pytest.mark.parametrize("scheme", PEFT_SCHEMES + ["icl"])
@pytest.mark.parametrize("model_name", MODELS)
def test_frozen_weights_are_the_loaded_tensors_not_copies(model_name, scheme):
    base, _ = load_tiny(model_name)
    originals = [(p, p.data_ptr(), p.clone()) for p in base.parameters()]
    base_params = count_params(base)
    model, named = apply_tuning(base, tuning_cfg(scheme))
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert {id(p) for p in frozen} == {id(p) for p, _, _ in originals}  # the loaded Parameter objects themselves
    assert count_params(model) == base_params + count_trainable(named)  # nothing else was allocated
    for p, ptr, value in originals:
        assert p.data_ptr() == ptr and torch.equal(p, value) and not p.requires_grad
    assert not model.training  # the wrapper keeps the mode the model was loaded in


@pytest.mark.parametrize("scheme", PEFT_SCHEMES)
@pytest.mark.parametrize("model_name", MODELS)
def test_backward_reaches_only_the_trainable_parameters(model_name, scheme):
    model, tok, named = tuned(model_name, scheme)
    kind = "masked" if model_name == "tiny-roberta" else "causal"
    Scorer(model, tok, kind).loss(MASKED if kind == "masked" else CAUSAL, "lm").backward()
    trainable = {id(p) for _, p in named}
    assert all(p.grad is not None for _, p in named)
    assert all(p.grad.abs().sum() > 0 for n, p in named if "lora_A" not in n)  # B = 0 at init: A gets no gradient yet
    assert all(p.grad is None for p in model.parameters() if id(p) not in trainable)


@pytest.mark.parametrize("scheme", PEFT_SCHEMES)
def test_a_zo_step_perturbs_and_updates_only_the_trainable_parameters(scheme):
    from zobench.optim.spsa import SPSA
    from zobench.optim.zo import ZOOptimizer

    model, tok, named = tuned("tiny-llama", scheme)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.clone() for n, p in named}
    opt = ZOOptimizer(named, SPSA(), lr=1e-2, eps=1e-2)
    seen = []
    scorer = Scorer(model, tok, "causal")

    def loss():
        seen.append([torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen])
        return scorer.loss(CAUSAL, "lm")

    opt.step(loss)
    assert seen and all(all(s) for s in seen)  # frozen weights equal in every probe
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, trainable[n]) for n, p in named)


# -- initializations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["tiny-opt", "tiny-llama"])
def test_prefix_from_real_activations_equals_reading_the_drawn_tokens_first(model_name):
    """MeZO's init_by_real_act: the prefixed causal LM starts as the base model reading the
    randomly drawn tokens before the input (peft passes the prefix as a transformers Cache)."""
    base, tok = load_tiny(model_name)
    x = torch.tensor([tok("hello world, it was")["input_ids"]])
    ids = torch.randint(0, base.get_input_embeddings().weight.shape[0], (5,), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = base(input_ids=torch.cat([ids[None], x], 1), use_cache=False).logits[0, 5:]
    model, _ = apply_tuning(base, tuning_cfg("prefix"), seed=7)
    with torch.no_grad():
        got = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_prefix_from_real_activations_on_roberta_holds_each_layers_keys_and_values():
    base, _ = load_tiny("tiny-roberta")
    ids = torch.randint(0, base.get_input_embeddings().weight.shape[0], (5,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = base.roberta.embeddings(input_ids=ids[None])[0]
        attn = base.roberta.encoder.layer[0].attention.self
        k0, v0 = attn.key(hidden), attn.value(hidden)
    model, _ = apply_tuning(base, tuning_cfg("prefix"), seed=0)
    weight = model.prompt_encoder["default"].embedding.weight
    d = model.config.hidden_size
    torch.testing.assert_close(weight[:, :d], k0)
    torch.testing.assert_close(weight[:, d : 2 * d], v0)


def test_prefix_random_init_is_an_option_and_differs():
    real = tuned("tiny-opt", "prefix")[0].prompt_encoder["default"].embedding.weight
    rand = tuned("tiny-opt", "prefix", init="random")[0].prompt_encoder["default"].embedding.weight
    assert real.shape == rand.shape and not torch.allclose(real, rand)
    assert rand.std().item() == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("model_name", MODELS)
def test_prompt_init_copies_vocabulary_embeddings(model_name):
    model, _, named = tuned(model_name, "prompt", seed=3)
    (_, prompt), = named
    vocab = model.get_input_embeddings().weight
    matches = [(vocab == row).all(-1).nonzero().flatten().tolist() for row in prompt]
    assert all(matches), "every virtual token starts as some vocabulary token's embedding"


def test_initializations_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = [p.clone() for _, p in tuned("tiny-opt", "lora", seed=5)[2]]
    assert torch.equal(torch.rand(3), expected)
    b = [p.clone() for _, p in tuned("tiny-opt", "lora", seed=5)[2]]
    c = [p.clone() for _, p in tuned("tiny-opt", "lora", seed=6)[2]]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


# -- scoring through peft -------------------------------------------------------------------------


def naive_masked(model, tok, ex: Example, offset: int):
    ids = tok(ex.context + tok.mask_token)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits
    logp = logits[0, offset + ids.index(tok.mask_token_id)].log_softmax(-1)
    return [logp[tok.convert_tokens_to_ids(c)].item() for c in ex.candidates]


@pytest.mark.parametrize("scheme", ["full", *PEFT_SCHEMES])
def test_masked_lm_scores_at_the_mask_under_every_scheme(scheme):
    """Prompt tuning shifts the hidden sequence by its virtual tokens; the scorer must still read the mask."""
    model, tok, _ = tuned("tiny-roberta", scheme)
    offset = 10 if scheme == "prompt" else 0
    scorer = Scorer(model, tok, "masked")
    pairs = [(e, c) for e, ex in enumerate(MASKED) for c in range(2)]
    with torch.no_grad():
        got = scorer.score_pairs(pairs, MASKED).sums.tolist()  # one right-padded batch
    want = [s for ex in MASKED for s in naive_masked(model, tok, ex, offset)]
    assert got == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("scheme", PEFT_SCHEMES)
@pytest.mark.parametrize("model_name", ["tiny-opt", "tiny-llama"])
def test_causal_scores_in_a_padded_batch_equal_one_at_a_time(model_name, scheme):
    model, tok, _ = tuned(model_name, scheme)
    scorer = Scorer(model, tok, "causal")
    pairs = [(e, c) for e, ex in enumerate(CAUSAL) for c in range(2)]
    with torch.no_grad():
        batched = scorer.score_pairs(pairs, CAUSAL).sums
        single = torch.cat([scorer.score_pairs([p], CAUSAL).sums for p in pairs])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scheme,model_name,virtual", [("full", "tiny-roberta", 0), ("prompt", "tiny-roberta", 10),
                                                      ("prefix", "tiny-roberta", 5), ("prefix", "tiny-opt", 5),
                                                      ("prompt", "tiny-llama", 10), ("lora", "tiny-llama", 0)])
def test_virtual_tokens_are_taken_from_the_length_budget(scheme, model_name, virtual):
    model, tok, _ = tuned(model_name, scheme)
    config = model.config
    context = config.max_position_embeddings - (config.pad_token_id + 1 if model_name == "tiny-roberta" else 0)
    budget = input_budget(model, tuning_cfg(scheme), 10_000)
    assert budget == context - virtual
    assert input_budget(model, tuning_cfg(scheme), 64) == 64
    long = [Example("word " * 600 + "It was", ("a", "b") if model_name == "tiny-roberta" else (" a", " b"), 0)]
    kind = "masked" if model_name == "tiny-roberta" else "causal"
    with torch.no_grad():  # a sequence of exactly the budget still fits the position table
        assert torch.isfinite(Scorer(model, tok, kind, budget).score_pairs([(0, 0)], long).sums).all()


def test_icl_length_budget_is_the_models_context_unless_set():
    model, _ = load_tiny("tiny-opt")
    assert input_budget(model, tuning_cfg("icl"), 64) == 512  # ICL uses the model's whole context
    assert input_budget(model, tuning_cfg("icl", max_length=100), 64) == 100


# -- in-context learning --------------------------------------------------------------------------


def test_icl_prompt_is_k_demonstrations_with_gold_answers_joined_by_blank_lines():
    train = [Example(f"review {i}. It was", (" terrible", " great"), i % 2) for i in range(5)]
    prefix = demonstrations(train, 3, "\n\n")
    assert prefix == "review 0. It was terrible\n\nreview 1. It was great\n\nreview 2. It was terrible\n\n"
    (query,) = with_demonstrations([Example("new one. It was", (" terrible", " great"), 1)], prefix)
    assert query.context == prefix + "new one. It was" and query.candidates == (" terrible", " great")
    assert demonstrations(train, 0) == "" and demonstrations(train, 99).count("\n\n") == 5


def test_icl_left_truncation_keeps_the_query_and_candidate():
    model, tok = load_tiny("tiny-opt")
    query = Example("the query. It was", (" terrible", " great"), 1)
    long = with_demonstrations([query], demonstrations([query] * 32, 32))[0]
    scorer = Scorer(model, tok, "causal", max_length=40)
    seq, n_cand = scorer._causal_sequence(long.context, long.candidates[1])
    assert len(seq) == 40 and tok.decode(seq).endswith("the query. It was great")


def test_icl_run_prefixes_eval_trains_nothing_even_when_a_sweep_sets_steps(small_cfg, tmp_path):
    from zobench.run import run_cell

    cfg = small_cfg("model=tiny-llama", "tuning=icl", "tuning.num_demonstrations=4")  # SMALL sets trainer.steps=4
    summary = run_cell(cfg, tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    assert summary["trainable_params"] == 0 and summary["steps"] == 0 and summary["steps_budget"] == 0
    assert summary["forward_passes"] == 0 and summary["zero_shot_accuracy"] is None
    assert summary["data"]["icl"]["num_demonstrations"] == 4
    assert summary["data"]["icl"]["mode"] == "per_example"  # every query its own demonstrations (MeZO's ICL runs)
    assert 0 <= summary["test_accuracy"] <= 1
    assert compose_cfg("tuning=icl").trainer.steps == 0  # its default, from conf/tuning_trainer/icl.yaml


# -- configs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tuning,optimizer,lr,eps", [
    ("full", "zo_sgd", 1e-6, 1e-3), ("lora", "zo_sgd", 1e-4, 1e-2), ("prefix", "zo_sgd", 1e-2, 1e-1),
    ("lora", "fo_adam", 1e-4, None), ("prefix", "fo_adam", 1e-2, None),
])
def test_per_scheme_defaults_follow_mezos_grid_and_stay_overridable(tuning, optimizer, lr, eps):
    cfg = compose_cfg(f"tuning={tuning}", f"optimizer={optimizer}")
    assert (cfg.optimizer.lr, cfg.optimizer.get("eps")) == (lr, eps)
    assert compose_cfg(f"tuning={tuning}", f"optimizer={optimizer}", "optimizer.lr=3e-3").optimizer.lr == 3e-3


def test_every_pair_config_names_a_scheme_and_an_optimizer_that_exist():
    optimizers = {p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml")}
    for path in (CONF_DIR / "tuning_optimizer").glob("*.yaml"):
        scheme, _, optimizer = path.stem.partition("_")
        assert scheme in SCHEMES and optimizer in optimizers, path.name
    for path in (CONF_DIR / "tuning_trainer").glob("*.yaml"):
        assert path.stem in SCHEMES, path.name
    assert {p.stem for p in (CONF_DIR / "tuning").glob("*.yaml")} == set(SCHEMES)


@pytest.mark.parametrize("overrides,match", [
    ({"name": "lora", "r": 0}, "tuning.r=0"),
    ({"name": "lora", "alpha": -1}, "tuning.alpha"),
    ({"name": "lora", "dropout": 1.0}, "tuning.dropout"),
    ({"name": "lora", "target_modules": "q_proj"}, "tuning.target_modules"),
    ({"name": "prefix", "init": "zeros"}, "real_activations, random"),
    ({"name": "prompt", "num_virtual_tokens": 0}, "tuning.num_virtual_tokens"),
    ({"name": "icl", "num_demonstrations": -1}, "tuning.num_demonstrations"),
    ({"name": "nope"}, "full, lora, prefix, prompt, icl"),
])
def test_bad_tuning_keys_are_named(overrides, match):
    cfg = tuning_cfg(overrides["name"]) if overrides["name"] in SCHEMES else OmegaConf.create({})
    cfg.merge_with(overrides)
    with pytest.raises(ConfigError, match=match):
        validate_tuning(cfg)


@pytest.mark.parametrize("argv,needles", [
    (["model=tiny-roberta", "task=copa"], ["model.family=roberta", "task=copa", "roberta) x (multirc, sst2)",
                                           "copa, multirc, sst2, winogrande"]),
    (["model=roberta-large", "task=winogrande"], ["not supported", "opt"]),
    (["tuning=lora", "tuning.r=0"], ["tuning.r=0"]),
    (["tuning=icl", "data.num_train=0"], ["data.num_train=0", "tuning=icl"]),
])
def test_unsupported_pairs_and_bad_keys_fail_before_loading(argv, needles, native, monkeypatch):
    import zobench.models
    from zobench.cli_check import precheck

    monkeypatch.setattr(zobench.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as exc:
        precheck([f"data.dir={native}", *argv])
    for needle in needles:
        assert needle in str(exc.value.code), str(exc.value.code)
