"""Batched, gathered scoring agrees with a naive per-candidate full-logits computation."""
import pytest
import torch

from tests.tiny import load_tiny
from zobench.scoring import Scorer, metrics
from zobench.tasks.base import Example

EXAMPLES = [
    Example("a gripping, funny film. It was", (" terrible", " great"), 1),
    Example("dull. It was", (" terrible", " great"), 0),
    Example("The man broke his toe so", (" he dropped a hammer on his foot.", " he went home."), 0),
    Example("Question: is it?\n", ("No", "Yes"), 1),
]


def naive_scores(model, tok, ex: Example):
    """One forward per candidate, full logits over the whole sequence."""
    out = []
    for cand in ex.candidates:
        ctx = tok(ex.context)["input_ids"]
        ids = ctx + tok(cand, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        token_logp = [logp[t - 1, ids[t]].item() for t in range(len(ctx), len(ids))]
        out.append((sum(token_logp), sum(token_logp) / len(token_logp)))
    return out


@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama"])
def test_batched_scores_match_naive(name):
    model, tok = load_tiny(name)
    scorer = Scorer(model, tok, "causal", max_length=512)
    pairs = [(e, c) for e, ex in enumerate(EXAMPLES) for c in range(len(ex.candidates))]
    with torch.no_grad():
        scores = scorer.score_pairs(pairs, EXAMPLES)
    for j, (e, c) in enumerate(pairs):
        s, m = naive_scores(model, tok, EXAMPLES[e])[c]
        assert scores.sums[j].item() == pytest.approx(s, abs=1e-4)
        assert scores.means[j].item() == pytest.approx(m, abs=1e-5)


@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama"])
def test_predict_is_argmax_of_mean_logprob_in_any_batching(name):
    model, tok = load_tiny(name)
    scorer = Scorer(model, tok, "causal")
    expected = [max(range(2), key=lambda c: naive_scores(model, tok, ex)[c][1]) for ex in EXAMPLES]
    assert scorer.predict(EXAMPLES, batch_size=3) == expected
    assert scorer.predict(EXAMPLES, batch_size=100) == expected


def test_lm_loss_is_mean_nll_of_gold_tokens():
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    total, count = 0.0, 0
    for ex in EXAMPLES:
        s, m = naive_scores(model, tok, ex)[ex.gold]
        total, count = total + s, count + round(s / m)
    with torch.no_grad():
        assert scorer.loss(EXAMPLES, "lm").item() == pytest.approx(-total / count, abs=1e-4)


def test_classification_loss_is_cross_entropy_over_mean_logprobs():
    model, tok = load_tiny("tiny-llama")
    scorer = Scorer(model, tok, "causal")
    logits = torch.tensor([[m for _, m in naive_scores(model, tok, ex)] for ex in EXAMPLES])
    gold = torch.tensor([ex.gold for ex in EXAMPLES])
    with torch.no_grad():
        got = scorer.loss(EXAMPLES, "classification").item()
    assert got == pytest.approx(torch.nn.functional.cross_entropy(logits, gold).item(), abs=1e-4)


def test_gradients_flow_through_gathered_head():
    model, tok = load_tiny("tiny-opt")
    Scorer(model, tok, "causal").loss(EXAMPLES, "lm").backward()
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0


def test_masked_lm_scores_verbalizer_at_mask():
    model, tok = load_tiny("tiny-roberta")
    ex = Example("a gripping film. It was", (" a", " b"), 1)  # byte tokenizer: " a" is 2 tokens
    scorer = Scorer(model, tok, "masked")
    single = Example("a gripping film. It was", ("a", "b"), 1)
    ids = tok("a gripping film. It was" + tok.mask_token)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0, ids.index(tok.mask_token_id)].log_softmax(-1)
        scores = scorer.score_pairs([(0, 0), (0, 1)], [single])
    want = [logp[tok.convert_tokens_to_ids(c)].item() for c in ("a", "b")]
    assert scores.sums.tolist() == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="single-token"):
        scorer.score_pairs([(0, 0)], [ex])


def test_masked_lm_reads_the_text_after_the_mask():
    """MeZO's RoBERTa SST-2 template is "<sentence> It was <mask>.": the suffix follows the mask."""
    from zobench.tasks.sst2 import render

    model, tok = load_tiny("tiny-roberta")
    scorer = Scorer(model, tok, "masked")
    ex = render({"sentence": "a gripping film ", "label": 1}, "mezo")
    assert ex.suffix == "." and render({"sentence": "x", "label": 0}, "none").suffix == ""
    ids, at = scorer._masked_sequence(ex)
    assert ids == tok(ex.context + " " + tok.mask_token + ".")["input_ids"]
    assert tok.convert_ids_to_tokens(ids[at + 1]) == "."  # the mask is no longer the last word


def test_metrics_accuracy_and_f1():
    exs = [Example("c", ("No", "Yes"), g) for g in (1, 1, 0, 0)]
    m = metrics([1, 0, 1, 0], exs)
    assert m["accuracy"] == 0.5
    assert m["f1"] == pytest.approx(0.5)  # tp=1 fp=1 fn=1


def test_single_token_candidates_share_one_context_row():
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    rows = []
    hook = model.register_forward_pre_hook(lambda m, a, k: rows.append(k["input_ids"].shape[0]), with_kwargs=True)
    pairs = [(e, c) for e in range(3) for c in range(2)]  # examples 0, 1: one-token label words; 2: COPA-like
    with torch.no_grad():
        scores = scorer.score_pairs(pairs, EXAMPLES)
    hook.remove()
    assert rows == [4]  # one row each for examples 0 and 1, one per candidate for example 2
    for j, (e, c) in enumerate(pairs):
        assert scores.sums[j].item() == pytest.approx(naive_scores(model, tok, EXAMPLES[e])[c][0], abs=1e-4)
