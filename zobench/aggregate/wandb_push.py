"""Push to W&B what the aggregator reads: its tables and figures, and the run directories themselves.

``zobench-aggregate RUNS_DIR --wandb PROJECT`` (``push_to_wandb``): one W&B run of job type ``aggregate``
holds every table as a ``wandb.Table`` (from its CSV), the list of runs with their status, and every PNG
figure. Numbers stay numbers (a missing one is None), so the dashboard sorts and plots them; a column
that mixes numbers and text is text.

``zobench-aggregate RUNS_DIR --wandb-runs PROJECT`` (``push_runs``): every completed run directory
becomes a W&B run, as ``logger=wandb`` would have logged it live: its config.yaml as config, its
metrics.jsonl as history (x axis ``step``; training and dev rows with ``forward_passes``; the zero-shot
scores at step 0), its summary as summary metrics (zobench.wandb_logger.summary_metrics: peak memory,
step time, forward passes as numbers), tagged ``model:``, ``task:``, ``tuning:``, ``optimizer:`` and
``pushed``, named by the sweep's varying overrides (zobench.wandb_logger.hydra_run_name from the run's
``.hydra/``; else the config keys that vary across the pushed runs) and grouped by the sweep folder.
Each push is recorded in the run directory (``wandb_pushed.json``: project, entity, id, mode, when): a
run already pushed to the same project and entity is not pushed again, nor is a run that logged itself
live to it (``logger=wandb``, a ``wandb_run_id`` in its folder). In offline mode (``WANDB_MODE=offline``)
the runs land under ``<out>/wandb/`` for ``wandb sync``. Delete ``wandb_pushed.json`` to push a run again.

As for cell runs, W&B is an observer: an error is a warning and the files on disk stand.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger("zobench")

PUSHED_FILE = "wandb_pushed.json"


# -- tables -------------------------------------------------------------------------------------------------
def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _python(value: Any) -> Any:
    """A numpy scalar as the Python number it holds; NaN/NaT/None as None."""
    if _is_missing(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _kind(values: list) -> str:
    known = [v for v in values if v is not None]
    if known and all(isinstance(v, bool) for v in known):
        return "bool"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in known):
        return "number"
    return "text"


def table_data(df: pd.DataFrame) -> tuple[list[str], list[list]]:
    """(columns, rows) for ``wandb.Table``: numbers as numbers, booleans as booleans, missing values as None,
    and a column of mixed types as text (W&B refuses a column of several types)."""
    columns = [str(c) for c in df.columns]
    cells = {c: [_python(v) for v in df[col]] for c, col in zip(columns, df.columns)}
    for c, values in cells.items():
        if _kind(values) == "text":
            cells[c] = [None if v is None else str(v) for v in values]
    return columns, [list(row) for row in zip(*(cells[c] for c in columns))] if columns else []


def wandb_table(df: pd.DataFrame):
    import wandb

    columns, rows = table_data(df)
    return wandb.Table(columns=columns, data=rows)


RUN_COLUMNS = ("model", "task", "tuning", "optimizer", "seed", "lr", "eps", "status", "error", "test_score",
               "test_accuracy", "best_dev_score", "best_dev_accuracy", "zero_shot_score", "peak_memory_bytes",
               "peak_memory_gib", "memory_ratio", "step_time_ms", "forward_passes", "forward_pass_equivalents",
               "run_dir")


def push_to_wandb(files: list, runs: pd.DataFrame, project: str, entity: str | None = None,
                  name: str | None = None, group: str | None = None, wandb_dir: str | None = None) -> bool:
    """Log the tables (``*.csv``) and figures (``*.png``) among ``files``; True when it went through.

    ``wandb_dir``: where W&B writes its local files (the aggregate folder, beside the tables).
    """
    try:
        import wandb

        run = wandb.init(project=project, entity=entity, name=name or "zobench-aggregate", group=group,
                         job_type="aggregate", reinit="finish_previous", dir=wandb_dir)
        for path in sorted(Path(f) for f in files):
            if path.suffix == ".csv" and path.name != "runs.csv":
                try:
                    frame = pd.read_csv(path)
                except pd.errors.EmptyDataError:
                    continue
                run.log({f"table/{path.stem}": wandb_table(frame)})
            elif path.suffix == ".png":
                run.log({f"figure/{path.stem}": wandb.Image(str(path))})
        if not runs.empty:
            run.log({"runs": wandb_table(runs[[c for c in RUN_COLUMNS if c in runs]])})
        run.finish()
        return True
    except Exception as exc:  # noqa: BLE001 - the tables are on disk whatever W&B does
        log.warning("W&B push skipped: %s: %s", type(exc).__name__, exc)
        return False


# -- run directories ----------------------------------------------------------------------------------------
def read_pushes(run_dir: Path) -> list[dict]:
    try:
        record = json.loads((Path(run_dir) / PUSHED_FILE).read_text())
    except (OSError, ValueError):
        return []
    pushes = record.get("pushes") if isinstance(record, dict) else None
    return [p for p in pushes if isinstance(p, dict)] if isinstance(pushes, list) else []


def pushed_to(run_dir: Path, project: str, entity: str | None) -> dict | None:
    """The record of an earlier push of ``run_dir`` to (entity, project), or None."""
    for push in read_pushes(run_dir):
        if push.get("project") == project and push.get("entity") == entity:
            return push
    return None


def _record_push(run_dir: Path, push: dict) -> None:
    from zobench.record import write_atomic

    pushes = [p for p in read_pushes(run_dir)
              if (p.get("project"), p.get("entity")) != (push["project"], push["entity"])]
    write_atomic(Path(run_dir) / PUSHED_FILE, json.dumps({"pushes": [*pushes, push]}, indent=1) + "\n")


def _logged_live(run_dir: Path, config: dict, project: str, entity: str | None) -> bool:
    from zobench.wandb_logger import RUN_ID_FILE

    logger = config.get("logger") or {}
    return (logger.get("name") == "wandb" and logger.get("project") == project
            and (logger.get("entity") or None) == entity and (Path(run_dir) / RUN_ID_FILE).exists())


def _read_yaml(path: Path) -> dict:
    try:
        import yaml

        return yaml.safe_load(Path(path).read_text()) or {}
    except Exception:  # noqa: BLE001
        return {}


def _metrics_rows(run_dir: Path) -> list[dict]:
    from zobench.wandb_logger import _number

    rows = []
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
            if isinstance(row, dict):
                rows.append({k: _number(v) for k, v in row.items()})
    return rows


def _sweep_dir(run_dir: Path, root: Path) -> Path | None:
    """The sweep folder a run belongs to: the nearest folder above it with a multirun.yaml, within root."""
    for parent in [run_dir, *run_dir.parents]:
        if (parent / "multirun.yaml").exists():
            return parent
        if parent == root:
            break
    return None


def _hydra_name(run_dir: Path) -> str | None:
    """The name ``logger=wandb`` gave this run live: from its .hydra/hydra.yaml and its sweep's multirun.yaml."""
    from zobench.wandb_logger import short_run_name, sweep_params

    hydra_node = _read_yaml(run_dir / ".hydra" / "hydra.yaml").get("hydra") or {}
    overrides = (hydra_node.get("overrides") or {}).get("task")
    if overrides is None:
        return None
    params = None
    if str(hydra_node.get("mode", "")).endswith("MULTIRUN"):
        sweep_dir = (hydra_node.get("sweep") or {}).get("dir")
        params = sweep_params(sweep_dir, (hydra_node.get("sweeper") or {}).get("params")) if sweep_dir else None
    return short_run_name(overrides, params)


