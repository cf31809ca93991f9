"""Bad input gets one clear message before any model loads ("Nothing lost, nothing mixed").

Each case drives what a user drives: the real CLI (``python -m zobench ...``, a subprocess) where the case
is about the command line, else ``precheck`` in-process, the task loader, ``load_model`` or ``run_cell``.
No model is ever loaded here: ``load_model`` (or the tokenizer / hub behind it) fails the test if called.

How a runs directory is made unwritable when the tests run as root (permission bits do not stop root):
a *file* where a directory is expected (``<tmp>/afile/runs``: ENOTDIR), and /sys, which refuses new
files even to root (EACCES; skipped where it does not).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMALL, compose_cfg
from tests.native_data import multirc_rows, write_jsonl
from zobench.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zobench", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=REPO)


def refused(argv: list[str]) -> str:
    """precheck's message for a command line it refuses (it must refuse it)."""
    from zobench.cli_check import precheck

    with pytest.raises(SystemExit) as exc:
        precheck(argv)
    assert isinstance(exc.value.code, str), exc.value.code
    return exc.value.code


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: every check here must come first."""
    import zobench.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(zobench.models, "load_model", no_loading)


@pytest.fixture
def base_args(native, tmp_path):
    return [f"data.dir={native}", f"paths.runs_dir={tmp_path / 'runs'}"]


def assert_one_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # one line, no traceback
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in done.stderr
    return lines[0]


# ---- 1. unknown keys, however they are added, in single runs and in sweeps -----------------------------


TRAINER_KEYS = "allowed keys are batch_size, checkpoint_every"


def test_an_added_unknown_key_is_refused_by_the_cli(base_args, tmp_path):
    done = cli("+trainer.stepz=3", *base_args, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line(done, "zobench: bad config: +trainer.stepz=3", "trainer.stepz is not a key of trainer",
                    TRAINER_KEYS, "Did you mean trainer.steps?")
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()  # nothing ran, nothing written


def test_a_sweep_refuses_an_added_unknown_key_before_any_cell(base_args, tmp_path):
    done = cli("-m", "+trainer.stepz=3", "seed=0,1", *base_args)
    assert_one_line(done, "zobench: bad config: +trainer.stepz=3", "trainer.stepz is not a key of trainer",
                    "Did you mean trainer.steps?")
    assert not (tmp_path / "runs").exists()


def test_a_sweep_explains_a_misspelled_key_instead_of_hydras_advice(base_args, tmp_path):
    done = cli("-m", "trainer.stepz=3", "seed=0,1", *base_args)
    line = assert_one_line(done, "trainer.stepz is not a key of trainer", TRAINER_KEYS, "Did you mean trainer.steps?")
    assert "not in struct" not in line and "append" not in line  # Hydra's raw error and its advice to add '+'
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv,needles", [
    (["+stepz=3"], ["+stepz=3 adds a key", "stepz is not a key of the top level", "seed, sweep_name"]),
    (["+trainr.steps=1"], ["trainr is not a key of the top level", "Did you mean trainer?"]),
    (["+optimizer.lrr=1"], ["optimizer.lrr is not a key of optimizer", "Did you mean optimizer.lr?"]),
    (["++data.num_trian=5"], ["data.num_trian is not a key of data", "Did you mean data.num_train?"]),
    (["+model.hubid=x"], ["model.hubid is not a key of model", "Did you mean model.hub_id?"]),
    (["+task.metrc=f1"], ["task.metrc is not a key of task"]),
    (["+tuning.rank=4", "tuning=lora"], ["tuning.rank is not a key of tuning"]),
    (["+logger.projekt=x"], ["logger.projekt is not a key of logger"]),
    (["+paths.run_dir=/tmp"], ["paths.run_dir is not a key of paths", "Did you mean paths.runs_dir?"]),
    # a key that other choices of the group have: named, with the choices that have it
    (["optimizer=bszo", "+optimizer.direction_stream=mezo"],
     ["optimizer.direction_stream is not a key of optimizer", "optimizer=zo_sgd"]),
    (["optimizer=fo_adam", "optimizer.direction_stream=mezo"],
     ["optimizer.direction_stream is not a key of optimizer", "optimizer=zo_sgd"]),
    (["+trainer.steps=3"], ["trainer.steps is already a key", "trainer.steps=3"]),  # '+' on a key that exists
    (["+experiment=cpu/base", "+search.steps=3"], ["search.steps is not a key of search"]),
])
def test_unknown_keys_are_refused_with_the_allowed_keys(argv, needles, base_args, no_model):
    message = refused([*base_args, *argv])
    assert message.startswith("zobench: bad config:")
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize("argv,needles", [
    (["-m", "+optimizer.lrr=1", "optimizer=zo_sgd,fo_adam"], ["optimizer.lrr is not a key of optimizer"]),
    # a key that only some of the sweep's choices have: the cells it would break are named
    (["-m", "optimizer=zo_sgd,fo_adam", "optimizer.direction_stream=mezo"],
     ["optimizer.direction_stream is not a key of optimizer", "in the sweep's cells with optimizer=fo_adam"]),
    (["-m", "+experiment=template_ablation", "+trainer.stepz=1"], ["trainer.stepz is not a key of trainer"]),
])
def test_sweeps_check_every_choice_of_the_groups(argv, needles, base_args, no_model):
    message = refused([*base_args, *argv])
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize("argv", [
    ["++trainer.pad_to_length=64", "trainer.max_length=64"],      # '++' on a key the config has
    ["+model.load_kwargs.attn_implementation=eager"],             # a pass-through dict (from_pretrained kwargs)
    ["+model.tiny.layer_norm_eps=1e-6"],                          # the tiny model's transformers config
    ["~tuning_optimizer"],                                        # an optional group may be dropped
    ["+experiment=memory_vs_length", "model=tiny-opt"],           # an experiment adds its own keys ...
    ["+experiment=cpu/zobench_sst2/zo_sgd_full", "zo_steps=3", "model=tiny-opt"],  # ... which may then be set
])
def test_documented_additions_keep_working(argv, base_args, no_model):
    from zobench.cli_check import precheck

    precheck([*base_args, *argv])


@pytest.mark.parametrize("argv", [
    ["-m", "+experiment=template_ablation"],                      # sweeper params from the experiment
    ["-m", "+experiment=memory_vs_length", "model=tiny-opt"],
    ["-m", "optimizer=zo_sgd,fo_sgd", "trainer.loss=lm,hinge"],   # a bad value fails its cell only, as before
    ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1"],
])
def test_good_sweeps_pass(argv, base_args, no_model):
    from zobench.cli_check import precheck

    precheck([*base_args, *argv])


# ---- 2. split sizes: MultiRC paragraphs whose ids collide, empty sets -----------------------------------


def colliding_multirc(root: Path) -> Path:
    rows = multirc_rows(4, "val")
    for row in rows:
        row["idx"] = 0  # every paragraph called 0: they would merge into one, and train gets none
    return write_jsonl(root / "multirc/val.jsonl", rows)


def test_colliding_multirc_paragraph_ids_name_the_file_and_lines(native, small_cfg):
    from zobench.tasks import validate_task

    path = colliding_multirc(native)
    cfg = small_cfg("task=multirc")
    with pytest.raises(ConfigError, match=rf"{path}, line 2: paragraph idx 0 is already the idx of line 1"):
        validate_task(cfg.task, cfg.data)


def test_colliding_paragraphs_fail_the_run_before_the_model_loads(native, small_cfg, tmp_path, no_model):
    from zobench.run import run_cell

    colliding_multirc(native)
    summary = run_cell(small_cfg("task=multirc"), tmp_path / "run")
    assert summary["status"] == "failed"
    assert summary["error"].startswith("ConfigError:") and "paragraph idx 0 is already the idx of line 1" in summary["error"]
    assert not (tmp_path / "run" / "traceback.txt").exists()  # a user error: the message is the record
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_an_empty_train_set_names_task_split_sizes_and_keys(native, small_cfg, tmp_path, no_model):
    """One MultiRC paragraph: the offline split gives it to eval, and train would be empty (the crash after
    the zero-shot evaluation, ``max() arg is an empty sequence``, that this replaces)."""
    from zobench.run import run_cell
    from zobench.tasks import load_task

    write_jsonl(native / "multirc/val.jsonl", multirc_rows(1, "val"))
    cfg = small_cfg("task=multirc")
    with pytest.raises(ConfigError) as err:
        load_task(cfg.task, cfg.data)
    message = str(err.value)
    for needle in ("task multirc: the train set is empty", "data.num_train=16, data.num_dev=8, data.num_eval=12",
                   "train 0, dev 0, eval 6", "0 train paragraphs / 1 eval paragraphs"):
        assert needle in message, (needle, message)
    summary = run_cell(cfg, tmp_path / "run")
    assert summary["status"] == "failed" and "the train set is empty" in summary["error"]
    assert not (tmp_path / "run" / "traceback.txt").exists()


def test_an_empty_dev_set_is_refused_and_num_dev_0_is_fine(native):
    from zobench.tasks import validate_task

    write_jsonl(native / "copa/train.jsonl", [json.loads((native / "copa/train.jsonl").read_text().splitlines()[0])])
    task = compose_cfg("task=copa").task
    data = {"dir": str(native), "num_train": 4, "num_dev": 2, "num_eval": 3, "seed": 0}
    with pytest.raises(ConfigError, match=r"task copa: the dev set is empty: .* give train 1, dev 0, eval 3"):
        validate_task(task, data)
    validate_task(task, {**data, "num_dev": 0})


# ---- 4. non-finite hyperparameters; a batch larger than the train set ------------------------------------


@pytest.mark.parametrize("override,key", [
    ("optimizer.lr=inf", "optimizer.lr=inf"),
    ("optimizer.lr=-inf", "optimizer.lr=-inf"),
    ("optimizer.lr=nan", "optimizer.lr=nan"),
    ("optimizer.eps=inf", "optimizer.eps=inf"),
    ("optimizer.weight_decay=inf", "optimizer.weight_decay=inf"),
    ("optimizer.weight_decay=nan", "optimizer.weight_decay=nan"),
])
def test_non_finite_floats_are_refused(override, key, base_args, no_model):
    message = refused([*base_args, override])
    assert key in message and "finite" in message, message


def test_a_non_finite_float_anywhere_in_the_config_is_refused():
    from zobench.validate import validate_config

    with pytest.raises(ConfigError, match=r"optimizer\.transforms\[0\]\.beta=inf"):
        validate_config(compose_cfg("optimizer=zo_sgd_mmt", "optimizer.transforms.0.beta=inf"))
    with pytest.raises(ConfigError, match=r"optimizer\.max_grad_norm=inf .* finite"):
        validate_config(compose_cfg("optimizer=fo_adam", "optimizer.max_grad_norm=inf"))


def test_a_batch_larger_than_the_train_set_is_refused(base_args, no_model):
    message = refused([*base_args, *SMALL, "trainer.batch_size=32"])  # 16 training examples
    for needle in ("trainer.batch_size=32 is larger than the train set", "task sst2 has 16 training examples",
                   "data.num_train=16", "at most 16"):
        assert needle in message, (needle, message)


def test_the_real_train_size_is_named_when_the_split_is_short(base_args, no_model):
    """COPA's native train file here holds 30 records: 100 + 8 asked for give 22 train, 8 dev."""
    message = refused([*base_args, *SMALL, "task=copa", "data.num_train=100", "trainer.batch_size=24"])
    for needle in ("trainer.batch_size=24", "task copa has 22 training examples", "data.num_train=100",
                   "train split of 30 records, 8 of them dev"):
        assert needle in message, (needle, message)


