"""Lengthen every example so that each scored sequence has exactly ``trainer.pad_to_length`` tokens.

For the memory-vs-sequence-length study (ZO-Bench's memory analysis; MeZO Fig. 3): the task's own
examples are a few dozen tokens, so ``trainer.max_length`` alone never makes a sequence long. Here
every context gets a prefix of real text (the task's training examples, each with its gold
answer, joined by blank lines and repeated) long enough that the scorer's left truncation at
``max_length = pad_to_length`` cuts every sequence, context and candidate together, to exactly that
many tokens: the original context and candidate stay whole at the end as long as they fit. The
numbers this gives are memory and time; accuracy under the filler is not comparable with
anything. (A module with a leading underscore: the package's other modules are tasks.)
"""
from __future__ import annotations

import dataclasses

from zobench.errors import ConfigError
from zobench.tasks.base import Example, TaskData

SEPARATOR = "\n\n"
MARGIN_TOKENS = 8  # tokens that merges across the filler/context boundary could take away


def _ids(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def filler_text(examples: list[Example], tokenizer, tokens: int) -> str:
    """At least ``tokens`` tokens of the examples' own text (context + gold answer), repeated."""
    pieces = [ex.context + ex.candidates[ex.gold] for ex in examples] or ["The quick brown fox jumps over the dog."]
    unit = SEPARATOR.join(pieces) + SEPARATOR
    text = unit
    while _ids(tokenizer, text) < tokens:
        text += unit
    return text


def lengthen(data: TaskData, tokenizer, length: int, budget: int) -> TaskData:
    """Every example of ``data`` with a prefix long enough for ``length``-token sequences."""
    if length > budget:
        raise ConfigError(
            f"trainer.pad_to_length={length} is more than the {budget} tokens a sequence may hold here "
            f"(trainer.max_length, less the tuning scheme's virtual tokens, within the model's position table): "
            f"set trainer.max_length >= {length} or choose a model with a longer context.")
    source = data.train or data.dev or data.eval
    filler = filler_text(source, tokenizer, length + MARGIN_TOKENS)

    def grow(ex: Example) -> Example:
        context = filler + ex.context
        while _ids(tokenizer, context) < length + 1:  # never more than once: the margin covers merges
            context = filler + context
        return dataclasses.replace(ex, context=context)

    info = {**data.info, "pad_to_length": length}
    return TaskData(train=[grow(e) for e in data.train], dev=[grow(e) for e in data.dev],
                    eval=[grow(e) for e in data.eval], info=info)
