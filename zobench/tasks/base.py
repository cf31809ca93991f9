"""What every task shares: the rendered Example, the sampled splits, the sampling protocol, and
the readers that turn native files and hub rows into validated records.

A task turns raw records (from the Hugging Face hub or from the dataset's native files in
``data.dir``) into ``Example(context, candidates, gold, id=...)`` through a named template, and
samples train / dev / eval sets exactly as MeZO does (Malladi et al., 2023; its code
large_models/tasks.py ``Dataset.sample_subset`` and ``sample_train_sets``, large_models/run.py
``main``): ``num_train + num_dev`` records of the train split are the first entries of
``np.random.permutation`` under ``np.random.seed(data.seed)``, the last ``num_dev`` of them dev;
``num_eval`` of the validation split likewise (seed: see ``zobench.tasks.load_task``).
ZO-Bench's zo-bench/tasks.py carries the same two functions unchanged.
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from zobench.errors import ConfigError, bad_choice


@dataclasses.dataclass(frozen=True)
class Example:
    """One multiple-choice example: score each ``context + candidate`` and pick the best.

    ``candidates`` are continuations appended verbatim to ``context`` (a leading space is part
    of the candidate when the template wants one). ``gold`` indexes the correct candidate.
    ``group`` identifies the source unit (a MultiRC paragraph) for splits and metrics.
    ``suffix`` is text that follows the answer slot where a masked LM fills it in place
    (``context + <mask> + suffix``); causal scoring ends at the candidate and ignores it.
    ``id`` names the source record, unique within its split and the same whatever the sampling
    seed or template (SST-2 ``"dev:17"``, COPA its ``idx``, WinoGrande its ``qID``, MultiRC
    ``"<paragraph>/<question>/<answer>"``), so two runs' predictions can be paired example by
    example; None where an Example is built by hand.
    """

    context: str
    candidates: tuple[str, ...]
    gold: int
    group: str | None = None
    suffix: str = ""
    id: str | None = None


class RenderedPool(Sequence):
    """Every record of a split, rendered when indexed: the whole train split for whoever draws from it
    (MeZO's ICL demonstrations, ``zobench.tuning.icl``) without rendering 67k SST-2 rows up front."""

    def __init__(self, records: Sequence[dict], render, template: str):
        self._records, self._render, self._template = records, render, template

    def __len__(self) -> int:
        return len(self._records)

    @property
    def ids(self) -> list[str | None]:
        """Each record's id, without rendering it."""
        return [r.get("id") for r in self._records]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._render(self._records[i], self._template)


@dataclasses.dataclass
class TaskData:
    """The three sampled sets of one cell, and a record of where they came from.

    ``train_pool`` is the whole train split in its own order (train and dev were drawn from it),
    where the loader provides it."""

    train: list[Example]
    dev: list[Example]
    eval: list[Example]
    info: dict[str, Any]  # goes into summary.json as ``data``: sources, sizes, split notes
    train_pool: Sequence[Example] | None = None


def mezo_permutation(n_items: int, seed: int) -> list[int]:
    """``np.random.seed(seed); np.random.permutation(n_items)``, without touching numpy's global state.

    MeZO large_models/tasks.py ``Dataset.sample_subset`` runs ``np.random.permutation(len(samples))``
    inside ``utils.temp_seed(seed)`` (``np.random.seed(seed)``, state restored after); a fresh
    ``RandomState(seed)`` is the same Mersenne-Twister stream, so the indices are MeZO's.
    """
    return np.random.RandomState(seed).permutation(n_items).tolist()


def sample_indices(n_items: int, n: int, seed: int) -> list[int]:
    """MeZO's ``sample_subset(seed=seed, num=n)`` as indices: the first ``n`` entries of
    ``mezo_permutation(n_items, seed)`` (all of them, permuted, if ``n >= n_items``)."""
    return mezo_permutation(n_items, seed)[:n]


def split_train_dev(records: Sequence[Any], num_train: int, num_dev: int, seed: int):
    """MeZO's protocol: ``sample_subset("train", seed, num_train + num_dev)``; the last ``num_dev``
    are dev, the rest train (large_models/run.py ``main``: ``dev_samples = train_samples[-num_dev:]``,
    ``train_samples = train_samples[:-num_dev]``).

    A short split (fewer records than ``num_train + num_dev``) keeps MeZO's rule while it leaves a
    train set: dev is the last ``num_dev``, train whatever precedes it (MeZO's COPA runs: 400
    records, ``--num_train 1000 --num_dev 100``, train 300 / dev 100). Where MeZO's rule would leave
    no train example (``num_dev >=`` the records; COPA at the default 1000 + 500), both sets shrink
    in proportion to what was asked instead, so neither is empty: zobench's rule, not MeZO's.
    ``num_dev = 0`` means no dev set (MeZO's ``[-0:]`` would make every record dev). Callers record
    the sizes actually used.
    """
    picked = [records[i] for i in sample_indices(len(records), num_train + num_dev, seed)]
    n_train, _ = split_sizes(len(records), num_train, num_dev)
    return picked[:n_train], picked[n_train:]


def split_sizes(n_records: int, num_train: int, num_dev: int) -> tuple[int, int]:
    """``(len(train), len(dev))`` that ``split_train_dev`` gives for a split of ``n_records`` records."""
    n_picked = min(n_records, num_train + num_dev)
    if num_dev == 0:
        n_dev = 0
    elif num_train == 0 or n_picked > num_dev:
        n_dev = min(num_dev, n_picked)  # MeZO's rule
    else:  # MeZO would leave train empty: shrink both in proportion
        n_dev = round(n_picked * num_dev / (num_train + num_dev))
        n_dev = max(min(max(n_dev, 1 if n_picked > 1 else 0), n_picked - 1), 0)
    return n_picked - n_dev, n_dev


# The hub calls the labelled held-out split "validation" where GLUE's and WinoGrande's files say "dev":
# one name, so a record's id is the same from either source.
SPLIT_ALIASES = {"validation": "dev"}


def record_id(raw: Mapping, key: str | None, split: str | None, row: int | None) -> str | None:
    """A stable id of one source record: its own id ``raw[key]`` as a string when it has one, else
    ``"<split>:<row>"``, its position in its split (``split`` "validation" written "dev"), else None
    (a row parsed on its own, with no split or row given). Never depends on sampling."""
    value = raw.get(key) if key else None
    if value is not None and not isinstance(value, (bool, dict, list)):
        return str(value)
    return None if split is None or row is None else f"{SPLIT_ALIASES.get(split, split)}:{row}"


# ---- Reading native files and hub rows -------------------------------------------------------
# Every task validates its raw rows through these helpers, so a bad row is reported as a
# ConfigError that says where it is ("<file>, line 12" or "hub:glue/sst2[train] row 5").


def pick_template(templates: Mapping[str, Any], name: str):
    """The template called ``name``; an unknown name lists the allowed ones under ``task.template``."""
    if name not in templates:
        raise bad_choice("task.template", name, list(templates))
    return templates[name]


def read_text(path: Path) -> str:
    """The file's text, which must be UTF-8; where it is not, the error names the file, line and column."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{path}, line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column}): "
                          "task files are read as UTF-8; convert the file (e.g. iconv -f latin1 -t utf-8).") from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file, numbered from 1."""
    with io.StringIO(read_text(path), newline=None) as f:  # universal newlines, as open() reads
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
    with io.StringIO(read_text(path), newline="") as f:
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
