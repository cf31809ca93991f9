"""SST-2: binary sentiment of a movie-review sentence (GLUE).

Templates (label 0 -> " terrible", 1 -> " great"; the candidate carries the space that joins it):
- ``mezo``: MeZO's SST2Template (Malladi et al., 2023, "Fine-Tuning Language Models with Just
  Forward Passes"): context ``"<sentence> It was"``, candidates ``" terrible"`` / ``" great"``.
- ``none``: the template-free ablation (ZO-Bench's SST2TemplateEmpty; Zhang et al., 2024,
  "Revisiting Zeroth-Order Optimization for Memory-Efficient LLM Fine-Tuning: A Benchmark"):
  context ``"<sentence>"``, same candidates.
The sentence is stripped first, as MeZO does: GLUE sentences end with a space.

Hub: ``glue/sst2`` rows ``{sentence, label, idx}``. Native: ``sst2/train.tsv``, ``sst2/dev.tsv``
with header ``sentence<TAB>label``. Example ids are ``"<split>:<row>"`` (``"train:1234"``, ``"dev:17"``),
the row's position in its split: the hub's ``idx`` and the TSV's data row are the same position,
as the hub's GLUE rows are the TSVs' rows in order.
"""
from __future__ import annotations

from pathlib import Path

from zobench.tasks.base import Example, enum_field, pick_template, read_tsv, record_id, text_field

LABEL_WORDS = (" terrible", " great")  # index = label

TEMPLATES = {  # name -> context format over the stripped sentence
    "mezo": "{sentence} It was",
    "none": "{sentence}",
}

# Masked LMs (RoBERTa) fill the label word in place: MeZO's RoBERTa template for SST-2 is LM-BFF's
# "*cls**sent_0*_It_was*mask*.*sep+*" (Gao et al. 2021), i.e. "<s> <sentence> It was <mask>.</s>".
MASKED_SUFFIX = {"mezo": "."}

_LABELS = {0: 0, 1: 1, "0": 0, "1": 1}  # hub labels are ints, TSV labels strings


def parse(raw: dict, where: str, split: str | None = None, row: int | None = None) -> dict:
    """One hub row or TSV row (``row``-th of split ``split``) -> ``{sentence, label, id}``."""
    return {"sentence": text_field(raw, "sentence", where), "label": enum_field(raw, "label", where, _LABELS),
            "id": record_id(raw, None, split, row)}


def read_native(path: Path) -> list[dict]:
    rows = read_tsv(path, ("sentence", "label"))
    return [parse(r, f"{path}, line {n}", path.stem, i) for i, (n, r) in enumerate(rows)]


def render(record: dict, template: str) -> Example:
    context = pick_template(TEMPLATES, template).format(sentence=record["sentence"].strip())
    return Example(context, LABEL_WORDS, record["label"], suffix=MASKED_SUFFIX.get(template, ""), id=record.get("id"))
