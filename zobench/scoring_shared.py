"""Scoring that shares the context: an example's candidates are packed after one copy of their common prefix.

COPA, WinoGrande (and MultiRC-style tasks) score several candidates per context. The per-candidate path
(``zobench.scoring.Scorer``) forwards ``context ++ candidate`` once per candidate, so the context is
computed once per candidate. Here each example is one row::

    [ shared prefix less its last token | tail of candidate 1 | tail of candidate 2 | ... ]

where a candidate's tail is the rest of its full sequence, starting with the shared prefix's last token
(which predicts the first token that differs). A tree attention mask lets each token see the shared
part and the earlier tokens of its own tail only, and explicit ``position_ids`` give every token its
position in its own full sequence, so every scored token sees exactly the keys, values and positions it
sees on the per-candidate path; one forward, rows right-padded (a padding token sees only itself). The
LM head runs only at the positions that predict candidate tokens (``zobench.scoring._GatherHead``).
Single-token candidates of one example (label words) share one tail, as they share one row on the
per-candidate path.

The shared prefix is computed from the token ids of the sequences the per-candidate path would score
(after its left truncation to ``max_length``, BOS kept), never from the text: whatever the template or
the truncation did, a token is shared only where it is the same token at the same position in every
candidate's sequence (WinoGrande's MeZO/ZO-Bench template substitutes the option into the sentence, so
its candidates share the text before the blank and whatever tokens the options begin with; a context
truncated differently for candidates of different lengths shares almost nothing). It is capped so that
every position that predicts a candidate token lies in a tail.

peft: LoRA lives in the base model's modules, nothing to do. Prefix tuning's keys and values
(``get_prompt``: a cache of ``num_virtual_tokens`` slots) and prompt tuning's virtual embeddings are
taken from the peft model and passed to the base model with a mask and positions that include them,
as peft's own forward does (it cannot be called with a 4-D mask: it concatenates a 2-D mask of ones).

``plan`` returns None, and the caller keeps the per-candidate path, where sharing gains nothing: no
example with two or more tails in the batch (the ``lm`` loss forwards only gold candidates; SST-2 and
MultiRC's single-token candidates already share one row) or fewer than ``MIN_SAVING`` of the
per-candidate path's padded tokens saved. ``unsupported`` says why a model stays on the per-candidate
path for good: masked LMs (one verbalizer at the mask, no candidate continuation), architectures not in
``MODEL_TYPES`` (not checked against the per-candidate path), attention implementations other than
sdpa and eager (a custom 4-D mask), peft methods other than LoRA, prefix and prompt tuning.
``fits_window``: a sliding-window model (Mistral) stays on the per-candidate path for a batch whose
sequences reach its window (the packed mask has no window).

Exactness: the same tokens, positions and visible keys as the per-candidate path; the scores differ
from it only by float summation order (other row lengths, masked key slots). In fp32 on the tiny
OPT / LLaMA / Mistral models under full, LoRA, prefix and prompt tuning, 166 of 168 candidate sums are
bit for bit the same and the other two differ by 7.6e-6 (one float32 step of a sum near -170); the
classification loss's gradients differ by <= 1.5e-8 (largest entry 0.2). On SmolLM2-135M, COPA and
WinoGrande dev: mean log-probs within 6e-6, the size of the per-candidate path's own batch-composition
noise, the same predictions (tests/test_scoring_shared.py checks 1e-5 per token).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Sequence

import torch

# Architectures whose shared path is checked against the per-candidate path (tests/test_scoring_shared.py).
MODEL_TYPES = ("llama", "opt", "mistral")
PEFT_TYPES = ("LORA", "PREFIX_TUNING", "PROMPT_TUNING")
ATTENTION = ("sdpa", "eager")  # implementations that take a custom 4-D mask (bool for sdpa, additive for eager)
MIN_SAVING = 0.1  # share only when at least this fraction of the per-candidate path's padded tokens is saved


@dataclasses.dataclass
class SharedPlan:
    """One packed forward for a batch of (example, candidate) pairs.

    Row g holds ``tokens[g]``; ``positions[g]`` their positions in their own full sequences and
    ``segments[g]`` 0 for the shared prefix, k >= 1 for the k-th tail. Per scored token i: row
    ``batch_idx[i]``, index ``pos_idx[i]`` in it, target id ``targets[i]``, pair ``owner[i]``.
    """

    tokens: list[list[int]]
    positions: list[list[int]]
    segments: list[list[int]]
    batch_idx: list[int]
    pos_idx: list[int]
    targets: list[int]
    owner: list[int]
    padded_tokens: int  # what this forward processes
    per_candidate_tokens: int  # what the per-candidate path processes for the same pairs
    longest_sequence: int  # the longest full sequence (per-candidate path)


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token-id sequences."""
    low, high = min(seqs), max(seqs)  # lexicographic extremes: what they share, all share
    for i, (a, b) in enumerate(zip(low, high)):
        if a != b:
            return i
    return len(low)