def test_the_batch_check_runs_in_run_cell_and_on_hub_data(small_cfg, tmp_path, monkeypatch, no_model):
    from zobench.run import run_cell
    from zobench.tasks import load_task

    summary = run_cell(small_cfg("trainer.batch_size=17"), tmp_path / "run")
    assert summary["status"] == "failed" and "trainer.batch_size=17 is larger than the train set" in summary["error"]
    assert not (tmp_path / "run" / "traceback.txt").exists()
    # hub data (no data.dir): known only once loaded, so load_task checks it, before any model
    datasets = pytest.importorskip("datasets")
    rows = [{"sentence": f"review {i}", "label": i % 2, "idx": i} for i in range(10)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    cfg = compose_cfg(*SMALL, "trainer.batch_size=8")  # 10 rows: 8 dev, 2 train
    with pytest.raises(ConfigError, match=r"trainer\.batch_size=8 is larger than the train set: task sst2 has 2"):
        load_task(cfg.task, cfg.data)
    icl = compose_cfg(*SMALL, "tuning=icl", "trainer.batch_size=8")  # trains nothing: no batch to fill
    load_task(icl.task, icl.data)


# ---- 3. a runs directory that cannot be written ------------------------------------------------------------


def test_a_runs_dir_below_a_file_is_one_line(native, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    runs = tmp_path / "afile" / "runs"
    done = cli(f"data.dir={native}", f"paths.runs_dir={runs}", "trainer.steps=0")
    assert_one_line(done, f"zobench: cannot write runs to {runs}: Not a directory ({tmp_path / 'afile'} is a file)")


def test_a_sweep_dir_below_a_file_is_one_line(native, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    done = cli("-m", f"data.dir={native}", f"hydra.sweep.dir={tmp_path / 'afile' / 'sweep'}", "seed=0,1")
    assert_one_line(done, f"zobench: cannot write runs to {tmp_path / 'afile' / 'sweep'}: Not a directory")


def _sys_refuses() -> bool:
    from zobench.cli_check import writable_dir_problem

    return writable_dir_problem(Path("/sys/zobench-runs")) is not None


@pytest.mark.skipif(not _sys_refuses(), reason="/sys accepts new files here")
def test_a_read_only_runs_dir_is_one_line_even_for_root(native):
    done = cli(f"data.dir={native}", "paths.runs_dir=/sys/zobench-runs", "trainer.steps=0")
    line = assert_one_line(done, "zobench: cannot write runs to /sys/zobench-runs: ")
    assert "Permission denied" in line or "Read-only" in line, line


def test_runs_dir_checks_in_process(native, tmp_path, no_model):
    (tmp_path / "afile").write_text("x")
    message = refused([f"data.dir={native}", f"hydra.run.dir={tmp_path / 'afile' / 'run'}"])
    assert message == f"zobench: cannot write runs to {tmp_path / 'afile' / 'run'}: Not a directory ({tmp_path / 'afile'} is a file)"
    message = refused(["-m", f"data.dir={native}", f"paths.runs_dir={tmp_path / 'afile'}", "seed=0,1"])
    assert message.startswith(f"zobench: cannot write runs to {tmp_path / 'afile'}: Not a directory")
    from zobench.cli_check import precheck

    precheck([f"data.dir={native}", f"paths.runs_dir={tmp_path / 'new' / 'runs'}"])  # absent but creatable: fine
    assert not (tmp_path / "new").exists()  # and the check leaves nothing behind


# ---- 5. deleting a key ------------------------------------------------------------------------------------


def test_deleting_a_required_key_is_refused_by_the_cli(base_args, tmp_path):
    done = cli("~trainer.steps", *base_args)
    line = assert_one_line(done, "zobench: bad config: ~trainer.steps deletes trainer.steps",
                           "deleting a key is not allowed", "trainer.steps=<value> (now 100)")
    assert "did you mean" not in line.lower()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv,needles", [
    (["~optimizer.eps"], ["~optimizer.eps deletes optimizer.eps", "not allowed"]),
    (["~logger"], ["~logger deletes the config group logger", "logger=<none|wandb>"]),
    (["~trainer.stepz"], ["trainer.stepz is not a key of trainer", "Did you mean trainer.steps?"]),
    (["-m", "~data.num_train", "seed=0,1"], ["~data.num_train deletes data.num_train", "not allowed"]),
])
def test_deletions(argv, needles, base_args, no_model):
    message = refused([*base_args, *argv])
    for needle in needles:
        assert needle in message, (needle, message)


# ---- 6. model folders: empty, incomplete, a missing local copy (no hub call) ----------------------------------


@pytest.fixture
def no_hub(monkeypatch):
    """Any tokenizer / model download or hub lookup fails the test."""
    import transformers

    def no_call(*a, **k):
        raise AssertionError("the hub (or a loader) was called")

    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM, transformers.AutoModelForMaskedLM):
        monkeypatch.setattr(auto, "from_pretrained", no_call)


