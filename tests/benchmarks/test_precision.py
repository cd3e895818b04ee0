"""benchmarks.precision on a tiny synthetic protocol: every figure measured, fp32 vs bf16."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import BenchmarkSkipped, precision
from benchmarks.synthetic import retrieval_set

#: A model small enough to train in seconds.
TINY = {"n_pillars": 8, "list_len_i2t": 6, "list_len_t2i": 4, "graph_neighbors": 4, "embed_dim": 16,
        "depth": 1, "num_heads": 2, "epochs": 1, "batch_size": 32, "eval_every": 5}


def test_fp32_and_bf16_are_both_measured(monkeypatch):
    sets = [retrieval_set(n, 3, 16, seed=s, name=name) for n, s, name in ((40, 0, "train"), (24, 1, "dev"),
                                                                           (30, 2, "test"))]
    monkeypatch.setattr("benchmarks.leaprr_accuracy.protocol_sets", lambda protocol, root: tuple(sets))
    out = precision.run(protocol="a", config=TINY)
    assert out["test"] == [30, 90] and out["device"] == "cpu"
    assert out["auto_resolves_to"] == ("bf16" if out["cpu_native_bf16"] else "fp32")
    assert out["bf16_emulated"] is (not out["cpu_native_bf16"])
    # bf16 inference changes the scores a little, never wildly (scores are cosine-scale)
    assert 0 < out["max_abs_score_diff"] < 0.5
    assert out["rsum_bf16_minus_fp32"] == round(out["rsum_bf16"] - out["rsum_fp32"], 2)
    assert all(out[k] > 0 for k in ("fit_fp32_s", "fit_bf16_s", "rerank_fp32_s", "rerank_bf16_s"))
    assert np.isfinite(out["rsum_trained_bf16"]) and 0 <= out["rsum_trained_bf16"] <= 600


def test_f30k_protocol_reports_every_row_per_precision_and_summarises(monkeypatch):
    train, dev, held, other = (retrieval_set(n, 3, 16, seed=s, name=name) for n, s, name in (
        (40, 0, "train"), (24, 1, "dev"), (30, 2, "held"), (20, 3, "other")))
    monkeypatch.setattr("benchmarks.leaprr_f30k.load_sides",
                        lambda **kw: (train, dev, {"f30k_holdout": held, "coco5k_test": other}))
    out = precision.run(protocol="f30k", config=TINY)
    assert out["train"] == [40, 120] and set(out["fit"]) == {"fp32", "bf16"}
    for name in ("f30k_holdout", "coco5k_test"):
        per = out["tests"][name]
        # the fp32 model re-ranks in both precisions, the bf16 one in bf16 only
        assert set(per["fp32"]) == {"fp32", "bf16"} and set(per["bf16"]) == {"bf16"}
        assert 0 <= per["fp32"]["fp32"]["per_direction/chosen"]["RSUM"] <= 600
    assert 0 < out["max_abs_score_diff"] < 0.5
    summary = precision.summarize_f30k([{"figures": out}], None)
    table = summary["tables"][0]
    rows = [dict(zip(table["columns"], r)) for r in table["rows"]]
    assert [(r["trained"], r["re-ranked"]) for r in rows] == [("fp32", "fp32"), ("fp32", "bf16"),
                                                              ("bf16", "bf16")]
    assert rows[0]["F30K held-out 1,000: rerank_both"] == out["tests"]["f30k_holdout"]["fp32"]["fp32"][
        "per_direction/chosen"]["RSUM"]


def test_gpu_points_skip_without_cuda(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(BenchmarkSkipped, match="CUDA GPU"):
        precision.run(protocol="f30k", require_cuda=True)
