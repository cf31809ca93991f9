"""What every task shares: the rendered Example, the sampled splits, the sampling protocol, and
the readers that turn native files and hub rows into validated records.

A task turns raw records (from the Hugging Face hub or from the dataset's native files in
``data.dir``) into ``Example(context, candidates, gold)`` through a named template, and
samples train / dev / eval sets as MeZO does (Malladi et al., 2023): ``num_train + num_dev``
examples drawn from the train split with ``data.seed``, ``num_eval`` from the validation split
(with a fixed seed, see ``zobench.tasks.load_task``).
"""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from zobench.errors import ConfigError, bad_choice


@dataclasses.dataclass(frozen=True)
class Example:
    """One multiple-choice example: score each ``context + candidate`` and pick the best.

    ``candidates`` are continuations appended verbatim to ``context`` (a leading space is part
    of the candidate when the template wants one). ``gold`` indexes the correct candidate.
    ``group`` identifies the source unit (a MultiRC paragraph) for splits and metrics.
    ``suffix`` is text that follows the answer slot where a masked LM fills it in place
    (``context + <mask> + suffix``); causal scoring ends at the candidate and ignores it.
    """

    context: str
    candidates: tuple[str, ...]
    gold: int
    group: str | None = None
    suffix: str = ""


@dataclasses.dataclass
class TaskData:
    """The three sampled sets of one cell, and a record of where they came from."""

    train: list[Example]
    dev: list[Example]
    eval: list[Example]
    info: dict[str, Any]  # goes into summary.json as ``data``: sources, sizes, split notes


def sample_indices(n_items: int, n: int, seed: int) -> list[int]:
    """``n`` distinct indices of ``range(n_items)`` drawn with ``seed`` (all of them, shuffled, if n >= n_items)."""
    rng = random.Random(seed)
    order = list(range(n_items))
    rng.shuffle(order)
    return order[: min(n, n_items)]


def split_train_dev(records: Sequence[Any], num_train: int, num_dev: int, seed: int):
    """MeZO's protocol: draw ``num_train + num_dev`` from the train split; the last ``num_dev`` are dev.

    When the split holds fewer records than asked for (COPA has 400 against MeZO's 1000 + 500),
    both sets shrink in proportion to what was asked, so neither is left empty; callers record
    the sizes actually used.
    """
    picked = [records[i] for i in sample_indices(len(records), num_train + num_dev, seed)]
    if len(picked) < num_train + num_dev:
        n_dev = round(len(picked) * num_dev / (num_train + num_dev))
        n_dev = min(max(n_dev, 1 if num_dev and len(picked) > 1 else 0), len(picked) - (1 if num_train else 0))
    else:
        n_dev = num_dev
    n_train = len(picked) - n_dev
    return picked[:n_train], picked[n_train:]


# ---- Reading native files and hub rows -------------------------------------------------------
# Every task validates its raw rows through these helpers, so a bad row is reported as a
# ConfigError that says where it is ("<file>, line 12" or "hub:glue/sst2[train] row 5").


def pick_template(templates: Mapping[str, Any], name: str):
    """The template called ``name``; an unknown name lists the allowed ones under ``task.template``."""
    if name not in templates:
        raise bad_choice("task.template", name, list(templates))
    return templates[name]


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file, numbered from 1."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {n}: not valid JSON ({e.msg}, column {e.colno}).") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}, line {n}: expected a JSON object, found {type(obj).__name__}.")
            yield n, obj


def read_tsv(path: Path, header: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for each row of an unquoted TSV whose first line must be ``header``.

    GLUE's TSVs are split on tabs, not parsed as CSV: they do not quote, and a sentence may hold a
    quote character that a CSV reader would take for a field delimiter.
    """
    expected = "\t".join(header)
    with open(path, encoding="utf-8", newline="") as f:
        first = f.readline().rstrip("\r\n")
        if first != expected:
            raise ConfigError(
                f"{path}, line 1: header is {first!r}, expected {expected!r} (tab-separated columns "
                f"{', '.join(header)}, as in the GLUE release)."
            )
        for n, line in enumerate(f, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) != len(header):
                raise ConfigError(
                    f"{path}, line {n}: expected {len(header)} tab-separated fields ({', '.join(header)}), "
                    f"found {len(cols)}."
                )
            yield n, dict(zip(header, cols))


def text_field(raw: Mapping, key: str, where: str) -> str:
    """``raw[key]``, which must be a string."""
    if key not in raw:
        raise ConfigError(f"{where}: missing field {key!r}.")
    value = raw[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field {key!r} is {value!r}, expected a string.")
    return value


def enum_field(raw: Mapping, key: str, where: str, allowed: Mapping[Any, Any]):
    """``allowed[raw[key]]``: maps a source value (a label "0", an answer "2") to its normalized value."""
    if key not in raw:
        raise ConfigError(f"{where}: missing field {key!r}.")
    value = raw[key]
    # bool is excluded by hand: True == 1 would otherwise pass for a label.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value not in allowed:
        raise ConfigError(f"{where}: field {key!r} is {value!r}, expected one of {', '.join(map(repr, allowed))}.")
    return allowed[value]