def test_an_empty_model_path_folder_says_so(base_args, tmp_path, no_hub):
    from zobench.models import load_model

    (tmp_path / "empty").mkdir()
    message = refused([*base_args, "model=smollm2-135m", f"model.path={tmp_path / 'empty'}"])
    assert f"model.path='{tmp_path / 'empty'}' is an empty folder" in message, message
    with pytest.raises(ConfigError, match="is an empty folder"):
        load_model(compose_cfg("model=smollm2-135m", f"model.path={tmp_path / 'empty'}").model, device="cpu")


@pytest.mark.parametrize("files,needle", [
    (["weights.bin"], "holds no config.json (it has weights.bin)"),
    (["model.gguf"], "give the .gguf file itself"),
    (["config.json", "model.safetensors"], "holds no tokenizer files"),
])
def test_an_incomplete_model_path_folder_says_what_is_missing(files, needle, tmp_path, no_hub):
    from zobench.models import load_model

    folder = tmp_path / "model"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    with pytest.raises(ConfigError) as err:
        load_model(compose_cfg("model=smollm2-135m", f"model.path={folder}").model, device="cpu")
    assert needle in str(err.value), str(err.value)


def test_a_missing_local_copy_says_make_offline_models_without_the_hub(base_args, tmp_path, monkeypatch, no_hub):
    from zobench.models import load_model

    monkeypatch.setenv("ZOBENCH_MODELS_DIR", str(tmp_path / "models"))
    message = refused([*base_args, "model=smollm2-135m"])
    for needle in (f"model=smollm2-135m: its local copy {tmp_path / 'models' / 'smollm2-135m'} (model.local_dir) "
                   "does not exist", "make offline-models", "model.local_dir=null"):
        assert needle in message, (needle, message)
    with pytest.raises(ConfigError, match="make offline-models"):
        load_model(compose_cfg("model=smollm2-135m").model, device="cpu")
    (tmp_path / "models" / "smollm2-135m").mkdir(parents=True)  # an interrupted copy: empty
    with pytest.raises(ConfigError, match=r"is an empty folder\. Delete it and run `make offline-models` again"):
        load_model(compose_cfg("model=smollm2-135m").model, device="cpu")


