"""Re-rank speed benchmark of LeaPRR at the COCO 5K shape (5000 images x 25,000 captions).

Measures, for one full re-rank in both directions with the paper's model configuration
(untrained weights: speed does not depend on them), the time of each stage

* ``neighbors``: top-k searches (``ListBuilder.from_data``);
* ``pillars``: pillar vectors of every list (list building minus the adjacency);
* ``graph``: the neighbour-overlap adjacencies;
* ``model``: both networks' forward passes;
* ``combine``: writing the new scores and averaging the two directions;

plus queries per second and peak RSS.
The model stage is also compared with its bare matrix multiplies on the same batch shapes, timed
in the same process (:func:`benchmarks.model_reference.inference_seconds`). With the config's
``precision`` resolving to bf16 (autocast, as :meth:`PillarReranker.rerank` runs it), the model
stage is timed in fp32 on the same lists too, and the bare matrix multiplies in both precisions:
the bf16 re-rank as a ratio to the fp32 one and to bare bf16 matmuls, all in one process.
Each image query's graph is built and scored once (not once per caption).

Run: ``python -m benchmarks run --suite speed --only rerank`` (``benchmarks/results/speed/rerank.json``).
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np
import torch

from benchmarks.memory import peak_rss_mb
from benchmarks.model_reference import inference_seconds
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.inference import INFERENCE_NODES, base_matrices
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.model.network import MutualRerankNetwork
from pillar_rerank.sharding import ShardResult, apply_updates


def synthetic_set(n_images: int, captions_per_image: int, dim: int, seed: int = 0) -> RetrievalSet:
    """Two-tower-like embeddings: captions are noisy copies of their image's vector."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n_images, dim), dtype=np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    t2i = np.repeat(np.arange(n_images), captions_per_image)
    txt = img[t2i] + 0.8 * rng.standard_normal((t2i.shape[0], dim), dtype=np.float32) / np.sqrt(dim) * 4
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return RetrievalSet(
        Relevance(t2i, n_images),
        image_embeddings=img,
        text_embeddings=txt.astype(np.float32),
        name=f"synthetic {n_images}x{t2i.shape[0]}",
    )


