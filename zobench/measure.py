"""Peak memory and synchronized step timing.

CUDA: the caching allocator's peak allocated and reserved bytes, with the peak reset when a
measured phase starts (so loading the model does not count). CPU: the kernel's resident-set
high-water mark (VmHWM), reset through /proc/self/clear_refs; where that is not allowed, a
thread samples the resident set every millisecond. Both report absolute bytes of the process
(weights included), so a training peak and an inference peak of the same model compare directly.
"""
from __future__ import annotations

import re
import statistics
import threading
import time

import psutil
import torch


def _libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return None


_LIBC = _libc()


def release_memory() -> None:
    """Return freed memory to the OS before a measured phase.

    Cells of a sweep run one after another in one process; without this, the heap of earlier
    cells stays resident and inflates every later cell's CPU baseline (and CUDA's reserved pool).
    """
    import gc

    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


class _RssSampler:
    """Fallback when the high-water mark cannot be reset: sample RSS on a thread."""

    def __init__(self, interval_s: float = 0.001):
        self.peak, self.interval_s, self._stop = 0, interval_s, threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def reset(self):
        self.peak = self._proc.memory_info().rss


class PeakMemory:
    """``reset()`` at the start of a phase, ``read()`` at its end: peak bytes in between."""

    def __init__(self, device: torch.device):
        self.device, self.baseline_bytes = device, None
        self.method = "cuda_allocator" if device.type == "cuda" else "rss_hwm"
        self._sampler = None
        if self.method == "rss_hwm":
            try:
                self._clear_refs()
                _status_kib("VmHWM")
            except (OSError, AttributeError):
                self.method, self._sampler = "rss_sampled", _RssSampler()

    @staticmethod
    def _clear_refs():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5" resets the peak RSS (VmHWM) to the current RSS

    def reset(self) -> None:
        """Start a phase: the peak restarts from now, and ``baseline_bytes`` is what is held now."""
        synchronize(self.device)
        if self.method == "cuda_allocator":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            return
        self.baseline_bytes = psutil.Process().memory_info().rss
        if self.method == "rss_hwm":
            self._clear_refs()
        else:
            self._sampler.reset()

    def read(self) -> dict[str, int]:
        """``peak_bytes`` (allocated on CUDA, resident on CPU) and, on CUDA, ``reserved_bytes``."""
        synchronize(self.device)
        if self.method == "cuda_allocator":
            return {"peak_bytes": torch.cuda.max_memory_allocated(self.device),
                    "reserved_bytes": torch.cuda.max_memory_reserved(self.device)}
        if self.method == "rss_hwm":
            return {"peak_bytes": _status_kib("VmHWM") * 1024}
        return {"peak_bytes": self._sampler.peak}


class StepTimer:
    """Wall time of a block with the device synchronized on both sides, in milliseconds."""

    def __init__(self, device: torch.device):
        self.device, self.times_ms = device, []

    def __enter__(self):
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.last_ms = (time.perf_counter() - self._t0) * 1e3
        self.times_ms.append(self.last_ms)

    def median_ms(self, warmup_steps: int) -> float | None:
        """Median step time with the first ``warmup_steps`` dropped (all kept if that leaves none)."""
        kept = self.times_ms[warmup_steps:] or self.times_ms
        return statistics.median(kept) if kept else None
