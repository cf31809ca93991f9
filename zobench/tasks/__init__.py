"""Tasks: load a task's data, sample train / dev / eval as MeZO does, render them into Examples.

Public API: ``load_task(task_cfg, data_cfg) -> TaskData`` and ``validate_task(task_cfg, data_cfg)``.

The Hydra group ``conf/task`` is the registry: ``task.name`` names a module of this package, which
provides
    TEMPLATES                               template name -> its format (data, not scattered literals)
    parse(raw, where) -> record             one hub row -> the task's validated record
    read_native(path) -> list[record]       one native file of the ``data.dir`` layout -> records
    render(record, template) -> Example
and may provide
    split_without_train(records, source) -> (train_pool, eval_pool, note)
        for a task whose train file can be missing from ``data.dir`` (MultiRC offline).

Sampling (MeZO, Malladi et al., 2023; ``zobench.tasks.base``): train and dev are ``num_train +
num_dev`` records of the train split drawn with ``data.seed`` (``split_train_dev``), exactly MeZO's
indices for the same seed; eval is ``num_eval`` records of the validation split drawn with
``data.eval_seed`` (``eval_sample``). Records are sampled first and rendered after, so a template
never changes which examples are used. Every record carries a stable ``id`` (``Example.id``).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zobench.errors import ConfigError, bad_choice, bad_value
from zobench.tasks.base import (Example, RenderedPool, TaskData, pick_template, sample_indices, split_sizes,
                                split_train_dev)

__all__ = ["Example", "TaskData", "available_tasks", "eval_sample", "load_task", "validate_task"]

# data.eval_seed when the key is absent (conf/data/default.yaml sets it): zobench's fixed eval set.
# MeZO's training runs draw eval with the train seed instead (large_models/run.py main(), line 480:
# sample_subset(data_split="valid", seed=train_set_seed, num=num_eval), train_set_seed being mezo.sh's
# SEED); only its ICL runs, with no train_set_seed, use seed 0 (line 517). A fixed eval set scores every
# seed and method on the same examples, so they can be compared paired; data.eval_seed=null is MeZO's.
EVAL_SEED = 0
METRICS = ("accuracy", "f1")


def available_tasks() -> list[str]:
    """The task modules of this package, i.e. the values ``task.name`` may take."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base" and not m.name.startswith("_"))


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The task and data config, checked."""

    name: str
    module: ModuleType
    template: str
    hub: dict
    files: dict
    dir: Path | None
    num_train: int
    num_dev: int
    num_eval: int | None  # None: the whole eval split
    seed: int
    eval_seed: int  # data.eval_seed, with null resolved to data.seed


@dataclasses.dataclass
class _Pools:
    """Every record of the train and the eval split, before sampling."""

    train: list
    eval: list
    source: dict  # split -> where its records came from
    note: str | None = None


def validate_task(task_cfg, data_cfg, batch_size: int | None = None) -> None:
    """Raise ConfigError for anything wrong that can be found without a model or the hub: the task
    name, template and metric, the sizes and seed, and with ``data.dir`` set, its files (read and
    checked row by row: a few hundred milliseconds for the largest, SST-2 train) and the sizes of the
    sets they give (``check_split_sizes``; ``batch_size``: a training run's ``trainer.batch_size``)."""
    spec = _check(task_cfg, data_cfg)
    if spec.dir is not None:
        pools = _native_pools(spec)
        n_train, n_dev = split_sizes(len(pools.train), spec.num_train, spec.num_dev)
        n_eval = len(pools.eval) if spec.num_eval is None else min(spec.num_eval, len(pools.eval))
        check_split_sizes(spec, pools, n_train, n_dev, n_eval, batch_size)


def load_task(task_cfg, data_cfg) -> TaskData:
    """Load the task's splits (``data.dir`` native files, or the hub when it is None), sample and render.

    The sets' sizes are checked (``check_split_sizes``) before anything else happens: with ``data_cfg``
    the ``data`` node of a run's config, its ``trainer.batch_size`` too, when the run trains."""
    spec = _check(task_cfg, data_cfg)
    pools = _native_pools(spec) if spec.dir is not None else _hub_pools(spec)
    train, dev = split_train_dev(pools.train, spec.num_train, spec.num_dev, spec.seed)
    evals = eval_sample(pools.eval, spec.num_eval, spec.eval_seed)
    check_split_sizes(spec, pools, len(train), len(dev), len(evals), _training_batch_size(data_cfg))
    render = spec.module.render
    info: dict[str, Any] = {
        "task": spec.name,
        "template": spec.template,
        "source": pools.source,
        "num_train": len(train),
        "num_dev": len(dev),
        "num_eval": len(evals),
        "pool_sizes": {"train": len(pools.train), "eval": len(pools.eval)},
        "eval_seed": spec.eval_seed if spec.num_eval is not None else None,  # None: the whole split, file order
    }
    if pools.note:
        info["split"] = pools.note
    return TaskData(
        train=[render(r, spec.template) for r in train],
        dev=[render(r, spec.template) for r in dev],
        eval=[render(r, spec.template) for r in evals],
        info=info,
        train_pool=RenderedPool(pools.train, render, spec.template),
    )


def check_split_sizes(spec: "_Spec", pools: "_Pools", n_train: int, n_dev: int, n_eval: int,
                      batch_size: int | None = None) -> None:
    """Refuse sets a run cannot use: an empty train set (``data.num_train`` > 0), an empty dev set
    (``data.num_dev`` > 0), an empty eval set, and a train set smaller than one batch (a step would
    silently use fewer examples than ``trainer.batch_size`` says). Each message names the task, the
    sizes asked for (data.*) and given, and where the records came from."""
    asked = (f"data.num_train={spec.num_train}, data.num_dev={spec.num_dev}, "
             f"data.num_eval={'null' if spec.num_eval is None else spec.num_eval}")
    given = f"train {n_train}, dev {n_dev}, eval {n_eval}"
    where = (f"the train pool holds {len(pools.train)} records ({pools.source.get('train')}), the eval pool "
             f"{len(pools.eval)} ({pools.source.get('eval')})" + (f"; {pools.note}" if pools.note else ""))
    more = "give data with more records"
    for split, wanted, n, fix in (("train", spec.num_train > 0, n_train, f"{more}, or data.num_train=0 with trainer.steps=0"),
                                  ("dev", spec.num_dev > 0, n_dev, f"{more}, or data.num_dev=0 for no dev set"),
                                  ("eval", True, n_eval, more)):
        if wanted and n == 0:
            raise ConfigError(f"task {spec.name}: the {split} set is empty: {asked} give {given} "
                              f"({where}). Each set that is asked for needs an example: {fix}.")
    if batch_size is not None and batch_size > n_train:
        short = (f"; {spec.num_train + spec.num_dev} were asked of a train split of {len(pools.train)} records, "
                 f"{n_dev} of them dev") if n_train < spec.num_train else ""
        raise ConfigError(
            f"trainer.batch_size={batch_size} is larger than the train set: task {spec.name} has {n_train} training "
            f"examples (data.num_train={spec.num_train}{short}), so every step would use {n_train}, not {batch_size}. "
            f"Set trainer.batch_size to at most {n_train}, or raise data.num_train.")


def _training_batch_size(data_cfg) -> int | None:
    """A run's ``trainer.batch_size`` when ``data_cfg`` is the data node of a run's config that trains."""
    if not isinstance(data_cfg, DictConfig):
        return None
    root = data_cfg._get_root()
    if root is data_cfg or "trainer" not in root or "tuning" not in root:
        return None
    from zobench.validate import training_batch_size

    return training_batch_size(root)


def eval_sample(records: list, num_eval: int | None, seed: int) -> list:
    """MeZO's eval set: ``sample_subset("valid", seed, num_eval)``, or with ``num_eval`` None the whole
    validation split in its own order (large_models/run.py ``main``: ``eval_samples = task.valid_samples``)."""
    if num_eval is None:
        return list(records)
    return [records[i] for i in sample_indices(len(records), num_eval, seed)]


# ---- checking the config ---------------------------------------------------------------------


def _plain(cfg, key: str) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, dict):
        return cfg
    raise ConfigError(f"{key} must be a mapping, got {type(cfg).__name__}.")


