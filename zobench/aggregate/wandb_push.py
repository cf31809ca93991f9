"""Push the aggregator's tables and figures to W&B (``zobench-aggregate RUNS_DIR --wandb PROJECT``).

One W&B run of job type ``aggregate`` holds every table as a ``wandb.Table`` (from its CSV, so the
dashboard can sort and filter it), the list of runs with their status, and every PNG figure.
As for cell runs, W&B is an observer: an error is a warning and the files on disk stand.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger("zobench")


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
                run.log({f"table/{path.stem}": wandb.Table(dataframe=pd.read_csv(path).astype(str))})
            elif path.suffix == ".png":
                run.log({f"figure/{path.stem}": wandb.Image(str(path))})
        if not runs.empty:
            cols = [c for c in ("model", "task", "tuning", "optimizer", "seed", "lr", "eps", "status", "error",
                                "test_accuracy", "best_dev_accuracy", "peak_memory_bytes", "step_time_ms") if c in runs]
            run.log({"runs": wandb.Table(dataframe=runs[cols].astype(str))})
        run.finish()
        return True
    except Exception as exc:  # noqa: BLE001 - the tables are on disk whatever W&B does
        log.warning("W&B push skipped: %s: %s", type(exc).__name__, exc)
        return False
