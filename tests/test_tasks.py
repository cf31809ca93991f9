"""Tasks: native readers, templates, MeZO sampling, config errors, and the real offline data.

Everything here is offline: native files are written into tmp_path by the tests, the hub is a
monkeypatched ``datasets.load_dataset``, and the real copies in ../shared/data are used only when
present.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from zobench.errors import ConfigError
from tests.native_data import (SHARED_DATA, write_jsonl, write_native,
                               write_sst2_tsv)
from zobench.tasks import Example, available_tasks, load_task, validate_task

REPO = Path(__file__).resolve().parents[1]
TASK_CONFIGS = sorted((REPO / "conf" / "task").glob("*.yaml"))
TASKS = ["sst2", "copa", "winogrande", "multirc"]


def task_cfg(name: str, **overrides):
    cfg = OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")
    return OmegaConf.merge(cfg, overrides)


def data_cfg(root, num_train=4, num_dev=2, num_eval=3, seed=0) -> dict:
    return {"dir": None if root is None else str(root), "num_train": num_train, "num_dev": num_dev,
            "num_eval": num_eval, "seed": seed}


# ---- exact renders of known records, read from their native files -----------------------------

SST2_RECORD = ("it 's a charming and often affecting journey . ", 1)  # GLUE dev line 1, trailing space kept
COPA_RECORDS = [
    {"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
     "choice2": "The grass was cut.", "question": "cause", "label": 0, "idx": 0},
    # Trailing space on the premise, leading space on a choice (both occur in SuperGLUE train),
    # and a choice starting with "I", which MeZO keeps upper-case.
    {"premise": "The parents forbade their children from watching the movie. ", "choice1": " The movie was rated R.",
     "choice2": "I bought the DVD.", "question": "effect", "label": 1, "idx": 1},
]
WINOGRANDE_RECORD = {"qID": "3FCO-2", "sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
                     "option1": "Sarah", "option2": "Maria", "answer": "2"}
MULTIRC_RECORD = {"idx": 7, "passage": {"text": "Joey loved pie.", "questions": [
    {"question": "What did Joey love?", "idx": 0, "answers": [
        {"text": "pie", "idx": 0, "label": 1}, {"text": "cake", "idx": 1, "label": 0}]}]}}

EXPECTED = {
    ("sst2", "mezo"): [Example("it 's a charming and often affecting journey . It was", (" terrible", " great"), 1,
                                suffix=".", id="dev:0")],
    ("sst2", "none"): [Example("it 's a charming and often affecting journey .", (" terrible", " great"), 1, id="dev:0")],
    ("copa", "mezo"): [
        Example("My body cast a shadow over the grass because", (" the sun was rising.", " the grass was cut."), 0, id="0"),
        Example("The parents forbade their children from watching the movie so",
                (" the movie was rated R.", " I bought the DVD."), 1, id="1"),
    ],
    ("copa", "none"): [
        Example("My body cast a shadow over the grass.", (" The sun was rising.", " The grass was cut."), 0, id="0"),
        Example("The parents forbade their children from watching the movie.",
                (" The movie was rated R.", " I bought the DVD."), 1, id="1"),
    ],
    ("winogrande", "mezo"): [Example("Sarah was a much better surgeon than Maria so",
                                     (" Sarah always got the easier cases.", " Maria always got the easier cases."), 1,
                                     id="3FCO-2")],
    ("winogrande", "none"): [Example("Sarah was a much better surgeon than Maria so _ always got the easier cases.",
                                     (" Sarah", " Maria"), 1, id="3FCO-2")],
    ("multirc", "mezo"): [
        Example('Joey loved pie.\nQuestion: What did Joey love?\nI found this answer "pie". Is that correct? Yes or No?\n',
                ("No", "Yes"), 1, "7", id="7/0/0"),
        Example('Joey loved pie.\nQuestion: What did Joey love?\nI found this answer "cake". Is that correct? Yes or No?\n',
                ("No", "Yes"), 0, "7", id="7/0/1"),
    ],
    ("multirc", "none"): [
        Example("Joey loved pie.\nWhat did Joey love?\npie\n", ("No", "Yes"), 1, "7", id="7/0/0"),
        Example("Joey loved pie.\nWhat did Joey love?\ncake\n", ("No", "Yes"), 0, "7", id="7/0/1"),
    ],
}


def write_known(root: Path, task: str) -> Path:
    """The known records of ``task`` in its native eval file; returns that file."""
    if task == "sst2":
        return write_sst2_tsv(root / "sst2/dev.tsv", [SST2_RECORD])
    rows = {"copa": COPA_RECORDS, "winogrande": [WINOGRANDE_RECORD], "multirc": [MULTIRC_RECORD]}[task]
    return write_jsonl(root / task / {"copa": "val.jsonl", "winogrande": "dev.jsonl", "multirc": "val.jsonl"}[task], rows)


@pytest.mark.parametrize(("task", "template"), sorted(EXPECTED))
def test_render_known_records(tmp_path, task, template):
    module = importlib.import_module(f"zobench.tasks.{task}")
    records = module.read_native(write_known(tmp_path, task))
    assert [module.render(r, template) for r in records] == EXPECTED[task, template]


@pytest.mark.parametrize("task", TASKS)
def test_load_task_renders_known_records_end_to_end(tmp_path, task):
    root = write_native(tmp_path / "data")
    write_known(root, task)  # replaces the eval file
    td = load_task(task_cfg(task, template="mezo"), data_cfg(root, num_train=0, num_dev=0, num_eval=None))
    assert sorted(td.eval, key=repr) == sorted(EXPECTED[task, "mezo"], key=repr)
    assert (td.train, td.dev) == ([], [])


# ---- the hub path, with datasets.load_dataset faked ----------------------------------------------

HUB_ROWS = {  # hub rows holding the known records, in the hub's field layout
    "sst2": [{"sentence": SST2_RECORD[0], "label": 1, "idx": 0}],
    "copa": COPA_RECORDS,
    "winogrande": [{k: WINOGRANDE_RECORD[k] for k in ("sentence", "option1", "option2", "answer")}],
    "multirc": [{"paragraph": "Joey loved pie.", "question": "What did Joey love?", "answer": a["text"],
                 "idx": {"paragraph": 7, "question": 0, "answer": a["idx"]}, "label": a["label"]}
                for a in MULTIRC_RECORD["passage"]["questions"][0]["answers"]],
}
HUB_NAMES = {"sst2": ("glue", "sst2"), "copa": ("super_glue", "copa"),
             "winogrande": ("winogrande", "winogrande_xl"), "multirc": ("super_glue", "multirc")}


@pytest.mark.parametrize("task", TASKS)
def test_hub_path_loads_named_dataset_and_renders_like_native(monkeypatch, task):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return HUB_ROWS[task]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    td = load_task(task_cfg(task), data_cfg(None, num_train=0, num_dev=5, num_eval=None))
    path, name = HUB_NAMES[task]
    assert calls == [(path, name, "train"), (path, name, "validation")]
    assert td.info["source"] == {"train": f"hub:{path}/{name}[train]", "eval": f"hub:{path}/{name}[validation]"}
    # The same records as the native files; ids are the hub's own: its rows are the files' rows in order, and
    # WinoGrande's hub rows carry no qID, so there the id is the row's place in its split.
    hub_ids = {"sst2": ("dev:0", "train:0"), "winogrande": ("dev:0", "train:0")}
    eval_id, train_id = hub_ids.get(task, (None, None))
    for got, split_id in ((td.eval, eval_id), (td.dev, train_id)):
        expected = EXPECTED[task, "mezo"]
        if split_id:
            expected = [dataclasses.replace(e, id=split_id) for e in expected]
        assert sorted(got, key=repr) == sorted(expected, key=repr)


def test_a_script_dataset_is_loaded_from_the_hubs_parquet_export(monkeypatch, tmp_path):
    """datasets >= 4 refuses super_glue's loading script; the hub's Parquet export serves the same rows,
    one folder per config. The export's layout is rebuilt here and read by the real datasets."""
    datasets = pytest.importorskip("datasets")
    import pandas as pd

    export = tmp_path / "super_glue"  # refs/convert/parquet: <config>/<split>/0000.parquet
    for config, rows in (("copa", HUB_ROWS["copa"]), ("sst2", HUB_ROWS["sst2"])):  # another config beside it
        for split in ("train", "validation"):
            (export / config / split).mkdir(parents=True)
            pd.DataFrame(rows).to_parquet(export / config / split / "0000.parquet")
    real, calls = datasets.load_dataset, []

    def fake_load_dataset(path, name=None, split=None, revision=None, data_dir=None):
        calls.append((path, name, data_dir, split, revision))
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found super_glue.py")
        return real(str(export), name, data_dir=data_dir, split=split)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    td = load_task(task_cfg("copa"), data_cfg(None, num_train=0, num_dev=2, num_eval=None))
    assert calls[:2] == [("super_glue", "copa", None, "train", None),
                         ("super_glue", None, "copa", "train", "refs/convert/parquet")]
    assert td.info["source"]["eval"] == "hub:super_glue/copa[validation]@refs/convert/parquet"
    assert sorted(td.eval, key=repr) == sorted(EXPECTED["copa", "mezo"], key=repr)
    calls.clear()  # a pinned revision is used as is, and any other error is not hidden
    pinned = task_cfg("copa")
    OmegaConf.update(pinned, "hub.revision", "abc123")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(k) or HUB_ROWS["copa"])
    load_task(pinned, data_cfg(None, num_train=0, num_dev=2, num_eval=None))
    assert {c["revision"] for c in calls} == {"abc123"}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("offline")))
    with pytest.raises(RuntimeError, match="offline"):
        load_task(task_cfg("copa"), data_cfg(None, num_train=0, num_dev=2, num_eval=None))


