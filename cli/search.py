"""``rerank search``: re-ranked top-k of new queries over a fixed gallery (a live searcher)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import overwrite_option


@click.command("search")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--gallery-emb", type=click.Path(dir_okay=False), default=None,
              help="Gallery embeddings (.npy, n_gallery x d): images for t2i, texts for i2t. Required with "
                   "a model directory; with a saved searcher, checked against the stored gallery.")
@click.option("--reference-emb", type=click.Path(dir_okay=False), default=None,
              help="Reference embeddings of the query modality (.npy): new queries' neighbours.")
@click.option("--queries", required=True, type=click.Path(dir_okay=False),
              help="Query embeddings (.npy, n_queries x d).")
@click.option("--reference-ids", type=click.Path(dir_okay=False), default=None,
              help="Optional .npy of int64, one per query: the reference row the query is (-1: new).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Results per query.")
@click.option("--direction", type=click.Choice(["t2i", "i2t"]), default="t2i", show_default=True,
              help="t2i: text queries over an image gallery; i2t: image queries over a text gallery.")
@click.option("--index", type=click.Choice(["flat", "ivf", "hnsw"]), default="flat", show_default=True,
              help="FAISS index of the searches (flat is exact).")
@click.option("--reference-lists", is_flag=True,
              help="Also re-rank the gallery's own lists at build time (needed for --reference-ids).")
@click.option("--device", type=str, default=None, help="Device of the FAISS indexes and the model.")
@click.option("--save-searcher", type=click.Path(file_okay=False), default=None,
              help="Also write the built searcher to this directory (load it later as MODEL_DIR).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Hits (.npz): 'scores' float32 and 'ids' int64, both n_queries x k.")
@overwrite_option
def search(model_dir: str, gallery_emb: str | None, reference_emb: str | None, queries: str,
           reference_ids: str | None, k: int, direction: str, index: str, reference_lists: bool,
           device: str | None, save_searcher: str | None, output: str, overwrite: bool) -> None:
    """Re-rank the top-k gallery items of every query with MODEL_DIR.

    MODEL_DIR is a LeaPRR model directory (`rerank fit`), from which a searcher is built over
    --gallery-emb and --reference-emb, or a searcher saved with --save-searcher (its direction,
    index and gallery are stored; the gallery options, if given, must match them).
    """
    import numpy as np

    from pillar_rerank.checkpoint import (
        CONFIG_FILE,
        check_output_outside_model_dir,
        load_model_dir,
        model_dir_files,
    )
    from pillar_rerank.exceptions import InputFileError, InvalidInputError
    from pillar_rerank.io import atomic_path, check_output_path, load_array, load_json
    from pillar_rerank.reranker import PillarReranker
    from pillar_rerank.search import RerankingSearcher

    given = [p for p in (gallery_emb, reference_emb, queries, reference_ids) if p is not None]
    inputs = [*given, *model_dir_files(model_dir)]
    check_output_outside_model_dir(output, model_dir)
    out = check_output_path(output, inputs=inputs, overwrite=overwrite)
    if not (Path(model_dir) / CONFIG_FILE).is_file():
        raise InputFileError(
            f"model dir ({model_dir}): no {CONFIG_FILE}; give a model or a searcher directory.")
    doc = load_json(Path(model_dir) / CONFIG_FILE, name="model dir config")
    q = load_array(queries, name="query embeddings")
    ids = load_array(reference_ids, name="reference ids") if reference_ids is not None else None
    start = time.perf_counter()
    if isinstance(doc, dict) and doc.get("estimator") == "RerankingSearcher":
        searcher = RerankingSearcher.load(model_dir, device=device)
        for path, stored, what in ((gallery_emb, searcher.gallery_, "gallery"),
                                   (reference_emb, searcher.reference_, "reference")):
            if path is not None:
                arr = load_array(path, name=f"{what} embeddings")
                if arr.shape != stored.shape or not np.array_equal(arr.astype(np.float32), stored):
                    raise InvalidInputError(
                        f"--{what}-emb ({path}): does not match the {what} the searcher in {model_dir} was "
                        f"built on (shape {arr.shape} vs {stored.shape}); rebuild it from the model.")
        built = "loaded"
    else:
        if gallery_emb is None or reference_emb is None:
            raise click.UsageError("with a model directory, give --gallery-emb and --reference-emb.")
        load_model_dir(model_dir)  # verify before the (slower) build
        model = PillarReranker.load(model_dir, device=device)
        searcher = RerankingSearcher(model, direction=direction, index=index, device=device,
                                     reference_lists=reference_lists)
        searcher.fit(load_array(gallery_emb, name="gallery embeddings"),
                     load_array(reference_emb, name="reference embeddings"))
        built = "built"
        if save_searcher is not None:
            searcher.save(save_searcher, overwrite=overwrite, inputs=inputs)
    ready = time.perf_counter()
    scores, hits = searcher.search(q, k, reference_ids=ids)
    done = time.perf_counter()
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, scores=scores, ids=hits)
    click.echo(f"{built} the searcher in {ready - start:.1f} s; searched {q.shape[0]} queries in "
               f"{done - ready:.2f} s; wrote {output}")
