"""Neighbour search: top-k lists in the four directions, streamed in blocks.

Every search here is "queries x gallery, keep the best ``k`` of each query", computed over
blocks so that no full queries x gallery matrix is held beyond the input itself:

* :func:`topk_rows` ranks the rows (or, with ``axis=0``, the columns) of a dense or memory-mapped
  score matrix block by block;
* :func:`topk_search` runs an exact inner-product search on embeddings: on CPU as torch matmul
  tiles of whole gallery rows, each tile's top-k taken in place (FAISS ``faiss.knn`` with
  ``backend="faiss"`` and on GPU when FAISS has one);
* :func:`joint_topk_search` gets the i2t and t2i lists of an embedding pair from one product,
  and :func:`symmetric_topk_search` an intra-modal list (one table against itself) from half of
  its symmetric product;
* :class:`PairScores` gives random access to scores of arbitrary (row, column) pairs, from a
  matrix or from two embedding tables, which is what pillar vectors need;
* :class:`IntraModalScores` chooses where image-image and text-text similarities come from
  (``"given"`` matrices, ``"embeddings"`` cosines or the ``"second_order"`` estimate);
* :func:`build_neighbor_lists` builds the four lists LeaPRR needs;
* ``index="ivf"`` / ``"hnsw"`` swap the exact search for an approximate FAISS index on very
  large galleries, and :func:`recall_against_exact` measures what that costs in recall.

Ordering rule everywhere: descending score, ties broken by the lower gallery index. FAISS's own
choice among *exactly* equal scores at the k-th place of one gallery block is not specified by
FAISS; the exact rule holds for the matrix paths and the torch search (the CPU default).
"""

from pillar_rerank.neighbors._ann import INDEX_PARAMS, INDEX_TYPES, ivf_nlist
from pillar_rerank.neighbors._intra import (
    DEFAULT_SECOND_ORDER_RANK,
    INTRA_SOURCES,
    IntraModalScores,
    intra_modal_source,
    second_order_embeddings,
)
from pillar_rerank.neighbors._joint import joint_topk_search, symmetric_topk_search
from pillar_rerank.neighbors._lists import (
    DIRECTIONS,
    NeighborLists,
    build_neighbor_lists,
    cross_modal_scores,
    neighbor_memory_plan,
)
from pillar_rerank.neighbors._pairs import PairScores
from pillar_rerank.neighbors._recall import IndexRecall, recall_against_exact
from pillar_rerank.neighbors._topk import TopK, force_self_first, merge_topk, topk_rows, topk_search

__all__ = [
    "DEFAULT_SECOND_ORDER_RANK", "DIRECTIONS", "INDEX_PARAMS", "INDEX_TYPES", "INTRA_SOURCES",
    "IndexRecall", "IntraModalScores", "NeighborLists", "PairScores", "TopK", "build_neighbor_lists",
    "cross_modal_scores", "force_self_first", "intra_modal_source", "ivf_nlist", "joint_topk_search",
    "merge_topk",
    "neighbor_memory_plan", "recall_against_exact", "second_order_embeddings", "symmetric_topk_search",
    "topk_rows", "topk_search",
]
