"""The large-bank Sinkhorn benchmark: stored and streamed kernels measured and compared."""

from __future__ import annotations

import numpy as np

from benchmarks.speed_baselines import sinkhorn_large_bank, summarize_large_bank
from benchmarks.suites import get_suite


def test_stored_and_streamed_kernels_agree_and_the_summary_says_which_was_kept():
    size = {"n_bank": 600, "n_gallery": 80, "n_extra": 120, "dim": 16, "threads": 1}
    stored = sinkhorn_large_bank(**size, kernel_bytes=2**30)
    streamed = sinkhorn_large_bank(**size, kernel_bytes=0)
    for method in ("sinkhorn", "dbsn"):
        assert stored[method]["kernel"] == "stored" and streamed[method]["kernel"] == "streamed"
        assert stored[method]["iterations"] == streamed[method]["iterations"] == 10
        np.testing.assert_allclose(streamed[method]["bias_probes"], stored[method]["bias_probes"], atol=1e-6)
    (table,) = summarize_large_bank([{"figures": stored}, {"figures": streamed}], None)["tables"]
    rows = {(r[0], r[3]): dict(zip(table["columns"], r)) for r in table["rows"]}
    assert set(rows) == {("sinkhorn", "stored"), ("dbsn", "stored"), ("sinkhorn", "streamed"),
                         ("dbsn", "streamed")}
    assert rows[("dbsn", "stored")]["fit s / first run's"] == 1.0
    assert 0 < rows[("dbsn", "streamed")]["max |bias diff| vs first run"] <= 1e-6


def test_registered_with_the_stored_kernel_first():
    (bench,) = [b for b in get_suite("speed") if b.name == "sinkhorn_large_bank"]
    budgets = [r["kernel_bytes"] for r in bench.runs()]
    assert budgets == [11 * 2**30, 2 * 2**30]
    dbsn_kernel = 4 * 100_000 * (5000 + 20_000)
    assert budgets[1] < dbsn_kernel <= budgets[0]
