"""Process memory figures of the benchmarks: current, peak and sampled RSS, in one place.

Linux's ``/proc/self/status`` is read first: ``VmHWM`` (the high-water mark) belongs to the
address space, which ``execve`` replaces, so in a fresh worker it covers that interpreter alone;
``ru_maxrss`` is only the fallback (Linux carries it over from the parent through ``fork`` and
``execve``). ``RssAnon`` leaves out the pages of memory-mapped files, which the kernel can drop.
"""

from __future__ import annotations

import resource
import sys
import threading
from pathlib import Path
from typing import Any

MB = 2**20


def proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``RssAnon``) in MiB, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def current_rss_mb() -> float | None:
    """Resident set size now (None where /proc is unavailable)."""
    return proc_status_mb("VmRSS")


def anon_rss_mb() -> float | None:
    """Anonymous resident memory now (excludes memory-mapped files' pages), else the RSS."""
    anon = proc_status_mb("RssAnon")
    return anon if anon is not None else current_rss_mb()


def peak_rss_mb() -> float:
    """High-water mark of this process's RSS (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    hwm = proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (``/proc/self/clear_refs``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Sample RSS and anonymous RSS in a thread while the block runs; peaks and deltas in MiB.

    ``peak_mb`` / ``peak_anon_mb`` are the highest values seen, ``delta_mb`` /
    ``anon_delta_mb`` those minus the values at entry.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start_mb = self.peak_mb = self.start_anon_mb = self.peak_anon_mb = 0.0

    def _sample(self) -> None:
        self.peak_mb = max(self.peak_mb, current_rss_mb() or 0.0)
        self.peak_anon_mb = max(self.peak_anon_mb, anon_rss_mb() or 0.0)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self.start_mb = self.peak_mb = current_rss_mb() or 0.0
        self.start_anon_mb = self.peak_anon_mb = anon_rss_mb() or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb

    @property
    def anon_delta_mb(self) -> float:
        return self.peak_anon_mb - self.start_anon_mb
