"""zobench-data: the tasks' data from the Hugging Face hub into the ``data.dir`` layout, with checksums.

    zobench-data --dir DIR [--tasks sst2 copa winogrande multirc] [--winogrande-sizes xs xl] [--force]
    make data DATA_DIR=DIR

Each task's hub dataset, config and splits are those ``conf/task/<task>.yaml`` names (``task.hub``: what a run
with ``data.dir=null`` loads), and each file goes where the native loader reads it (``task.files``), in the
dataset's native format (``../shared/data/README.md``):

| file | from the hub | format |
|---|---|---|
| sst2/train.tsv, sst2/dev.tsv | glue/sst2 train, validation | GLUE TSV, header ``sentence<TAB>label`` |
| copa/train.jsonl, copa/val.jsonl | super_glue/copa train, validation | SuperGLUE JSONL ``{premise, choice1, choice2, question, label, idx}`` |
| winogrande/train_<size>.jsonl, winogrande/dev.jsonl | winogrande/winogrande_<size> train, winogrande_xl validation | WinoGrande JSONL ``{sentence, option1, option2, answer}`` |
| multirc/train.jsonl, multirc/val.jsonl | super_glue/multirc train, validation | SuperGLUE JSONL, one paragraph per line |

WinoGrande's training sizes are separate hub configs: ``train_xs.jsonl`` is what ``task.files.train`` reads by
default (as ``../shared/data``); ``train_xl.jsonl`` is the hub default's train split (``task.hub.name``):
``task.files.train=winogrande/train_xl.jsonl`` trains on it. With ``multirc/train.jsonl`` present, MultiRC
trains on SuperGLUE's train split, as a hub run does, instead of half of the validation paragraphs.

Every file is read back by the task's own native reader and must give the same records as the hub rows
(ids aside) before anything is written. ``DIR/MANIFEST.json`` records each file's sha256, size, rows and
source (dataset, config, split, revision); ``DIR/SHA256SUMS`` the same checksums for ``sha256sum -c``.
A file already there with the same content is left as it is; one that differs is never overwritten
(the error names it and both checksums; nothing is written) unless ``--force`` is given.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from zobench import CONF_DIR, __version__
from zobench.errors import ConfigError

TASKS = ("sst2", "copa", "winogrande", "multirc")
WINOGRANDE_SIZES = ("xs", "s", "m", "l", "xl")
DEFAULT_WINOGRANDE_SIZES = ("xs", "xl")
MANIFEST = "MANIFEST.json"
SUMS = "SHA256SUMS"


@dataclass
class Planned:
    """One file to write: its path under DIR, bytes, rows and where they came from."""

    rel: str
    data: bytes
    rows: int
    source: dict

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- hub rows -> native bytes ------------------------------------------------------------------------------


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


def _plain(value):
    """numpy / datasets scalars -> Python ones, so json.dumps writes them as the native files do."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def sst2_native(rows: list[dict], where: str) -> bytes:
    lines = ["sentence\tlabel\n"]
    for i, row in enumerate(rows):
        sentence, label = row["sentence"], _plain(row["label"])
        if any(c in sentence for c in "\t\r\n"):
            raise ConfigError(f"{where} row {i}: the sentence holds a tab or a line break, which a GLUE TSV cannot hold.")
        lines.append(f"{sentence}\t{label}\n")
    return "".join(lines).encode("utf-8")


def copa_native(rows: list[dict], where: str) -> bytes:
    keys = ("premise", "choice1", "choice2", "question", "label", "idx")
    return _jsonl([{k: _plain(row[k]) for k in keys if k in row} for row in rows])


def winogrande_native(rows: list[dict], where: str) -> bytes:
    keys = ("qID", "sentence", "option1", "option2", "answer")  # the hub's rows have no qID: ids are then row numbers
    return _jsonl([{k: _plain(row[k]) for k in keys if k in row} for row in rows])


