"""In-context learning: MeZO's ICL baseline row. Nothing trains; demonstrations are prepended.

As MeZO (Malladi et al. 2023, after Brown et al. 2020), read from its code:
large_models/tasks.py ``Dataset.sample_train_sets`` and ``sample_subset``, large_models/run.py
``main`` and ``Framework.evaluate``, large_models/icl.sh (``--num_train 32``, no
``--train_set_seed``).

``tuning.demonstrations: per_example`` (the default; MeZO's ICL runs): query i of the eval set gets
its own k demonstrations. Its seed is ``s_i``, the i-th of ``np.random.seed(0);
np.random.randint(0, 10000, n_eval)``, and its demonstrations are the first k entries of
``np.random.seed(s_i); np.random.permutation(N)`` over a pool of N examples, in that order: drawn
uniformly, not balanced by label, and independently per query (two queries may share some).
Dev queries, which MeZO does not have, continue the same stream: seeds ``s_{n_eval} ...``, so the
eval queries' seeds stay MeZO's. A query whose own record is in the pool (a dev query drawn from
the train split) never sees itself: MeZO's ``sample_subset(..., exclude=j)`` draws k + 1 and drops
it, or keeps the first k.

``tuning.demonstration_pool``: ``train_sample`` (the default) draws from the cell's train sample
(``data.num_train`` examples drawn with ``data.seed``): the same data budget as the tuned rows,
and disjoint from dev. ``train_split`` draws from the whole train split in file order, MeZO's
pool, so every query gets exactly MeZO's demonstrations (with ``data.eval_seed=0``, MeZO's ICL
eval draw, run.py line 517).

``tuning.demonstrations: shared``: the first k examples of the train sample, the same for every
query, i.e. ``permutation(N)[:k]`` under ``data.seed``: MeZO's ``--train_set_seed`` ICL mode, and
ZO-Bench's ICL runs (zo-bench/run.py defaults ``train_set_seed`` to 0 where MeZO's is None, so its
ICL takes this branch; its tasks.py sampling is MeZO's unchanged).

Each demonstration is ``context + gold candidate``; they are joined by ``tuning.separator`` (MeZO:
a blank line), then the separator and the query. The model's whole context is used
(``max_length: null``); what does not fit is cut from the left, so the query and the candidates
are always kept and the earliest demonstrations go first.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from zobench.errors import ConfigError, bad_value
from zobench.tasks.base import Example, TaskData, mezo_permutation
from zobench.tuning._common import choice, int_at_least

TRAINS = False
MODES = ("per_example", "shared")
POOLS = ("train_sample", "train_split")
SEED_OF_SEEDS = 0  # MeZO sample_train_sets: `with temp_seed(0): seeds = np.random.randint(0, 10000, n_eval)`
SEED_RANGE = 10_000


def check(cfg: Any) -> None:
    int_at_least(cfg, "num_demonstrations", 0)
    if not isinstance(cfg.get("separator"), str):
        raise bad_value("tuning.separator", cfg.get("separator"), 'a string, e.g. "\\n\\n"')
    if cfg.get("max_length") is not None:
        int_at_least(cfg, "max_length", 8)
    choice(cfg, "demonstrations", MODES)
    choice(cfg, "demonstration_pool", POOLS)


def check_data(cfg: Any, data_cfg: Any) -> None:
    from_sample = cfg.demonstrations == "shared" or cfg.demonstration_pool == "train_sample"
    if cfg.num_demonstrations > 0 and data_cfg.num_train == 0 and from_sample:
        raise ConfigError(
            f"data.num_train=0 is not allowed with tuning=icl: the {cfg.num_demonstrations} demonstrations "
            f"are drawn from the train sample (set data.num_train >= {cfg.num_demonstrations}, "
            f"tuning.demonstration_pool=train_split, or tuning.num_demonstrations=0 for zero-shot)."
        )


def apply(model, cfg: Any, seed: int):
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def max_length(cfg: Any, context: int | None) -> int | None:
    return cfg.get("max_length") or context


def demonstrations(train: Sequence[Example], k: int, separator: str = "\n\n") -> str:
    """The text put before a query: ``demo_1 sep demo_2 ... sep demo_k sep`` ('' when k = 0)."""
    demos = [ex.context + ex.candidates[ex.gold] for ex in train[:k]]
    return "".join(d + separator for d in demos)


def with_demonstrations(examples: Sequence[Example], prefix: str) -> list[Example]:
    return [dataclasses.replace(ex, context=prefix + ex.context) for ex in examples]


def query_seeds(n_queries: int) -> list[int]:
    """MeZO's per-query demonstration seeds: ``np.random.seed(0); np.random.randint(0, 10000, n)``.
    A longer draw starts with the shorter one, so eval's seeds do not depend on how many dev queries follow."""
    return np.random.RandomState(SEED_OF_SEEDS).randint(0, SEED_RANGE, n_queries).tolist()


