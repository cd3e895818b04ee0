"""benchmarks.bench_rerank and bench_train on tiny sets: bf16 timed beside fp32 in the same process."""

from __future__ import annotations

import pytest

from benchmarks.bench_rerank import run
from pillar_rerank.config import LeaPRRConfig

SMALL = {"n_pillars": 8, "list_len_i2t": 6, "list_len_t2i": 4, "graph_neighbors": 4, "embed_dim": 16,
         "depth": 1, "num_heads": 2, "intra_rank": None}


def test_bf16_rerank_is_timed_against_fp32_and_bare_bf16_matmuls():
    out = run(n_images=24, captions_per_image=3, dim=16, config=LeaPRRConfig.from_dict(
        {**SMALL, "precision": "bf16"}))
    assert out["precision"] == "bf16" and set(out["model_seconds_by_precision"]) == {"bf16", "fp32"}
    assert set(out["model_reference_seconds_by_precision"]) == {"bf16", "fp32"}
    assert out["seconds"]["model"] == out["model_seconds_by_precision"]["bf16"]
    swapped = out["total_seconds"] - out["seconds"]["model"] + out["model_seconds_by_precision"]["fp32"]
    assert abs(out["fp32_total_seconds"] - swapped) < 1e-2
    # bf16 changes the scores a little (cosines), never wildly
    assert 0 < out["max_abs_score_diff_to_fp32"] < 0.2


def test_fp32_run_times_one_precision():
    out = run(n_images=24, captions_per_image=3, dim=16, config=LeaPRRConfig.from_dict(
        {**SMALL, "precision": "fp32"}))
    assert out["precision"] == "fp32" and list(out["model_seconds_by_precision"]) == ["fp32"]
    assert "fp32_total_seconds" not in out


def test_bf16_training_loop_is_timed_against_the_fp32_loop():
    from benchmarks.bench_train import run as train_run

    config = {**SMALL, "batch_size": 32}
    out = train_run(config=config, n_images=20, captions_per_image=3, dim=16, precision="bf16")
    assert out["precision"] == "bf16" and out["fp32_loop_seconds"] > 0
    loop = out["seconds"]["training loop"]
    # both times are rounded to the millisecond: equal to that rounding
    assert out["ratio_loop_to_fp32_loop"] == pytest.approx(loop / out["fp32_loop_seconds"], rel=0.1)
    assert "fp32_loop_seconds" not in train_run(config=config, n_images=20, captions_per_image=3, dim=16)
