"""Shared-context scoring (zobench/scoring_shared.py) gives the per-candidate path's scores and gradients.

Every check compares ``Scorer(..., shared_context=True)`` with ``shared_context=False`` (today's path,
itself checked against a naive full-logits loop in tests/test_scoring.py) on the tiny models of each
causal family, under every tuning scheme that changes the forward (LoRA, prefix, prompt).
"""
from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

from tests.tiny import load_tiny
from zobench import CONF_DIR, scoring_shared
from zobench.models import build_tiny_model, build_tiny_tokenizer
from zobench.scoring import Scorer
from zobench.tasks import copa, winogrande
from zobench.tasks.base import Example
from zobench.tuning import apply_tuning
from zobench.tuning.icl import demonstrations, with_demonstrations

EXAMPLES = [
    copa.render({"premise": "My body cast a shadow over the grass.", "choices": ("The sun was rising.", "The grass was cut."),
                 "question": "cause", "label": 0}, "mezo"),
    copa.render({"premise": "The man broke his toe.", "choices": ("He dropped a hammer on his foot.", "He went home."),
                 "question": "cause", "label": 0}, "mezo"),
    # WinoGrande (MeZO / ZO-Bench partial scoring): the option is substituted into the sentence
    winogrande.render({"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
                       "options": ("Sarah", "Maria"), "label": 0}, "mezo"),
    winogrande.render({"sentence": "The trophy doesn't fit into the brown suitcase because the _ is too large.",
                       "options": ("the trophy", "the suitcase"), "label": 0}, "mezo"),  # options share a word
    Example("Pick one:", (" the red ball", " the red box", " the blue one", " none"), 2),  # four candidates
    Example("a gripping, funny film. It was", (" terrible", " great"), 1),  # one-token label words
]
SCHEMES = ["full", "lora", "prefix", "prompt"]