def run(
    n_images: int = 5000,
    captions_per_image: int = 5,
    dim: int = 256,
    config: LeaPRRConfig | None = None,
    *,
    threads: int | None = None,
    seed: int = 0,
) -> dict:
    """Time one full two-direction re-rank; returns the figures written to JSON."""
    from pillar_rerank.lists.builder import ListBuilder
    from pillar_rerank.utils.device import autocast, cpu_has_native_bf16, resolve_precision

    if threads:
        torch.set_num_threads(threads)
    cfg = (config or LeaPRRConfig()).validate()
    data = synthetic_set(n_images, captions_per_image, dim, seed)
    rss_input = peak_rss_mb()
    model = MutualRerankNetwork.from_config(cfg, generator=torch.Generator().manual_seed(seed)).eval()
    cpu_device = torch.device("cpu")
    precision = resolve_precision(cpu_device, cfg.precision)
    # the configured precision first (its scores are the result); fp32 beside a bf16 run
    precisions = (precision,) if precision == "fp32" else (precision, "fp32")
    model_s = dict.fromkeys(precisions, 0.0)
    max_diff = 0.0
    times = {"neighbors": 0.0, "pillars": 0.0, "graph": 0.0, "model": 0.0, "combine": 0.0}
    cpu = dict.fromkeys(times, 0.0)  # process CPU seconds: robust to other jobs on a shared machine

    t0, c0 = time.perf_counter(), time.process_time()
    builder = ListBuilder.from_data(data, cfg)
    times["neighbors"] = time.perf_counter() - t0
    cpu["neighbors"] = time.process_time() - c0

    adjacency = builder._adjacency  # time the graph step separately from the pillar vectors

    def timed_adjacency(*args, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        out = adjacency(*args, **kwargs)
        times["graph"] += time.perf_counter() - t
        cpu["graph"] += time.process_time() - c
        return out

    builder._adjacency = timed_adjacency
    batches: list[tuple[int, int]] = []
    upd = {k: [] for k in ("i2t_rows", "i2t_cols", "i2t_values", "t2i_rows", "t2i_cols", "t2i_values")}
    lists_time = lists_cpu = 0.0
    with torch.inference_mode():
        for direction, n, n_nodes, make in (
            ("i2t", data.n_images, cfg.list_len_i2t, builder.image_lists),
            ("t2i", data.n_texts, cfg.list_len_t2i, builder.text_lists),
        ):
            net = model.i2t if direction == "i2t" else model.t2i
            block = max(1, INFERENCE_NODES // n_nodes)
            for s in range(0, n, block):
                t, c = time.perf_counter(), time.process_time()
                lists = make(torch.arange(s, min(n, s + block)))
                lists_time += time.perf_counter() - t
                lists_cpu += time.process_time() - c
                scored = {}
                for p in precisions:
                    t, c = time.perf_counter(), time.process_time()
                    with autocast(cpu_device, p):
                        scored[p] = net.score_lists(lists)[:, 1:].float()
                    model_s[p] += time.perf_counter() - t
                    if p == precision:
                        cpu["model"] += time.process_time() - c
                if len(scored) > 1:
                    max_diff = max(max_diff, float((scored[precision] - scored["fp32"]).abs().max()))
                new = scored[precision]
                batches.append(tuple(lists.features.shape[:2]))
                q = lists.query_ids[:, None].expand_as(lists.candidates).reshape(-1)
                c = lists.candidates.reshape(-1)
                rows, cols = (q, c) if direction == "i2t" else (c, q)
                upd[f"{direction}_rows"].append(rows)
                upd[f"{direction}_cols"].append(cols)
                upd[f"{direction}_values"].append(new.reshape(-1))
    times["model"] = model_s[precision]
    times["pillars"] = lists_time - times["graph"]
    cpu["pillars"] = lists_cpu - cpu["graph"]
    t, c = time.perf_counter(), time.process_time()
    shard = ShardResult(
        0, 1, data.n_images, data.n_texts, "", **{k: torch.cat(v).numpy() for k, v in upd.items()}
    )
    scores = apply_updates(*base_matrices(data), [shard])
    times["combine"] = time.perf_counter() - t
    cpu["combine"] = time.process_time() - c
    total = sum(times.values())
    reference = {p: inference_seconds(batches, cfg, seed=seed, precision=p) for p in precisions}
    reference_s = reference[precision]
    n_queries = data.n_images + data.n_texts
    result = {
        "shape": [data.n_images, data.n_texts],
        "embedding_dim": dim,
        "config": {
            k: v
            for k, v in cfg.to_dict().items()
            if k
            in (
                "n_pillars",
                "list_len_i2t",
                "list_len_t2i",
                "graph_neighbors",
                "embed_dim",
                "depth",
                "num_heads",
                "mlp_ratio",
                "attention",
                "intra_source",
            )
        },
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "total_cpu_seconds": round(sum(cpu.values()), 3),
        "total_seconds": round(total, 3),
        "model_reference_seconds": round(reference_s, 3),
        "ratio_model_to_reference": round(times["model"] / reference_s, 2),
        "ratio_total_to_reference": round(total / reference_s, 2),
        "precision": precision,
        "cpu_native_bf16": cpu_has_native_bf16(),
        "model_seconds_by_precision": {p: round(v, 3) for p, v in model_s.items()},
        "model_reference_seconds_by_precision": {p: round(v, 3) for p, v in reference.items()},
        "queries_per_second": round(n_queries / total, 1),
        "image_queries_scored": data.n_images,
        "text_queries_scored": data.n_texts,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_after_input_mb": round(rss_input, 1),
        "input_bytes_mb": round((data.image_embeddings.nbytes + data.text_embeddings.nbytes) / 2**20, 1),
        "output_matrix_mb": round(scores.nbytes / 2**20, 1),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "note": "the 2-core machine was shared with other jobs during the run; see load_average_at_end",
    }
    if precision != "fp32":
        fp32_total = total - model_s[precision] + model_s["fp32"]
        result.update({
            "fp32_total_seconds": round(fp32_total, 3),
            "ratio_total_to_fp32_total": round(total / fp32_total, 3),
            "ratio_model_to_fp32_model": round(model_s[precision] / model_s["fp32"], 3),
            "max_abs_score_diff_to_fp32": max_diff,
        })
    return result
