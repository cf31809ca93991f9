"""Data sampling against MeZO's: the same seed draws the same records (zobench issue 12, point 5).

``MezoSampler`` below transcribes, in its semantics, MeZO large_models/tasks.py
``Dataset.sample_subset`` (under utils.py ``temp_seed``: numpy's *global* RNG seeded, then
restored) and the train / dev / eval draws of large_models/run.py ``main`` for a training run
(``--train_set_seed SEED --num_train --num_dev --num_eval``, mezo.sh). zobench draws with a private
``RandomState``; these tests check that the indices agree for several seeds and sizes, including
the short-split rule where zobench departs from MeZO, and that example ids do not move with the seed.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.native_data import SHARED_DATA
from tests.test_tasks import REPO, TASKS, data_cfg, task_cfg
from zobench.errors import ConfigError
from zobench.tasks import eval_sample, load_task, validate_task
from zobench.tasks.base import sample_indices, split_train_dev


@contextlib.contextmanager
def temp_seed(seed):
    """MeZO utils.py temp_seed: seed numpy's global RNG, restore its state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class MezoSampler:
    """MeZO's sampling over a split given as a list (its ``self.samples[split]``)."""

    def __init__(self, train, valid):
        self.samples = {"train": train, "valid": valid}

    def sample_subset(self, data_split="train", seed=0, num=100):
        with temp_seed(seed):
            index = np.random.permutation(len(self.samples[data_split])).tolist()[:num]
        return [self.samples[data_split][i] for i in index]

    def training_run(self, seed, num_train, num_dev, num_eval):
        """run.py main() with train_set_seed=seed: (train, dev, eval)."""
        train = self.sample_subset("train", seed, num_train + num_dev)  # dev is at the end of the train sample
        evals = self.sample_subset("valid", seed, num_eval) if num_eval is not None else self.samples["valid"]
        return train[:-num_dev], train[-num_dev:], evals


SIZES = [(400, 1000, 100), (67_349, 1000, 500), (1_267, 16, 8), (40, 6, 3), (5, 1, 1)]  # (split, train, dev)


@pytest.mark.parametrize("n_items,num_train,num_dev", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2, 42, 100])
def test_split_train_dev_draws_mezos_records(seed, n_items, num_train, num_dev):
    """MeZO large_models/tasks.py Dataset.sample_subset and run.py main() (dev = the last num_dev of
    the train sample): same train and dev, in the same order, for the same seed. COPA's
    (400, 1000 + 100) is MeZO's own short-split case (mezo.sh: Copa sets DEV=100): train 300, dev 100."""
    ref_train, ref_dev, _ = MezoSampler(list(range(n_items)), []).training_run(seed, num_train, num_dev, None)
    train, dev = split_train_dev(list(range(n_items)), num_train, num_dev, seed)
    assert (train, dev) == (ref_train, ref_dev)
    assert sample_indices(n_items, num_train + num_dev, seed) == ref_train + ref_dev


@pytest.mark.parametrize("seed", [0, 3])
def test_where_mezos_split_leaves_no_train_set_both_shrink_over_mezos_records(seed):
    """COPA at the default 1000 + 500: MeZO's run.py main() takes the last 500 of 400 records as dev
    and leaves train empty. zobench keeps MeZO's records and order but shrinks both in proportion."""
    ref_train, ref_dev, _ = MezoSampler(list(range(400)), []).training_run(seed, 1000, 500, None)
    assert ref_train == [] and len(ref_dev) == 400
    train, dev = split_train_dev(list(range(400)), 1000, 500, seed)
    assert (len(train), len(dev)) == (267, 133) and train + dev == ref_dev


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_load_task_train_dev_eval_are_mezos_records(native, seed):
    """MeZO run.py main() for a training run, end to end through the native SST-2 files: every
    sampled id is the id of MeZO's record (eval drawn with the train seed: data.eval_seed=null)."""
    mezo = MezoSampler([f"train:{i}" for i in range(40)], [f"dev:{i}" for i in range(15)])
    td = load_task(task_cfg("sst2"), {**data_cfg(native, num_train=6, num_dev=3, num_eval=5, seed=seed),
                                      "eval_seed": None})
    ref_train, ref_dev, ref_eval = mezo.training_run(seed, 6, 3, 5)
    assert [e.id for e in td.train] == ref_train
    assert [e.id for e in td.dev] == ref_dev
    assert [e.id for e in td.eval] == ref_eval
    assert td.info["eval_seed"] == seed


