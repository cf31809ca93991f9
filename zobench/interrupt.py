"""Graceful stop on SIGTERM / SIGUSR2 (SLURM preemption, submitit timeouts, ``kill``).

The handler only sets a flag; the trainer finishes the current step, writes a checkpoint and
ends the run as ``interrupted``, which a re-run of the same cell resumes.
"""
from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR2", None)) if s)
_requested = threading.Event()


class Interrupted(RuntimeError):
    """The run was asked to stop; its checkpoint is on disk."""


def requested() -> bool:
    return _requested.is_set()


@contextlib.contextmanager
def graceful_interrupt():
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {s: signal.signal(s, lambda signum, frame: _requested.set()) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