def test_a_missing_local_copy_fails_the_cell_without_a_traceback(small_cfg, tmp_path, monkeypatch, no_hub):
    from zobench.run import run_cell

    monkeypatch.setenv("ZOBENCH_MODELS_DIR", str(tmp_path / "models"))
    summary = run_cell(small_cfg("model=smollm2-135m"), tmp_path / "run")
    assert summary["status"] == "failed" and "make offline-models" in summary["error"]
    assert not (tmp_path / "run" / "traceback.txt").exists()


def test_hub_models_keep_the_hub_path(monkeypatch, tmp_path):
    """A model given by its hub id only is not checked locally: users with a network download it."""
    from zobench.models import check_weights_available, weights_source

    model = compose_cfg("model=opt-1.3b").model
    check_weights_available(model)
    assert weights_source(model) == "hub:facebook/opt-1.3b"
    monkeypatch.setenv("ZOBENCH_MODELS_DIR", str(tmp_path))  # smollm2 without its copy, local_dir=null: the hub
    smollm2 = compose_cfg("model=smollm2-135m", "model.local_dir=null").model
    check_weights_available(smollm2)
    assert weights_source(smollm2) == "hub:HuggingFaceTB/SmolLM2-135M-Instruct"


# ---- 7. non-UTF-8 bytes in a data file --------------------------------------------------------------------


@pytest.mark.parametrize("file,line", [("copa/train.jsonl", 3), ("sst2/dev.tsv", 5), ("multirc/val.jsonl", 2)])
def test_non_utf8_bytes_name_the_file_and_line(native, file, line, small_cfg):
    from zobench.tasks import validate_task

    path = native / file
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1][:10] + b"\xe9t\xe9" + lines[line - 1][10:]  # latin-1 "été"
    path.write_bytes(b"\n".join(lines))
    task = {"copa/train.jsonl": "copa", "sst2/dev.tsv": "sst2", "multirc/val.jsonl": "multirc"}[file]
    cfg = small_cfg(f"task={task}")
    with pytest.raises(ConfigError, match=rf"{path}, line {line}: not valid UTF-8 \(byte 0xe9 at column 11\)"):
        validate_task(cfg.task, cfg.data)


def test_non_utf8_bytes_through_the_precheck(native, base_args, no_model):
    path = native / "sst2/train.tsv"
    path.write_bytes(path.read_bytes().replace(b"review number 7 ", b"review n\xb0 7 "))
    message = refused([*base_args])
    assert message.startswith(f"zobench: bad config: {path}, line 9: not valid UTF-8 (byte 0xb0"), message
