"""The run directory: resolved config, a metrics stream and an atomically written summary.

    config.yaml      the resolved configuration of the cell
    metrics.jsonl    one JSON object per line: training steps and dev evaluations
    summary.json     written once, when the run ends however it ends (temp file + rename)
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the fact readable
    return value


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees either the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions() -> dict[str, str]:
    import torch
    import transformers

    import zobench

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        commit = done.stdout.strip() if done.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "zobench": zobench.__version__, "git_commit": commit}


class RunRecorder:
    def __init__(self, run_dir: str | Path, loggers: list | None = None):
        self.run_dir, self.loggers = Path(run_dir), list(loggers or [])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a")

    def write_config(self, cfg) -> None:
        write_atomic(self.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def log(self, row: dict[str, Any]) -> None:
        self._metrics.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
        self._metrics.flush()
        for logger in self.loggers:
            logger.log(row)

    def reset(self) -> None:
        """Start metrics.jsonl empty (a run that does not resume owns the whole stream)."""
        self._metrics.close()
        write_atomic(self.run_dir / "metrics.jsonl", "")
        self._metrics = open(self.run_dir / "metrics.jsonl", "a")

    def truncate_after(self, step: int) -> None:
        """Drop metric rows past ``step`` (a resumed run redoes them), and any torn last line."""
        self._metrics.close()
        path = self.run_dir / "metrics.jsonl"
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if row.get("step", 0) <= step:
                kept.append(line + "\n")
        write_atomic(path, "".join(kept))
        self._metrics = open(path, "a")

    def finish(self, summary: dict[str, Any]) -> None:
        self._metrics.close()
        text = json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2, sort_keys=False)
        write_atomic(self.run_dir / "summary.json", text + "\n")
        for logger in self.loggers:
            logger.finish(summary)
