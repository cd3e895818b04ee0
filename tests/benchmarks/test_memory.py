"""benchmarks.memory: the one home of the benchmarks' RSS figures."""

import numpy as np
import pytest

from benchmarks.memory import (
    PeakRSS,
    anon_rss_mb,
    current_rss_mb,
    peak_rss_mb,
    proc_status_mb,
    reset_peak_rss,
)


def test_figures_are_consistent():
    now = current_rss_mb()
    if now is None:
        pytest.skip("no /proc/self/status")
    assert 0 < anon_rss_mb() <= now <= peak_rss_mb()
    assert proc_status_mb("NoSuchField") is None
    assert isinstance(reset_peak_rss(), bool)


def test_peak_rss_sees_a_transient_allocation():
    if current_rss_mb() is None:
        pytest.skip("no /proc/self/status")
    with PeakRSS(interval=0.001) as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block.sum()
        import time

        time.sleep(0.05)
        del block
    assert mem.delta_mb > 40 and mem.anon_delta_mb > 40
    assert mem.peak_mb >= mem.start_mb + mem.delta_mb - 1e-9
