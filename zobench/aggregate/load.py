"""Run directories -> one pandas DataFrame, one row per run.

Every ``summary.json`` under a root becomes a row (its scalar fields, plus a few settings read
from the run's ``config.yaml`` that the summary does not carry: batch size, max length, ...).
A directory with a ``config.yaml`` or ``metrics.jsonl`` but no ``summary.json`` is a run that
never finished (killed, still running): it becomes a row with ``status == "incomplete"``, so
it is listed under the tables instead of silently missing from them.

Derived columns: ``<key>_lo`` / ``<key>_hi`` for each ``<key>_ci95`` interval of the summary
(``test_score_ci95_lo``, ...); ``forward_pass_equivalents`` (and ``_per_step``) from
zobench.compute; ``run_path``, the absolute run directory where ``predictions.jsonl`` is read.

The same cell run twice (a re-run after a failure, in another folder) keeps the newest run with a
result (completed or diverged; else the newest run); the others get ``status == "superseded"`` and
are listed too. A cell is everything that decides what a run computes: the config groups that
``zobench.checkpoint.cell_key`` hashes (model, task, tuning, optimizer, trainer, data, seed, device,
dtype), read from config.yaml (``cell_identity``; unlike ``cell_key``, without RESULTS_VERSION, so a
re-run by newer code supersedes the stale run), and the device the run resolved. Runs of other
devices, dtypes or settings never supersede each other. Without a config.yaml, the summary's
``cell_key``; without either, the configuration columns, the seeds and the device.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from zobench.checkpoint import CELL_GROUPS, VOLATILE
from zobench.compute import forward_pass_equivalents

# settings a summary does not hold, read from config.yaml: column -> dotted path in the config
CONFIG_FIELDS = {
    "batch_size": "trainer.batch_size",
    "max_length": "trainer.max_length",
    "loss": "trainer.loss",
    "eval_every": "trainer.eval_every",
    "weight_decay": "optimizer.weight_decay",
    "schedule": "optimizer.schedule",
    "num_directions": "optimizer.estimator.num_directions",
    "direction": "optimizer.direction",
    "accumulation_steps": "optimizer.accumulation_steps",
    "one_sided": "optimizer.estimator.one_sided",
    "sign": "optimizer.sign",
    "block_level": "optimizer.estimator.level",
    "block_restrict": "optimizer.estimator.restrict",
    "block_immediate": "optimizer.estimator.immediate",
    "sparsity": "optimizer.estimator.sparsity",
    "sparsity_group": "optimizer.estimator.group",
    "resample_every": "optimizer.estimator.resample_every",
    "zo_layers": "optimizer.zo_layers",
    "zo_lr": "optimizer.zo_lr",
    "pad_to_length": "trainer.pad_to_length",
    "block_seed": "optimizer.estimator.block_seed",
    "sparsity_rule": "optimizer.estimator.sparsity_rule",
    "extra_observations": "optimizer.estimator.extra_observations",  # BSZO: reuse (BSZO) | probe (BSZO-B)
    "direction_stream": "optimizer.direction_stream",
    "max_grad_norm": "optimizer.max_grad_norm",
    "train_mode": "optimizer.train_mode",
    "zero_shot": "trainer.zero_shot",  # whether the run scored its untuned model first (not a seed axis)
    "data_seed": "data.seed",          # the training sample (MeZO's train_set_seed): a seed axis, like seed
    "eval_seed": "data.eval_seed",     # null: the eval set moves with data.seed (MeZO's training runs)
    "num_train": "data.num_train",
    "num_dev": "data.num_dev",
    "num_eval": "data.num_eval",
    # identity, for runs that died before writing a summary
    "model": "model.name", "task": "task.name", "tuning": "tuning.name", "optimizer": "optimizer.name",
    "seed": "seed", "dtype": "dtype", "device": "device", "lr": "optimizer.lr", "eps": "optimizer.eps",
    "template": "task.template", "metric": "task.metric", "steps_budget": "trainer.steps",
}

# What makes two runs the same configuration (seed aside). Columns absent from a frame are skipped.
# ``selection`` (dev_metric | dev_loss) and ``variant`` are protocol: runs that differ in them are not seeds of one cell.
CONFIG_KEYS = ["model", "task", "tuning", "optimizer", "dtype", "template", "metric", "loss", "selection", "variant",
               "lr", "eps",
               "weight_decay", "schedule", "num_directions", "direction", "accumulation_steps", "one_sided", "sign",
               "block_level", "block_restrict", "block_immediate", "block_seed", "sparsity", "sparsity_group", "sparsity_rule",
               "extra_observations", "direction_stream", "max_grad_norm", "train_mode", "resample_every", "zo_layers", "zo_lr",
               "pad_to_length", "steps_budget", "batch_size", "max_length", "zero_shot",
               "num_train", "num_dev", "num_eval"]

STATUS_OK = "completed"
GIB = 2**30


def _dig(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _number(value: Any) -> Any:
    """JSON has no NaN/inf: zobench.record writes them as strings; turn them back into floats."""
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return value


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    try:
        import yaml

        return yaml.safe_load(path.read_text()) or {}
    except Exception:  # a half-written config must not stop the aggregation
        return {}


def cell_identity(config: dict[str, Any]) -> str | None:
    """What a run computes, whatever code computed it: cell_key's hash of its config, without RESULTS_VERSION."""
    groups = {k: v for k, v in config.items() if k in CELL_GROUPS} if isinstance(config, dict) else {}
    if not groups:
        return None
    for dotted in VOLATILE:
        node, leaf = dotted.split(".")
        if isinstance(groups.get(node), dict):
            groups[node] = {k: v for k, v in groups[node].items() if k != leaf}
    text = json.dumps(groups, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_run(run_dir: Path, root: Path) -> dict[str, Any]:
    """One row: the summary's scalar fields, config extras, and where the run lives."""
    summary_path = run_dir / "summary.json"
    row: dict[str, Any] = {}
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError as exc:
            summary = {"status": "failed", "error": f"unreadable summary.json: {exc}"}
        row.update({k: _number(v) for k, v in summary.items() if not isinstance(v, (dict, list))})
        for key, value in summary.items():  # intervals: test_score_ci95 [lo, hi] -> test_score_ci95_lo, _hi
            if key.endswith("_ci95") and isinstance(value, list) and len(value) == 2:
                row[f"{key}_lo"], row[f"{key}_hi"] = (_number(v) for v in value)
        if "selection" in summary and summary.get("variant") is None:
            row["variant"] = "none"  # a run of the new format with no variant (old runs: unknown)
        versions = summary.get("versions") or {}
        row["git_commit"] = versions.get("git_commit")
        for key in ("num_train", "num_dev", "num_eval"):
            if isinstance(summary.get("data"), dict) and key in summary["data"]:
                row[key] = summary["data"][key]
        row["finished_at"] = summary_path.stat().st_mtime
    else:
        row.update(status="incomplete", error="no summary.json: the run was killed or is still running")
        row["finished_at"] = max((p.stat().st_mtime for p in run_dir.iterdir()), default=0.0)
    config = _read_config(run_dir)
    row["cell_identity"] = cell_identity(config)
    for column, dotted in CONFIG_FIELDS.items():
        if row.get(column) is None:
            value = _dig(config, dotted)
            if value is not None:
                row[column] = value
    if row.get("seq_len") is None and row.get("max_length") is not None:
        row["seq_len"] = row["max_length"]  # the runs do not record a measured length yet
    row["run_dir"] = str(run_dir.relative_to(root)) if run_dir != root else "."
    row["run_path"] = str(run_dir.resolve())  # where predictions.jsonl is read from
    row["forward_pass_equivalents"] = forward_pass_equivalents(row, config)
    return row


def find_run_dirs(root: str | Path) -> list[Path]:
    """Directories holding a summary.json, or a config.yaml / metrics.jsonl without one."""
    root = Path(root)
    marks = {"summary.json", "config.yaml", "metrics.jsonl"}
    found = {p.parent for name in marks for p in root.rglob(name)}
    # hydra writes its own config.yaml under <run>/.hydra/: that directory is not a run
    return sorted(d for d in found if d.name != ".hydra")


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    if {"forward_pass_equivalents", "steps"} <= set(df.columns):
        steps = pd.to_numeric(df["steps"], errors="coerce")
        df["forward_pass_equivalents_per_step"] = (pd.to_numeric(df["forward_pass_equivalents"], errors="coerce")
                                                   / steps.where(steps > 0))
    for column in ("peak_memory_bytes", "inference_peak_memory_bytes"):
        if column in df:
            df[column.replace("_bytes", "_gib")] = pd.to_numeric(df[column], errors="coerce") / GIB
    if {"peak_memory_bytes", "inference_peak_memory_bytes"} <= set(df.columns):
        df["memory_ratio"] = (pd.to_numeric(df["peak_memory_bytes"], errors="coerce")
                              / pd.to_numeric(df["inference_peak_memory_bytes"], errors="coerce"))
    return df


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def _cell_of(row: pd.Series, columns: list[str]) -> tuple:
    """The cell a run belongs to, device aside (see the module's docstring)."""
    for column in ("cell_identity", "cell_key"):
        if _known(row.get(column)):
            return (column, row[column])
    return ("columns", *(row[c] if _known(row[c]) else None for c in columns))


def _by_device(members: list, device: pd.Series) -> list[list]:
    """Runs of one cell split by the device that ran them. A run whose device is unknown (device=auto,
    killed before it resolved one) goes with the runs of the one device that ran the cell, if only one did."""
    parts: dict[Any, list] = {}
    unknown = []
    for index in members:
        value = device.get(index)
        (parts.setdefault(value, []) if _known(value) and value != "auto" else unknown).append(index)
    if len(parts) == 1:
        next(iter(parts.values())).extend(unknown)
    elif unknown:
        parts[None] = unknown
    return list(parts.values())


RESULT_RANK = {STATUS_OK: 2, "diverged": 1}  # a run with a result outranks a newer error of the same cell


def mark_superseded(df: pd.DataFrame) -> pd.DataFrame:
    """The same cell run more than once: keep the newest run with a result (else the newest run).

    Only runs of the same cell (the same config groups: model, task, tuning, optimizer, trainer, data,
    seed, dtype, device; on the same resolved device) supersede each other: a diverged CPU run is never
    hidden by a failed CUDA run of the same settings."""
    if df.empty:
        return df
    df = df.copy()
    if "error" not in df.columns:
        df["error"] = None
    df["error"] = df["error"].astype(object)
    columns = [k for k in CONFIG_KEYS + ["seed", "data_seed", "device"] if k in df.columns]
    device = df["device"] if "device" in df.columns else pd.Series(None, index=df.index, dtype=object)
    cells: dict[tuple, list] = {}
    for index, row in df.iterrows():
        cells.setdefault(_cell_of(row, columns), []).append(index)
    for members in cells.values():
        if len(members) < 2:
            continue
        for part in _by_device(members, device):
            if len(part) < 2:
                continue
            keep = max(part, key=lambda i: (RESULT_RANK.get(df.at[i, "status"], 0), df.at[i, "finished_at"]))
            for index in part:
                if index != keep:
                    error = df.at[index, "error"]
                    was = df.at[index, "status"] + (f": {error}" if _known(error) else "")
                    df.at[index, "error"] = (f"superseded by {df.at[keep, 'run_dir']} ({df.at[keep, 'status']}), "
                                             f"a run of the same cell (was {was})")
                    df.at[index, "status"] = "superseded"
    return df


def load_runs(root: str | Path) -> pd.DataFrame:
    """Every run under ``root`` (summary.json or an unfinished run directory) as one DataFrame."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"runs directory {root} does not exist")
    rows = [read_run(d, root) for d in find_run_dirs(root)]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["status", "run_dir"])
    for column in ("lr", "eps", "best_dev_score", "best_dev_accuracy", "test_score", "test_accuracy",
                   "zero_shot_score", "zero_shot_accuracy", "step_time_ms", "weight_decay", "forward_pass_equivalents",
                   *[c for c in df.columns if c.endswith(("_ci95_lo", "_ci95_hi"))]):
        if column in df:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    df = _derive(mark_superseded(df))
    return df.sort_values("run_dir").reset_index(drop=True)


def problems(df: pd.DataFrame) -> pd.DataFrame:
    """Runs that are not usable as results: failed, diverged, incomplete, superseded."""
    if df.empty:
        return df
    return df[df["status"].ne(STATUS_OK)]
