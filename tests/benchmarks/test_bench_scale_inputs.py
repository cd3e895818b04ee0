"""benchmarks/bench_scale_inputs.py at a toy size: every figure is measured and written."""

from __future__ import annotations

import json

from benchmarks import bench_scale_inputs


def test_run_writes_sizes_budget_check_and_ann_recall(tmp_path):
    out = tmp_path / "scale_inputs.json"
    doc = bench_scale_inputs.run([(80, 400)], d=16, max_memory="512MB", ann_size=(80, 400), ann_k=8,
                                 out=out, threads=1)
    saved = json.loads(out.read_text())
    assert saved["runs"] == doc["runs"] and len(saved["runs"]) == 1
    run = saved["runs"][0]
    assert (run["n_images"], run["n_texts"], run["mode"]) == (80, 400, "embeddings")
    assert run["seconds"]["total"] > 0 and run["seconds"]["neighbors"] > 0
    assert run["peak_rss_mb"] > run["rss_before_build_mb"] > 0
    assert run["within_budget"] is True and run["cache_shards"] == 2
    ann = saved["ann"][0]["indexes"]
    assert set(ann) == {"ivf", "hnsw"} and all(0.5 <= v["recall"] <= 1 for v in ann.values())
