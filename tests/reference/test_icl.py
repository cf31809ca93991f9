"""ICL demonstrations against MeZO's: every query its own k, drawn as MeZO draws them (issue 12, point 6).

The transcription below follows MeZO large_models/tasks.py ``Dataset.sample_train_sets`` (no
``seed``, no ``num_train_sets``: one train set per eval sample, seeds ``randint(0, 10000, n_eval)``
under ``temp_seed(0)``) and ``Dataset.sample_subset`` (``permutation(len)[:num]`` under the set's
seed; with ``exclude``, ``[:num + 1]`` less the excluded index), and large_models/run.py ``main``
(ICL branch: eval drawn with seed 0, query i scored with train set i by ``Framework.evaluate``
with ``one_train_set_per_eval_sample=True``).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.test_tasks import REPO, data_cfg, task_cfg
from zobench.errors import ConfigError
from zobench.tasks import load_task
from zobench.tuning import prepare_data, validate_tuning
from zobench.tuning.icl import check_data, demonstrations

K, SEP = 4, "\n\n"


@contextlib.contextmanager
def temp_seed(seed):
    """MeZO utils.py temp_seed."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def mezo_sample_subset(n_items, seed, num, exclude=None):
    """MeZO tasks.py Dataset.sample_subset, as indices."""
    with temp_seed(seed):
        index = np.random.permutation(n_items).tolist()[: num if exclude is None else num + 1]
    if exclude is not None and exclude in index:
        index.remove(exclude)
    else:
        index = index[:num]
    return index


def mezo_per_eval_train_sets(n_train, n_eval, num_train):
    """MeZO tasks.py Dataset.sample_train_sets(num_train, num_eval=n_eval) with seed and num_train_sets None."""
    with temp_seed(0):
        seeds = np.random.randint(0, 10000, n_eval)
    return [mezo_sample_subset(n_train, int(s), num_train) for s in seeds]


def icl_cfg(**overrides):
    cfg = OmegaConf.load(REPO / "conf/tuning/icl.yaml")
    cfg.merge_with({"num_demonstrations": K, **overrides})
    return cfg


def loaded(native, **data):
    return load_task(task_cfg("sst2"), {**data_cfg(native, **{"num_train": 10, "num_dev": 5, "num_eval": 8, **data})})


def test_default_is_per_example_and_demonstrations_differ_between_queries(native):
    td = loaded(native)
    icl = prepare_data(icl_cfg(), td)
    assert OmegaConf.load(REPO / "conf/tuning/icl.yaml").demonstrations == "per_example"
    prefixes = [q.context[: -len(e.context)] for q, e in zip(icl.eval + icl.dev, td.eval + td.dev)]
    assert all(p.count(SEP) == K for p in prefixes)
    assert len(set(prefixes)) == len(prefixes)  # 13 queries, 13 different demonstration sets
    assert [q.id for q in icl.eval] == [e.id for e in td.eval] and icl.train == td.train
    assert icl.info["icl"] == {"mode": "per_example", "pool": "train_sample", "pool_size": 10,
                               "num_demonstrations": K, "seed_of_seeds": 0}


def test_per_example_is_deterministic_and_moves_only_with_the_pool(native):
    a = prepare_data(icl_cfg(), loaded(native, seed=1))
    b = prepare_data(icl_cfg(), loaded(native, seed=1))
    c = prepare_data(icl_cfg(), loaded(native, seed=2))
    assert (a.eval, a.dev) == (b.eval, b.dev)
    assert [q.context for q in a.eval] != [q.context for q in c.eval]  # another train sample, other demos


def test_train_split_pool_gives_each_query_mezos_demonstrations(native):
    """MeZO tasks.py sample_train_sets + sample_subset, run.py main() ICL branch (eval seed 0): query i
    of the eval set is preceded by train-split records sample_subset("train", seeds[i], k), in order."""
    td = loaded(native, num_eval=8)
    icl = prepare_data(icl_cfg(demonstration_pool="train_split"), td)
    pool = td.train_pool
    assert len(pool) == 40 and pool[3].id == "train:3"
    for query, plain, idx in zip(icl.eval, td.eval, mezo_per_eval_train_sets(len(pool), len(td.eval), K)):
        assert query.context == demonstrations([pool[j] for j in idx], K, SEP) + plain.context
    assert icl.info["icl"]["pool_size"] == 40


def test_train_sample_pool_draws_mezos_indices_from_the_sample(native):
    """The same per-query draw (MeZO tasks.py sample_subset with sample_train_sets' seeds) over the
    train sample instead of the split."""
    td = loaded(native)
    icl = prepare_data(icl_cfg(), td)
    for query, plain, idx in zip(icl.eval, td.eval, mezo_per_eval_train_sets(len(td.train), len(td.eval), K)):
        assert query.context == demonstrations([td.train[j] for j in idx], K, SEP) + plain.context


def test_dev_queries_continue_the_seed_stream_and_never_see_themselves(native):
    """Dev queries (MeZO has none in ICL) take the seeds after eval's; drawn from the train split they
    could meet their own record, which MeZO's sample_subset(exclude=...) semantics drop."""
    td = loaded(native, num_train=3, num_dev=12, num_eval=2)
    icl = prepare_data(icl_cfg(num_demonstrations=39, demonstration_pool="train_split"), td)
    with temp_seed(0):
        seeds = np.random.randint(0, 10000, len(td.eval) + len(td.dev))[len(td.eval):]
    pool = td.train_pool
    for query, plain, seed in zip(icl.dev, td.dev, seeds):
        own = int(plain.id.split(":")[1])
        idx = mezo_sample_subset(len(pool), int(seed), 39, exclude=own)
        assert own not in idx and len(idx) == 39
        assert query.context == demonstrations([pool[j] for j in idx], 39, SEP) + plain.context
        assert plain.context + pool[own].candidates[pool[own].gold] not in query.context[: -len(plain.context)]


def test_shared_mode_is_the_first_k_of_the_train_sample_mezos_train_set_seed_mode(native):
    """MeZO run.py main() with --train_set_seed s: one demonstration set, sample_subset("train", s, k),
    for every query; zobench's train sample begins with exactly those records."""
    td = loaded(native, seed=5)
    icl = prepare_data(icl_cfg(demonstrations="shared"), td)
    prefix = demonstrations([td.train_pool[j] for j in mezo_sample_subset(40, 5, K)], K, SEP)
    assert all(q.context == prefix + e.context for q, e in zip(icl.eval + icl.dev, td.eval + td.dev))
    assert icl.info["icl"]["mode"] == "shared"


@pytest.mark.parametrize("key,value,allowed", [("demonstrations", "each", "per_example, shared"),
                                                ("demonstration_pool", "all", "train_sample, train_split")])
def test_bad_icl_modes_are_named(key, value, allowed):
    with pytest.raises(ConfigError, match=rf"tuning\.{key}='{value}'.*{allowed}"):
        validate_tuning(icl_cfg(**{key: value}))


def test_train_split_pool_needs_no_train_sample():
    data = OmegaConf.create({"num_train": 0})
    check_data(icl_cfg(demonstration_pool="train_split"), data)  # no error
    with pytest.raises(ConfigError, match="data.num_train=0"):
        check_data(icl_cfg(), data)
