"""Random access to pair scores from a matrix or two embedding tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pillar_rerank._validation import check_k
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.neighbors._joint import symmetric_topk_search
from pillar_rerank.neighbors._topk import TopK, _as_float32, search_backend, topk_rows, topk_search
from pillar_rerank.score_transform import GalleryTransform
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES

_GATHER_BYTES = 32 * 2**20


def _writable_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor of ``arr``; read-only arrays (memory maps opened "r") are copied first.

    torch cannot mark a tensor read-only: sharing a read-only buffer warns ("array is not
    writable") and any in-place op would write into the user's file mapping. Embeddings are
    ``n x d``, small beside the ``n x n`` score matrices that stay memory-mapped.
    """
    return torch.from_numpy(np.require(arr, requirements=["W"]))


class PairScores:
    """Random access to a similarity between two item sets, from a matrix or two embedding tables.

    Parameters
    ----------
    matrix : array-like of shape (n_rows, n_cols), optional
        Dense or memory-mapped float matrix (read in place, gathered entry by entry).
    left, right : array-like of shape (n_rows, d) and (n_cols, d), optional
        Embeddings; the score is the inner product ``left[r] @ right[c]``.
    transposed : bool, default=False
        Serve ``matrix.T`` (or swap ``left``/``right``) without copying.
    transform : GalleryTransform, optional
        With embeddings: every score passes through it (a normaliser's element-wise form; its
        ``axis`` 0 names ``left`` items as the gallery, 1 ``right`` items), so normalised scores
        are served, and searched, without a stored matrix.
    """

    def __init__(self, *, matrix: Any = None, left: Any = None, right: Any = None,
                 transposed: bool = False, transform: GalleryTransform | None = None) -> None:
        if (matrix is None) == (left is None or right is None):
            raise InvalidParameterError("PairScores: give either a matrix or both left and right embeddings.")
        if transform is not None and matrix is not None:
            raise InvalidParameterError("PairScores: a transform applies to embeddings, not to a matrix.")
        self.matrix = matrix
        self.left = None if left is None else _writable_tensor(_as_float32(left, name="left embeddings"))
        self.right = None if right is None else (
            # one table against itself (intra-modal) is one tensor: searched as a symmetric product
            self.left if right is left else _writable_tensor(_as_float32(right, name="right embeddings")))
        self.transposed = transposed
        self.transform = transform

    @property
    def shape(self) -> tuple[int, int]:
        if self.matrix is not None:
            n, m = self.matrix.shape
        else:
            n, m = self.left.shape[0], self.right.shape[0]
        return (m, n) if self.transposed else (n, m)

    @property
    def T(self) -> PairScores:  # noqa: N802 - mirrors ndarray.T
        out = PairScores.__new__(PairScores)
        out.matrix, out.left, out.right = self.matrix, self.left, self.right
        out.transposed = not self.transposed
        out.transform = self.transform
        return out

    def _sides(self, rows: torch.Tensor, cols: torch.Tensor):
        return (cols, rows) if self.transposed else (rows, cols)

    def block(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Scores of every (row, col) pair per batch entry.

        Shapes: ``rows`` (b, n), ``cols`` (b, m) -> float32 (b, n, m).
        """
        if self.matrix is not None:
            r, c = rows.numpy()[:, :, None], cols.numpy()[:, None, :]
            out = self.matrix[c, r] if self.transposed else self.matrix[r, c]
            return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        a_ids, b_ids = self._sides(rows, cols)
        batch, n_a, n_b = a_ids.shape[0], a_ids.shape[1], b_ids.shape[1]
        out = torch.empty(batch, n_a, n_b, dtype=torch.float32)
        # Gathered embeddings are (batch, n, d): bound them to a small, cache-friendly chunk.
        step = max(1, _GATHER_BYTES // max(1, (n_a + n_b) * self.left.shape[1] * 4))
        for s in range(0, batch, step):
            left, right = _gather(self.left, a_ids[s:s + step]), _gather(self.right, b_ids[s:s + step])
            torch.bmm(left, right.transpose(1, 2), out=out[s:s + step])
        if self.transform is not None:
            self.transform.apply_(out, a_ids[:, :, None] if self.transform.axis == 0 else b_ids[:, None, :])
        return out.transpose(1, 2) if self.transposed else out

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Scores of the element-wise pairs ``(rows[...], cols[...])`` (broadcast), float32."""
        rows, cols = torch.broadcast_tensors(rows, cols)
        a_ids, b_ids = self._sides(rows, cols)
        if self.matrix is not None:
            out = self.matrix[a_ids.numpy(), b_ids.numpy()]
            return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        # gathered rows are (n, d): chunk them so e.g. all n self-pairs never copy the tables
        flat_a, flat_b = a_ids.reshape(-1), b_ids.reshape(-1)
        out = torch.empty(flat_a.shape[0], dtype=torch.float32)
        step = max(1, _GATHER_BYTES // max(1, 2 * self.left.shape[1] * 4))
        for s in range(0, flat_a.shape[0], step):
            left, right = _gather(self.left, flat_a[s:s + step]), _gather(self.right, flat_b[s:s + step])
            out[s:s + step] = (left * right).sum(-1)
        if self.transform is not None:
            self.transform.apply_(out, flat_a if self.transform.axis == 0 else flat_b)
        return out.view(a_ids.shape)

    def topk(self, k: int, *, device: str | torch.device | None = None,
             budget_bytes: int = DEFAULT_BLOCK_BYTES, index: str = "flat",
             index_params: dict | None = None) -> TopK:
        """Top-``k`` columns of every row (blockwise matrix top-k or FAISS search).

        ``index`` / ``index_params`` choose an approximate FAISS index for embedding searches
        (see :func:`topk_search`); the top-k of a matrix, and of transformed (normalised)
        embedding scores, is always exact and ignores them.
        """
        if self.matrix is not None:
            return topk_rows(self.matrix, k, axis=0 if self.transposed else 1, budget_bytes=budget_bytes)
        q, g = (self.right, self.left) if self.transposed else (self.left, self.right)
        tile_transform = None
        if self.transform is not None:
            # exact, like the top-k of a normalised matrix: an index holds the raw inner products
            index, index_params = "flat", None
            transform = self.transform
            gallery_is_column = (transform.axis == 1) != self.transposed

            def tile_transform(tile: torch.Tensor, q_rows: slice, g_rows: slice) -> None:
                span = g_rows if gallery_is_column else q_rows
                ids = torch.arange(span.start, span.stop, device=tile.device)
                transform.apply_(tile, ids[None, :] if gallery_is_column else ids[:, None])

        if self.left is self.right and tile_transform is None and index == "flat":
            dev, use_faiss = search_backend(device, index=index)
            if dev.type == "cpu" and not use_faiss:
                k = check_k(k, n_gallery=self.left.shape[0], owner="PairScores.topk")
                top = symmetric_topk_search(self.left.numpy(), k, budget_bytes=budget_bytes)
                if top is not None:
                    return top
        return topk_search(q.numpy(), g.numpy(), k, device=device, budget_bytes=budget_bytes,
                           index=index, index_params=index_params, tile_transform=tile_transform)

    def __repr__(self) -> str:
        kind = "matrix" if self.matrix is not None else f"embeddings(d={self.left.shape[1]})"
        if self.transform is not None:
            kind += f", transform={self.transform.kind}"
        return f"PairScores({kind}, shape={self.shape})"


def _gather(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` (rows of ``table`` for an id tensor of any shape), by ``index_select``:
    on CPU about 3x faster than advanced indexing for (batch, n) ids into a wide table."""
    return table.index_select(0, ids.reshape(-1)).view(*ids.shape, table.shape[1])


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-normalised float32 copy, computed in row blocks (no (n, d) temporaries beyond the copy)."""
    out = np.empty(x.shape, dtype=np.float32)
    step = max(1, _GATHER_BYTES // max(1, x.shape[1] * 4))
    for s in range(0, x.shape[0], step):
        block = np.asarray(x[s:s + step], dtype=np.float32)
        out[s:s + step] = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), np.float32(1e-12))
    return out
