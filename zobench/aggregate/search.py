"""The dev-only learning-rate search of a reproduction block, and the choice it makes.

A block of ``conf/experiment/<scale>/`` may declare

    search: {steps: 150, eval_every: 50, grid: {optimizer.lr: [3e-3, 1e-2, 3e-2]}}

``make reproduce-tables`` then runs, before the block, one short cell per grid point (the block's
other sweep values, seed 0, ``trainer.steps=steps``, ``trainer.test=false``: the eval set is never
scored) into ``<runs>-search/<layout>/<block>/``, and chooses, for each combination of the block's other
sweep values, the grid point with the highest ``best_dev_score`` (the task metric on dev; ties go to the
first grid point in the order written). The block's own cells then run at the chosen values, their
directories named by them. The search's scores and choice are written to ``search.json`` beside its
cells, so a later run (another machine, another session) reuses the choice without re-running it.

    search: {from: zobench_sst2/zo_sgd_lora}

reuses another block's choice (all of its grid keys); ``from`` may also map keys one by one,
``{optimizer.lr: zobench_sst2/fo_sgd_lora, optimizer.zo_lr: zobench_sst2/zo_sgd_lora:optimizer.lr}``
(``block:key`` takes that block's ``key``; a bare block takes the same key).
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from zobench.errors import ConfigError

SEARCH_SEED = 0
RULE = "highest best_dev_score (task metric on dev) at seed 0; ties: the first grid point as written"


def spec(cfg) -> dict | None:
    """The block's ``search`` entry, checked; None when it has none."""
    raw = cfg.get("search")
    if raw is None:
        return None
    raw = OmegaConf.to_container(raw, resolve=True) if not isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"search={raw!r} is not allowed: expected a mapping {{steps, eval_every, grid}} or {{from: BLOCK}}.")
    if "from" in raw:
        if set(raw) != {"from"}:
            raise ConfigError(f"search: {{from: ...}} takes no other key, found {sorted(set(raw) - {'from'})}.")
        if not isinstance(raw["from"], (str, dict)):
            raise ConfigError("search.from must be a block name (layout/block) or a mapping key -> 'layout/block[:key]'.")
        return raw
    missing = [k for k in ("steps", "eval_every", "grid") if k not in raw]
    if missing:
        raise ConfigError(f"search is missing {', '.join(missing)}: expected {{steps, eval_every, grid: {{key: [values]}}}}.")
    grid = raw["grid"]
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"search.grid={grid!r} is not allowed: expected a mapping key -> non-empty list of values.")
    for key in ("steps", "eval_every"):
        if isinstance(raw[key], bool) or not isinstance(raw[key], int) or raw[key] < 1:
            raise ConfigError(f"search.{key}={raw[key]!r} is not allowed: expected an integer >= 1.")
    return raw


def search_overrides(s: dict) -> list[str]:
    """What turns a block cell into a search cell: short, dev only, no zero-shot, no eval set."""
    return [f"trainer.steps={s['steps']}", f"trainer.eval_every={s['eval_every']}", "trainer.test=false",
            "trainer.zero_shot=false", f"seed={SEARCH_SEED}"]


def jobs(s: dict, axes: dict[str, list]) -> list[dict]:
    """The search cells: the block's sweep values other than seed and the grid keys, times the grid."""
    fixed = {k: v for k, v in axes.items() if k != "seed" and k not in s["grid"]}
    keys = [*fixed, *s["grid"]]
    values = [*fixed.values(), *s["grid"].values()]
    return [dict(zip(keys, combo), seed=SEARCH_SEED) for combo in itertools.product(*values)]


def search_root(runs_dir: Path) -> Path:
    return runs_dir.parent / f"{runs_dir.name}-search"


def block_dir(runs_dir: Path, block_name: str) -> Path:
    """``<runs>-search/<layout>/<block>`` for ``<scale>/<layout>/<block>``."""
    return search_root(runs_dir) / block_name.split("/", 1)[1]


