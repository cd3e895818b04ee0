"""Speed suite, live search: per-query latency and throughput of :class:`RerankingSearcher`.

One call builds one searcher over a synthetic gallery (text queries over an image gallery,
:mod:`benchmarks.synthetic`) and times ``search`` on new queries: batches of 1 (p50 / p95
latency per query) and of 64 (p50 / p95 latency per batch, and queries/s). In the same process
the base FAISS search alone (the gallery index, exact inner product, the same top-k) is timed
on the same queries, so the re-ranking overhead is reported as a ratio to it. Methods:
``"faiss"`` (the base search), ``"nnn"`` (NNN alone, its bank the reference texts) and
``"nnn_leaprr"`` (LeaPRR at the paper's model size with NNN in front; untrained weights, which
do not change the work done).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

METHODS = ("faiss", "nnn", "nnn_leaprr")


def _inputs(n_gallery: int, n_reference: int, n_queries: int, dim: int, seed: int):
    from benchmarks import synthetic

    img, txt, _ = synthetic.embeddings(n_gallery, n_reference + n_queries, dim, seed=seed)
    order = np.random.default_rng(seed).permutation(txt.shape[0])
    return img, txt[order[:n_reference]], txt[order[n_reference:]]


def _model(config: dict[str, Any], dim: int, seed: int, bank: dict[str, np.ndarray]):
    import torch

    from pillar_rerank.config import LeaPRRConfig
    from pillar_rerank.model.network import MutualRerankNetwork
    from pillar_rerank.model_state import network_from_state
    from pillar_rerank.reranker import PillarReranker

    cfg = LeaPRRConfig(**{"device": "cpu", "normalize": "nnn", **config}).validate()
    model = PillarReranker(cfg)
    net = MutualRerankNetwork.from_config(cfg, generator=torch.Generator().manual_seed(seed))
    model.model_ = network_from_state(cfg, net.state_dict(), source="benchmark (untrained weights)")
    model.config_ = cfg
    model.bank_ = {k: torch.from_numpy(v) for k, v in bank.items()}
    return model


def _percentiles(times: list[float], per: int = 1) -> dict[str, float]:
    t = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95)),
            "queries_per_s": float(per * len(t) / (t.sum() / 1e3))}


def _seconds(fn, queries: np.ndarray) -> float:
    t0 = time.perf_counter()
    fn(queries)
    return time.perf_counter() - t0


def run(*, method: str, n_gallery: int, n_reference: int = 10_000, n_queries: int = 2048, dim: int = 256,
        k: int = 10, singles: int = 200, batches: int = 20, bank_images: int = 2000, bank_texts: int = 10_000,
        config: dict[str, Any] | None = None, threads: int | None = 1, seed: int = 0) -> dict[str, Any]:
    """Figures of one method at one gallery size (see the module docstring).

    ``threads``: torch and FAISS threads while searching (the build uses the defaults); one
    thread per searcher is how a service on a shared machine runs, and tiny per-query operations
    lose more to thread wake-ups than they gain on a loaded machine. None keeps the defaults.
    """
    import faiss
    import torch

    from benchmarks import synthetic
    from pillar_rerank.search import RerankingSearcher

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    torch.manual_seed(seed)
    gallery, reference, queries = _inputs(n_gallery, n_reference, n_queries, dim, seed)
    t0 = time.perf_counter()
    if method == "faiss":
        searcher = RerankingSearcher().fit(gallery, reference)
    elif method == "nnn":
        searcher = RerankingSearcher(normalizer="nnn").fit(gallery, reference)
    else:
        b_img, b_txt, _ = synthetic.embeddings(bank_images, bank_texts, dim, seed=seed + 1)
        model = _model(config or {}, dim, seed, {"images": b_img, "texts": b_txt})
        searcher = RerankingSearcher(model).fit(gallery, reference)
    build_s = time.perf_counter() - t0
    base = searcher._gallery_index
    plain = base.table if method == "faiss" else np.ascontiguousarray(gallery)
    if method != "faiss":
        from pillar_rerank.search import _Index

        base = _Index(plain, "flat", {}, torch.device("cpu"), searcher.block_bytes)
    if threads is not None:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    figures: dict[str, Any] = {"method": method, "n_gallery": n_gallery, "n_reference": n_reference,
                               "dim": dim, "k": k, "build_s": build_s, "threads": torch.get_num_threads()}
    searcher.search(queries[:64], k)  # warm-up (allocations, FAISS threads)
    for batch, repeats in ((1, singles), (64, batches)):
        # alternate the two timings so that machine load hits both alike
        full, faiss_only = [], []
        for r in range(repeats):
            s = (r * batch) % (queries.shape[0] - batch + 1)
            full.append(_seconds(lambda q: searcher.search(q, k), queries[s:s + batch]))
            faiss_only.append(_seconds(lambda q: base.search(q, k), queries[s:s + batch]))
        stats, ref = _percentiles(full, batch), _percentiles(faiss_only, batch)
        figures[f"batch{batch}"] = {**stats, "faiss_p50_ms": ref["p50_ms"], "faiss_p95_ms": ref["p95_ms"],
                                    "faiss_queries_per_s": ref["queries_per_s"],
                                    "ratio_to_faiss_p50": stats["p50_ms"] / ref["p50_ms"]}
    return figures


def summarize(runs: list[dict[str, Any]], bench: Any = None) -> dict[str, Any]:
    """One table: latency and throughput per method and gallery size, with the ratio to FAISS."""
    from pillar_rerank.report.tables import Table

    recs = []
    for run_ in runs:
        f = run_["figures"]
        for batch in (1, 64):
            b = f[f"batch{batch}"]
            recs.append({"gallery": f["n_gallery"], "method": f["method"], "batch": batch,
                         "p50 ms": b["p50_ms"], "p95 ms": b["p95_ms"], "queries/s": b["queries_per_s"],
                         "FAISS p50 ms": b["faiss_p50_ms"], "× FAISS (p50)": b["ratio_to_faiss_p50"],
                         "build s": f["build_s"], "peak RSS MB": run_["peak_rss_mb"]})
    table = Table.from_records(
        "Live search: latency per call and throughput (text queries over an image gallery)", recs, digits=2,
        headline=bench is not None and getattr(bench, "suite", "") == "speed",
        notes="RerankingSearcher.search, top-10 of new queries; batch 1: latency per query, batch 64: "
              "latency per batch. FAISS: the exact inner-product search of the same gallery and queries, "
              "timed alternately in the same process; × FAISS is the full search's p50 over FAISS's. "
              "nnn_leaprr: paper model size (untrained weights), NNN in front; CPU, one thread while "
              "searching.")
    return {"tables": [table.to_dict()]}


#: Keyword arguments of its :class:`benchmarks.suites.Benchmark` entry (registered there).
BENCHMARK = dict(
    suite="speed",
    name="search_latency",
    title="Live search: per-query latency and throughput",
    target="benchmarks.search_latency:run",
    description="RerankingSearcher over 25,000- and 100,000-image synthetic galleries (d=256, 10,000 "
                "reference texts): p50/p95 latency for batches of 1 and 64 new text queries and queries/s, "
                "for the base FAISS search, NNN, and NNN -> LeaPRR, with the ratio to the FAISS search.",
    params={"n_reference": 10_000, "dim": 256},
    points=tuple({"method": m, "n_gallery": n} for n in (25_000, 100_000) for m in METHODS),
    quick_params={"n_reference": 1000, "dim": 64, "n_queries": 256, "singles": 30, "batches": 4,
                  "bank_images": 500, "bank_texts": 1000,
                  "config": {"embed_dim": 96, "num_heads": 4, "n_pillars": 16}},
    quick_points=tuple({"method": m, "n_gallery": 2000} for m in METHODS),
    requires=("faiss", "pillar_rerank.search"),
    summarize="benchmarks.search_latency:summarize",
    timeout_s=3600.0,
)
