"""Candidate scoring and the training losses, in one place.

For a causal LM, each (context, candidate) pair is one sequence ``context ++ candidate``; the
score of a candidate is the sum (and the mean) over its tokens of log p(token | prefix). All
pairs of a batch share one right-padded forward, and the LM head runs only at the positions
that predict candidate tokens: a forward pre-hook on the output embedding gathers those hidden
states before the vocabulary projection, so a (batch, length, vocab) logits tensor never
exists. Candidates of one token (SST-2's label words, MultiRC's Yes/No) are all predicted at
the context's last position, so one row holding the bare context scores every such candidate
of an example: half the forward work of a two-way task. Candidates of several tokens (COPA,
WinoGrande) share their context instead (``shared_context``, on by default): the common token
prefix of an example's sequences is forwarded once and each candidate continues from its key/value
cache (``zobench.scoring_shared``, which says what stays on the per-candidate path and why). For a
masked LM (RoBERTa) the context is followed by the mask token and each
candidate must be a single-token verbalizer, scored at the mask position (LM-BFF / MeZO).

Prediction is the argmax of the mean candidate log-prob (MeZO, Malladi et al. 2023).
Training losses:
  lm:             -Σ log p(gold tokens) / #gold tokens   (only the gold pairs are forwarded)
  classification: cross-entropy over candidates, with mean log-probs as logits
  accuracy / f1:  −accuracy / −F1 of the batch's predictions (all candidates scored), a step
                  function of θ with no gradient: ZO optimizers only (MeZO §3.3, Malladi et al.
                  2023). A finite difference of it is often exactly 0 (no prediction flips).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn.functional as F

from zobench import scoring_shared
from zobench.errors import ConfigError
from zobench.tasks.base import Example

LOSSES = ("lm", "classification", "accuracy", "f1")
NON_DIFFERENTIABLE = ("accuracy", "f1")  # −metric of the batch's predictions: ZO optimizers only (zobench.validate)


@dataclasses.dataclass
class PairScores:
    """Flat scores of (example, candidate) pairs: ``sums[j]`` over ``counts[j]`` tokens."""

    sums: torch.Tensor
    counts: torch.Tensor
    example_index: list[int]
    candidate_index: list[int]

    @property
    def means(self) -> torch.Tensor:
        return self.sums / self.counts


class _GatherHead:
    """Forward pre-hook on the output embedding: keep only the hidden states that are scored.

    Prompt tuning prepends virtual tokens, so the hidden sequence can be longer than the
    input; the offset is read off the shapes.
    """

    def __init__(self, batch_idx: torch.Tensor, pos_idx: torch.Tensor, input_len: int):
        self.batch_idx, self.pos_idx, self.input_len = batch_idx, pos_idx, input_len

    def __call__(self, module, args):
        hidden = args[0]
        offset = hidden.shape[1] - self.input_len
        if self.batch_idx.device != hidden.device:  # model.device_map: the head may sit on another GPU than the input
            self.batch_idx, self.pos_idx = self.batch_idx.to(hidden.device), self.pos_idx.to(hidden.device)
        return (hidden[self.batch_idx, self.pos_idx + offset].unsqueeze(0), *args[1:])


class Scorer:
    """Scores Examples with one model; caches tokenizations (dev and eval sets are re-scored).

    ``shared_context`` (``trainer.shared_context``): score the candidates of an example from one forward
    of their shared context where that applies (``zobench.scoring_shared``); ``shared_context_off`` says
    why it does not for this model (None where it does). ``paths`` counts the batches each path scored.
    """

    def __init__(self, model, tokenizer, kind: str = "causal", max_length: int = 512, shared_context: bool = True):
        self.model, self.tokenizer, self.kind, self.max_length = model, tokenizer, kind, max_length
        self._cache: dict[tuple[str, bool], list[int]] = {}
        self.shared_context_off = "trainer.shared_context=false" if not shared_context else \
            scoring_shared.unsupported(model, kind)
        self.shared_context = self.shared_context_off is None
        self.paths = {"shared": 0, "per_candidate": 0}

    # -- tokenization ------------------------------------------------------------------------
    def _ids(self, text: str, special: bool) -> list[int]:
        key = (text, special)
        if key not in self._cache:
            self._cache[key] = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return self._cache[key]

    def _causal_sequence(self, context: str, candidate: str) -> tuple[list[int], int]:
        ctx, cand = self._ids(context, True), self._ids(candidate, False)
        if not cand:
            raise ValueError(f"candidate {candidate!r} tokenizes to nothing")
        keep = max(self.max_length - len(cand), 1)  # truncate the context from the left ...
        if len(ctx) > keep and keep > 1 and self._starts_with_bos(ctx):
            ctx = ctx[:1] + ctx[len(ctx) - keep + 1 :]  # ... keeping BOS (MeZO large_models/utils.py encode_prompt)
        else:
            ctx = ctx[-keep:]
        return ctx + cand, len(cand)

    def _starts_with_bos(self, ids: list[int]) -> bool:
        bos = self.tokenizer.bos_token_id
        return bos is not None and bool(ids) and ids[0] == bos

    def _verbalizer_id(self, candidate: str) -> int:
        ids = self._ids(candidate, False)
        if len(ids) != 1:
            raise ConfigError(
                f"masked-LM scoring needs single-token verbalizers; {candidate!r} is {len(ids)} tokens"
            )
        return ids[0]

    def _masked_sequence(self, example: Example) -> tuple[list[int], int]:
        mask = self.tokenizer.mask_token
        sep = " " if example.candidates[0].startswith(" ") else ""
        ids = self._ids(example.context + sep + mask + example.suffix, True)
        if self.tokenizer.eos_token_id is not None and ids[-1] == self.tokenizer.eos_token_id:
            body, tail = ids[:-1], ids[-1:]
        else:
            body, tail = ids, []
        body = body[-(self.max_length - len(tail)) :]
        ids = body + tail
        return ids, ids.index(self.tokenizer.mask_token_id)

    # -- forward -----------------------------------------------------------------------------
    def _forward_gathered(self, seqs: Sequence[list[int]], batch_idx, pos_idx) -> torch.Tensor:
        """Logits (N, vocab) at the requested (row, position) pairs of a right-padded batch."""
        device = next(self.model.parameters()).device
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        head = self.model.get_output_embeddings()
        hook = head.register_forward_pre_hook(
            _GatherHead(torch.tensor(batch_idx, device=device), torch.tensor(pos_idx, device=device), width)
        )
        try:
            kwargs = {"use_cache": False} if self.kind == "causal" else {}
            out = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
        finally:
            hook.remove()
        return out.logits.reshape(len(batch_idx), -1)

    def score_pairs(self, pairs: Sequence[tuple[int, int]], examples: Sequence[Example]) -> PairScores:
        """Scores of the (example index, candidate index) ``pairs``, in one forward."""
        if self.kind == "masked":
            return self._score_masked(pairs, examples)
        built = [self._causal_sequence(examples[e].context, examples[e].candidates[c]) for e, c in pairs]
        if self.shared_context:
            plan = scoring_shared.plan([s for s, _ in built], [n for _, n in built], [e for e, _ in pairs])
            if plan is not None and scoring_shared.fits_window(self.model, plan):
                self.paths["shared"] += 1
                pad = self.tokenizer.pad_token_id or 0
                logits = scoring_shared.forward(self.model, plan, pad, _GatherHead).float()
                return _pair_scores(logits, plan.targets, plan.owner, pairs)
        self.paths["per_candidate"] += 1
        seqs, batch_idx, pos_idx, targets, owner = [], [], [], [], []
        context_row: dict[int, int] = {}  # example -> the row holding its bare context
        for j, (seq, n_cand) in enumerate(built):
            e = pairs[j][0]
            if n_cand == 1:  # one token: predicted at the context's last position, whatever the candidate
                if e not in context_row:
                    context_row[e] = len(seqs)
                    seqs.append(seq[:-1])
                row = context_row[e]
            else:
                row = len(seqs)
                seqs.append(seq)
            for t in range(len(seq) - n_cand, len(seq)):  # position t-1 predicts token t
                batch_idx.append(row), pos_idx.append(t - 1), targets.append(seq[t]), owner.append(j)
        logits = self._forward_gathered(seqs, batch_idx, pos_idx).float()
        return _pair_scores(logits, targets, owner, pairs)

    def _score_masked(self, pairs, examples) -> PairScores:
        rows = sorted({e for e, _ in pairs})
        row_of = {e: r for r, e in enumerate(rows)}
        seqs, mask_pos = zip(*(self._masked_sequence(examples[e]) for e in rows))
        logits = self._forward_gathered(seqs, list(range(len(rows))), list(mask_pos)).float()
        logp = logits.log_softmax(-1)
        device = logp.device
        cand_ids = torch.tensor([self._verbalizer_id(examples[e].candidates[c]) for e, c in pairs], device=device)
        sums = logp[torch.tensor([row_of[e] for e, _ in pairs], device=device), cand_ids]
        return PairScores(sums, torch.ones_like(sums), [e for e, _ in pairs], [c for _, c in pairs])

    # -- what callers use ----------------------------------------------------------------------
    def gold_tokens(self, examples: Sequence[Example]) -> int:
        """How many tokens the ``lm`` loss averages over: the gold candidates' tokens (one per example
        for masked LMs). Micro-batches of the ``lm`` loss are weighted by it."""
        if self.kind == "masked":
            return len(examples)
        return sum(len(self._ids(ex.candidates[ex.gold], False)) for ex in examples)

    def loss(self, examples: Sequence[Example], loss: str = "lm") -> torch.Tensor:
        """Training loss on a batch (differentiable when grad is enabled)."""
        if loss == "lm":
            scores = self.score_pairs([(i, ex.gold) for i, ex in enumerate(examples)], examples)
            return -scores.sums.sum() / scores.counts.sum()
        if loss == "classification":
            pairs = [(i, c) for i, ex in enumerate(examples) for c in range(len(ex.candidates))]
            scores = self.score_pairs(pairs, examples)
            logits = _per_example(scores, examples)
            gold = torch.tensor([ex.gold for ex in examples], device=logits.device)
            return F.cross_entropy(logits, gold)
        if loss in NON_DIFFERENTIABLE:  # MeZO §3.3: minimize −accuracy / −F1 of the batch's predictions
            pairs = [(i, c) for i, ex in enumerate(examples) for c in range(len(ex.candidates))]
            predictions = _per_example(self.score_pairs(pairs, examples), examples).argmax(-1).tolist()
            return torch.tensor(-metrics(predictions, examples)[loss], dtype=torch.float64)
        raise ConfigError(f"trainer.loss={loss!r} is not allowed: choose one of {', '.join(LOSSES)}.")

    @torch.no_grad()
    def predict(self, examples: Sequence[Example], batch_size: int = 32) -> list[int]:
        """argmax of mean candidate log-prob, batched over all pairs, longest first."""
        return [max(range(len(m)), key=m.__getitem__) for m in self.candidate_scores(examples, batch_size)]

    @torch.no_grad()
    def loss_over(self, examples: Sequence[Example], loss: str, batch_size: int = 32) -> float:
        """The training loss over a whole set (dev), in batches of ``batch_size`` examples: the example mean for
        ``classification`` / −metric, the gold-token mean for ``lm`` (as one batch would give). MeZO's model
        selection reads this (HF Trainer's eval_loss, large_models/trainer.py via load_best_model_at_end)."""
        if loss in NON_DIFFERENTIABLE:  # −metric of the whole set's predictions, scored in batches
            return -metrics(self.predict(examples, batch_size), examples)[loss]
        total = weight = 0.0
        for start in range(0, len(examples), batch_size):
            part = examples[start : start + batch_size]
            w = self.gold_tokens(part) if loss == "lm" else len(part)
            total += float(self.loss(part, loss)) * w
            weight += w
        return total / weight

    @torch.no_grad()
    def candidate_scores(self, examples: Sequence[Example], batch_size: int = 32) -> list[list[float]]:
        """Mean log-prob of every candidate of every example (the prediction is the argmax), batched over all
        pairs, longest first (with ``shared_context`` and candidates of several tokens: whole examples, longest
        first, so that an example's candidates share their context in one batch)."""
        if self.shared_context and any(len(self._ids(c, False)) > 1 for ex in examples for c in ex.candidates):
            chunks = self._example_chunks(examples, batch_size)  # an example's candidates in one batch, to share
        else:
            pairs = [(i, c) for i, ex in enumerate(examples) for c in range(len(ex.candidates))]
            if self.kind == "causal":  # longest first: an out-of-memory shows in the first batch
                pairs.sort(key=lambda p: -len(self._causal_sequence(examples[p[0]].context, examples[p[0]].candidates[p[1]])[0]))
            else:
                pairs.sort(key=lambda p: -len(self._ids(examples[p[0]].context, True)))
            chunks = [pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size)]
        means = [[float("-inf")] * len(ex.candidates) for ex in examples]
        for chunk in chunks:
            scores = self.score_pairs(chunk, examples)
            for (e, c), m in zip(chunk, scores.means.tolist()):
                means[e][c] = m
        return means

    def _example_chunks(self, examples: Sequence[Example], batch_size: int) -> list[list[tuple[int, int]]]:
        """Batches of at most ``batch_size`` pairs that keep every example's candidates together (an example
        with more candidates than that is split), examples longest first."""
        def longest(i: int) -> int:
            ex = examples[i]
            return max(len(self._causal_sequence(ex.context, c)[0]) for c in ex.candidates)

        chunks: list[list[tuple[int, int]]] = []
        current: list[tuple[int, int]] = []
        for i in sorted(range(len(examples)), key=lambda i: -longest(i)):
            own = [(i, c) for c in range(len(examples[i].candidates))]
            if current and len(current) + len(own) > batch_size:
                chunks.append(current)
                current = []
            while len(own) > batch_size:
                chunks.append(own[:batch_size])
                own = own[batch_size:]
            current += own
        if current:
            chunks.append(current)
        return chunks


