"""Graceful stop on SIGTERM, SIGINT (Ctrl-C) and SIGUSR2 (SLURM preemption, submitit timeouts, ``kill``).

Guarantee: a stop signal never ends a run half-way through a step or a write. The handler only
sets a flag; the trainer finishes the current step, writes a checkpoint and ends the run as
``interrupted``, which a re-run of the same cell resumes. Ctrl-C is handled exactly as SIGTERM
(no KeyboardInterrupt traceback, no ``failed`` summary). Ctrl-\\ (SIGQUIT) still ends a process at once.

``stopped()`` stays true for the rest of the process: a sweep that runs its cells in this process
starts no further cell; one whose workers run them stops through ``zobench.sweep``.
"""
from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = tuple(s for s in (getattr(signal, name, None) for name in ("SIGTERM", "SIGINT", "SIGUSR2")) if s)
_requested = threading.Event()  # the running cell should stop at the end of its step
_stopped = threading.Event()  # a stop signal arrived in this process (never cleared)
_held = False  # hold(): the handlers stay installed for the life of the process (a sweep's cell process)


class Interrupted(RuntimeError):
    """The run was asked to stop; its checkpoint is on disk."""


def requested() -> bool:
    return _requested.is_set()


def stopped() -> bool:
    """Whether a stop signal reached this process at any time (a sweep then starts no further cell)."""
    return _stopped.is_set()


def request() -> None:
    """What a stop signal does: ask the running cell to stop at its step's end, and the sweep to stop."""
    _requested.set()
    _stopped.set()


def _handler(signum, frame) -> None:
    request()


def begin_cell() -> None:
    """A sweep's cell process starts a cell: a signal meant for its previous cell does not stop this one."""
    _requested.clear()


@contextlib.contextmanager
def graceful_interrupt():
    """While inside, SIGTERM, SIGINT and SIGUSR2 only set the flag; the previous handlers come back after.

    In a process that ``hold()``s the signals (a sweep's), the handlers are already in place and the
    flag is left as it is (``begin_cell`` cleared it when the cell began).
    """
    if _held:
        yield
        return
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def hold() -> None:
    """Install the flag-setting handlers for the rest of the process, and take the signals a sweep blocked.

    A sweep's process blocks the stop signals before its workers start, so they start with them
    blocked (zobench.sweep): a signal that arrived before this call is delivered now, to the handler.
    """
    global _held
    if threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        signal.signal(s, _handler)
    _held = True
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