def multirc_native(rows: list[dict], where: str) -> bytes:
    """The hub's one row per answer, regrouped into SuperGLUE's one line per paragraph (first-seen order)."""
    paragraphs: dict[Any, dict] = {}
    for i, row in enumerate(rows):
        idx = row.get("idx")
        if not isinstance(idx, dict) or "paragraph" not in idx:
            raise ConfigError(f"{where} row {i}: field 'idx' is {idx!r}, expected {{paragraph, question, answer}} ids.")
        p, q, a = (_plain(idx.get(k)) for k in ("paragraph", "question", "answer"))
        para = paragraphs.setdefault(p, {"idx": p, "passage": {"text": row["paragraph"], "questions": []}, "_q": {}})
        if para["passage"]["text"] != row["paragraph"]:
            raise ConfigError(f"{where} row {i}: paragraph {p} has another text than in its earlier rows.")
        question = para["_q"].get(q)
        if question is None:
            question = para["_q"][q] = {"question": row["question"], "idx": q, "answers": []}
            para["passage"]["questions"].append(question)
        question["answers"].append({"text": row["answer"], "idx": a, "label": _plain(row["label"])})
    return _jsonl([{k: v for k, v in para.items() if k != "_q"} for para in paragraphs.values()])


WRITERS: dict[str, Callable[[list[dict], str], bytes]] = {
    "sst2": sst2_native, "copa": copa_native, "winogrande": winogrande_native, "multirc": multirc_native,
}


# ---- the plan: what each task's files are and where their rows come from ----------------------------------


@dataclass
class Source:
    task: str
    rel: str        # the file under DIR
    path: str       # datasets.load_dataset(path, name, split=split)
    name: str | None
    split: str
    revision: str | None


def task_sources(task: str, winogrande_sizes=DEFAULT_WINOGRANDE_SIZES) -> list[Source]:
    """The files of ``task`` (conf/task/<task>.yaml: ``task.files``) and the hub split each comes from (``task.hub``)."""
    if task not in TASKS:
        raise ConfigError(f"--tasks {task}: not a task of zobench; choose from {', '.join(TASKS)}.")
    spec = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / f"{task}.yaml"), resolve=True)
    hub, files = spec["hub"], spec["files"]
    train = Source(task, files["train"], hub["path"], hub.get("name"), hub["train_split"], hub.get("revision"))
    evals = Source(task, files["eval"], hub["path"], hub.get("name"), hub["eval_split"], hub.get("revision"))
    if task != "winogrande":
        return [train, evals]
    folder = Path(files["train"]).parent.as_posix()
    trains = []
    for size in winogrande_sizes:
        if size not in WINOGRANDE_SIZES:
            raise ConfigError(f"--winogrande-sizes {size}: choose from {', '.join(WINOGRANDE_SIZES)}.")
        trains.append(Source(task, f"{folder}/train_{size}.jsonl", hub["path"], f"winogrande_{size}",
                             hub["train_split"], hub.get("revision")))
    return trains + [evals]


def _ref(src: Source, revision: str | None) -> str:
    return f"hub:{src.path}" + (f"/{src.name}" if src.name else "") + f"[{src.split}]" + (f"@{revision}" if revision else "")


def fetch(src: Source) -> Planned:
    """One hub split -> the native file's bytes, checked by reading them back with the task's own reader."""
    import datasets

    from zobench.tasks import _load_hub_split

    try:
        table, revision = _load_hub_split(datasets, src.path, src.name, src.split, src.revision)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, a renamed dataset, ...: said with what was asked
        raise ConfigError(f"{_ref(src, src.revision)} could not be loaded from the Hugging Face hub: "
                          f"{type(exc).__name__}: {exc}") from None
    rows = [dict(r) for r in table]
    where = _ref(src, revision)
    data = WRITERS[src.task](rows, where)
    _check_round_trip(src, rows, data, where)
    source = {"task": src.task, "dataset": src.path, "config": src.name, "split": src.split, "revision": revision,
              "rows": len(rows)}
    return Planned(src.rel, data, len(rows), source)


def _check_round_trip(src: Source, rows: list[dict], data: bytes, where: str) -> None:
    """The native reader gives, from ``data``, the records the hub path gives from ``rows`` (ids aside)."""
    import importlib

    module = importlib.import_module(f"zobench.tasks.{src.task}")
    hub = [module.parse(r, f"{where} row {i}", src.split, i) for i, r in enumerate(rows)]
    with tempfile.TemporaryDirectory(prefix="zobench-data-") as tmp:
        path = Path(tmp) / Path(src.rel).name
        path.write_bytes(data)
        native = module.read_native(path)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "id"} for r in records]

    if strip(native) != strip(hub):
        raise ConfigError(f"{where}: the native file written for {src.rel} does not read back as the hub's "
                          f"{len(hub)} records ({len(native)} read): nothing was written.")