def test_eval_seed_int_fixes_the_eval_set_null_follows_data_seed(native):
    """data.eval_seed: an int draws eval as MeZO's sample_subset("valid", seed=eval_seed) whatever
    data.seed; null draws it with data.seed, as MeZO's run.py main() does for training runs."""
    mezo = MezoSampler([], [f"dev:{i}" for i in range(15)])
    fixed, moving = set(), set()
    for seed in (0, 1, 2):
        base = data_cfg(native, num_train=6, num_dev=3, num_eval=5, seed=seed)
        a = load_task(task_cfg("sst2"), {**base, "eval_seed": 4})
        b = load_task(task_cfg("sst2"), {**base, "eval_seed": None})
        assert [e.id for e in a.eval] == mezo.sample_subset("valid", 4, 5) and a.info["eval_seed"] == 4
        assert [e.id for e in b.eval] == mezo.sample_subset("valid", seed, 5) and b.info["eval_seed"] == seed
        fixed.add(tuple(e.id for e in a.eval))
        moving.add(tuple(e.id for e in b.eval))
    assert len(fixed) == 1 and len(moving) == 3
    default = load_task(task_cfg("sst2"), data_cfg(native, num_train=6, num_dev=3, num_eval=5, seed=2))
    assert default.info["eval_seed"] == 0  # no key: zobench's fixed eval set, seed 0
    assert OmegaConf.load(REPO / "conf/data/default.yaml").eval_seed == 0


def test_whole_eval_split_is_mezos_valid_samples_in_file_order(native):
    """MeZO run.py main(), num_eval None: eval_samples = task.valid_samples, unsampled and unshuffled."""
    td = load_task(task_cfg("sst2"), {**data_cfg(native, num_eval=None), "eval_seed": None})
    assert [e.id for e in td.eval] == [f"dev:{i}" for i in range(15)] and td.info["eval_seed"] is None
    assert eval_sample(list("abc"), None, 5) == list("abc")


@pytest.mark.parametrize("value", [-1, "zero", 1.5, True])
def test_bad_eval_seed_is_named_before_loading(native, value):
    with pytest.raises(ConfigError, match=r"data\.eval_seed=.*an integer >= 0 or null \(data\.seed"):
        validate_task(task_cfg("sst2"), {**data_cfg(native), "eval_seed": value})


@pytest.mark.parametrize("task", TASKS)
def test_ids_are_stable_across_seeds_and_templates_and_unique_within_a_split(native, task):
    """An id names one source record whatever the seed or template, so predictions pair across runs."""
    seen: dict = {}
    train_ids = set()
    for seed in (0, 1, 2):
        for template in ("mezo", "none"):
            td = load_task(task_cfg(task, template=template),
                           {**data_cfg(native, num_train=8, num_dev=4, num_eval=6, seed=seed), "eval_seed": None})
            for split, examples in (("train", td.train + td.dev), ("eval", td.eval)):
                ids = [e.id for e in examples]
                assert None not in ids and len(set(ids)) == len(ids)
                for e in examples:  # the same id always names the same record
                    assert seen.setdefault((split, template, e.id), (e.context, e.gold)) == (e.context, e.gold)
            if template == "mezo":
                train_ids.add(tuple(e.id for e in td.train))
    assert len(train_ids) == 3  # the seeds drew different records under the same ids


@pytest.mark.parametrize("task,train_file,eval_file", [
    ("sst2", "sst2/train.tsv", "sst2/dev.tsv"), ("copa", "copa/train.jsonl", "copa/val.jsonl"),
    ("winogrande", "winogrande/train_xs.jsonl", "winogrande/dev.jsonl"), ("multirc", None, "multirc/val.jsonl")])
def test_real_offline_files_have_unique_ids(task, train_file, eval_file):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no offline data at {SHARED_DATA}")
    import importlib

    module = importlib.import_module(f"zobench.tasks.{task}")
    for name in filter(None, (train_file, eval_file)):
        ids = [r["id"] for r in module.read_native(SHARED_DATA / name)]
        assert None not in ids and len(set(ids)) == len(ids), name
    if task == "sst2":  # GLUE rows: "<split>:<row>", the hub's idx
        assert module.read_native(SHARED_DATA / eval_file)[17]["id"] == "dev:17"


def test_eval_seed_is_checked_by_the_cli_before_any_model_loads(native, monkeypatch):
    import zobench.models
    from zobench.cli_check import precheck

    monkeypatch.setattr(zobench.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as exc:
        precheck([f"data.dir={native}", "data.eval_seed=-1"])
    assert "data.eval_seed=-1" in str(exc.value.code) and "or null (data.seed" in str(exc.value.code)
