"""Scale suite: cost of building LeaPRR's inputs from embeddings, against the problem size.

One call measures one size in the current (fresh) process: synthetic L2-normalised embeddings
(:mod:`benchmarks.synthetic`), then the four neighbour searches (FAISS, gallery streamed in blocks
within ``budget_mb``) and the pillar-space lists of every image and text query, built in batches
and dropped after each batch as inference would consume them. The time and the RSS high-water
mark are taken after every stage, so the table shows which stage sets the peak and the plot shows
that memory grows with the embeddings, not with ``n_images x n_texts``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from benchmarks import synthetic
from benchmarks.worker import peak_rss_mb
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.report.tables import Table

logger = logging.getLogger(__name__)
MB = 2**20


def run(
    *,
    n_images: int,
    n_texts: int,
    dim: int = 1024,
    budget_mb: int = 1024,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Time and peak RSS of input building at one size.

    Parameters
    ----------
    n_images, n_texts : int
        Problem size (captions are split as evenly as possible over images).
    dim : int, default=1024
        Embedding dimension.
    budget_mb : int, default=1024
        Working-memory budget of each search block (``budget_bytes``).
    config : dict, optional
        :class:`~pillar_rerank.config.LeaPRRConfig` fields (default: the paper's list sizes).
    batch_size : int, default=4096
        Queries per list-building batch.
    """
    from pillar_rerank.neighbors import IntraModalScores, NeighborLists, cross_modal_scores
    from pillar_rerank.pillars import ListBuilder

    cfg = LeaPRRConfig(**(config or {}), intra_source="embeddings", seed=seed).validate()
    budget = int(budget_mb) * MB
    stages: dict[str, dict[str, float]] = {}

    def mark(name: str, t0: float) -> float:
        now = time.perf_counter()
        stages[name] = {"seconds": now - t0, "rss_high_water_mb": peak_rss_mb()}
        logger.info("scale %dx%d: %s %.1f s", n_images, n_texts, name, now - t0)
        return now

    t = time.perf_counter()
    img, txt, t2i = synthetic.embeddings(n_images, n_texts, dim, seed=seed)
    data = RetrievalSet(
        relevance=Relevance(t2i, n_images),
        image_embeddings=img,
        text_embeddings=txt,
        name=f"synthetic {n_images}x{n_texts}",
    )
    t = mark("generate data (not counted)", t)
    t_build = t

    L, C = cfg.n_pillars, cfg.graph_neighbors
    depth = {
        "i2t": max(L, cfg.list_len_i2t - 1, C),
        "t2i": max(L, cfg.list_len_t2i - 1, C),
        "i2i": max(L, C),
        "t2t": max(L, C),
    }
    intra = IntraModalScores.from_data(data, "embeddings", budget_bytes=budget)
    phi_i2t, phi_t2i = cross_modal_scores(data)
    kw = {"device": "cpu", "budget_bytes": budget}
    i2t = phi_i2t.topk(depth["i2t"], **kw)
    t = mark("search i2t", t)
    t2i_top = phi_t2i.T.topk(depth["t2i"], **kw)
    t = mark("search t2i", t)
    i2i = intra.topk("image", depth["i2i"], **kw)
    t = mark("search i2i", t)
    t2t = intra.topk("text", depth["t2t"], **kw)
    t = mark("search t2t", t)
    neighbors = NeighborLists(i2t=i2t, t2i=t2i_top, i2i=i2i, t2t=t2t, source=intra.source)
    builder = ListBuilder.from_data(data, cfg, neighbors=neighbors, budget_bytes=budget)
    lists_bytes = 0
    for name, fn, n in (
        ("lists image queries", builder.image_lists, n_images),
        ("lists text queries", builder.text_lists, n_texts),
    ):
        for start in range(0, n, batch_size):
            lists = fn(torch.arange(start, min(n, start + batch_size)))
            lists_bytes = max(
                lists_bytes,
                sum(
                    v.element_size() * v.nelement()
                    for v in (lists.features, lists.adjacency, lists.targets, lists.candidates)
                ),
            )
            del lists
        t = mark(name, t)
    build_s = t - t_build
    return {
        "n_images": n_images,
        "n_texts": n_texts,
        "dim": dim,
        "budget_mb": budget_mb,
        "config": {
            k: getattr(cfg, k) for k in ("n_pillars", "list_len_i2t", "list_len_t2i", "graph_neighbors")
        },
        "stages": stages,
        "build_s": build_s,
        "queries_per_s": (n_images + n_texts) / build_s if build_s > 0 else None,
        "embeddings_mb": (img.nbytes + txt.nbytes) / MB,
        "dense_matrix_mb": n_images * n_texts * 4 / MB,
        "neighbor_lists_mb": sum(a.nbytes for top in (i2t, t2i_top, i2i, t2t) for a in top) / MB,
        "largest_list_batch_mb": lists_bytes / MB,
        "torch_threads": torch.get_num_threads(),
        "rss_high_water_mb": peak_rss_mb(),
    }