def _lookup(config: dict, key: str) -> Any:
    """A sweep key's value in a resolved config.yaml: ``optimizer.lr`` -> 0.01; a config group such as
    ``task`` or ``optimizer`` is a mapping there, and its chosen value is its ``name``."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict) and "name" in node:
        return node["name"]
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return str(a) == str(b)


def results(directory: Path, s: dict, group_keys: list[str]) -> list[dict]:
    """One row per search cell found under ``directory``: its group, grid values, status and best dev score."""
    rows = []
    for summary_path in sorted(directory.rglob("summary.json")):
        try:
            summary = json.loads(summary_path.read_text())
            config = yaml.safe_load((summary_path.parent / "config.yaml").read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue
        rows.append({"group": {k: _lookup(config, k) for k in group_keys},
                     "values": {k: _lookup(config, k) for k in s["grid"]},
                     "status": summary.get("status"), "best_dev_score": summary.get("best_dev_score"),
                     "best_step": summary.get("best_step"), "run_dir": summary_path.parent.name})
    return rows


def choose(rows: list[dict], s: dict, group: dict) -> dict | None:
    """The chosen grid values for ``group``, or None while a grid point of it has not completed."""
    best, best_score = None, -math.inf
    for combo in itertools.product(*s["grid"].values()):
        values = dict(zip(s["grid"], combo))
        hit = [r for r in rows if all(_same(r["group"].get(k), v) for k, v in group.items())
               and all(_same(r["values"][k], v) for k, v in values.items())]
        if not hit or hit[0]["status"] not in ("completed", "diverged"):
            return None
        score = hit[0]["best_dev_score"]
        score = -math.inf if score is None or hit[0]["status"] == "diverged" else float(score)
        if best is None or score > best_score:  # strict: ties keep the first grid point
            best, best_score = values, score
    return best


def write_record(directory: Path, block_name: str, s: dict, rows: list[dict], chosen: list[dict]) -> Path:
    from zobench.record import write_atomic

    path = directory / "search.json"
    record = {"block": block_name, "rule": RULE, "steps": s["steps"], "eval_every": s["eval_every"],
              "grid": s["grid"], "results": rows, "chosen": chosen}
    write_atomic(path, json.dumps(record, indent=1, default=str) + "\n")
    return path


def recorded_choice(directory: Path, s: dict, groups: list[dict]) -> list[dict] | None:
    """The choice a finished search recorded, or None (then the search runs, or resumes): only when it searched
    the same grid with the same steps and dev period, and chose for exactly the block's ``groups`` (the
    combinations of its other sweep values)."""
    path = directory / "search.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = all(record.get(k) == s[k] for k in ("grid", "steps", "eval_every"))
    chosen = record.get("chosen") or []
    recorded = [c.get("group") for c in chosen]
    same_groups = len(recorded) == len(groups) and all(
        any(r is not None and set(r) == set(g) and all(_same(r[k], g[k]) for k in g) for r in recorded) for g in groups)
    return chosen if same and same_groups and all(c.get("values") is not None for c in chosen) else None


def at_edge(grid: dict, values: dict | None) -> list[str]:
    """The grid keys whose chosen value is the smallest or largest of three or more numbers searched: the best
    may lie beyond the grid (widen it there), so reports flag the choice."""
    flagged = []
    for key, choice in (values or {}).items():
        numbers = [v for v in grid.get(key, []) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) >= 3 and isinstance(choice, (int, float)) and (
                _same(choice, min(numbers)) or _same(choice, max(numbers))):
            flagged.append(key)
    return flagged


def records(runs_dir: Path) -> list[dict]:
    """Every search.json under ``<runs>-search``, in path order."""
    out = []
    for path in sorted(search_root(Path(runs_dir)).rglob("search.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def read_choice(runs_dir: Path, source: str, key: str | None = None) -> Any:
    """The value ``key`` (all chosen keys when None) another block's search chose, or None if not yet searched."""
    path = search_root(runs_dir) / source / "search.json"
    if not path.is_file():
        return None
    chosen = json.loads(path.read_text()).get("chosen") or []
    if len(chosen) != 1 or chosen[0].get("values") is None:
        raise ConfigError(f"search.from={source!r}: that block's search chose {len(chosen)} settings; "
                          "name one key with 'block:key' from a block with a single group.")
    values = chosen[0]["values"]
    return values if key is None else values.get(key)


def from_overrides(runs_dir: Path, s: dict) -> tuple[list[str], list[str]]:
    """(overrides, blocks whose search is still missing) for a ``{from: ...}`` block."""
    src = s["from"]
    wanted = {None: src} if isinstance(src, str) else src
    overrides, missing = [], []
    for target, ref in wanted.items():
        block, _, key = str(ref).partition(":")
        value = read_choice(runs_dir, block, key or target)
        if value is None:
            missing.append(block)
        elif isinstance(value, dict):
            overrides += [f"{k}={v}" for k, v in value.items()]
        else:
            overrides.append(f"{target}={value}")
    return overrides, missing


def sources(s: dict | None) -> list[str]:
    """The blocks a ``{from: ...}`` search reads (``layout/block``)."""
    if not s or "from" not in s:
        return []
    src = s["from"]
    refs = [src] if isinstance(src, str) else list(src.values())
    return list(dict.fromkeys(str(r).partition(":")[0] for r in refs))
