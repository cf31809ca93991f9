"""One process at a time in a run directory.

A cell holds ``<run_dir>/.lock`` (``flock``) while it runs. The kernel releases the lock when the
holder dies, however it dies (SIGKILL, out of memory), so a lock is never stale: a ``.lock`` file
left behind by a killed run is simply taken by the next one. A second process that finds the lock
held does not wait and writes nothing in the folder: two sweeps with the same ``sweep_name``
never train the same cell twice, interleave its metrics.jsonl or mix their results.
The holder removes the file when it is done.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None

log = logging.getLogger("zobench")

NAME = ".lock"


class RunDirLock:
    """``with RunDirLock(run_dir) as held:`` — ``held`` is False when another process holds it."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        if fcntl is None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                log.warning("cannot lock %s (%s): running without a lock", self.path, exc)
                return True  # a file system without flock: run as before rather than not at all
            try:
                st = os.stat(self.path)
                same = (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # the holder removed this file as we took it: lock the current one

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: whoever opened it meanwhile sees it gone (acquire)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
