"""Speed and memory of LeaPRR's input building (neighbours -> pillars -> graph) at COCO 5K shape.

Two input forms, each measured in a fresh process so its peak RSS is its own:

* ``scores``: a dense float32 image x text matrix only; intra-modal similarities from the
  second-order estimate (rank ``second_order_rank``);
* ``embeddings``: image and text embeddings only; FAISS searches, cosine intra-modal scores.

Stages timed: intra-modal preparation, the four neighbour searches, image-query lists (one per
image), text-query lists (one per caption), and separately the graph part of those lists.
Run: ``python -m benchmarks run --suite speed --only inputs`` (``benchmarks/results/speed/inputs.json``).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.memory import peak_rss_mb
from benchmarks.synthetic import embeddings
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.neighbors import IntraModalScores, build_neighbor_lists, cross_modal_scores


def run(mode: str = "scores", *, n_images: int = 5000, captions_per_image: int = 5, dim: int = 384,
        second_order_rank: int = 128, power_iterations: int = 1, batch_size: int = 4096,
        config: LeaPRRConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """Build every image- and text-query list of a synthetic set and time each stage.

    Returns a dict of stage times (seconds), peak RSS (MiB, this process) and the setup.
    """
    cfg = (config or LeaPRRConfig()).validate()
    n_texts = n_images * captions_per_image
    img, txt, t2i = embeddings(n_images, n_texts, dim, seed=seed)
    rel = Relevance(t2i, n_images)
    if mode == "scores":
        data = RetrievalSet(relevance=rel, scores=img @ txt.T, name="bench")
        del img, txt
    elif mode == "embeddings":
        data = RetrievalSet(relevance=rel, image_embeddings=img, text_embeddings=txt, name="bench")
    else:
        raise ValueError(f"mode: expected 'scores' or 'embeddings'; got {mode!r}.")
    input_mb = sum(a.nbytes for a in (data.scores, data.image_embeddings, data.text_embeddings)
                   if a is not None) / 2**20
    rss_before = peak_rss_mb()
    L, C = cfg.n_pillars, cfg.graph_neighbors
    depth = {"i2t": max(L, cfg.list_len_i2t - 1, C), "t2i": max(L, cfg.list_len_t2i - 1, C),
             "i2i": max(L, C), "t2t": max(L, C)}
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(stage, fn):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times[stage], cpu[stage] = time.perf_counter() - w0, time.process_time() - c0
        return result

    intra = timed("intra_prepare", lambda: IntraModalScores.from_data(
        data, cfg.intra_source, rank=second_order_rank, power_iterations=power_iterations, seed=cfg.seed))
    neighbors = timed("neighbors", lambda: build_neighbor_lists(data, depth, intra=intra))
    phi_i2t, phi_t2i = cross_modal_scores(data)
    builder = ListBuilder(neighbors=neighbors, phi_i2t=phi_i2t, phi_t2i=phi_t2i, intra=intra,
                          txt_to_img=rel.txt_to_img, config=cfg, captions_indptr=rel.indptr,
                          captions_indices=rel.indices)
    images = timed("image_lists", lambda: builder.image_lists(torch.arange(n_images)))
    texts = timed("text_lists", lambda: [builder.text_lists(torch.arange(s, min(n_texts, s + batch_size)))
                                         for s in range(0, n_texts, batch_size)])

    def graphs():  # the graph share of the two list stages, measured again on its own
        builder._adjacency(builder._image_side, torch.arange(n_images), images.candidates)
        for part in texts:
            builder._adjacency(builder._text_side, part.query_ids, part.candidates)

    timed("graph_only", graphs)
    stages = ("intra_prepare", "neighbors", "image_lists", "text_lists")
    times["total"] = sum(times[k] for k in stages)
    cpu["total"] = sum(cpu[k] for k in stages)
    return {
        "mode": mode, "intra_source": builder.intra_source,
        "n_images": n_images, "n_texts": n_texts, "dim": dim,
        "second_order_rank": second_order_rank if builder.intra_source == "second_order" else None,
        "power_iterations": power_iterations if builder.intra_source == "second_order" else None,
        "n_pillars": L, "list_len_i2t": cfg.list_len_i2t, "list_len_t2i": cfg.list_len_t2i,
        "graph_neighbors": C, "depth": depth, "text_batch_size": batch_size,
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "input_mb": round(input_mb, 1),
        "peak_rss_mb_before": round(rss_before, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "output_mb": round((images.features.nbytes + images.adjacency.nbytes
                            + sum(p.features.nbytes + p.adjacency.nbytes for p in texts)) / 2**20, 1),
    }