# ---- writing ------------------------------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def conflicts(root: Path, planned: list[Planned]) -> list[str]:
    """One line per file of ``planned`` that exists in ``root`` with other content: both checksums."""
    lines = []
    for item in planned:
        path = root / item.rel
        if path.exists():
            on_disk = sha256_file(path) if path.is_file() else "(not a file)"
            if on_disk != item.sha256:
                lines.append(f"{path} exists and differs from {_ref_of(item)}: sha256 on disk {on_disk}, "
                             f"from the hub {item.sha256}")
    return lines


def _ref_of(item: Planned) -> str:
    s = item.source
    return _ref(Source(s["task"], item.rel, s["dataset"], s["config"], s["split"], None), s["revision"])


def write_all(root: Path, planned: list[Planned], force: bool = False) -> dict[str, str]:
    """Write ``planned`` under ``root`` and update the manifest; ``{rel: 'written' | 'unchanged' | 'replaced'}``.

    Refuses (ConfigError, nothing written) when a file exists with other content, unless ``force``."""
    found = conflicts(root, planned)
    if found and not force:
        raise ConfigError("refusing to overwrite:\n  " + "\n  ".join(found) + "\nNothing was written. Move those "
                          "files away (or delete them) to fetch them again, or pass --force to overwrite them.")
    manifest = _read_manifest(root)
    outcome = {}
    for item in planned:
        path = root / item.rel
        if path.is_file() and sha256_file(path) == item.sha256:
            outcome[item.rel] = "unchanged"
        else:
            outcome[item.rel] = "replaced" if path.exists() else "written"
            _write_bytes(path, item.data)
        manifest["files"][item.rel] = {"sha256": item.sha256, "bytes": len(item.data), **item.source}
    manifest.update({"zobench": __version__, "datasets": _datasets_version(),
                     "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    _write_bytes(root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    sums = "".join(f"{entry['sha256']}  {rel}\n" for rel, entry in sorted(manifest["files"].items()))
    _write_bytes(root / SUMS, sums.encode())
    return outcome


def _read_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        return {"files": {}}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{root / MANIFEST} is not readable JSON ({exc}): move it away to start a new one.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ConfigError(f"{root / MANIFEST} is not a zobench-data manifest (no 'files' object): move it away.")
    return manifest


def _datasets_version() -> str | None:
    try:
        import datasets

        return datasets.__version__
    except ImportError:
        return None


def fetch_tasks(root: Path, tasks=TASKS, winogrande_sizes=DEFAULT_WINOGRANDE_SIZES, force: bool = False,
                log: Callable[[str], None] = print) -> dict[str, str]:
    """Fetch ``tasks`` into ``root``: every split first (nothing is written if one fails), then the files."""
    sources = [s for task in dict.fromkeys(tasks) for s in task_sources(task, winogrande_sizes)]
    planned = []
    for src in sources:
        log(f"zobench-data: {_ref(src, src.revision)} -> {src.rel}")
        planned.append(fetch(src))
    outcome = write_all(Path(root), planned, force)
    for item in planned:
        log(f"zobench-data: {outcome[item.rel]:9s} {item.rel}  {item.rows} rows  sha256 {item.sha256}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zobench-data",
        description="Fetch the tasks' data from the Hugging Face hub into DIR, in the native layout that "
                    "data.dir=DIR reads, with sha256 checksums (DIR/MANIFEST.json, DIR/SHA256SUMS).")
    parser.add_argument("--dir", required=True, type=Path, help="the folder to fill (data.dir of later runs)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), metavar="TASK",
                        help=f"tasks to fetch (default: all): {' '.join(TASKS)}")
    parser.add_argument("--winogrande-sizes", nargs="+", default=list(DEFAULT_WINOGRANDE_SIZES), metavar="SIZE",
                        help="WinoGrande training sizes, one train_<size>.jsonl each (default: xs xl; "
                             f"choices {' '.join(WINOGRANDE_SIZES)})")
    parser.add_argument("--force", action="store_true", help="overwrite files that differ from the hub's")
    args = parser.parse_args(argv)
    tasks = [t for arg in args.tasks for t in arg.split(",") if t]
    try:
        for task in tasks:
            if task not in TASKS:
                raise ConfigError(f"--tasks {task}: not a task of zobench; choose from {', '.join(TASKS)}.")
        fetch_tasks(args.dir.expanduser().resolve(), tasks, args.winogrande_sizes, args.force)
    except ConfigError as exc:
        print(f"zobench-data: error: {exc}", file=sys.stderr)
        return 1
    print(f"zobench-data: done; run with data.dir={args.dir.expanduser().resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