# ---- sampling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_sampling_deterministic_disjoint_sized(native, task):
    cfg = task_cfg(task)
    a = load_task(cfg, data_cfg(native, num_train=6, num_dev=3, num_eval=5, seed=1))
    # Plain containers work as well as DictConfig nodes.
    b = load_task(OmegaConf.to_container(cfg), OmegaConf.create(data_cfg(native, num_train=6, num_dev=3, num_eval=5, seed=1)))
    c = load_task(cfg, data_cfg(native, num_train=6, num_dev=3, num_eval=5, seed=2))
    assert (a.train, a.dev, a.eval, a.info) == (b.train, b.dev, b.eval, b.info)
    assert (len(a.train), len(a.dev), len(a.eval)) == (6, 3, 5)
    assert (a.info["num_train"], a.info["num_dev"], a.info["num_eval"]) == (6, 3, 5)
    assert not set(a.train) & set(a.dev)
    assert a.train != c.train
    assert a.eval == c.eval  # eval is drawn with a fixed seed, whatever data.seed


@pytest.mark.parametrize("task", TASKS)
def test_sampling_short_split_shrinks_both_sets_in_proportion(native, task):
    td = load_task(task_cfg(task), data_cfg(native, num_train=2000, num_dev=1000, num_eval=None))
    pool = td.info["pool_sizes"]
    n_dev = round(pool["train"] / 3)
    assert (len(td.dev), len(td.train), len(td.eval)) == (n_dev, pool["train"] - n_dev, pool["eval"])
    assert (td.info["num_train"], td.info["num_dev"], td.info["num_eval"]) == (pool["train"] - n_dev, n_dev, pool["eval"])
    assert not {str(e) for e in td.train} & {str(e) for e in td.dev}


