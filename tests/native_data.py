"""Small native-format task files written by tests (every record distinct, so samples compare by content)."""
from __future__ import annotations

import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_sst2_tsv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{label}\n" for s, label in rows), encoding="utf-8")
    return path


def sst2_rows(n, tag):
    return [(f"{tag} review number {i} . ", i % 2) for i in range(n)]


def copa_rows(n, tag):
    return [{"premise": f"{tag} premise {i}.", "choice1": f"The first choice {i}.", "choice2": f"I chose {i}.",
             "question": ("cause", "effect")[i % 2], "label": (i // 2) % 2, "idx": i} for i in range(n)]


def winogrande_rows(n, tag):
    return [{"qID": f"{tag}-{i}", "sentence": f"Ann{i} thanked Bob{i} ({tag}) because _ had helped.",
             "option1": f"Ann{i}", "option2": f"Bob{i}", "answer": str(1 + i % 2)} for i in range(n)]


def multirc_rows(n_paragraphs, tag, n_questions=2, n_answers=3):
    rows, q_idx, a_idx = [], 0, 0
    for p in range(n_paragraphs):
        questions = []
        for _ in range(n_questions):
            answers = []
            for _ in range(n_answers):
                answers.append({"text": f"answer {a_idx}", "idx": a_idx, "label": a_idx % 2})
                a_idx += 1
            questions.append({"question": f"{tag} question {q_idx}?", "idx": q_idx, "answers": answers})
            q_idx += 1
        rows.append({"idx": p, "version": 1.1, "passage": {"text": f"{tag} paragraph {p}.", "questions": questions}})
    return rows


def write_native(root: Path, multirc_train: bool = False) -> Path:
    write_sst2_tsv(root / "sst2/train.tsv", sst2_rows(40, "train"))
    write_sst2_tsv(root / "sst2/dev.tsv", sst2_rows(15, "dev"))
    write_jsonl(root / "copa/train.jsonl", copa_rows(30, "train"))
    write_jsonl(root / "copa/val.jsonl", copa_rows(12, "val"))
    write_jsonl(root / "winogrande/train_xs.jsonl", winogrande_rows(30, "train"))
    write_jsonl(root / "winogrande/dev.jsonl", winogrande_rows(12, "dev"))
    write_jsonl(root / "multirc/val.jsonl", multirc_rows(8, "val"))
    if multirc_train:
        write_jsonl(root / "multirc/train.jsonl", multirc_rows(5, "train"))
    return root


