"""Check a command line before Hydra starts any job (and before any model loads).

What is refused here, with one line on stderr (``zobench: bad config: ...``, exit status 1):

- a key the config does not have, however it is given: ``trainer.stepz=3`` (Hydra only says "not in
  struct"), ``+trainer.stepz=3`` (Hydra would add it silently and the run would use the default). The
  message names the key, the keys allowed at that level, the closest match, and which choices of the
  group define the key where other choices do (``+optimizer.direction_stream=mezo`` with
  ``optimizer=bszo``). The keys are those of the config composed without the ``+`` additions (the
  defaults, the chosen configs, an experiment's). Adding a config group (``+experiment=...``) and keys
  of pass-through dicts (``OPEN_NODES``: ``+model.load_kwargs.attn_implementation=eager``) stay
  allowed; ``hydra.*`` is Hydra's.
- deleting a key or a required group (``~trainer.steps``, ``~logger``): the run reads every key;
- a runs directory that cannot be written (``zobench: cannot write runs to <dir>: <why>``);
- a model whose local copy is missing (``model.local_dir``: run ``make offline-models``), or a
  ``model.path`` folder that holds no model.

A single run's values are then checked by ``zobench.validate``. A sweep (``-m``) is checked for the
structure of every combination of its overrides and of the experiment's ``hydra.sweeper.params``
(one composition per distinct choice of the config groups); its values are checked per cell when
each job starts, so one bad cell is recorded as failed and the rest of the sweep runs.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import os
import re
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from zobench import CONF_DIR
from zobench.errors import ConfigError

# Nodes whose keys are passed through to a library (transformers' from_pretrained / config):
# any key may be added below them.
OPEN_NODES = ("model.load_kwargs", "model.tiny")
# Folders of conf/ that are not config groups of a run.
NOT_GROUPS = ("claims", "tables", "published")
MULTIRUN_FLAGS = ("-m", "--multirun")
MAX_SWEEP_COMPOSITIONS = 16  # more distinct group choices than this: one composition per value of each group axis


class RunsDirError(Exception):
    """A run or sweep directory that cannot be created or written."""


def compose(overrides: list[str], hydra_config: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside precheck's own context
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=hydra_config)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=hydra_config)


# ---- the keys the config files define ---------------------------------------------------------------


def _package(path: Path, group: str) -> str:
    """Where a group file's keys land: its ``# @package`` header, else the group's name ('' = top level)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"#\s*@package\s+(\S+)", line)
            if match:
                package = match.group(1)
                return "" if package == "_global_" else package.replace("_group_", group)
            if line.strip() and not line.startswith("#"):
                break
    return group.replace("/", ".")


def _key_paths(node, prefix: str) -> set[str]:
    out: set[str] = set()
    if OmegaConf.is_dict(node):
        for key in node.keys():
            if key == "defaults" and not prefix:
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            out.add(path)
            out |= _key_paths(node._get_node(key), path)
    return out


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, tuple[str, ...]]:
    """Every key path that conf/config.yaml or a choice of a config group defines ('trainer.steps',
    'optimizer.estimator.block_seed', ...), with the choices that define it ('optimizer=zo_sgd', ...).
    Experiments (``+experiment=...``) add their own keys: those are known from the composed config."""
    owners: dict[str, set[str]] = {k: set() for k in _key_paths(OmegaConf.load(CONF_DIR / "config.yaml"), "")}
    for group in sorted(config_groups()):
        if group.split("/")[0] in ("experiment", "hydra"):
            continue
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            package = _package(path, group)
            for key in ({package} if package else set()) | _key_paths(OmegaConf.load(path), package):
                owners.setdefault(key, set()).add(f"{group}={path.stem}")
    return {k: tuple(sorted(v)) for k, v in owners.items()}


@functools.lru_cache(maxsize=1)
def config_groups() -> frozenset[str]:
    groups = set()
    for folder in CONF_DIR.rglob("*"):
        if folder.is_dir() and any(folder.glob("*.yaml")):
            rel = folder.relative_to(CONF_DIR).as_posix()
            if rel.split("/")[0] not in NOT_GROUPS:
                groups.add(rel)
    return frozenset(groups)


