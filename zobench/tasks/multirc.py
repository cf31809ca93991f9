"""MultiRC: is a candidate answer to a question about a paragraph correct? (SuperGLUE)

One record, and one Example, per (paragraph, question, answer); ``group`` is the paragraph id.
Templates (candidates "No" / "Yes", gold = label; they follow a newline, so no leading space):
- ``mezo``: MeZO's MultiRCTemplate (Malladi et al., 2023, from PromptSource):
  ``'<paragraph>\\nQuestion: <question>\\nI found this answer "<answer>". Is that correct? Yes or No?\\n'``
- ``none``: the template-free ablation: ``"<paragraph>\\n<question>\\n<answer>\\n"``.

Hub: ``super_glue/multirc``, already one row per answer: ``{paragraph, question, answer,
idx{paragraph, question, answer}, label}``. Native: SuperGLUE JSONL, one paragraph per line:
``{idx, passage{text, questions[{question, idx, answers[{text, idx, label}]}]}}``;
``multirc/val.jsonl`` and, where it exists, ``multirc/train.jsonl``. Offline there is no train
file: ``split_without_train`` then divides val.jsonl by paragraph. Example ids are
``"<paragraph idx>/<question idx>/<answer idx>"``, SuperGLUE's own ids, the same from the hub's
``idx`` and from the nested file (a question or answer without an ``idx`` is numbered by its
position in its paragraph or question).
"""
from __future__ import annotations

from pathlib import Path

from zobench.errors import ConfigError
from zobench.tasks.base import Example, enum_field, pick_template, read_jsonl, sample_indices, text_field

VERBALIZER = ("No", "Yes")  # index = label

TEMPLATES = {  # name -> context format over the record's fields
    "mezo": '{paragraph}\nQuestion: {question}\nI found this answer "{answer}". Is that correct? Yes or No?\n',
    "none": "{paragraph}\n{question}\n{answer}\n",
}

# Fixed, and independent of data.seed: the eval paragraphs must be the same for every seed.
SPLIT_SEED = 0

_LABELS = {0: 0, 1: 1}


def _record(paragraph: str, question: str, answer: str, label: int, group, question_id, answer_id) -> dict:
    return {"paragraph": paragraph, "question": question, "answer": answer, "label": label, "group": str(group),
            "id": f"{group}/{question_id}/{answer_id}"}


def parse(raw: dict, where: str, split: str | None = None, row: int | None = None) -> dict:
    """One hub row (one answer) -> ``{paragraph, question, answer, label, group, id}``."""
    idx = raw.get("idx")
    if not isinstance(idx, dict) or "paragraph" not in idx:
        raise ConfigError(f"{where}: field 'idx' is {idx!r}, expected {{paragraph, question, answer}} ids.")
    return _record(
        text_field(raw, "paragraph", where),
        text_field(raw, "question", where),
        text_field(raw, "answer", where),
        enum_field(raw, "label", where, _LABELS),
        idx["paragraph"],
        idx.get("question"),
        idx.get("answer"),
    )


def _list(obj: dict, key: str, where: str) -> list:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: field {key!r} is {value!r}, expected a list of objects.")
    return value


def read_native(path: Path) -> list[dict]:
    """Flatten the nested SuperGLUE file into one record per answer, in file order."""
    records, lines = [], {}  # paragraph id -> the line that holds it
    for n, raw in read_jsonl(path):
        where = f"{path}, line {n}"
        passage = raw.get("passage")
        if "idx" not in raw or not isinstance(passage, dict):
            raise ConfigError(f"{where}: expected fields 'idx' and 'passage' {{text, questions}}.")
        paragraph = text_field(passage, "text", where)
        for qi, q in enumerate(_list(passage, "questions", where)):
            question = text_field(q, "question", where)
            for ai, a in enumerate(_list(q, "answers", where)):
                answer, label = text_field(a, "text", where), enum_field(a, "label", where, _LABELS)
                records.append(_record(paragraph, question, answer, label, raw["idx"], q.get("idx", qi), a.get("idx", ai)))
        group = str(raw["idx"])
        if group in lines:  # colliding ids would merge paragraphs: wrong train/eval split, clusters and pairing
            raise ConfigError(f"{where}: paragraph idx {raw['idx']!r} is already the idx of line {lines[group]}: "
                              "MultiRC paragraphs need distinct ids (examples are grouped, split between train and "
                              "eval, and paired across runs by them).")
        lines[group] = n
    return records


def split_without_train(records: list[dict], source: str) -> tuple[list[dict], list[dict], str]:
    """Divide the validation answers by paragraph: half the paragraphs are the train/dev pool, the
    rest the eval pool, so no paragraph is both trained on and evaluated."""
    paragraphs = sorted({r["group"] for r in records})
    picked = {paragraphs[i] for i in sample_indices(len(paragraphs), len(paragraphs) // 2, SPLIT_SEED)}
    train = [r for r in records if r["group"] in picked]
    evals = [r for r in records if r["group"] not in picked]
    note = (
        f"multirc train drawn from {source} paragraphs disjoint from eval "
        f"({len(picked)} train paragraphs / {len(paragraphs) - len(picked)} eval paragraphs)"
    )
    return train, evals, note


def render(record: dict, template: str) -> Example:
    fields = {k: record[k] for k in ("paragraph", "question", "answer")}
    return Example(pick_template(TEMPLATES, template).format(**fields), VERBALIZER, record["label"], record["group"],
                   id=record.get("id"))
