"""The live-search latency benchmark: figures of every method and the summary table."""

from __future__ import annotations

import pytest

from benchmarks.search_latency import BENCHMARK, METHODS, run, summarize
from benchmarks.suites import get_suite

SMALL = {"n_gallery": 300, "n_reference": 200, "n_queries": 128, "dim": 16, "singles": 5, "batches": 2,
         "bank_images": 150, "bank_texts": 200, "threads": None,
         "config": {"embed_dim": 32, "num_heads": 2, "n_pillars": 8}}


@pytest.mark.parametrize("method", METHODS)
def test_run_reports_latency_and_the_ratio_to_faiss(method):
    fig = run(method=method, **SMALL)
    for batch in ("batch1", "batch64"):
        b = fig[batch]
        assert 0 < b["p50_ms"] <= b["p95_ms"]
        assert b["queries_per_s"] > 0 and b["faiss_queries_per_s"] > 0
        assert b["ratio_to_faiss_p50"] == pytest.approx(b["p50_ms"] / b["faiss_p50_ms"])
    rows = summarize([{"figures": fig, "peak_rss_mb": 1.0}], None)["tables"][0]["rows"]
    assert len(rows) == 2


def test_registered_in_the_speed_suite():
    names = {(b.suite, b.name) for b in get_suite("speed")}
    assert (BENCHMARK["suite"], BENCHMARK["name"]) in names
    with pytest.raises(ValueError, match="method"):
        run(method="nope", **SMALL)