def per_candidate_rows(seqs: Sequence[Sequence[int]], n_cands: Sequence[int], example_of: Sequence[int]) -> list[int]:
    """Row lengths of the per-candidate path (``Scorer.score_pairs``): one row per multi-token candidate, one
    row of the bare context per example for its single-token candidates."""
    lengths, single = [], set()
    for seq, n, e in zip(seqs, n_cands, example_of):
        if n == 1:
            if e not in single:
                single.add(e)
                lengths.append(len(seq) - 1)
        else:
            lengths.append(len(seq))
    return lengths


def plan(seqs: Sequence[Sequence[int]], n_cands: Sequence[int], example_of: Sequence[int],
         min_saving: float = MIN_SAVING) -> SharedPlan | None:
    """The packed plan for pairs whose full sequences are ``seqs`` (``n_cands[j]`` candidate tokens at the
    end of ``seqs[j]``, pair j of example ``example_of[j]``), or None where sharing gains nothing."""
    if any(len(s) - n < 1 for s, n in zip(seqs, n_cands)):  # a candidate token with no position to predict it
        return None
    groups: dict[int, list[int]] = {}
    for j, e in enumerate(example_of):
        groups.setdefault(e, []).append(j)
    tokens, positions, segments = [], [], []
    batch_idx, pos_idx, targets, owner = [], [], [], []
    shares = False
    for g, members in enumerate(groups.values()):
        member_seqs = [seqs[j] for j in members]
        # shared: the common prefix less its last token, and never a position that predicts a candidate token
        shared = min(common_prefix(member_seqs), min(len(seqs[j]) - n_cands[j] for j in members)) - 1
        row, pos, seg = list(member_seqs[0][:shared]), list(range(shared)), [0] * shared
        tail_start: dict[tuple[int, ...], int] = {}  # single-token candidates: one tail for their common context
        n_tails = 0
        for j in members:
            seq, n = seqs[j], n_cands[j]
            tail = tuple(seq[shared : len(seq) - 1] if n == 1 else seq[shared:])
            if n == 1 and tail in tail_start:
                start = tail_start[tail]
            else:
                start, n_tails = len(row), n_tails + 1
                seg += [n_tails] * len(tail)
                row += tail
                pos += range(shared, shared + len(tail))
                if n == 1:
                    tail_start[tail] = start
            for t in range(len(seq) - n, len(seq)):  # position t-1 predicts token t
                batch_idx.append(g), pos_idx.append(start + t - 1 - shared), targets.append(seq[t]), owner.append(j)
        shares = shares or n_tails > 1
        tokens.append(row), positions.append(pos), segments.append(seg)
    if not shares:
        return None
    old = per_candidate_rows(seqs, n_cands, example_of)
    per_candidate_tokens = len(old) * max(old)
    padded_tokens = len(tokens) * max(map(len, tokens))
    if padded_tokens > (1 - min_saving) * per_candidate_tokens:
        return None
    return SharedPlan(tokens, positions, segments, batch_idx, pos_idx, targets, owner, padded_tokens,
                      per_candidate_tokens, max(map(len, seqs)))


# -- the model side ---------------------------------------------------------------------------------


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _peft_config(model):
    return getattr(model, "active_peft_config", None)


def _peft_type(model) -> str | None:
    config = _peft_config(model)
    if config is None:
        return None
    kind = config.peft_type
    return getattr(kind, "value", str(kind))


def unsupported(model, kind: str) -> str | None:
    """Why ``model`` must stay on the per-candidate path, or None where the shared path applies."""
    if kind != "causal":
        return f"kind={kind}: a masked LM scores one verbalizer at the mask, there is no candidate continuation"
    base = _base(model)
    model_type = getattr(base.config, "model_type", None)
    if model_type not in MODEL_TYPES:
        return f"model_type={model_type}: the shared path is checked for {', '.join(MODEL_TYPES)} only"
    attention = getattr(base.config, "_attn_implementation", None)
    if attention not in ATTENTION:
        return f"attention {attention}: the packed mask needs one of {', '.join(ATTENTION)}"
    peft = _peft_type(model)
    if peft is not None:
        if peft not in PEFT_TYPES:
            return f"peft {peft}: the shared path is checked for {', '.join(PEFT_TYPES)} only"
        if getattr(_peft_config(model), "num_transformer_submodules", 1) != 1:
            return "peft prompt learning on an encoder-decoder"
    if peft == "PREFIX_TUNING" and _cache_kwarg(base) is None:
        return "the model's forward takes no cache argument for the prefix"
    return None


