"""A sweep (``zobench -m ...``) that stops cleanly and says how it ended, whatever launcher runs its cells.

Guarantees:

- A stop signal (SIGTERM, SIGINT/Ctrl-C, SIGUSR2) to the sweep's process reaches every cell it runs on
  this machine, in this process (basic launcher) or in its worker processes (joblib): each running
  cell saves a checkpoint at the end of its step and ends ``interrupted``; no further cell starts
  (with joblib, a cell that did not start still has the folder Hydra made for it: .hydra/ and run.log,
  no results); the sweep exits 1. Cells on other machines (SLURM) are not signalled, but no further
  one starts. A signal sent to one worker only (a SLURM preemption) interrupts that worker's cell;
  the sweep goes on.
- The sweep ends with one line, counting this sweep's cells only::

      [zobench] sweep: 3 completed, 1 diverged, 1 failed, 0 interrupted, 2 skipped

  ``skipped``: already completed. ``, N refused`` (the folder holds another config's results),
  ``, N busy`` (another process is running that cell: skipped here) and ``, N not started`` (the
  sweep was stopped first) are added when not zero. The sweep exits 1 when a cell failed, was
  refused, was interrupted or did not start, or when the sweep was stopped by a signal; else 0
  (a diverged cell is a result).

How: when the sweep starts (Hydra's ``on_multirun_start``, ``SweepCallback`` in conf/config.yaml)
its process makes a control folder in the sweep directory and names it in ``ZOBENCH_SWEEP``, which
the processes that run the cells inherit. Each such process registers in it, records there how each
of its cells ended, and looks there for the stop mark before it starts a cell. The sweep's process
blocks the stop signals in its main thread before any worker starts, so the workers start with them
blocked (a signal mask is inherited): a worker between two cells can not be killed by a Ctrl-C or a
forwarded signal, which would make joblib kill every other worker half-way through a step; it takes
the signal when its next cell installs zobench's handlers (``interrupt.hold``), then sees the stop
mark. A thread of the sweep's process waits for the signals, writes the stop mark and forwards each
signal to the registered workers.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from zobench import interrupt

ENV = "ZOBENCH_SWEEP"  # the control folder of the sweep this process runs cells of
STOP = "stop"  # the control folder's stop mark
COUNTED = ("completed", "diverged", "failed", "interrupted", "skipped")
EXTRA = ("refused", "busy", "not started")  # shown when not zero
BAD = ("failed", "interrupted", "refused", "not started")  # any of them: the sweep exits 1

_sweep: _Sweep | None = None  # in the sweep's own process
_member: Path | None = None  # the control folder this process registered in
_records = itertools.count()


class SweepCallback(Callback):
    """Hydra callback (conf/config.yaml, ``hydra.callbacks``): starts and ends the sweep's bookkeeping."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        start(Path(str(config.hydra.sweep.dir)).resolve())

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        if _sweep is not None:
            _sweep.finish()