def test_copa_at_mezo_sizes_keeps_a_train_set():
    from zobench.tasks.base import split_train_dev

    train, dev = split_train_dev(list(range(400)), 1000, 500, seed=0)
    assert (len(train), len(dev)) == (267, 133) and not set(train) & set(dev)


def test_templates_do_not_change_which_records_are_sampled(native):
    mezo = load_task(task_cfg("sst2", template="mezo"), data_cfg(native, seed=3))
    none = load_task(task_cfg("sst2", template="none"), data_cfg(native, seed=3))
    for split in ("train", "dev", "eval"):
        as_none = [Example(e.context[: -len(" It was")], e.candidates, e.gold, id=e.id) for e in getattr(mezo, split)]
        assert as_none == getattr(none, split)


# ---- MultiRC without a train file -----------------------------------------------------------------


def test_multirc_offline_split_is_disjoint_by_paragraph_and_seed_independent(native):
    cfg = task_cfg("multirc")
    evals = set()
    for seed in (0, 5):
        td = load_task(cfg, data_cfg(native, num_train=10_000, num_dev=6, num_eval=None, seed=seed))
        train_groups = {e.group for e in td.train + td.dev}
        eval_groups = {e.group for e in td.eval}
        assert train_groups and eval_groups and not train_groups & eval_groups
        assert len(train_groups | eval_groups) == 8
        evals.add(tuple(td.eval))
        assert td.info["split"] == (
            "multirc train drawn from val.jsonl paragraphs disjoint from eval (4 train paragraphs / 4 eval paragraphs)")
        assert td.info["source"]["train"] == td.info["source"]["eval"] == str(native / "multirc/val.jsonl")
    assert len(evals) == 1