def virtual_tokens(model) -> int:
    """Positions a peft prefix / prompt occupies ahead of the input (0 without one)."""
    config = _peft_config(model)
    return int(config.num_virtual_tokens) if getattr(config, "is_prompt_learning", False) else 0


def fits_window(model, plan_: SharedPlan) -> bool:
    """A sliding-window model (Mistral) masks keys beyond its window; the packed mask has no window, so it
    matches the per-candidate path only where no sequence (virtual tokens included) reaches the window."""
    window = getattr(_base(model).config, "sliding_window", None)
    return window is None or virtual_tokens(model) + plan_.longest_sequence <= window


def _cache_kwarg(base) -> str | None:
    params = inspect.signature(base.forward).parameters
    for name in ("cache", "past_key_values"):  # transformers 5 renamed past_key_values to cache
        if name in params:
            return name
    return None


def _tensors(plan_: SharedPlan, pad: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, positions (padding: 0) and segments (padding: -1), each (rows, width)."""
    width = max(len(r) for r in plan_.tokens)

    def padded(rows, fill):
        return torch.tensor([list(r) + [fill] * (width - len(r)) for r in rows], dtype=torch.long, device=device)

    return padded(plan_.tokens, pad), padded(plan_.positions, 0), padded(plan_.segments, -1)


def tree_mask(segments: torch.Tensor, virtual: int, virtual_rows: bool) -> torch.Tensor:
    """(rows, 1, queries, keys) bool, True where a query sees a key: earlier-or-same tokens of the shared part
    (segment 0) and of its own tail; a padding token (segment -1) only itself. ``virtual`` key columns ahead
    (prefix / prompt tokens) are seen by every query; with ``virtual_rows`` they are queries too (prompt
    tuning: its virtual tokens are inputs, causal among themselves)."""
    n, width = segments.shape
    idx = torch.arange(width, device=segments.device)
    causal = idx[None, :] <= idx[:, None]  # (query, key)
    q, k = segments[:, :, None], segments[:, None, :]
    sees = (k == 0) & (q >= 0)  # in place from here: (rows, width, width) is the big tensor
    sees |= (k == q) & (q > 0)
    sees &= causal[None]
    sees |= torch.eye(width, dtype=torch.bool, device=segments.device)[None]
    if virtual:
        sees = torch.cat([torch.ones((n, width, virtual), dtype=torch.bool, device=segments.device), sees], dim=2)
        if virtual_rows:
            top = torch.ones((virtual, virtual), dtype=torch.bool, device=segments.device).tril()
            top = torch.cat([top, torch.zeros((virtual, width), dtype=torch.bool, device=segments.device)], dim=1)
            sees = torch.cat([top[None].expand(n, -1, -1), sees], dim=1)
    return sees[:, None]


def forward(model, plan_: SharedPlan, pad: int, gather_head) -> torch.Tensor:
    """Logits (N, vocab) at the plan's scored positions, N = ``len(plan_.targets)``, in that order.

    ``gather_head(batch_idx, pos_idx, input_len)`` builds the output-embedding pre-hook that keeps only the
    scored hidden states (``zobench.scoring._GatherHead``)."""
    device = next(model.parameters()).device
    base = _base(model)
    ids, positions, segments = _tensors(plan_, pad, device)
    rows, width = ids.shape
    peft, virtual = _peft_type(model), virtual_tokens(model)
    kwargs: dict = {}
    if peft == "PREFIX_TUNING":  # the prefix's keys and values, as peft's forward makes them
        kwargs[_cache_kwarg(base)] = model.get_prompt(batch_size=rows)
        kwargs["input_ids"] = ids
        positions = positions + virtual  # the input's positions start after the prefix
        mask = tree_mask(segments, virtual, virtual_rows=False)
    elif peft == "PROMPT_TUNING":  # the virtual embeddings ahead of the input, as peft's forward puts them
        embeds = base.get_input_embeddings()(ids)
        prompts = model.get_prompt(batch_size=rows).to(embeds.dtype)
        kwargs["inputs_embeds"] = torch.cat([prompts, embeds], dim=1)
        positions = torch.cat([torch.arange(virtual, device=device).expand(rows, -1), positions + virtual], dim=1)
        mask = tree_mask(segments, virtual, virtual_rows=True)
    else:
        kwargs["input_ids"] = ids
        mask = tree_mask(segments, 0, virtual_rows=False)
    if base.config._attn_implementation == "eager":  # additive: 0 where seen, the dtype's minimum elsewhere
        dtype = next(base.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
    hook = model.get_output_embeddings().register_forward_pre_hook(
        gather_head(torch.tensor(plan_.batch_idx, device=device), torch.tensor(plan_.pos_idx, device=device), width))
    try:
        out = base(attention_mask=mask, position_ids=positions, use_cache=False, **kwargs)
    finally:
        hook.remove()
    return out.logits.reshape(len(plan_.targets), -1)