class _Sweep:
    def __init__(self, sweep_dir: Path):
        self.pid = os.getpid()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.control = Path(tempfile.mkdtemp(prefix=".zobench-sweep-", dir=sweep_dir))
        self.signalled: int | None = None
        self.finished = False
        self._previous_env = os.environ.get(ENV)
        os.environ[ENV] = str(self.control)
        self._mask, self._handlers = None, {}
        if threading.current_thread() is threading.main_thread():
            # the handlers stand in should anything unblock the signals again
            self._handlers = {s: signal.signal(s, self._handle) for s in interrupt.SIGNALS}
            if hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigwait"):
                _start_resource_tracker()  # once running it is not started again, which would unblock them
                self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, interrupt.SIGNALS)
                threading.Thread(target=self._watch, name="zobench-sweep-signals", daemon=True).start()
        atexit.register(self.finish, exit_code=False)

    def _handle(self, signum, frame) -> None:
        self.on_signal(signum)

    def _watch(self) -> None:
        while True:
            self.on_signal(signal.sigwait(set(interrupt.SIGNALS)))

    def on_signal(self, signum: int) -> None:
        first = self.signalled is None
        self.signalled = signum
        interrupt.request()  # a cell running in this process (basic launcher) stops at its step's end
        _touch(self.control / STOP)  # before forwarding: a worker that misses the signal sees the mark
        self._forward(signum)
        if first:  # os.write: this may run in a signal handler, in the middle of another write to stderr
            os.write(2, f"[zobench] {signal.Signals(signum).name}: stopping the sweep; running cells save a checkpoint "
                        "at the end of their step, no further cell starts\n".encode())

    def _forward(self, signum: int) -> int:
        try:
            import psutil

            ours = {p.pid for p in psutil.Process().children(recursive=True)}
        except Exception:  # noqa: BLE001 - no process table: forward to nothing rather than to strangers
            return 0
        host, sent = socket.gethostname(), 0
        for path in self.control.glob("*.member"):
            name, _, pid = path.stem.rpartition("-")
            if name == host and pid.isdigit() and int(pid) in ours:
                try:
                    os.kill(int(pid), signum)
                    sent += 1
                except OSError:
                    pass
        return sent

    def counts(self) -> Counter:
        counts: Counter = Counter()
        for path in self.control.glob("*.json"):
            try:
                counts[json.loads(path.read_text())["outcome"]] += 1
            except (OSError, ValueError, KeyError):
                pass
        return counts

    def finish(self, exit_code: bool = True) -> None:
        """Print the sweep's line, remove the control folder; exit 1 when a cell did not end well."""
        if self.finished or os.getpid() != self.pid:
            return
        self.finished = True
        counts = self.counts()
        print(f"[zobench] sweep: {summary_line(counts)}", flush=True)
        shutil.rmtree(self.control, ignore_errors=True)
        if self._previous_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._previous_env
        if threading.current_thread() is threading.main_thread():
            for s, handler in self._handlers.items():
                if signal.getsignal(s) == self._handle:  # not replaced by a cell's (interrupt.hold)
                    signal.signal(s, handler)
            if self._mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
        if exit_code and (self.signalled is not None or interrupt.stopped() or any(counts[k] for k in BAD)):
            sys.exit(1)


def summary_line(counts: Counter) -> str:
    """'3 completed, 1 diverged, 1 failed, 0 interrupted, 2 skipped' (+ refused, busy, not started when any)."""
    return ", ".join([f"{counts[k]} {k}" for k in COUNTED] + [f"{counts[k]} {k}" for k in EXTRA if counts[k]])


def start(sweep_dir: Path) -> None:
    global _sweep
    if _sweep is None or _sweep.finished:
        _sweep = _Sweep(sweep_dir)


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now: CPython 3.11 unblocks SIGINT and SIGTERM after starting it."""
    try:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    except Exception:  # noqa: BLE001 - none here: nothing to start
        pass


def _in_sweep_process() -> bool:
    return _sweep is not None and not _sweep.finished and _sweep.pid == os.getpid()


def _touch(path: Path) -> None:
    try:
        path.touch()
    except OSError:
        pass


def _join() -> Path | None:
    """Register this process as one that runs the sweep's cells; hold the stop signals from now on."""
    global _member
    control = os.environ.get(ENV)
    if not control:
        return None
    control = Path(control)
    if _member != control:
        interrupt.hold()  # signals that waited (blocked) since this process started are taken now
        _touch(control / f"{socket.gethostname()}-{os.getpid()}.member")
        _member = control
    return control


def may_start(run_dir: str | Path) -> bool:
    """Whether this cell may start. Not when the sweep was stopped: recorded as 'not started'.

    In the sweep's own process (basic launcher) a stop ends the sweep here: the line, then exit 1.
    """
    control = _join()
    interrupt.begin_cell()
    if _in_sweep_process():
        if interrupt.stopped():
            _sweep.finish()
        return True
    if control is not None and (control / STOP).exists():
        _record(control, "not started", run_dir)
        return False
    return True


def cell_ended(summary: dict[str, Any], run_dir: str | Path) -> None:
    """Record how the cell ended. In the sweep's own process a stop signal ends the sweep here (exit 1)."""
    control = _member or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    if control is not None:
        _record(control, outcome(summary), run_dir)
    if _in_sweep_process() and interrupt.stopped():
        _sweep.finish()


def outcome(summary: dict[str, Any]) -> str:
    for flag in ("busy", "skipped", "refused"):
        if summary.get(flag):
            return flag
    return summary.get("status") or "failed"


def _record(control: Path, what: str, run_dir: str | Path) -> None:
    from zobench.record import write_atomic

    name = f"{socket.gethostname()}-{os.getpid()}-{next(_records)}.json"
    try:
        write_atomic(control / name, json.dumps({"outcome": what, "run_dir": str(run_dir)}))
    except OSError:
        pass  # the sweep is gone (its process was killed): nobody to tell