def _need(cfg: dict, key: str, prefix: str, what: str):
    if cfg.get(key) is None:
        raise ConfigError(f"{prefix}.{key} is missing: expected {what}.")
    return cfg[key]


def _count(data: dict, key: str, minimum: int, allow_none: bool = False,
           none_means: str = "the whole split") -> int | None:
    value = data.get(key)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = f" or null ({none_means})" if allow_none else ""
        raise bad_value(f"data.{key}", value, f"an integer >= {minimum}{extra}")
    return value


def _check(task_cfg, data_cfg) -> _Spec:
    task, data = _plain(task_cfg, "task"), _plain(data_cfg, "data")
    name = _need(task, "name", "task", "a task module name")
    if name not in available_tasks():
        raise bad_choice("task.name", name, available_tasks())
    module = importlib.import_module(f"{__name__}.{name}")
    template = _need(task, "template", "task", f"one of {', '.join(module.TEMPLATES)}")
    pick_template(module.TEMPLATES, template)
    if task.get("metric") not in METRICS:
        raise bad_choice("task.metric", task.get("metric"), METRICS)
    hub, files = task.get("hub") or {}, task.get("files") or {}
    for split in ("train", "eval"):
        _need(files, split, "task.files", "a file path relative to data.dir")
        _need(hub, f"{split}_split", "task.hub", "a split name of the hub dataset")
    _need(hub, "path", "task.hub", "a hub dataset id")
    root = data.get("dir")
    return _Spec(
        name=name,
        module=module,
        template=template,
        hub=hub,
        files=files,
        dir=None if root is None else Path(root).expanduser().resolve(),
        num_train=_count(data, "num_train", 0),
        num_dev=_count(data, "num_dev", 0),
        num_eval=_count(data, "num_eval", 1, allow_none=True),
        seed=_count(data, "seed", 0),
        eval_seed=_eval_seed(data),
    )


