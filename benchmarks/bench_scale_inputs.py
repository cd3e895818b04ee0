"""Input building under a memory budget, against size, and approximate-index recall vs exact.

For every size (n_images x n_texts, d-dimensional synthetic embeddings from
:mod:`benchmarks.synthetic`, 5 captions per image), a **fresh process**:

1. generates the embeddings (not timed) and notes its RSS (interpreter + libraries + inputs);
2. resets the kernel's RSS high-water mark (``/proc/self/clear_refs``), then runs
   :func:`pillar_rerank.lists.build_cache` with ``max_memory``: the four neighbour searches
   (FAISS, exact flat by default) and every image- and text-query list, written shard by shard to
   a temporary cache directory;
3. reports the time of each stage, the peak RSS, and the peak *additional* RSS (peak minus the
   RSS before building), which ``max_memory`` bounds; also the peak additional *anonymous* RSS,
   sampled every 20 ms, which excludes the page cache of a memory-mapped input.

``--mode scores_memmap`` builds from a float16 score matrix written to a ``.npy`` and
memory-mapped instead (second-order intra-modal scores), the path for matrices larger than
memory.

The ANN part searches the text gallery with the text queries (t2t, the n_texts² search that
dominates the exact cost) exactly, with IVF and with HNSW, and reports recall@k of each against
exact and the wall-time ratio (index building included).

With ``bare=True`` each size also times the bare matrix products of its exact searches
(:func:`bare_products`) in the same process, after the build, and reports the neighbour stage and
the whole build as ratios to them.

Run: ``python -m benchmarks run --suite scale --only memory_budget`` and ``--suite speed --only
inputs_floor`` (results in ``benchmarks/results/<suite>/<name>.json``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.memory import PeakRSS, current_rss_mb, peak_rss_mb, reset_peak_rss

MB = 2**20
FLICKR_TRAIN = (29_000, 145_000)


def _memmapped_scores(img: np.ndarray, txt: np.ndarray, path: Path) -> None:
    """Write ``img @ txt.T`` as a float16 .npy in row blocks (never whole in memory)."""
    from pillar_rerank.utils.blocks import block_rows, iter_blocks

    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(img.shape[0], txt.shape[0]))
    for rows in iter_blocks(img.shape[0], block_rows(txt.shape[0], budget_bytes=64 * MB)):
        out[rows] = img[rows] @ txt.T
    out.flush()
    del out


def bare_products(img: np.ndarray, txt: np.ndarray, budget_bytes: int) -> dict[str, float]:
    """Seconds of the bare matrix products the exact searches need, each computed once.

    image x text (the i2t and t2i lists are its rows and columns), text x text and image x image,
    as torch matmuls into one reused tile of the searches' size under ``budget_bytes``
    (:func:`pillar_rerank.neighbors._topk.search_tiles`), with nothing else: the floor of an
    exact neighbour search, measured in the caller's process. ``total`` is the issue's floor (the
    whole products); ``searched_total`` replaces the intra-modal products by the half that
    :func:`~pillar_rerank.neighbors._joint.symmetric_topk_search` computes (row block x the
    rows from its first on, ``*_upper``), i.e. the products the search actually runs.
    """
    from pillar_rerank.neighbors._topk import search_tiles
    from pillar_rerank.utils.blocks import iter_blocks

    out: dict[str, float] = {}
    for name, a, b in (("image_text", txt, img), ("text_text", txt, txt), ("image_image", img, img)):
        q_step, g_step = search_tiles(a.shape[0], b.shape[0], 64, budget_bytes)
        tile = torch.empty(q_step * g_step)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        t0 = time.perf_counter()
        for rows in iter_blocks(a.shape[0], q_step):
            for cols in iter_blocks(b.shape[0], g_step):
                n_r, n_c = rows.stop - rows.start, cols.stop - cols.start
                torch.matmul(ta[rows], tb[cols].T, out=tile[:n_r * n_c].view(n_r, n_c))
        out[name] = round(time.perf_counter() - t0, 4)
        del tile
    out["total"] = round(sum(out.values()), 4)
    for name, a in (("text_text", txt), ("image_image", img)):
        n = a.shape[0]
        q_step = max(1, min(n, budget_bytes // 2 // 4 // n))  # symmetric_topk_search's tiles
        tile = torch.empty(q_step * n)
        ta = torch.from_numpy(a)
        t0 = time.perf_counter()
        for rows in iter_blocks(n, q_step):
            n_r, n_c = rows.stop - rows.start, n - rows.start
            torch.matmul(ta[rows], ta[rows.start:].T, out=tile[:n_r * n_c].view(n_r, n_c))
        out[f"{name}_upper"] = round(time.perf_counter() - t0, 4)
        del tile
    out["searched_total"] = round(out["image_text"] + out["text_text_upper"] + out["image_image_upper"], 4)
    return out


def _one_size(
    n_images: int,
    n_texts: int,
    d: int,
    max_memory: str,
    index: str,
    seed: int,
    threads: int,
    mode: str = "embeddings",
    bare: bool = False,
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    from benchmarks.synthetic import embeddings
    from pillar_rerank.config import LeaPRRConfig
    from pillar_rerank.inputs import Relevance, RetrievalSet
    from pillar_rerank.io import load_array
    from pillar_rerank.lists.build import build_cache
    from pillar_rerank.utils.blocks import parse_bytes

    img, txt, t2i = embeddings(n_images, n_texts, d, seed=seed)
    with tempfile.TemporaryDirectory(prefix="scale_inputs_") as tmp:
        if mode == "embeddings":
            data = RetrievalSet(
                relevance=Relevance(t2i, n_images),
                image_embeddings=img,
                text_embeddings=txt,
                name=f"synthetic {n_images}x{n_texts}",
            )
            inputs_mb = (img.nbytes + txt.nbytes) / MB
            cfg = LeaPRRConfig(intra_source="embeddings", seed=seed)
        elif mode == "scores_memmap":
            _memmapped_scores(img, txt, Path(tmp) / "sims.npy")
            del img, txt
            scores = load_array(Path(tmp) / "sims.npy", name="sims", mmap=True)
            data = RetrievalSet(
                relevance=Relevance(t2i, n_images),
                scores=scores,
                name=f"synthetic scores {n_images}x{n_texts}",
            )
            inputs_mb = scores.nbytes / MB
            cfg = LeaPRRConfig(intra_source="second_order", seed=seed)
        else:
            raise ValueError(f"mode: expected 'embeddings' or 'scores_memmap'; got {mode!r}.")
        rss_before = current_rss_mb()
        reset = reset_peak_rss()
        t0 = time.perf_counter()
        with PeakRSS() as anon:  # RssAnon excludes the page cache of a memory-mapped input
            cached = build_cache(
                data, cfg, Path(tmp) / "cache", max_memory=max_memory, index=index, fingerprint="sampled"
            )
        wall = time.perf_counter() - t0
        manifest = cached.manifest
        cache_mb = sum(rec["bytes"] for rec in manifest["files"].values()) / MB
        n_shards = len(manifest["files"]) - 1
        peak = peak_rss_mb()
        del cached, data
    budget_mb = parse_bytes(max_memory) / MB
    anon_add = anon.anon_delta_mb
    floor: dict[str, Any] = {}
    if bare and mode == "embeddings":  # after the build, so its peak RSS is the build's own
        products = bare_products(img, txt, manifest["memory_plan"]["block_bytes"])
        floor = {
            "bare_products_seconds": products,
            "neighbors_over_bare": round(manifest["build_seconds"]["neighbors"] / products["total"], 3),
            "build_over_bare": round(wall / products["total"], 3),
            "neighbors_over_searched": round(manifest["build_seconds"]["neighbors"]
                                             / products["searched_total"], 3),
        }
    return {
        "mode": mode,
        "intra_source": cfg.intra_source,
        "n_images": n_images,
        "n_texts": n_texts,
        "dim": d,
        "index": index,
        "max_memory": max_memory,
        "budget_mb": round(budget_mb, 1),
        "config": {
            k: getattr(cfg, k) for k in ("n_pillars", "list_len_i2t", "list_len_t2i", "graph_neighbors")
        },
        "seconds": {"total": round(wall, 2), **manifest["build_seconds"]},
        "rss_before_build_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_additional_mb": round(peak - rss_before, 1) if reset else None,
        "peak_additional_anon_mb": round(anon_add, 1),
        "within_budget": bool(
            anon_add <= budget_mb and (mode != "embeddings" or not reset or peak - rss_before <= budget_mb)
        ),
        "inputs_mb": round(inputs_mb, 1),
        "dense_matrix_mb": round(n_images * n_texts * 4 / MB, 1),
        "planned_fixed_mb": round(manifest["memory_plan"]["fixed_bytes"] / MB, 1),
        "planned_block_mb": round(manifest["memory_plan"]["block_bytes"] / MB, 1),
        "list_batch": manifest["memory_plan"]["list_batch"],
        "cache_mb": round(cache_mb, 1),
        "cache_shards": n_shards,
        "torch_threads": torch.get_num_threads(),
        "peak_reset": reset,
        **floor,
    }


def _ann(
    n_images: int,
    n_texts: int,
    d: int,
    k: int,
    seed: int,
    threads: int,
    indexes: dict[str, dict],
    real: str | None = None,
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    from benchmarks.synthetic import embeddings
    from pillar_rerank.io import load_array
    from pillar_rerank.neighbors import ivf_nlist, recall_against_exact

    if real is None:
        _, txt, _ = embeddings(n_images, n_texts, d, seed=seed)
        source = f"synthetic ({n_images} images x {n_texts} captions)"
    else:  # real caption embeddings (e.g. caption_xenc's MiniLM captions), L2-normalised
        txt = np.asarray(load_array(real, name="embeddings"), dtype=np.float32)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True) + 1e-12
        n_texts, d = txt.shape
        source = f"real: {Path(real).name}"
    out: dict[str, Any] = {
        "data": source,
        "n_gallery": n_texts,
        "n_queries": n_texts,
        "dim": d,
        "k": k,
        "search": "t2t (text queries over the text gallery)",
        "indexes": {},
    }
    for name, params in indexes.items():
        r = recall_against_exact(txt, txt, k, index=name, index_params=params)
        full = dict(params)
        if name == "ivf":
            full.setdefault("nlist", ivf_nlist(n_texts))
        out["indexes"][name] = {
            "params": full,
            "recall": round(r.recall, 4),
            "recall_p10": round(float(np.quantile(r.per_query, 0.1)), 4),
            "exact_seconds": round(r.exact_seconds, 2),
            "approx_seconds": round(r.approx_seconds, 2),
            "speedup": round(r.speedup, 2),
        }
    return out


def _in_child(fn, kwargs: dict[str, Any]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:  # a fresh process: its own peak RSS
        return pool.apply(fn, (), kwargs)


def _machine() -> dict[str, Any]:
    import faiss

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run(
    sizes: list[tuple[int, int]] | None = None,
    *,
    d: int = 1024,
    max_memory: str = "4GB",
    index: str = "flat",
    mode: str = "embeddings",
    ann_size: tuple[int, int] | None = None,
    ann_k: int = 64,
    ann_indexes: dict[str, dict] | None = None,
    ann_real: str | None = None,
    seed: int = 0,
    out: Path | None = None,
    threads: int | None = None,
    bare: bool = False,
) -> dict[str, Any]:
    """Measure input building at each size (fresh process each) and ANN recall at ``ann_size``.

    Parameters
    ----------
    sizes : list of (n_images, n_texts), default: 1000x5000 .. 8000x40000 ([] runs none)
    d : int, default=1024
    max_memory : str, default="4GB"
    index : {"flat", "ivf", "hnsw"}, default="flat"
        Neighbour index of the build.
    mode : {"embeddings", "scores_memmap"}, default="embeddings"
        Build from the embeddings, or from a float16 score matrix written to a ``.npy`` file and
        memory-mapped (intra-modal scores from the second-order estimate).
    ann_size : (n_images, n_texts), optional
        Size of the recall/speed comparison (skipped when None).
    ann_k : int, default=64
        List depth compared (LeaPRR's default depth: max(n_pillars, list lengths) = 64).
    ann_indexes : dict, optional
        Index name -> parameters (default IVF nprobe=32 and HNSW M=32, efSearch=128).
    ann_real : str, optional
        A ``.npy`` of real embeddings to measure ANN recall on instead of synthetic ones
        (``ann_size`` is then ignored).
    out : Path or None, default=None
        A JSON file to also write (runs merged with its earlier ones by size, index and budget);
        the runner keeps the figures in its own result, so it passes None.
    bare : bool, default=False
        Also time the bare matrix products of the exact searches in the same process, after the
        build (``mode="embeddings"``), and report build time as a ratio to them.
    """
    sizes = [(1000, 5000), (2000, 10000), (4000, 20000), (8000, 40000)] if sizes is None else sizes
    threads = threads or torch.get_num_threads()
    doc: dict[str, Any] = {"benchmark": "scale_inputs", "machine": _machine(), "runs": [], "ann": []}
    if out is not None and Path(out).is_file():
        previous = json.loads(Path(out).read_text())
        doc["runs"], doc["ann"] = previous.get("runs", []), previous.get("ann", [])
    for n_images, n_texts in sizes:
        result = _in_child(
            _one_size,
            {
                "n_images": n_images,
                "n_texts": n_texts,
                "d": d,
                "max_memory": max_memory,
                "index": index,
                "seed": seed,
                "threads": threads,
                "mode": mode,
                "bare": bare,
            },
        )
        print(
            f"{mode} {n_images}x{n_texts} d={d} index={index}: {result['seconds']} s, peak RSS "
            f"{result['peak_rss_mb']} MiB, additional {result['peak_additional_mb']} MiB "
            f"(anonymous {result['peak_additional_anon_mb']} MiB) of {result['budget_mb']} MiB budget"
            + (f"; bare products {result['bare_products_seconds']} s, neighbours / bare "
               f"{result['neighbors_over_bare']}, build / bare {result['build_over_bare']}" if bare else ""),
            flush=True,
        )
        key = (mode, n_images, n_texts, d, index, max_memory)
        doc["runs"] = [
            r
            for r in doc["runs"]
            if (
                r.get("mode", "embeddings"),
                r["n_images"],
                r["n_texts"],
                r["dim"],
                r["index"],
                r["max_memory"],
            )
            != key
        ] + [result]
    if ann_size is not None or ann_real is not None:
        indexes = ann_indexes or {"ivf": {"nprobe": 32}, "hnsw": {"M": 32, "ef_search": 128}}
        size = ann_size or (0, 0)
        result = _in_child(
            _ann,
            {
                "real": ann_real,
                "n_images": size[0],
                "n_texts": size[1],
                "d": d,
                "k": ann_k,
                "seed": seed,
                "threads": threads,
                "indexes": indexes,
            },
        )
        print(f"ANN on {result['data']}: {result['indexes']}", flush=True)
        key = (result["data"], result["n_gallery"], result["dim"], result["k"])
        doc["ann"] = [a for a in doc["ann"] if (a.get("data"), a["n_gallery"], a["dim"], a["k"]) != key]
        doc["ann"].append(result)
    doc["runs"].sort(key=lambda r: (r.get("mode", "embeddings"), r["index"], r["n_images"] * r["n_texts"]))
    if out is not None:
        from pillar_rerank.io import save_json

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_json(out, doc, overwrite=True)
    return doc