def _pair_scores(logits: torch.Tensor, targets: list[int], owner: list[int], pairs) -> PairScores:
    """Sum and count of the log-probs of ``targets`` under ``logits`` (N, vocab), per owning pair."""
    device = logits.device
    token_logp = logits.log_softmax(-1).gather(1, torch.tensor(targets, device=device)[:, None])[:, 0]
    owner_t = torch.tensor(owner, device=device)
    sums = torch.zeros(len(pairs), device=device, dtype=token_logp.dtype).index_add(0, owner_t, token_logp)
    counts = torch.bincount(owner_t, minlength=len(pairs)).to(token_logp.dtype)
    return PairScores(sums, counts, [e for e, _ in pairs], [c for _, c in pairs])


def _per_example(scores: PairScores, examples: Sequence[Example]) -> torch.Tensor:
    width = max(len(ex.candidates) for ex in examples)
    logits = torch.full((len(examples), width), float("-inf"), device=scores.sums.device)
    e = torch.tensor(scores.example_index, device=logits.device)
    c = torch.tensor(scores.candidate_index, device=logits.device)
    return logits.index_put((e, c), scores.means)


def metrics(predictions: Sequence[int], examples: Sequence[Example]) -> dict[str, float]:
    """Accuracy, and binary F1 with candidate 1 as the positive class (MultiRC's "Yes")."""
    gold = [ex.gold for ex in examples]
    n = max(len(gold), 1)
    accuracy = sum(p == g for p, g in zip(predictions, gold)) / n
    tp = sum(p == 1 and g == 1 for p, g in zip(predictions, gold))
    fp = sum(p == 1 and g != 1 for p, g in zip(predictions, gold))
    fn = sum(p != 1 and g == 1 for p, g in zip(predictions, gold))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"accuracy": accuracy, "f1": f1}
