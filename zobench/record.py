"""The run directory: resolved config, a metrics stream and an atomically written summary.

    config.yaml      the resolved configuration of the cell
    metrics.jsonl    one JSON object per line: training steps and dev evaluations
    summary.json     written once, when the run ends however it ends (temp file + rename)

Every file is written to a temp file in the same folder, fsynced and renamed over the old one
(``write_atomic``, ``save_torch_atomic``): a full disk or a kill leaves the previous file or none,
never a torn one, and the temp file is removed. A full disk still gets its summary: the recorder
holds a small reserve file in the run directory from the start and frees it when the summary
cannot be written, and when even that fails it writes a minimal summary (status, error, identity).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger("zobench")

RESERVE = ".summary-reserve.tmp"  # room kept for summary.json on a full disk (a .*.tmp name: never committed)
RESERVE_BYTES = 64 * 1024         # a summary is ~2-4 KiB; a few blocks for its temp file and directory entry
# what a minimal summary keeps when the whole one cannot be written: how the run ended and which cell it is
MINIMAL_KEYS = ("status", "error", "cell_key", "model", "task", "tuning", "optimizer", "seed", "dtype", "device",
                "lr", "eps", "steps", "steps_budget", "wall_time_s")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the fact readable
    return value


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` naming the file it was about (a failed flush or fsync names none)."""
    if exc.filename is None and exc.errno is not None:
        named = OSError(exc.errno, exc.strerror, str(path))
        named.__cause__ = exc
        return named
    return exc


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()  # what open(..., "w") gives a new file under this process's umask


@contextlib.contextmanager
def _replacing(path: Path, mode: str):
    """A temp file beside ``path``, opened in ``mode``, that replaces ``path`` when the block ends well (after
    flush and fsync) and is removed when it does not; an OSError is re-raised naming ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600: every file of a run gets the mode open() gives metrics.jsonl
        with os.fdopen(fd, mode) as f:
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _named(exc, path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees either the old file or the whole new one."""
    with _replacing(Path(path), "w") as (f, _):
        f.write(text)


class _Sink(io.RawIOBase):
    """A file for torch.save that keeps the OSError of a failed write: torch reports a full disk as
    ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``, which names no cause."""

    def __init__(self, file):
        super().__init__()
        self.file, self.error = file, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise


def save_torch_atomic(obj: Any, path: Path, verify: bool = False) -> None:
    """``torch.save(obj, path)`` so that ``path`` holds the old file or the whole new one, never a torn one.

    A temp file in the same folder is written, fsynced and renamed over ``path``; on any failure it is
    removed. A full disk raises ``OSError(ENOSPC)`` naming ``path``. ``verify``: read the new file back
    (memory-mapped: its structure, not its bytes) before it replaces the old one.
    """
    import torch

    path = Path(path)
    with _replacing(path, "wb") as (f, tmp):
        sink = _Sink(f)
        try:
            torch.save(obj, sink)
        except OSError:
            raise
        except Exception as exc:
            if sink.error is not None:  # the disk, not torch: say so
                raise sink.error from exc
            raise
        if verify:
            f.flush()
            try:
                torch.load(tmp, map_location="cpu", mmap=True, weights_only=False)
            except Exception as exc:  # noqa: BLE001 - any failure to read it back
                raise OSError(errno.EIO, f"{path} did not read back after writing ({type(exc).__name__}: {exc})") from exc


def versions() -> dict[str, str]:
    import torch
    import transformers

    import zobench

    commit = zobench.git_commit() or "unknown"  # a checkout's HEAD, or the commit a wheel was built from
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "zobench": zobench.__version__, "git_commit": commit}


def _summary_text(summary: dict[str, Any]) -> str:
    return json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2, sort_keys=False, default=str) + "\n"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class RunRecorder:
    def __init__(self, run_dir: str | Path, loggers: list | None = None):
        self.run_dir, self.loggers = Path(run_dir), list(loggers or [])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.reserve = self.run_dir / RESERVE
        self._hold_reserve()
        self._metrics = open(self.run_dir / "metrics.jsonl", "a")

    def _hold_reserve(self) -> None:
        """Take RESERVE_BYTES of real blocks (zeros written, not a sparse file) that finish() can give back."""
        try:
            with open(self.reserve, "wb") as f:
                f.write(bytes(RESERVE_BYTES))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self.reserve.unlink(missing_ok=True)
            log.warning("no room for the summary's reserve in %s (%s): a full disk may leave a minimal summary",
                        self.run_dir, _reason(exc))

    def _free_reserve(self) -> bool:
        try:
            existed = self.reserve.exists()
            self.reserve.unlink(missing_ok=True)
            return existed
        except OSError:
            return False

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
        """Write summary.json, whatever the disk says; then tell the loggers.

        On a failed write (a full disk, most often) the reserve is freed and the whole summary tried
        again; then a minimal one (MINIMAL_KEYS, status ``failed``, the write's error). The run's own
        error stays first in ``error``. Raises only when not even the minimal summary fits.
        """
        notes = list(summary.get("warnings") or [])
        try:
            self._metrics.close()
        except OSError as exc:  # its last buffered rows did not fit
            notes.append(f"metrics.jsonl lost its last rows: {_reason(exc)}")
        if notes:
            summary["warnings"] = notes
        path = self.run_dir / "summary.json"
        try:
            try:
                write_atomic(path, _summary_text(summary))
            except OSError as first:
                freed = self._free_reserve()
                log.warning("summary.json did not fit (%s)%s", _reason(first), "; its reserve is freed" if freed else "")
                summary["warnings"] = notes = notes + [f"summary.json first failed: {_reason(first)}"]
                try:
                    write_atomic(path, _summary_text(summary))
                except OSError as second:
                    minimal = {k: summary.get(k) for k in MINIMAL_KEYS if k in summary}
                    if summary.get("status") == "failed" and summary.get("error"):
                        error = f"{summary['error']}; only a minimal summary.json fitted ({_reason(second)})"
                    else:  # the results are lost with the whole summary: the run failed
                        ended = f"{summary.get('status')}" + (f" ({summary['error']})" if summary.get("error") else "")
                        error = f"{_reason(second)}: only a minimal summary.json fitted; the run had ended {ended}"
                    minimal.update(status="failed", error=error, minimal=True)
                    write_atomic(path, _summary_text(minimal))
                    log.error("summary.json: only a minimal summary fitted: %s", error)
                    summary.update(status="failed", error=error)
        finally:
            self._free_reserve()
            for logger in self.loggers:
                logger.finish(summary)