def test_multirc_uses_train_file_when_present(tmp_path):
    root = write_native(tmp_path / "data", multirc_train=True)
    td = load_task(task_cfg("multirc"), data_cfg(root, num_train=10_000, num_dev=0, num_eval=None))
    assert "split" not in td.info
    assert td.info["pool_sizes"] == {"train": 5 * 6, "eval": 8 * 6}
    assert all(e.context.startswith("train paragraph") for e in td.train)


# ---- every task config: examples are well formed --------------------------------------------------


def check_examples(examples):
    for e in examples:
        assert len(e.candidates) >= 2 and all(e.candidates)
        assert 0 <= e.gold < len(e.candidates)
        assert e.context.strip()


@pytest.mark.parametrize("config", TASK_CONFIGS, ids=lambda p: p.stem)
def test_every_task_config_conforms(native, config):
    cfg = OmegaConf.load(config)
    assert cfg.name in available_tasks() and cfg.metric in ("accuracy", "f1")
    module = importlib.import_module(f"zobench.tasks.{cfg.name}")
    for template in module.TEMPLATES:
        validate_task(OmegaConf.merge(cfg, {"template": template}), data_cfg(native))
        td = load_task(OmegaConf.merge(cfg, {"template": template}),
                       data_cfg(native, num_train=10_000, num_dev=3, num_eval=None))
        assert td.train and td.dev and td.eval
        check_examples(td.train + td.dev + td.eval)


def test_task_configs_match_task_modules():
    assert sorted(p.stem for p in TASK_CONFIGS) == available_tasks() == sorted(TASKS)
    # MeZO scores MultiRC by accuracy (tests/reference/test_protocol.py); every task names its reference loss
    assert OmegaConf.load(REPO / "conf/task/multirc.yaml").metric == "accuracy"
    assert all(OmegaConf.load(p).loss in ("lm", "classification") for p in TASK_CONFIGS)


# ---- errors --------------------------------------------------------------------------------------


def test_unknown_template_lists_allowed(native):
    with pytest.raises(ConfigError, match=r"task\.template='fancy'.*mezo, none"):
        validate_task(task_cfg("copa", template="fancy"), data_cfg(native))


def test_unknown_task_lists_modules(native):
    with pytest.raises(ConfigError, match=r"task\.name='boolq'.*copa, multirc, sst2, winogrande"):
        validate_task({**OmegaConf.to_container(task_cfg("copa")), "name": "boolq"}, data_cfg(native))


def test_bad_metric_and_sizes(native):
    with pytest.raises(ConfigError, match=r"task\.metric='auc'"):
        validate_task(task_cfg("sst2", metric="auc"), data_cfg(native))
    with pytest.raises(ConfigError, match=r"data\.num_train=-1"):
        validate_task(task_cfg("sst2"), data_cfg(native, num_train=-1))
    with pytest.raises(ConfigError, match=r"data\.num_eval=0"):
        validate_task(task_cfg("sst2"), data_cfg(native, num_eval=0))


def test_missing_file_names_data_dir_file_and_layout(native):
    (native / "sst2/dev.tsv").unlink()
    with pytest.raises(ConfigError) as err:
        validate_task(task_cfg("sst2"), data_cfg(native))
    msg = str(err.value)
    assert "data.dir" in msg and str(native) in msg and "'sst2/dev.tsv'" in msg
    assert "<data.dir>/sst2/train.tsv and <data.dir>/sst2/dev.tsv" in msg