def summarize(runs: list[dict[str, Any]], bench: Any) -> dict[str, Any]:
    """Table (one row per size) and two plots: time per stage and peak RSS against size."""
    runs = sorted(runs, key=lambda r: r["figures"]["n_images"] * r["figures"]["n_texts"])
    records = []
    for r in runs:
        f = r["figures"]
        st = f["stages"]
        search = sum(v["seconds"] for k, v in st.items() if k.startswith("search"))
        lists = sum(v["seconds"] for k, v in st.items() if k.startswith("lists"))
        base = r["start_rss_mb"] or 0.0
        records.append(
            {
                "images x texts": f"{f['n_images']:,} x {f['n_texts']:,}",
                "d": f["dim"],
                "embeddings MB": f["embeddings_mb"],
                "dense matrix MB": f["dense_matrix_mb"],
                "search s": search,
                "lists s": lists,
                "total s": f["build_s"],
                "queries/s": f["queries_per_s"],
                "peak RSS MB": r["peak_rss_mb"],
                "peak - start - embeddings MB": r["peak_rss_mb"] - base - f["embeddings_mb"],
                "budget MB": f["budget_mb"],
            }
        )
    cfg = runs[0]["figures"]["config"]
    table = Table.from_records(
        "Input building from embeddings vs size",
        records,
        notes=(
            f"Synthetic embeddings, FAISS exact search on CPU streamed in blocks of at most the budget; "
            f"n_pillars={cfg['n_pillars']}, list lengths {cfg['list_len_i2t']}/{cfg['list_len_t2i']}, "
            f"graph_neighbors={cfg['graph_neighbors']}. 'dense matrix' is what holding the full "
            "images x texts float32 matrix would take; 'start' is the process RSS before the call "
            "(interpreter + libraries). Each size ran in its own process."
        ),
    )
    x = [r["figures"]["n_texts"] for r in runs]
    stage_names = [k for k in runs[0]["figures"]["stages"] if not k.startswith("generate")]
    time_plot = {
        "title": "Input building time per stage",
        "x_label": "n_texts (n_images = n_texts / 5)",
        "y_label": "seconds",
        "x": x,
        "log_x": True,
        "log_y": True,
        "series": {
            **{k: [r["figures"]["stages"][k]["seconds"] for r in runs] for k in stage_names},
            "total": [r["figures"]["build_s"] for r in runs],
        },
        "caption": "Time of each input-building stage against size (log-log).",
    }
    rss_plot = {
        "title": "Peak RSS against size",
        "x_label": "n_texts",
        "y_label": "MB",
        "x": x,
        "log_x": True,
        "log_y": True,
        "series": {
            "peak RSS": [r["peak_rss_mb"] for r in runs],
            "peak RSS - start RSS": [r["peak_rss_mb"] - (r["start_rss_mb"] or 0.0) for r in runs],
            "embeddings": [r["figures"]["embeddings_mb"] for r in runs],
            "dense images x texts matrix (not built)": [r["figures"]["dense_matrix_mb"] for r in runs],
        },
        "caption": "Peak RSS of the isolated process against size, next to the embeddings' size and the "
        "size of the dense score matrix that is never built.",
    }
    compact = Table.from_records(
        "LeaPRR input building from embeddings: time and memory vs size",
        [
            {k: rec[k] for k in ("images x texts", "d", "total s", "peak RSS MB", "dense matrix MB")}
            for rec in records
        ],
        headline=getattr(bench, "suite", "") == "scale",
        notes="Synthetic embeddings, one process per size; 'dense matrix' is the images x texts float32 "
        "matrix that is never built.",
    )
    return {"tables": [compact.to_dict(), table.to_dict()], "plots": [time_plot, rss_plot]}


if __name__ == "__main__":  # pragma: no cover - manual check
    logging.basicConfig(level=logging.INFO)
    print(
        run(
            n_images=200,
            n_texts=1000,
            dim=32,
            budget_mb=16,
            config={"n_pillars": 16, "list_len_i2t": 8, "list_len_t2i": 4, "graph_neighbors": 5},
        )
    )