def _eval_seed(data: dict) -> int:
    """``data.eval_seed``: an integer >= 0, or null for ``data.seed`` (MeZO's training runs)."""
    if "eval_seed" not in data:
        return EVAL_SEED
    if data["eval_seed"] is None:
        return _count(data, "seed", 0)
    return _count(data, "eval_seed", 0, allow_none=True, none_means="data.seed, as MeZO's training runs draw eval")


# ---- reading the splits ----------------------------------------------------------------------


def _native_pools(spec: _Spec) -> _Pools:
    root = spec.dir
    if not root.is_dir():
        raise bad_value("data.dir", str(root), "a folder holding the tasks' native files (e.g. <data.dir>/sst2/dev.tsv)")
    train_path, eval_path = root / spec.files["train"], root / spec.files["eval"]
    split_without_train = getattr(spec.module, "split_without_train", None)
    layout = f"<data.dir>/{spec.files['train']} and <data.dir>/{spec.files['eval']}"
    if split_without_train:
        layout = f"<data.dir>/{spec.files['eval']} (and, if available, <data.dir>/{spec.files['train']})"
    for path, needed in ((eval_path, True), (train_path, split_without_train is None)):
        if needed and not path.is_file():
            raise ConfigError(
                f"data.dir={str(root)!r} has no {path.relative_to(root).as_posix()!r}: task {spec.name} "
                f"expects the native layout {layout} (file names from task.files)."
            )
    eval_pool = _read(spec.module, eval_path)
    if train_path.is_file():
        return _Pools(_read(spec.module, train_path), eval_pool, {"train": str(train_path), "eval": str(eval_path)})
    train_pool, eval_pool, note = split_without_train(eval_pool, eval_path.name)
    return _Pools(train_pool, eval_pool, {"train": str(eval_path), "eval": str(eval_path)}, note)


_READ_CACHE: dict[tuple, list] = {}  # (task module, path, mtime, size) -> records: validate, then load, parses once
_READ_CACHE_FILES = 8


def _read(module: ModuleType, path: Path) -> list:
    """The records of one native file, parsed once per version of the file (keyed by mtime and size)."""
    stat = path.stat()
    key = (module.__name__, str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _READ_CACHE:
        records = module.read_native(path)
        if not records:
            raise ConfigError(f"{path} holds no records.")
        _check_unique_ids(records, path)
        while len(_READ_CACHE) >= _READ_CACHE_FILES:
            _READ_CACHE.pop(next(iter(_READ_CACHE)))
        _READ_CACHE[key] = records
    return [dict(r) for r in _READ_CACHE[key]]  # copies: what a caller does to a record stays with it


def _check_unique_ids(records: list, path: Path) -> None:
    """Two records of one file with the same id would be paired as one example across runs."""
    first: dict = {}
    for i, record in enumerate(records):
        rid = record.get("id")
        if rid is None:
            continue
        if rid in first:
            raise ConfigError(f"{path}: records {first[rid] + 1} and {i + 1} of the file have the same id {rid!r}: "
                              "ids must be unique within a split (examples are paired across runs by id).")
        first[rid] = i


def _hub_pools(spec: _Spec) -> _Pools:
    import datasets  # here, not at the top: a second to import, and only the hub path needs it

    hub = spec.hub
    ref = f"hub:{hub['path']}" + (f"/{hub['name']}" if hub.get("name") else "")
    pools, source = [], {}
    for split, split_name in (("train", hub["train_split"]), ("eval", hub["eval_split"])):
        rows, revision = _load_hub_split(datasets, hub["path"], hub.get("name"), split_name, hub.get("revision"))
        source[split] = f"{ref}[{split_name}]" + (f"@{revision}" if revision else "")
        where = source[split]
        pools.append([spec.module.parse(row, f"{where} row {i}", split_name, i) for i, row in enumerate(rows)])
    return _Pools(pools[0], pools[1], source)


PARQUET_REVISION = "refs/convert/parquet"  # the hub's automatic Parquet export of every dataset


def _load_hub_split(datasets, path: str, name: str | None, split: str, revision: str | None):
    """``datasets.load_dataset`` of one split; (rows, revision used).

    ``super_glue`` and ``winogrande`` are script datasets on the hub, which ``datasets`` >= 4
    refuses ("Dataset scripts are no longer supported"); the hub's Parquet export of the same
    data (revision ``refs/convert/parquet``) loads without the script, so that is tried next.
    The export holds one folder per config (``copa/train/0000.parquet``) and no config metadata,
    so the config is passed as ``data_dir``: as ``name`` datasets would look for a builder config
    that does not exist. ``task.hub.revision`` pins a revision and skips the fallback.
    """
    if revision:
        return datasets.load_dataset(path, name, split=split, revision=revision), revision
    try:
        return datasets.load_dataset(path, name, split=split), None
    except RuntimeError as err:
        if "scripts are no longer supported" not in str(err):
            raise
        return datasets.load_dataset(path, data_dir=name, split=split, revision=PARQUET_REVISION), PARQUET_REVISION