@functools.lru_cache(maxsize=1)
def optional_groups() -> frozenset[str]:
    """Groups the defaults list loads only when present (``optional tuning_optimizer: ...``)."""
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").get("defaults") or []
    names = set()
    for entry in defaults:
        if OmegaConf.is_dict(entry):
            for key in entry.keys():
                if str(key).startswith("optional "):
                    names.add(str(key).split(" ", 1)[1])
    return frozenset(names)


def _is_group(override) -> bool:
    return override.key_or_group in config_groups()


def _known(path: str, cfg) -> bool:
    """``path`` is a key of the composed config, or lies below an open node."""
    if any(path == n or path.startswith(n + ".") for n in OPEN_NODES):
        return True
    parent, _, leaf = path.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if OmegaConf.is_dict(node):
        return leaf in node
    if OmegaConf.is_list(node):
        return leaf.isdigit()
    return False


def unknown_key_message(full_key: str, cfg) -> str:
    """'trainer.stepz is not a key of trainer: allowed keys are ... Did you mean trainer.steps?'
    (the first component of ``full_key`` that is not a key of ``cfg``, at the level where it is missing);
    a key that other choices of the group define says which."""
    parts = full_key.split(".")
    i = next((i for i in range(len(parts)) if not _known(".".join(parts[: i + 1]), cfg)), len(parts) - 1)
    key, parent, leaf = ".".join(parts[: i + 1]), ".".join(parts[:i]), parts[i]
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    allowed = sorted(str(k) for k in node.keys() if k != "hydra") if OmegaConf.is_dict(node) else []
    close = difflib.get_close_matches(leaf, allowed, n=1)
    hint = f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    owners = schema().get(key)
    if owners:
        hint += f" ({key} is a key of {', '.join(owners)} only.)"
    where = parent or "the top level"
    listed = f"allowed keys are {', '.join(allowed)}" if allowed else f"{where} is {node!r}, not a group of keys"
    return f"{key} is not a key of {where}: {listed}.{hint}"


def explain_missing_key(message: str, overrides: list[str]) -> str | None:
    """'trainer.stepz' -> 'trainer.stepz is not a key of trainer: allowed keys are ...'."""
    match = re.search(r"full_key: ([\w.]+)", message) or re.search(r"Key '([\w.]+)' is not in struct", message)
    if not match:
        return None
    full_key = match.group(1)
    try:
        base = compose([o for o in overrides if o.split("=", 1)[0].lstrip("+~") != full_key])
    except Exception:  # noqa: BLE001 - another error in the same command line: report Hydra's
        return None
    return unknown_key_message(full_key, base)


# ---- one combination of overrides -------------------------------------------------------------------


def _parse(args: list[str]):
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    return OverridesParser.create(config_loader=loader).parse_overrides(args)


def _refused_deletes(overrides) -> list:
    """``~key`` and ``~group`` overrides, but Hydra's own and the optional groups' (``~tuning_optimizer``)."""
    return [o for o in overrides
            if o.is_delete() and not o.is_hydra_override() and o.key_or_group not in optional_groups()]


def _delete_message(o, base) -> str:
    key = o.key_or_group
    if key in config_groups():
        choices = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
        return (f"{o.input_line} deletes the config group {key}, and deleting it is not allowed: the run needs a "
                f"{key}. Choose one instead: {key}=<{'|'.join(choices)}>.")
    if not _known(key, base):
        return f"{o.input_line}: {unknown_key_message(key, base)}"
    value = OmegaConf.select(base, key, throw_on_resolution_failure=False)
    now = f" (now {value!r})" if not OmegaConf.is_config(value) else ""
    return (f"{o.input_line} deletes {key}, and deleting a key is not allowed: every key of zobench's config is "
            f"required (the run reads it). Set it instead: {key}=<value>{now}.")


def _adds(overrides) -> list:
    """The ``+key=value`` / ``++key=value`` overrides of keys (not groups, not Hydra's)."""
    return [o for o in overrides if (o.is_add() or o.is_force_add()) and not _is_group(o) and not o.is_hydra_override()]


