"""A live searcher answering new queries: LeaPRR re-ranked top-k over a fixed gallery.

A retrieval service has a fixed gallery and queries that arrive one or a few at a time.
:class:`~pillar_rerank.search.RerankingSearcher` is built once from a fitted model, the gallery
embeddings and a reference set of the query modality (whose neighbours give each new query its
pillars); everything that does not depend on the query is computed then. Here the gallery is the
demo ``test`` images, the reference set the demo ``train`` captions, and the queries the ``test``
captions, which the searcher has never seen. The searcher is saved, loaded and queried again.

Run from the repository root::

    python examples/live_search.py --epochs 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.datasets import load_demo
from pillar_rerank.reranker import PillarReranker
from pillar_rerank.search import RerankingSearcher


def recall(ids: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Share of queries whose relevant gallery item is in their top ``k`` (percent)."""
    return 100.0 * float((ids[:, :k] == relevant[:, None]).any(1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="LeaPRR training epochs.")
    parser.add_argument("--train-images", type=int, default=None,
                        help="Train on the first N gallery items of the train side only (quick runs).")
    parser.add_argument("--batch", type=int, default=64, help="Queries per search call.")
    args = parser.parse_args()
    demo = load_demo()
    train, test = demo["train"], demo["test"]
    fit_on = train if args.train_images is None else train.subset_images(np.arange(args.train_images))
    cfg = LeaPRRConfig(n_pillars=16, embed_dim=64, depth=1, num_heads=4, epochs=args.epochs, batch_size=256,
                       eval_every=10_000, seed=0, device="cpu", normalize="nnn",
                       normalize_params={"k": 16, "alpha": 0.75})
    model = PillarReranker(cfg).fit(fit_on, verbose=False)

    start = time.perf_counter()
    searcher = RerankingSearcher(model, direction="t2i").fit(
        gallery=test.image_embeddings, reference=train.text_embeddings)
    print(f"built {searcher} in {time.perf_counter() - start:.1f} s")
    plain = RerankingSearcher(direction="t2i").fit(test.image_embeddings, train.text_embeddings)

    queries, truth = test.text_embeddings, test.txt_to_img
    hits, base_hits = [], []
    start = time.perf_counter()
    for s in range(0, queries.shape[0], args.batch):  # queries arriving in batches
        hits.append(searcher.search(queries[s:s + args.batch], k=10)[1])
        base_hits.append(plain.search(queries[s:s + args.batch], k=10)[1])
    elapsed = time.perf_counter() - start
    hits, base_hits = np.concatenate(hits), np.concatenate(base_hits)
    for name, h in (("FAISS search", base_hits), ("NNN -> LeaPRR", hits)):
        print(f"{name:<14} " + " ".join(f"R@{k} {recall(h, truth, k):6.2f}" for k in (1, 5, 10)))
    print(f"{queries.shape[0]} queries in {elapsed:.1f} s (both searchers, batches of {args.batch})")

    with tempfile.TemporaryDirectory() as tmp:
        searcher.save(Path(tmp) / "searcher")
        again = RerankingSearcher.load(Path(tmp) / "searcher")
        scores, ids = again.search(queries[:3], k=5)
    assert np.array_equal(ids, hits[:3, :5]), "a loaded searcher answers as the one it was saved from"
    print("top-5 of the first 3 queries (gallery ids):", ids.tolist())


if __name__ == "__main__":
    main()
