"""COPA: choose the more plausible cause or effect of a premise (SuperGLUE).

Templates (gold = label, the index of the right choice):
- ``mezo``: MeZO's CopaTemplate (Malladi et al., 2023): the premise, trailing whitespace and one
  final "." removed, then " because" (question "cause") or " so" (question "effect"); each
  candidate is " " + the choice with its first word lower-cased unless that word is "I" (MeZO's
  "correct" capitalization), the rest kept, final period included:
  "My body cast a shadow over the grass because" + " the sun was rising."
- ``none``: the template-free ablation: the premise as it is, and " " + each choice as it is.
Choices are stripped first: one SuperGLUE train choice (idx 128) starts with a space, which MeZO
would render as a double space before an upper-case word.

Hub: ``super_glue/copa``. Native: ``copa/train.jsonl``, ``copa/val.jsonl``, SuperGLUE JSONL
``{premise, choice1, choice2, question, label, idx}``. Example ids are the record's ``idx``
(``"<split>:<row>"`` for a row without one).
"""
from __future__ import annotations

from pathlib import Path

from zobench.tasks.base import Example, enum_field, pick_template, read_jsonl, record_id, text_field

CONNECTIVES = {"cause": " because", "effect": " so"}  # MeZO's cause_conj / effect_conj, joining space first


def _lower_first_word(choice: str) -> str:
    first, sep, rest = choice.partition(" ")
    return (first if first == "I" else first.lower()) + sep + rest


def _mezo(record: dict) -> tuple[str, tuple[str, ...]]:
    premise = record["premise"].rstrip()
    premise = premise[:-1] if premise.endswith(".") else premise
    context = premise + CONNECTIVES[record["question"]]
    return context, tuple(" " + _lower_first_word(c.strip()) for c in record["choices"])


def _none(record: dict) -> tuple[str, tuple[str, ...]]:
    return record["premise"].strip(), tuple(" " + c.strip() for c in record["choices"])


TEMPLATES = {"mezo": _mezo, "none": _none}  # name -> record -> (context, candidates)

_LABELS = {0: 0, 1: 1}


def parse(raw: dict, where: str, split: str | None = None, row: int | None = None) -> dict:
    """One hub row or JSONL line (``row``-th of split ``split``) -> ``{premise, choices, question, label, id}``."""
    return {
        "premise": text_field(raw, "premise", where),
        "choices": (text_field(raw, "choice1", where), text_field(raw, "choice2", where)),
        "question": enum_field(raw, "question", where, {q: q for q in CONNECTIVES}),
        "label": enum_field(raw, "label", where, _LABELS),
        "id": record_id(raw, "idx", split, row),
    }


def read_native(path: Path) -> list[dict]:
    return [parse(raw, f"{path}, line {n}", path.stem, i) for i, (n, raw) in enumerate(read_jsonl(path))]


def render(record: dict, template: str) -> Example:
    context, candidates = pick_template(TEMPLATES, template)(record)
    return Example(context, candidates, record["label"], id=record.get("id"))