def demonstration_indices(pool_size: int, k: int, seed: int, exclude: int | None = None) -> list[int]:
    """MeZO's ``sample_subset(seed=seed, num=k, exclude=exclude)`` as indices of the pool: the first k
    of ``permutation(pool_size)`` under ``seed``; with ``exclude``, the first k + 1 less ``exclude``
    if it is among them, else the first k."""
    index = mezo_permutation(pool_size, seed)[: k + (exclude is not None)]
    if exclude is not None and exclude in index:
        index.remove(exclude)
    return index[:k]


def per_example(queries: Sequence[Example], pool: Sequence[Example], k: int, separator: str,
                seeds: Sequence[int], same_split: bool = False) -> list[Example]:
    """Each query with its own k demonstrations from ``pool``, drawn with its seed. ``same_split``: the
    queries come from the pool's split (dev from train), so a query's own record is excluded by its id
    (ids are unique within a split only, so eval queries are never matched against the train pool)."""
    position: dict = {}
    if same_split and k:
        ids = pool.ids if hasattr(pool, "ids") else [ex.id for ex in pool]  # a RenderedPool: no rendering
        position = {i: j for j, i in enumerate(ids) if i is not None}
    out = []
    for query, seed in zip(queries, seeds, strict=True):
        idx = demonstration_indices(len(pool), k, seed, position.get(query.id)) if k else []
        out.append(dataclasses.replace(query, context=demonstrations([pool[j] for j in idx], k, separator)
                                       + query.context))
    return out


def _pool(pool_name: str, data: TaskData) -> Sequence[Example]:
    if pool_name == "train_split":
        if data.train_pool is None:
            raise ConfigError("tuning.demonstration_pool=train_split needs the task's whole train split, "
                              "which this data does not carry: use tuning.demonstration_pool=train_sample.")
        return data.train_pool
    return data.train


def prepare_data(cfg: Any, data: TaskData) -> TaskData:
    k, sep = cfg.num_demonstrations, cfg.separator
    mode, pool_name = cfg.get("demonstrations", "per_example"), cfg.get("demonstration_pool", "train_sample")
    info = dict(data.info)
    if mode == "shared":
        prefix = demonstrations(data.train, k, sep)
        dev, evals = with_demonstrations(data.dev, prefix), with_demonstrations(data.eval, prefix)
        info["icl"] = {"mode": mode, "num_demonstrations": min(k, len(data.train)), "prefix_chars": len(prefix)}
    else:
        pool = _pool(pool_name, data)
        seeds = query_seeds(len(data.eval) + len(data.dev))
        evals = per_example(data.eval, pool, k, sep, seeds[: len(data.eval)])
        dev = per_example(data.dev, pool, k, sep, seeds[len(data.eval):], same_split=True)
        info["icl"] = {"mode": mode, "pool": pool_name, "pool_size": len(pool),
                       "num_demonstrations": min(k, len(pool)), "seed_of_seeds": SEED_OF_SEEDS}
    return dataclasses.replace(data, dev=dev, eval=evals, info=info)
