"""zobench-data: the tasks from a faked Hugging Face hub into the data.dir layout, with checksums; no network."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import compose_cfg
from tests.native_data import SHARED_DATA, copa_rows, multirc_rows, sst2_rows, winogrande_rows
from zobench import data_cli
from zobench.tasks import load_task

FILES = ["sst2/train.tsv", "sst2/dev.tsv", "copa/train.jsonl", "copa/val.jsonl", "winogrande/train_xs.jsonl",
         "winogrande/train_xl.jsonl", "winogrande/dev.jsonl", "multirc/train.jsonl", "multirc/val.jsonl"]


def hub_multirc(paragraphs):
    """SuperGLUE's hub layout: one row per answer."""
    return [{"paragraph": p["passage"]["text"], "question": q["question"], "answer": a["text"],
             "idx": {"paragraph": p["idx"], "question": q["idx"], "answer": a["idx"]}, "label": a["label"]}
            for p in paragraphs for q in p["passage"]["questions"] for a in q["answers"]]


def small_hub():
    """(dataset, config, split) -> rows, as the hub's datasets give them."""
    def wino(n, tag):
        return [{k: v for k, v in r.items() if k != "qID"} for r in winogrande_rows(n, tag)]

    return {
        ("glue", "sst2", "train"): [{"sentence": s, "label": lab, "idx": i} for i, (s, lab) in enumerate(sst2_rows(40, "train"))],
        ("glue", "sst2", "validation"): [{"sentence": s, "label": lab, "idx": i} for i, (s, lab) in enumerate(sst2_rows(15, "dev"))],
        ("super_glue", "copa", "train"): copa_rows(30, "train"),
        ("super_glue", "copa", "validation"): copa_rows(12, "val"),
        ("winogrande", "winogrande_xs", "train"): wino(20, "xs"),
        ("winogrande", "winogrande_xl", "train"): wino(40, "xl"),
        ("winogrande", "winogrande_xl", "validation"): wino(12, "dev"),
        ("super_glue", "multirc", "train"): hub_multirc(multirc_rows(5, "train")),
        ("super_glue", "multirc", "validation"): hub_multirc(multirc_rows(8, "val")),
    }