def test_missing_data_dir(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.dir=.*nowhere.*a folder"):
        validate_task(task_cfg("copa"), data_cfg(tmp_path / "nowhere"))


def test_bad_jsonl_line_names_file_and_line(native):
    path = native / "copa/train.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = '{"premise": "broken'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}, line 3: not valid JSON"):
        validate_task(task_cfg("copa"), data_cfg(native))


@pytest.mark.parametrize(("task", "file", "row", "pattern"), [
    ("copa", "copa/val.jsonl", {**COPA_RECORDS[0], "question": "reason"}, r"field 'question' is 'reason'"),
    ("copa", "copa/val.jsonl", {k: v for k, v in COPA_RECORDS[0].items() if k != "choice2"}, r"missing field 'choice2'"),
    ("winogrande", "winogrande/dev.jsonl", {**WINOGRANDE_RECORD, "sentence": "No blank here."}, r"sentence .* has 0 blanks"),
    ("winogrande", "winogrande/dev.jsonl", {**WINOGRANDE_RECORD, "answer": "3"}, r"field 'answer' is '3'"),
    ("multirc", "multirc/val.jsonl", {"idx": 1, "passage": {"text": "t", "questions": [
        {"question": "q", "answers": [{"text": "a", "label": 2}]}]}}, r"field 'label' is 2"),
])
def test_bad_record_names_file_line_and_field(native, task, file, row, pattern):
    path = native / file
    path.write_text(path.read_text() + json.dumps(row) + "\n")
    n_lines = len(path.read_text().splitlines())
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}, line {n_lines}: {pattern}"):
        validate_task(task_cfg(task), data_cfg(native))


def test_wrong_tsv_header(native):
    path = native / "sst2/train.tsv"
    path.write_text("text\tlabel\n" + path.read_text().split("\n", 1)[1])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}, line 1: header is 'text\\tlabel', expected 'sentence\\tlabel'"):
        validate_task(task_cfg("sst2"), data_cfg(native))


def test_bad_tsv_row(native):
    path = native / "sst2/dev.tsv"
    path.write_text(path.read_text() + "no label column here\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}, line 17: expected 2 tab-separated fields"):
        validate_task(task_cfg("sst2"), data_cfg(native))


# ---- integration: the real offline copies --------------------------------------------------------

REAL = {  # task -> (eval pool size, train pool size, a check of one rendered mezo context)
    "sst2": (872, 67_349, lambda c: c.endswith(" It was")),
    "copa": (100, 400, lambda c: c.endswith((" because", " so"))),
    "winogrande": (1_267, 160, lambda c: "_" not in c),
    "multirc": (None, None, lambda c: c.endswith('". Is that correct? Yes or No?\n')),
}


@pytest.mark.parametrize("task", TASKS)
def test_real_offline_data(task):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no offline data at {SHARED_DATA}")
    n_eval_pool, n_train_pool, looks_right = REAL[task]
    cfg = task_cfg(task)
    validate_task(cfg, data_cfg(SHARED_DATA))
    td = load_task(cfg, data_cfg(SHARED_DATA, num_train=16, num_dev=8, num_eval=None))
    pool = td.info["pool_sizes"]
    if task == "multirc":  # 4,848 answers of 83 paragraphs, split by paragraph
        assert pool["train"] + pool["eval"] == 4_848
        assert "(41 train paragraphs / 42 eval paragraphs)" in td.info["split"]
        assert not {e.group for e in td.train + td.dev} & {e.group for e in td.eval}
    else:
        assert (pool["eval"], pool["train"]) == (n_eval_pool, n_train_pool)
    assert (len(td.train), len(td.dev), len(td.eval)) == (16, 8, pool["eval"])
    check_examples(td.train + td.dev + td.eval)
    assert all(looks_right(e.context) for e in td.train + td.dev + td.eval)
    none = load_task(task_cfg(task, template="none"), data_cfg(SHARED_DATA, num_train=16, num_dev=8, num_eval=None))
    check_examples(none.train + none.dev + none.eval)


def test_a_native_file_is_parsed_once_for_validation_and_loading(native, monkeypatch):
    """validate_task reads the files before any model loads; load_task then reuses what it parsed,
    until the file changes."""
    import zobench.tasks.sst2 as sst2

    calls = []
    real = sst2.read_native
    monkeypatch.setattr(sst2, "read_native", lambda path: calls.append(path) or real(path))
    monkeypatch.setattr("zobench.tasks._READ_CACHE", {})
    cfg, data = task_cfg("sst2"), data_cfg(native, seed=1)
    validate_task(cfg, data)
    first = load_task(cfg, data)
    assert len(calls) == 2  # train and dev files, once each
    train = native / "sst2" / "train.tsv"
    train.write_text(train.read_text() + "one more line .\t1\n")
    load_task(cfg, data)
    assert len(calls) == 3 and calls[-1] == train  # the changed file is read again
    assert first.info["pool_sizes"]["train"] + 1 == load_task(cfg, data).info["pool_sizes"]["train"]