def _column_name(row: pd.Series, keys: list[str]) -> str | None:
    from zobench.aggregate.sweep_table import _fmt_value, _known

    parts = [f"{k}={_fmt_value(row[k])}" for k in keys if k in row and _known(row[k])]
    return ",".join(parts) or None


def push_runs(root: str | Path, project: str, entity: str | None = None, group: str | None = None,
              wandb_dir: str | None = None, runs: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """Upload every completed run under ``root`` as a W&B run (see the module docstring).

    Returns {"pushed": [...], "already pushed": [...], "logged live": [...], "not completed": [...],
    "failed": [...]} of run directories (relative to ``root``). ``wandb_dir``: where W&B writes its local
    files (default ``root/aggregate``, as the CLI's ``--out``)."""
    from zobench.aggregate.load import STATUS_OK, load_runs
    from zobench.aggregate.sweep_table import SEED_KEYS, column_keys, varying_keys

    root = Path(root)
    if wandb_dir is None:
        wandb_dir = str(root / "aggregate")
    Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    runs = load_runs(root) if runs is None else runs
    done: dict[str, list[str]] = {"pushed": [], "already pushed": [], "logged live": [], "not completed": [],
                                  "failed": []}
    if runs.empty:
        return done
    completed = runs[runs["status"].eq(STATUS_OK)]
    done["not completed"] = list(runs.loc[runs["status"].ne(STATUS_OK), "run_dir"])
    keys = column_keys(completed, varying_keys(completed))[0] if not completed.empty else []
    keys = [k for k in ("task",) if k in completed and completed[k].nunique() > 1] + keys
    keys += [k for k in SEED_KEYS if k in completed and completed[k].nunique() > 1]
    try:
        import wandb
    except Exception as exc:  # noqa: BLE001
        log.warning("W&B push of runs skipped: %s: %s", type(exc).__name__, exc)
        done["failed"] = list(completed["run_dir"])
        return done
    for _, row in completed.iterrows():
        run_dir = (root / row["run_dir"]).resolve()
        config = _read_yaml(run_dir / "config.yaml")
        if pushed_to(run_dir, project, entity) is not None:
            done["already pushed"].append(row["run_dir"])
            continue
        if _logged_live(run_dir, config, project, entity):
            done["logged live"].append(row["run_dir"])
            continue
        try:
            push = _push_one(wandb, run_dir, root.resolve(), row, config, keys, project, entity, group, wandb_dir)
            _record_push(run_dir, push)
            done["pushed"].append(row["run_dir"])
        except Exception as exc:  # noqa: BLE001 - one run's failure is not the others'
            log.warning("W&B push of %s failed: %s: %s", row["run_dir"], type(exc).__name__, exc)
            done["failed"].append(row["run_dir"])
    return done


def _push_one(wandb, run_dir: Path, root: Path, row: pd.Series, config: dict, keys: list[str], project: str,
              entity: str | None, group: str | None, wandb_dir: str | None) -> dict:
    import secrets
    import string

    from zobench.wandb_logger import summary_metrics, zero_shot_row

    summary = json.loads((run_dir / "summary.json").read_text())
    sweep = _sweep_dir(run_dir, root)
    name = _hydra_name(run_dir) or _column_name(row, keys) or str(row["run_dir"])
    tags = [f"{k}:{summary.get(k)}" for k in ("model", "task", "tuning", "optimizer") if summary.get(k) is not None]
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    run = wandb.init(project=project, entity=entity, name=name, group=group or (sweep.name if sweep else None),
                     tags=[*tags, "pushed"], config=config or None, job_type="run", id=run_id, dir=wandb_dir,
                     reinit="finish_previous", settings=wandb.Settings(silent=True))
    try:
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        rows = _metrics_rows(run_dir)
        zero = zero_shot_row(summary)
        if zero is not None and not any(r.get("step") == 0 and any(str(k).startswith("zero_shot_") for k in r)
                                        for r in rows):
            rows.insert(0, zero)
        for metrics in rows:
            run.log(metrics)
        run.summary.update(summary_metrics(summary, config))
        url = getattr(run, "url", None)
    except BaseException:
        run.finish(exit_code=1)  # a partial upload: not recorded, so the next push tries again
        raise
    run.finish(exit_code=0)
    mode = os.environ.get("WANDB_MODE") or getattr(getattr(run, "settings", None), "mode", None)
    return {"project": project, "entity": entity, "id": run_id, "name": name, "url": url, "mode": mode,
            "pushed_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
