"""GPU branches of pillar_rerank/neighbors, exercised on CPU with a stand-in FAISS GPU API.

CI has no GPU: these tests pretend FAISS has one (``faiss_num_gpus`` -> 1, a CUDA search device)
and route ``StandardGpuResources`` / ``knn_gpu`` / ``index_cpu_to_gpu`` to CPU equivalents that
record their calls, so the wiring of every GPU branch runs and its results are compared with the
CPU path. A real-GPU run of the same searches is in ``test_on_real_gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pillar_rerank.neighbors import _topk, topk_search
from pillar_rerank.typing import faiss_num_gpus

faiss = pytest.importorskip("faiss")


@pytest.fixture
def fake_gpu(monkeypatch):
    calls: dict[str, int] = {"resources": 0, "knn_gpu": 0, "to_gpu": 0}

    def resources():
        calls["resources"] += 1
        return "gpu-resources"

    def knn_gpu(res, xq, xb, k, metric, device):
        assert res == "gpu-resources" and device == 0 and metric == faiss.METRIC_INNER_PRODUCT
        calls["knn_gpu"] += 1
        return faiss.knn(xq, xb, k, metric=metric)

    def index_cpu_to_gpu(res, device, index):
        assert res == "gpu-resources" and device == 0
        calls["to_gpu"] += 1
        return index

    monkeypatch.setattr(_topk, "faiss_num_gpus", lambda: 1)
    monkeypatch.setattr(_topk, "_search_device", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(faiss, "StandardGpuResources", resources, raising=False)
    monkeypatch.setattr(faiss, "knn_gpu", knn_gpu, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", index_cpu_to_gpu, raising=False)
    return calls


def exact(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ gallery.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, 1), ids


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((700, 16)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_takes_the_faiss_gpu_branch(fake_gpu, vectors):
    want_values, want_ids = exact(vectors[:50], vectors, 7)
    got = topk_search(vectors[:50], vectors, 7, budget_bytes=16 * 4 * 100)  # several gallery blocks
    assert fake_gpu["resources"] == 1 and fake_gpu["knn_gpu"] > 1
    np.testing.assert_array_equal(got.ids, want_ids)
    np.testing.assert_allclose(got.values, want_values, rtol=1e-5)


def test_ivf_moves_to_gpu_and_hnsw_stays_on_cpu(fake_gpu, vectors, caplog):
    params = {"nlist": 8, "nprobe": 8}  # probing every list: exact
    got = topk_search(vectors[:40], vectors, 5, index="ivf", index_params=params)
    assert fake_gpu["to_gpu"] == 1
    np.testing.assert_array_equal(got.ids, exact(vectors[:40], vectors, 5)[1])
    with caplog.at_level("INFO", logger="pillar_rerank.neighbors._ann"):
        topk_search(vectors[:40], vectors, 5, index="hnsw")
    assert fake_gpu["to_gpu"] == 1 and "no GPU HNSW" in caplog.text


def test_short_ivf_rows_are_refilled_on_the_gpu_branch(fake_gpu, vectors):
    top = topk_search(vectors[:30], vectors, 40, index="ivf", index_params={"nlist": 17, "nprobe": 1})
    assert (top.ids >= 0).all()
    assert fake_gpu["knn_gpu"] >= 1  # the exact re-search of short rows ran through knn_gpu


def test_torch_backend_on_cpu_matches_faiss(vectors):
    # the branch used on CUDA when FAISS has no GPU: blocked torch matmuls, same code on CPU
    a = topk_search(vectors[:60], vectors, 9, device="cpu", backend="torch", budget_bytes=4 * 16 * 64)
    b = topk_search(vectors[:60], vectors, 9, device="cpu", backend="faiss")
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)


def test_device_none_without_gpu_is_cpu(monkeypatch):
    monkeypatch.setattr(_topk, "faiss_num_gpus", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _topk._search_device(None) == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available() or faiss_num_gpus() == 0,
                    reason="needs a CUDA GPU and faiss-gpu")
def test_on_real_gpu(vectors):  # pragma: no cover - GPU machines only
    for kw in ({}, {"index": "ivf", "index_params": {"nlist": 8, "nprobe": 8}}):
        want = topk_search(vectors[:40], vectors, 5, device="cpu")
        got = topk_search(vectors[:40], vectors, 5, device="cuda", **kw)
        np.testing.assert_array_equal(got.ids, want.ids)