def _compose_or_explain(lines: list[str], hydra_config: bool = True):
    try:
        return compose(lines, hydra_config)
    except ConfigError:
        raise
    except Exception as exc:  # Hydra/OmegaConf composition errors
        message = str(exc) + (f"\n{exc.__cause__}" if exc.__cause__ else "")
        if hydra_config and any(_hydra_line(line) for line in lines):
            try:  # an error in the hydra.* overrides: Hydra reports those itself
                compose([line for line in lines if not _hydra_line(line)], False)
                return None
            except Exception:  # noqa: BLE001 - a zobench error: explained below
                pass
        better = explain_missing_key(message, [line for line in lines if not _hydra_line(line)]) \
            if "not in struct" in message else None
        raise ConfigError(better or message) from None


def _hydra_line(line: str) -> bool:
    return line.split("=", 1)[0].lstrip("+~").startswith("hydra")


def _check_combination(lines: list[str], where: str = ""):
    """Compose one combination of overrides without its key additions, refuse unknown keys (added or
    set) and additions of keys that exist; return the composed config (with Hydra's node), or None
    when only Hydra's own overrides fail (Hydra then reports them)."""
    overrides = _parse(lines)
    adds, deletes = _adds(overrides), _refused_deletes(overrides)
    skipped = {o.input_line for o in adds + deletes}
    kept = [line for line in lines if line not in skipped]
    try:
        base = _compose_or_explain(kept)
        # only hydra.* overrides failed (Hydra reports them): check the rest against zobench's config alone
        checked = base if base is not None else _compose_or_explain([x for x in kept if not _hydra_line(x)], False)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{where}") from None
    if deletes:
        raise ConfigError(_delete_message(deletes[0], checked) + where)
    for o in adds:
        key = o.key_or_group
        exists = OmegaConf.select(checked, key, default="\0missing") != "\0missing"
        if exists and o.is_add():
            raise ConfigError(f"{o.input_line}: {key} is already a key; set it without '+': "
                              f"{key}={o.input_line.split('=', 1)[1]}{where}")
        if not exists and not _known(key, checked):
            raise ConfigError(f"{o.input_line} adds a key that this config does not have (a run would ignore it): "
                              f"{unknown_key_message(key, checked)}{where}")
    return base


# ---- directories and models ---------------------------------------------------------------------------


def writable_dir_problem(target: Path) -> tuple[Path, str] | None:
    """``(where, why)`` ``target`` (a folder, existing or not) cannot be created and written, or None.

    Tried for real, with a temporary file in the nearest existing folder (removed again): permission
    bits do not stop root, while a read-only mount, /sys, or a file on the path stop everyone."""
    probe = Path(target)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return probe, f"Not a directory ({probe} is a file)"
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".zobench-write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return probe, (exc.strerror or str(exc)) + ("" if probe == Path(target) else f" ({probe})")
    return None


def _check_runs_dir(cfg, multirun: bool) -> None:
    """The run directory (a single run) or the sweep directory (``-m``) can be created and written. Said
    of ``paths.runs_dir`` where that is what fails, else of the directory itself (without its time stamp)."""
    if cfg is None or "hydra" not in cfg:
        return
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        target = Path(str(OmegaConf.select(cfg, key, throw_on_resolution_failure=True))).expanduser().absolute()
        runs_dir = Path(str(cfg.paths.runs_dir)).expanduser().absolute()
        stamped = "${now:" in str(OmegaConf.to_container(cfg.hydra.run, resolve=False).get("dir", ""))
    except Exception:  # noqa: BLE001 - an unresolvable directory: Hydra reports it
        return
    found = writable_dir_problem(target)
    if found:
        probe, why = found
        if runs_dir in target.parents and (probe == runs_dir or probe in runs_dir.parents):
            shown = runs_dir
        else:
            shown = target.parent if stamped and not multirun else target
        raise RunsDirError(f"cannot write runs to {shown}: {why}")


