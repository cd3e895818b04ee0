"""benchmarks/bench_scale_inputs.py at a toy size: every figure is measured and written."""

from __future__ import annotations

import json

import pytest

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


def test_bare_products_and_ratios_are_measured_in_the_same_process():
    doc = bench_scale_inputs.run([(80, 400)], d=16, max_memory="256MB", out=None, threads=1, bare=True)
    run = doc["runs"][0]
    products = run["bare_products_seconds"]
    assert set(products) == {"image_text", "text_text", "image_image", "total", "text_text_upper",
                             "image_image_upper", "searched_total"}
    assert products["total"] > 0
    assert products["searched_total"] == pytest.approx(
        products["image_text"] + products["text_text_upper"] + products["image_image_upper"], abs=1e-3)
    assert run["neighbors_over_bare"] == round(run["seconds"]["neighbors"] / products["total"], 3)
    searched = round(run["seconds"]["neighbors"] / products["searched_total"], 3)
    assert run["neighbors_over_searched"] == searched
    assert run["build_over_bare"] > run["neighbors_over_bare"] > 0