@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset answered from memory; every call is recorded."""
    import datasets

    tables, calls = small_hub(), []

    def load_dataset(path, name=None, split=None, revision=None, **kwargs):
        calls.append((path, name, split, revision))
        if (path, name, split) not in tables:
            raise FileNotFoundError(f"no such dataset {path}/{name}[{split}]")
        return datasets.Dataset.from_list(tables[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return tables, calls


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetches_every_task_into_the_layout_that_data_dir_reads(fake_hub, tmp_path, capsys):
    tables, calls = fake_hub
    root = tmp_path / "data"
    assert data_cli.main(["--dir", str(root)]) == 0
    assert {(p, n, s) for p, n, s, _ in calls} == set(tables)  # the hub ids and splits of conf/task/*.yaml
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(
        FILES + ["MANIFEST.json", "SHA256SUMS"])
    manifest = json.loads((root / "MANIFEST.json").read_text())
    for rel in FILES:
        entry = manifest["files"][rel]
        assert entry["sha256"] == sha(root / rel) and entry["bytes"] == (root / rel).stat().st_size
    assert manifest["files"]["sst2/train.tsv"] | {"sha256": 0, "bytes": 0} == {
        "sha256": 0, "bytes": 0, "task": "sst2", "dataset": "glue", "config": "sst2", "split": "train",
        "revision": None, "rows": 40}
    assert manifest["files"]["winogrande/train_xs.jsonl"]["config"] == "winogrande_xs"
    sums = dict(reversed(line.split("  ", 1)) for line in (root / "SHA256SUMS").read_text().splitlines())
    assert sums == {rel: manifest["files"][rel]["sha256"] for rel in FILES}  # sha256sum -c format
    assert (root / "sst2/dev.tsv").read_text().splitlines()[:2] == ["sentence\tlabel", "dev review number 0 . \t0"]
    # the native loader reads them: the records the hub path gives, the same sizes
    for task, train in (("sst2", 40), ("copa", 30), ("winogrande", 20), ("multirc", 5 * 6)):
        cfg = compose_cfg(f"task={task}", f"data.dir={root}", "data.num_train=8", "data.num_dev=4", "data.num_eval=6",
                          "trainer.batch_size=4")
        data = load_task(cfg.task, cfg.data)
        assert data.info["pool_sizes"]["train"] == train and len(data.eval) == 6
        assert "split" not in data.info  # MultiRC trains on its train split, as from the hub
    xl = compose_cfg("task=winogrande", f"data.dir={root}", "task.files.train=winogrande/train_xl.jsonl")
    assert load_task(xl.task, xl.data).info["pool_sizes"]["train"] == 40
    assert "data.dir=" in capsys.readouterr().out


def test_a_second_fetch_leaves_identical_files_and_refuses_a_differing_one(fake_hub, tmp_path, capsys):
    root = tmp_path / "data"
    assert data_cli.main(["--dir", str(root), "--tasks", "sst2", "copa"]) == 0
    before = {rel: sha(root / rel) for rel in FILES[:4]}
    assert data_cli.main(["--dir", str(root), "--tasks", "sst2"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert {rel: sha(root / rel) for rel in FILES[:4]} == before

    edited = root / "copa/val.jsonl"
    edited.write_text(edited.read_text() + '{"premise": "edited"}\n')
    on_disk = sha(edited)
    assert data_cli.main(["--dir", str(root), "--tasks", "sst2,copa", "--winogrande-sizes", "xs"]) == 1
    err = capsys.readouterr().err
    assert f"{edited} exists and differs" in err and on_disk in err and before["copa/val.jsonl"] in err
    assert "--force" in err and "Nothing was written" in err
    assert sha(edited) == on_disk  # left as it was
    assert data_cli.main(["--dir", str(root), "--tasks", "copa", "--force"]) == 0
    assert sha(edited) == before["copa/val.jsonl"] and "replaced" in capsys.readouterr().out
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == set(FILES[:4])  # earlier entries kept


def test_nothing_is_written_when_a_split_cannot_be_fetched(monkeypatch, tmp_path, capsys):
    import datasets

    def offline(path, name=None, split=None, **kwargs):
        if path == "super_glue":
            raise ConnectionError("Couldn't reach 'super_glue' on the Hub (LocalEntryNotFoundError)")
        return datasets.Dataset.from_list(small_hub()[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert data_cli.main(["--dir", str(tmp_path / "data"), "--tasks", "sst2", "copa"]) == 1
    err = capsys.readouterr().err
    assert "hub:super_glue/copa[train]" in err and "ConnectionError" in err
    assert not (tmp_path / "data").exists()


def test_script_datasets_are_read_from_the_parquet_export(monkeypatch, tmp_path):
    """datasets >= 4 refuses script datasets (super_glue, winogrande): the hub's Parquet export, recorded."""
    import datasets

    tables = small_hub()

    def load_dataset(path, name=None, split=None, revision=None, data_dir=None, **kwargs):
        if revision != data_cli_parquet():
            raise RuntimeError("Dataset scripts are no longer supported, but found super_glue.py")
        return datasets.Dataset.from_list(tables[(path, data_dir, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert data_cli.main(["--dir", str(tmp_path), "--tasks", "copa"]) == 0
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert manifest["files"]["copa/train.jsonl"]["revision"] == data_cli_parquet()


def data_cli_parquet():
    from zobench.tasks import PARQUET_REVISION

    return PARQUET_REVISION


def test_unknown_task_is_refused_with_the_choices(tmp_path, capsys):
    assert data_cli.main(["--dir", str(tmp_path), "--tasks", "rte"]) == 1
    assert "sst2, copa, winogrande, multirc" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "SHA256SUMS").is_file(), reason="needs ../shared/data")
def test_the_files_are_byte_identical_to_the_released_ones(monkeypatch, tmp_path):
    """Hub rows holding the GLUE / SuperGLUE data give the released files byte for byte (the checksums of
    ../shared/data/SHA256SUMS): SST-2 dev, COPA train and val."""
    import datasets

    from zobench.tasks.base import read_jsonl, read_tsv

    sums = dict(reversed(line.split("  ", 1)) for line in (SHARED_DATA / "SHA256SUMS").read_text().splitlines())
    dev = [{"sentence": r["sentence"], "label": int(r["label"]), "idx": i}
           for i, (_, r) in enumerate(read_tsv(SHARED_DATA / "sst2/dev.tsv", ("sentence", "label")))]
    tables = {("glue", "sst2", "train"): dev, ("glue", "sst2", "validation"): dev,
              ("super_glue", "copa", "train"): [r for _, r in read_jsonl(SHARED_DATA / "copa/train.jsonl")],
              ("super_glue", "copa", "validation"): [r for _, r in read_jsonl(SHARED_DATA / "copa/val.jsonl")]}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None, **kw: tables[(path, name, split)])
    assert data_cli.main(["--dir", str(tmp_path), "--tasks", "sst2", "copa"]) == 0
    for rel in ("sst2/dev.tsv", "copa/train.jsonl", "copa/val.jsonl"):
        assert sha(tmp_path / rel) == sums[rel], rel