def _check_model(cfg) -> None:
    from zobench.models import check_weights_available

    check_weights_available(cfg.model)


# ---- sweeps ------------------------------------------------------------------------------------------


def _sweep_combinations(overrides) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(overrides, None)[0]


def _first_values(overrides) -> list[str]:
    return [combo[0] for combo in ([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
                                   if o.is_sweep_override() else [o.input_line] for o in overrides)]


def _pick_representatives(combos: list[list[str]]) -> list[list[str]]:
    """One combination per distinct choice of the config groups (what decides the config's keys); with
    more than MAX_SWEEP_COMPOSITIONS of them, one per value of each group axis."""
    def groups_of(combo):
        return tuple(line for line in combo if _group_line(line))

    reps: dict[tuple, list[str]] = {}
    for combo in combos:
        reps.setdefault(groups_of(combo), combo)
    if len(reps) <= MAX_SWEEP_COMPOSITIONS:
        return list(reps.values())
    picked: dict[str, list[str]] = {}
    for combo in reps.values():
        for line in groups_of(combo):
            picked.setdefault(line, combo)
    return list({id(c): c for c in picked.values()}.values())


def _where(combo: list[str], sweep: bool) -> str:
    groups = [line for line in combo if _group_line(line) and not _hydra_line(line)]
    return f" (in the sweep's cells with {' '.join(groups)})" if groups and sweep else ""


def _group_line(line: str) -> bool:
    return line.split("=", 1)[0].lstrip("+~").split("@")[0] in config_groups()


def _check_sweep(args: list[str]) -> None:
    overrides = _parse(args)
    continuous = {o.input_line for o in overrides if o.is_sweep_override() and not o.is_discrete_sweep()}
    if continuous:  # interval(...): a search sweeper's (optuna, ...), which samples it; not checked here
        args = [a for a in args if a not in continuous]
        overrides = _parse(args)
    first_values = _first_values(overrides)
    first = _check_combination(first_values, _where(first_values, sweep=any(o.is_sweep_override() for o in overrides)))
    params = OmegaConf.select(first, "hydra.sweeper.params", default=None) if first is not None else None
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + args  # the command line wins (Hydra's order)
    combos = _sweep_combinations(_parse(lines))
    for combo in _pick_representatives(combos):
        where = _where(combo, sweep=len(combos) > 1)
        cfg = _check_combination(combo, where)
        if cfg is not None:
            try:
                _check_model(cfg)
            except ConfigError as exc:
                raise ConfigError(f"{exc}{where}") from None
    _check_runs_dir(first, multirun=True)


def _check_single(args: list[str]) -> None:
    from zobench.validate import validate_config

    cfg = _check_combination(args)
    if cfg is None:  # only hydra.* overrides failed to compose: check zobench's part, Hydra reports the rest
        cfg = _compose_or_explain([a for a in args if not _hydra_line(a)], hydra_config=False)
    elif _adds(_parse(args)):  # the additions passed: the config the run will get
        cfg = _compose_or_explain(args)
    from zobench.models import model_for_checks

    cfg = model_for_checks(cfg)  # model.family/kind: auto (model=hf): from a local config.json, never the hub
    validate_config(cfg)
    _check_model(cfg)
    _check_runs_dir(cfg, multirun=False)


@contextlib.contextmanager
def _hydra_context():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def precheck(argv: list[str]) -> None:
    flags = [a for a in argv if a.startswith("-")]
    if any(f not in MULTIRUN_FLAGS for f in flags):  # --help, --cfg, -cn, ...: Hydra handles these itself
        return
    args = [a for a in argv if not a.startswith("-")]
    try:
        with _hydra_context():
            (_check_sweep if flags else _check_single)(args)
    except RunsDirError as exc:
        sys.exit(f"zobench: {exc}")
    except ConfigError as exc:
        sys.exit(f"zobench: bad config: {exc}")
    except Exception as exc:  # Hydra's own errors (an override it cannot parse, ...)
        message = str(exc) + (f"\n{exc.__cause__}" if exc.__cause__ else "")
        sys.exit(f"zobench: bad config: {message}")