def tiny_mistral(sliding_window=None):
    tok = build_tiny_tokenizer()
    cfg = OmegaConf.create({"kind": "causal", "tiny": {
        "model_type": "mistral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "sliding_window": sliding_window}})
    return build_tiny_model(cfg, tok, 0).eval(), tok


def model_for(name: str, scheme: str = "full"):
    model, tok = tiny_mistral() if name == "tiny-mistral" else load_tiny(name)
    if scheme != "full":
        model, _ = apply_tuning(model, OmegaConf.load(CONF_DIR / "tuning" / f"{scheme}.yaml"), 0)
    return model.eval(), tok


def both(model, tok, max_length=512):
    return (Scorer(model, tok, "causal", max_length, shared_context=True),
            Scorer(model, tok, "causal", max_length, shared_context=False))


def all_pairs(examples):
    return [(e, c) for e, ex in enumerate(examples) for c in range(len(ex.candidates))]


def assert_same_scores(got, want):
    """Within 1e-5 per log-probability: |Δ sum| <= 1e-5 · tokens, |Δ mean| <= 1e-5."""
    assert torch.equal(got.counts, want.counts)
    assert ((got.sums - want.sums).abs() <= 1e-5 * want.counts).all(), (got.sums - want.sums).abs().max()
    assert ((got.means - want.means).abs() <= 1e-5).all()


# -- the plan, without a model --------------------------------------------------------------------------


def test_plan_rows_reproduce_every_candidate_sequence():
    """Each scored token sees exactly its own sequence's earlier tokens, at their positions."""
    rng, checked = random.Random(0), 0
    for _ in range(200):
        seqs, n_cands, example_of = [], [], []
        for e in range(rng.randint(1, 4)):
            context = [1] + [rng.randrange(3, 9) for _ in range(rng.randint(0, 6))]
            for _ in range(rng.randint(1, 4)):
                cand = [rng.randrange(3, 9) for _ in range(rng.choice([1, 1, 2, 3, 5]))]
                seqs.append(context + cand), n_cands.append(len(cand)), example_of.append(e)
        p = scoring_shared.plan(seqs, n_cands, example_of, min_saving=-1.0)  # never refuse: check every layout
        if p is None:  # no example with two tails to share a context: nothing to lay out
            continue
        checked += 1
        scored = set()
        for g, i, target, j in zip(p.batch_idx, p.pos_idx, p.targets, p.owner):
            seg, row, pos = p.segments[g], p.tokens[g], p.positions[g]
            visible = [k for k in range(i + 1) if seg[k] == 0 or seg[k] == seg[i]]
            t = pos[i] + 1  # the index in seqs[j] of the token predicted here
            assert [row[k] for k in visible] == seqs[j][:t] and [pos[k] for k in visible] == list(range(t))
            assert target == seqs[j][t]
            scored.add((j, t))
        assert scored == {(j, t) for j, s in enumerate(seqs) for t in range(len(s) - n_cands[j], len(s))}
    assert checked > 100


def test_plan_falls_back_where_sharing_gains_nothing():
    ctx = [1, 5, 6, 7, 8, 9, 10, 11]
    two = [ctx + [3, 4, 5, 6], ctx + [4, 4, 6, 7]]
    assert scoring_shared.plan(two, [4, 4], [0, 0]) is not None
    assert scoring_shared.plan(two, [4, 4], [0, 1]) is None  # one candidate per example (the lm loss)
    assert scoring_shared.plan([ctx + [3], ctx + [4]], [1, 1], [0, 0]) is None  # label words already share a row
    short = [[1, 3, 4, 5, 6, 7, 8], [1, 4, 4, 5, 6, 7, 9]]  # hardly any context: the saving is under MIN_SAVING
    assert scoring_shared.plan(short, [6, 6], [0, 0]) is None
    assert scoring_shared.plan(short, [6, 6], [0, 0], min_saving=0.0) is not None
    assert scoring_shared.plan([[3, 4], [5, 6]], [2, 2], [0, 0]) is None  # nothing before the candidate


# -- the same scores as the per-candidate path ---------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama", "tiny-mistral"])
def test_shared_scores_equal_per_candidate_scores(name, scheme):
    model, tok = model_for(name, scheme)
    shared, single = both(model, tok)
    assert shared.shared_context and shared.shared_context_off is None
    pairs = all_pairs(EXAMPLES)
    with torch.no_grad():
        got, want = shared.score_pairs(pairs, EXAMPLES), single.score_pairs(pairs, EXAMPLES)
    assert shared.paths == {"shared": 1, "per_candidate": 0} and single.paths == {"shared": 0, "per_candidate": 1}
    assert_same_scores(got, want)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama"])
def test_classification_loss_gradients_match(name, scheme):
    """The training loss stays differentiable: the same gradient as the per-candidate path, for FO optimizers."""
    model, tok = model_for(name, scheme)
    shared, single = both(model, tok)
    params = [p for p in model.parameters() if p.requires_grad]
    loss_s, loss_p = shared.loss(EXAMPLES, "classification"), single.loss(EXAMPLES, "classification")
    assert shared.paths["shared"] == 1
    assert abs(loss_s.item() - loss_p.item()) <= 1e-6
    for gs, gp in zip(torch.autograd.grad(loss_s, params), torch.autograd.grad(loss_p, params)):
        torch.testing.assert_close(gs, gp, atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama"])
def test_predictions_equal_in_any_batching(name):
    model, tok = model_for(name)
    shared, single = both(model, tok)
    want = single.candidate_scores(EXAMPLES, batch_size=32)
    for batch_size in (1, 3, 4, 100):
        got = shared.candidate_scores(EXAMPLES, batch_size)
        assert [max(range(len(m)), key=m.__getitem__) for m in got] == single.predict(EXAMPLES, batch_size)
        for g, w in zip(got, want):
            assert g == pytest.approx(w, abs=1e-5)
        for chunk in shared._example_chunks(EXAMPLES, batch_size):  # an example's candidates stay together
            assert len(chunk) <= batch_size or len({e for e, _ in chunk}) == 1
            for e in {e for e, _ in chunk}:
                assert len(EXAMPLES[e].candidates) > batch_size or sum(p[0] == e for p in chunk) == len(EXAMPLES[e].candidates)
    assert shared.paths["shared"] > 0


def test_eager_attention_takes_an_additive_mask():
    model, tok = model_for("tiny-llama")
    model.set_attn_implementation("eager")
    shared, single = both(model, tok)
    with torch.no_grad():
        assert_same_scores(shared.score_pairs(all_pairs(EXAMPLES), EXAMPLES), single.score_pairs(all_pairs(EXAMPLES), EXAMPLES))
    assert shared.paths["shared"] == 1


def test_long_in_context_prompts_share_their_demonstrations():
    """ICL: 8 demonstrations before every query, the candidates' common context is most of the sequence."""
    model, tok = model_for("tiny-llama")
    prefix = demonstrations(EXAMPLES[:4], 4, "\n\n")
    queries = with_demonstrations(EXAMPLES[:4], prefix)
    shared, single = both(model, tok)
    pairs = all_pairs(queries)
    built = [shared._causal_sequence(queries[e].context, queries[e].candidates[c]) for e, c in pairs]
    p = scoring_shared.plan([s for s, _ in built], [n for _, n in built], [e for e, _ in pairs])
    assert p.padded_tokens < 0.6 * p.per_candidate_tokens
    with torch.no_grad():
        assert_same_scores(shared.score_pairs(pairs, queries), single.score_pairs(pairs, queries))


# -- left truncation, padding side --------------------------------------------------------------------


def test_truncation_that_cuts_contexts_differently_falls_back():
    """Candidates of different lengths leave different context tokens after the left cut (BOS kept): the
    sequences share only BOS, so the batch stays on the per-candidate path, bit for bit."""
    model, tok = model_for("tiny-llama")
    long = [Example("word " * 60 + "so", (" it rained.", " the long dry summer ended at last."), 0)]
    shared, single = both(model, tok, max_length=48)
    seqs = [shared._causal_sequence(long[0].context, c)[0] for c in long[0].candidates]
    assert len(seqs[0]) == len(seqs[1]) == 48 and scoring_shared.common_prefix(seqs) <= 2
    with torch.no_grad():
        got, want = shared.score_pairs(all_pairs(long), long), single.score_pairs(all_pairs(long), long)
    assert shared.paths == {"shared": 0, "per_candidate": 1}
    assert torch.equal(got.sums, want.sums)


def test_truncation_that_cuts_contexts_alike_still_shares():
    model, tok = model_for("tiny-opt")
    long = [Example("word " * 60 + "so", (" it rained.", " it snowed."), 0)]  # same length: the same cut
    shared, single = both(model, tok, max_length=48)
    with torch.no_grad():
        got, want = shared.score_pairs(all_pairs(long), long), single.score_pairs(all_pairs(long), long)
    assert shared.paths == {"shared": 1, "per_candidate": 0}
    assert_same_scores(got, want)


def test_tokenizer_padding_side_does_not_matter():
    """The scorer pads its rows itself (right, with explicit positions), whatever the tokenizer's side."""
    model, tok = model_for("tiny-llama")
    with torch.no_grad():
        right = Scorer(model, tok, "causal").score_pairs(all_pairs(EXAMPLES), EXAMPLES).sums
        tok.padding_side = "left"
        left = Scorer(model, tok, "causal").score_pairs(all_pairs(EXAMPLES), EXAMPLES).sums
    assert torch.equal(left, right)


# -- what stays on the per-candidate path ----------------------------------------------------------------


def test_the_switch_turns_sharing_off():
    from tests.conftest import compose_cfg

    assert compose_cfg().trainer.shared_context is True
    model, tok = model_for("tiny-opt")
    off = Scorer(model, tok, "causal", shared_context=False)
    with torch.no_grad():
        off.score_pairs(all_pairs(EXAMPLES), EXAMPLES)
        off.candidate_scores(EXAMPLES, 4)
    assert off.paths["shared"] == 0 and off.shared_context_off == "trainer.shared_context=false"


def test_masked_lms_and_unchecked_models_stay_on_the_per_candidate_path():
    from types import SimpleNamespace

    model, tok = load_tiny("tiny-roberta")
    scorer = Scorer(model, tok, "masked")
    assert not scorer.shared_context and "masked" in scorer.shared_context_off
    gpt2 = SimpleNamespace(config=SimpleNamespace(model_type="gpt2", _attn_implementation="sdpa"))
    assert "gpt2" in scoring_shared.unsupported(gpt2, "causal")
    flash = SimpleNamespace(config=SimpleNamespace(model_type="llama", _attn_implementation="flash_attention_2"))
    assert "flash_attention_2" in scoring_shared.unsupported(flash, "causal")


def test_a_sliding_window_shorter_than_the_sequences_falls_back():
    model, tok = tiny_mistral(sliding_window=16)  # every sequence here is longer than 16 tokens
    shared, single = both(model, tok)
    with torch.no_grad():
        got, want = shared.score_pairs(all_pairs(EXAMPLES), EXAMPLES), single.score_pairs(all_pairs(EXAMPLES), EXAMPLES)
    assert shared.paths == {"shared": 0, "per_candidate": 1}
    assert torch.equal(got.sums, want.sums)
