"""WinoGrande: fill the blank "_" of a sentence with one of two options (Sakaguchi et al., 2020).

Templates (gold = answer - 1):
- ``mezo``: ZO-Bench's WinoGrandeTemplate (Zhang et al., 2024, after Sanh et al., 2022; MeZO has
  no WinoGrande template), i.e. partial scoring: split the sentence at the blank; the context is
  the text before it, right-stripped; each candidate is " " + option + the text after the blank,
  so the model scores how well the rest of the sentence follows each option:
  "Sarah was a much better surgeon than Maria so" + " Maria always got the easier cases."
- ``none``: the template-free ablation: the raw sentence, blank included, and " " + each option.

Hub: ``winogrande/winogrande_xl`` (size configurable: ``task.hub.name``). Native: the official
JSONL ``{qID, sentence, option1, option2, answer}`` with answer "1"/"2": a train file
(``task.files.train``; only ``train_xs`` is available offline) and ``winogrande/dev.jsonl``.
Example ids are the record's ``qID``; the hub's rows carry none, so there an id is
``"<split>:<row>"`` (``"dev:17"``: the hub's validation rows are dev.jsonl's lines in order).
"""
from __future__ import annotations

from pathlib import Path

from zobench.errors import ConfigError
from zobench.tasks.base import Example, enum_field, pick_template, read_jsonl, record_id, text_field


def _mezo(record: dict) -> tuple[str, tuple[str, ...]]:
    before, after = record["sentence"].split("_")
    return before.rstrip(), tuple(f" {option}{after}" for option in record["options"])


def _none(record: dict) -> tuple[str, tuple[str, ...]]:
    return record["sentence"].strip(), tuple(" " + option for option in record["options"])


TEMPLATES = {"mezo": _mezo, "none": _none}  # name -> record -> (context, candidates)

_ANSWERS = {"1": 0, "2": 1, 1: 0, 2: 1}  # answer -> gold index; the hub and the JSONL use strings


def parse(raw: dict, where: str, split: str | None = None, row: int | None = None) -> dict:
    """One hub row or JSONL line (``row``-th of split ``split``) -> ``{sentence, options, label, id}``."""
    sentence = text_field(raw, "sentence", where)
    if sentence.count("_") != 1:
        raise ConfigError(f"{where}: sentence {sentence!r} has {sentence.count('_')} blanks '_', expected exactly 1.")
    return {
        "sentence": sentence,
        "options": (text_field(raw, "option1", where), text_field(raw, "option2", where)),
        "label": enum_field(raw, "answer", where, _ANSWERS),
        "id": record_id(raw, "qID", split, row),
    }


def read_native(path: Path) -> list[dict]:
    return [parse(raw, f"{path}, line {n}", path.stem, i) for i, (n, raw) in enumerate(read_jsonl(path))]


def render(record: dict, template: str) -> Example:
    context, candidates = pick_template(TEMPLATES, template)(record)
    return Example(context, candidates, record["label"], id=record.get("id"))
